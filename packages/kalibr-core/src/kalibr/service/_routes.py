"""Every route of the service in one table, served by one ASGI dispatcher and documented from the same table.

A route names its method and path, its request model (a JSON body, or the query string), its response model, the
``Backend`` call that answers it and the error statuses it can return. The dispatcher authenticates in one place
(``TenantResolver``), parses with the route's pydantic model, answers with the same error bodies everywhere
(``_errors.error_response``), and runs the call on the event loop (``hot``: decide and report, computed from
memory) or in a worker thread (anything that may wait on the store). FastAPI's per-request machinery costs more
CPU than a decision, so it serves only what the table does not: the OpenAPI document (built from this table,
``openapi_paths``) and its documentation pages.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import anyio.to_thread
from pydantic import BaseModel

from kalibr.service import _schemas as s
from kalibr.service._backend import Backend
from kalibr.service._errors import RefusalLog, error_response
from kalibr.service._limits import ASGIApp, Receive, Scope, Send, send_json
from kalibr.service._tenants import TenantResolver

__all__ = ["ROUTES", "Dispatcher", "Route", "openapi_paths"]

Handler = Callable[[Backend, str, Any, dict[str, str]], Any]
"""``(backend, tenant, parsed request, path parameters)`` -> a response model (or an awaitable of one)."""


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler
    response: type[BaseModel] | None
    summary: str
    tag: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    authenticated: bool = True
    hot: bool = False
    """Answered on the event loop (no store wait on the common path); else in a worker thread."""
    errors: tuple[int, ...] = (422,)

    @property
    def pattern(self) -> re.Pattern[str]:
        return re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.path) + "$")

    @property
    def statuses(self) -> tuple[int, ...]:
        """Every error status this route can answer: its own, plus keys, body size and store outages."""
        common = (401, 403, 503) if self.authenticated else ()
        sized = (413,) if self.body is not None else ()
        return tuple(sorted({*self.errors, *common, *sized}))


def _sync(call: Callable[[Backend, str, Any], Any]) -> Handler:
    return lambda backend, tenant, request, _: call(backend, tenant, request)


ROUTES: tuple[Route, ...] = (
    Route("GET", "/healthz", lambda *_: s.HealthResponse(status="ok"), s.HealthResponse, "The process is up.",
          "health", authenticated=False, hot=True, errors=()),
    Route("GET", "/readyz", lambda backend, *_: backend.readiness(), s.HealthResponse,
          "The store answers: this replica can serve.", "health", authenticated=False, errors=(503,)),
    Route("GET", "/api/v1/intelligence/health", lambda *_: s.HealthResponse(status="healthy"), s.HealthResponse,
          "The service is up (the official SDK's health check).", "health", authenticated=False, hot=True, errors=()),
    Route("POST", "/api/v1/routing/paths", _sync(Backend.register_path), s.PathResponse,
          "Register a path (model, params, tools) for a goal.", "routing", body=s.PathRequest),
    Route("GET", "/api/v1/routing/paths", lambda b, t, q, _: b.list_paths(t, q.goal, q.include_disabled),
          s.PathsResponse,
          "The paths of a goal (or of every goal).", "routing", query=s.PathsQuery),
    Route("DELETE", "/api/v1/routing/paths/{path_id}",
          lambda backend, tenant, _, params: backend.disable_path(tenant, params["path_id"]), s.DisableResponse,
          "Disable a path: no decision chooses it any more.", "routing", errors=(404, 422)),
    Route("POST", "/api/v1/routing/decide", _sync(Backend.decide), s.DecideResponse,
          "Choose a path for one call of a goal.", "routing", body=s.DecideRequest, hot=True, errors=(404, 422)),
    Route("GET", "/api/v1/routing/config", lambda b, t, q, _: b.get_config(t, q.goal), s.ConfigBody,
          "The routing config of a goal ('*': the default).", "routing", query=s.ConfigQuery),
    Route("POST", "/api/v1/routing/config", _sync(Backend.set_config), s.ConfigBody,
          "Change the routing config of a goal ('*': the default).", "routing", body=s.ConfigBody),
    Route("POST", "/api/v1/intelligence/report-outcome", _sync(Backend.report), s.ReportResponse,
          "Report what happened on a decision; answered once committed.", "outcomes", body=s.ReportRequest,
          hot=True, errors=(404, 422)),
    Route("POST", "/api/v1/intelligence/report-outcomes", _sync(Backend.report_batch), s.ReportBatchResponse,
          "Extension: up to 1,000 outcomes at once; each item is accepted or rejected on its own.", "outcomes",
          body=s.ReportBatchRequest),
    Route("POST", "/api/v1/intelligence/update-outcome", _sync(Backend.update_outcome), s.UpdateResponse,
          "Change a reported outcome (a late signal); a field left out keeps its value.", "outcomes",
          body=s.UpdateRequest, errors=(404, 422)),
    Route("POST", "/api/v1/intelligence/policy", _sync(Backend.policy), s.PolicyResponse,
          "The recommended model of a goal, from its outcomes.", "intelligence", body=s.PolicyRequest),
    Route("GET", "/api/v1/intelligence/insights", lambda b, t, q, _: b.insights(t, q.goal, q.window_hours), None,
          "What the outcomes say, per goal (schema: docs/insights.md).", "intelligence", query=s.InsightsQuery),
)  # fmt: skip


class Dispatcher:
    """The ASGI app answering every route of ``ROUTES``; any other request goes to ``fallback`` (FastAPI)."""

    def __init__(self, fallback: ASGIApp, backend: Backend, resolver: TenantResolver, refusals: RefusalLog) -> None:
        self._fallback = fallback
        self._refusals = refusals
        self._backend = backend
        self._resolver = resolver
        self._exact = {(r.method, r.path): r for r in ROUTES if "{" not in r.path}
        self._patterned = [(r, r.pattern) for r in ROUTES if "{" in r.path]

    def _match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        route = self._exact.get((method, path))
        if route is not None:
            return route, {}
        for candidate, pattern in self._patterned:
            found = pattern.match(path) if candidate.method == method else None
            if found is not None:
                return candidate, found.groupdict()
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        matched = self._match(scope["method"], scope.get("path", "")) if scope["type"] == "http" else None
        if matched is None:
            await self._fallback(scope, receive, send)
            return
        route, params = matched
        try:  # before the body is read: a wrong key costs no read, no parse
            tenant = await self._authenticate(route, scope)
        except Exception as exc:
            await send_json(send, *self._error(route, scope, exc))
            return
        body = await _read_body(receive)
        if body is None:
            return  # the client went away
        await send_json(send, *await self._answer(route, params, scope, tenant, body))

    async def _answer(
        self, route: Route, params: dict[str, str], scope: Scope, tenant: str, body: bytes
    ) -> tuple[int, bytes]:
        try:
            request = _parse(route, scope, body)
            if route.hot:
                answer = route.handler(self._backend, tenant, request, params)
            else:
                answer = await anyio.to_thread.run_sync(route.handler, self._backend, tenant, request, params)
            if isinstance(answer, Awaitable):
                answer = await answer
            if isinstance(answer, BaseModel):
                return 200, answer.model_dump_json().encode()
            return 200, json.dumps(answer, default=str).encode()
        except Exception as exc:
            return self._error(route, scope, exc)

    async def _authenticate(self, route: Route, scope: Scope) -> str:
        """The one place a request's key becomes its tenant (401 without a valid key, 403 for another tenant).
        The resolver's snapshot of the keys answers on the event loop; reading the key table again (a few times a
        second at most) happens in a worker thread."""
        if not route.authenticated:
            return ""
        headers = dict(scope.get("headers", ()))
        key, claimed = _text(headers.get(b"x-api-key")), _text(headers.get(b"x-tenant-id"))
        tenant = self._resolver.resolve_cached(key, claimed)
        if tenant is None:
            tenant = await anyio.to_thread.run_sync(self._resolver.resolve, key, claimed)
        return tenant

    def _error(self, route: Route, scope: Scope, exc: Exception) -> tuple[int, bytes]:
        where = f"{route.method} {scope.get('path')}"
        status, error = error_response(exc, f"{route.method} {route.path}", where, self._refusals)
        return status, json.dumps(error).encode()


def _parse(route: Route, scope: Scope, body: bytes) -> Any:
    if route.body is not None:
        return route.body.model_validate_json(body)
    if route.query is not None:
        query = dict(parse_qsl(_text(scope.get("query_string")) or "", keep_blank_values=True))
        return route.query.model_validate(query)
    return None


async def _read_body(receive: Receive) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


_STATUS_TEXT = {
    401: "no API key, or one the service does not know",
    403: "X-Tenant-ID names another tenant than the key's",
    404: "an unknown goal, path, decision or outcome (the message says which)",
    413: "the request body is over the service's limit",
    422: "invalid input: `detail` names each bad field, `errors` lists them",
    503: "the store does not answer: retry later",
}


def openapi_paths(component: Callable[[type[BaseModel]], dict[str, str]]) -> dict[str, Any]:
    """The ``paths`` of the OpenAPI document, from ``ROUTES``; ``component(model)`` returns a ``$ref`` to a model's
    schema (the caller collects the schemas)."""
    paths: dict[str, Any] = {}
    error = component(s.ErrorBody)
    for route in ROUTES:
        ok_schema = component(route.response) if route.response is not None else {"type": "object"}
        operation: dict[str, Any] = {
            "summary": route.summary,
            "tags": [route.tag],
            "operationId": f"{route.method.lower()}_{route.path.strip('/').replace('/', '_').replace('-', '_')}",
            "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": ok_schema}}}},
        }
        for status in route.statuses:
            operation["responses"][str(status)] = {
                "description": _STATUS_TEXT[status],
                "content": {"application/json": {"schema": error}},
            }
        parameters = _parameters(route, component)
        if parameters:
            operation["parameters"] = parameters
        if route.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": component(route.body)}},
            }
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return paths


def _parameters(route: Route, component: Callable[[type[BaseModel]], dict[str, str]]) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"\{(\w+)\}", route.path)
    ]
    if route.authenticated:
        parameters += [
            {"name": "X-API-Key", "in": "header", "required": False, "schema": {"type": "string"}},
            {"name": "X-Tenant-ID", "in": "header", "required": False, "schema": {"type": "string"}},
        ]
    if route.query is not None:
        schema = route.query.model_json_schema()
        for name, field in schema.get("properties", {}).items():
            required = name in schema.get("required", [])
            parameters.append({"name": name, "in": "query", "required": required, "schema": field})
    return parameters
