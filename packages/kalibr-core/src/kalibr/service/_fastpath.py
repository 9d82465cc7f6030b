"""The two hot routes, decide and report-outcome, served without FastAPI's per-request machinery.

FastAPI's middleware, dependency solving, validation and serialization layers cost more CPU than deciding
itself. This ASGI layer, in front of the FastAPI app, answers ``POST /api/v1/routing/decide`` and
``POST /api/v1/intelligence/report-outcome`` directly with the same pydantic models, the same ``Backend`` calls
and the same error bodies; every other request (and the OpenAPI document, which still lists both routes) goes
to the FastAPI app.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from pydantic import BaseModel

from kalibr.service import _schemas as s
from kalibr.service._backend import Backend
from kalibr.service._errors import error_response
from kalibr.service._limits import ASGIApp, Receive, Scope, Send, send_json
from kalibr.service._tenants import TenantResolver

__all__ = ["FastPath"]


_DECIDE = "/api/v1/routing/decide"
_REPORT = "/api/v1/intelligence/report-outcome"


class FastPath:
    def __init__(self, app: ASGIApp, backend: Backend, resolver: TenantResolver) -> None:
        self.app = app
        self._backend = backend
        self._resolver = resolver
        self._routes: dict[str, Callable[[str, bytes], Awaitable[BaseModel]]] = {
            _DECIDE: self._decide,
            _REPORT: self._report,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._routes.get(scope.get("path", "")) if scope["type"] == "http" else None
        if route is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:
            return  # the client went away
        await send_json(send, *await self._answer(route, scope, body))

    async def _answer(
        self, route: Callable[[str, bytes], Awaitable[BaseModel]], scope: Scope, body: bytes
    ) -> tuple[int, bytes]:
        try:
            headers = dict(scope.get("headers", ()))
            tenant = self._resolver.resolve(_text(headers.get(b"x-api-key")), _text(headers.get(b"x-tenant-id")))
            answer = await route(tenant, body)
            return 200, answer.model_dump_json().encode()
        except Exception as exc:
            status, error = error_response(exc, f"POST {scope.get('path')}")
            return status, json.dumps(error).encode()

    async def _decide(self, tenant: str, body: bytes) -> BaseModel:
        # In the event loop: a decision is computed from cached arm state (the store is read only for a goal's
        # first decision), and its record is written behind.
        return self._backend.decide(tenant, s.DecideRequest.model_validate_json(body))

    async def _report(self, tenant: str, body: bytes) -> BaseModel:
        return await self._backend.report(tenant, s.ReportRequest.model_validate_json(body))


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
