"""The service app: the route table (``_routes``) behind a body-size limit, and FastAPI for the OpenAPI document.

Each route authenticates (``X-API-Key`` decides the tenant), then calls ``Backend``. Errors always come back
as JSON ``{"detail": message, "error": kind}`` naming the problem: 401/403 for keys, 404 for unknown things,
413 for oversized bodies, 422 naming the field for bad input (``errors`` lists them), 503 when the store does not
answer; a 500 only for a genuine bug (and it is logged).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from kalibr.service._backend import Backend, EngineFactory, default_engine_factory
from kalibr.service._errors import RefusalLog
from kalibr.service._limits import ASGIApp, BodySizeLimit, Receive, Scope, Send
from kalibr.service._routes import Dispatcher, openapi_paths
from kalibr.service._tenants import TenantResolver
from kalibr.stores.base import Store
from kalibr.stores.retention import RetentionJob

__all__ = ["build_app"]

logger = logging.getLogger("kalibr.service")


def build_app(
    store: Store,
    *,
    auth: bool = True,
    max_body_bytes: int = 1_048_576,
    refresh_interval: float = 0.2,
    engine_factory: EngineFactory | None = None,
    key_cache_seconds: float = 5.0,
    retention_days: float | None = None,
    owns_store: bool = False,
) -> FastAPI:
    backend = Backend(store, engine_factory or default_engine_factory(refresh_interval))
    resolver = TenantResolver(store, auth=auth, cache_seconds=key_cache_seconds)
    retention = None if retention_days is None else RetentionJob(store, retention_days)
    refusals = RefusalLog(logger)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        backend.warm_up()  # before the first request: a cold first decide would time clients out
        if retention is not None:
            retention.start()
        yield
        if retention is not None:
            retention.stop()
        backend.close()
        refusals.flush()
        if owns_store:
            store.close()

    app = _Service(
        title="Kalibr intelligence service",
        summary="Outcome-aware routing decisions over the Kalibr wire API.",
        version="1",
        lifespan=lifespan,
    )
    app.state.backend = backend
    app.state.resolver = resolver
    app.front = BodySizeLimit(
        Dispatcher(app.by_fastapi, backend, resolver, refusals), max_bytes=max_body_bytes, refusals=refusals
    )
    from kalibr.dashboard import create_dashboard, keys_of

    app.mount("/dashboard", create_dashboard(store, tenant_for_key=keys_of(resolver)))
    return app


class _Service(FastAPI):
    """FastAPI behind two ASGI layers of ours: the body-size limit, then the dispatcher of every route (``_routes``).

    FastAPI serves only the OpenAPI document (built from the same route table) and its documentation pages: its
    middleware and dependency layers cost a decide as much CPU again.
    """

    front: ASGIApp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.front(scope, receive, send)

    async def by_fastapi(self, scope: Scope, receive: Receive, send: Send) -> None:
        """FastAPI's own handling: every request the dispatcher does not answer."""
        await super().__call__(scope, receive, send)

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            schemas: dict[str, Any] = {}

            def component(model: type[BaseModel]) -> dict[str, str]:
                found = models_json_schema([(model, "serialization")], ref_template="#/components/schemas/{model}")
                schemas.update(found[1].get("$defs", {}))
                return found[0][(model, "serialization")]

            paths = openapi_paths(component)
            self.openapi_schema = {
                "openapi": "3.1.0",
                "info": {"title": self.title, "summary": self.summary, "version": self.version},
                "paths": paths,
                "components": {"schemas": schemas},
            }
        return self.openapi_schema
