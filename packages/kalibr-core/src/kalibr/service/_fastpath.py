"""The two hot routes, decide and report-outcome, served without FastAPI's per-request machinery.

FastAPI's middleware, dependency solving, validation and serialization layers cost more CPU than deciding
itself. This ASGI layer, in front of the FastAPI app, answers ``POST /api/v1/routing/decide`` and
``POST /api/v1/intelligence/report-outcome`` directly with the same pydantic models, the same ``Backend`` calls
and the same error bodies; every other request (and the OpenAPI document, which still lists both routes) goes
to the FastAPI app.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ValidationError

from kalibr._exceptions import StoreError, UserError
from kalibr.service import _schemas as s
from kalibr.service._backend import Backend
from kalibr.service._errors import ServiceError, describe_validation
from kalibr.service._limits import ASGIApp, Receive, Scope, Send
from kalibr.service._tenants import TenantResolver

__all__ = ["FastPath"]

logger = logging.getLogger("kalibr.service")

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
        status, payload = await self._answer(route, scope, body)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    async def _answer(
        self, route: Callable[[str, bytes], Awaitable[BaseModel]], scope: Scope, body: bytes
    ) -> tuple[int, bytes]:
        try:
            headers = dict(scope.get("headers", ()))
            tenant = self._resolver.resolve(_text(headers.get(b"x-api-key")), _text(headers.get(b"x-tenant-id")))
            answer = await route(tenant, body)
            return 200, answer.model_dump_json().encode()
        except ValidationError as exc:
            message, problems = describe_validation(exc.errors(include_url=False, include_context=False))
            return _error(422, "invalid_request", message, errors=problems)
        except ServiceError as exc:
            return _error(exc.status_code, exc.kind, exc.message)
        except UserError as exc:
            return _error(422, "invalid_request", str(exc))
        except StoreError as exc:
            logger.error("store error: %s", exc)
            return _error(503, "store_unavailable", f"the store failed: {exc}; retry later")
        except Exception:
            logger.exception("unexpected error on POST %s", scope.get("path"))
            return _error(500, "internal", "internal error (a bug, logged by the service)")

    async def _decide(self, tenant: str, body: bytes) -> BaseModel:
        # In the event loop: a decision is computed from cached arm state (a store read at most every
        # refresh_interval), and its record is written behind.
        return self._backend.decide(tenant, s.DecideRequest.model_validate_json(body))

    async def _report(self, tenant: str, body: bytes) -> BaseModel:
        return await self._backend.report_async(tenant, s.ReportRequest.model_validate_json(body))


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


def _error(status: int, kind: str, message: str, **extra: Any) -> tuple[int, bytes]:
    return status, json.dumps({"detail": message, "error": kind, **extra}).encode()
