"""The HTTP routes of the Kalibr wire API (``docs``: wire-api), on FastAPI.

Each route authenticates (``X-API-Key`` decides the tenant), then calls ``Backend``. Errors always come back
as JSON ``{"detail": message, "error": kind}`` naming the problem: 401/403 for keys, 404 for unknown things,
413 for oversized bodies, 422 naming the field for bad input; a 500 only for a genuine bug (and it is logged).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from kalibr._exceptions import StoreError, UserError
from kalibr.service import _schemas as s
from kalibr.service._backend import Backend, EngineFactory, default_engine_factory
from kalibr.service._errors import ServiceError, error_response
from kalibr.service._fastpath import FastPath
from kalibr.service._limits import ASGIApp, BodySizeLimit, Receive, Scope, Send
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

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if retention is not None:
            retention.start()
        yield
        if retention is not None:
            retention.stop()
        backend.close()
        if owns_store:
            store.close()

    app = _Service(
        title="Kalibr intelligence service",
        summary="Outcome-aware routing decisions over the Kalibr wire API.",
        version="1",
        lifespan=lifespan,
    )
    app.state.backend = backend
    app.front = BodySizeLimit(FastPath(app.by_fastapi, backend, resolver), max_bytes=max_body_bytes)
    _add_error_handlers(app)

    app.state.resolver = resolver
    _add_health_routes(app, store)
    _add_routing_routes(app, backend)
    _add_intelligence_routes(app, backend)
    from kalibr.dashboard import create_dashboard, keys_of

    app.mount("/dashboard", create_dashboard(store, tenant_for_key=keys_of(resolver)))
    return app


class _Service(FastAPI):
    """The FastAPI app behind two ASGI layers of ours: the body-size limit, then the fast path of the hot routes.

    Added as FastAPI middleware, they would sit beneath FastAPI's own error and telemetry layers, which cost a
    decide as much CPU again.
    """

    front: ASGIApp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.front(scope, receive, send)

    async def by_fastapi(self, scope: Scope, receive: Receive, send: Send) -> None:
        """FastAPI's own handling: every request the fast path does not answer."""
        await super().__call__(scope, receive, send)


async def _tenant_of(
    request: Request,
    x_api_key: Annotated[str | None, Header()] = None,
    x_tenant_id: Annotated[str | None, Header()] = None,
) -> str:
    """The caller's tenant, from its key (401 without a valid one, 403 if X-Tenant-ID names another)."""
    resolver: TenantResolver = request.app.state.resolver
    return resolver.resolve(x_api_key, x_tenant_id)


Tenant = Annotated[str, Depends(_tenant_of)]


def _add_health_routes(app: FastAPI, store: Store) -> None:
    @app.get("/healthz", tags=["health"])
    def liveness() -> s.HealthResponse:
        """The process is up."""
        return s.HealthResponse(status="ok")

    @app.get("/readyz", tags=["health"], responses={503: {"description": "the store does not answer"}})
    def readiness() -> JSONResponse:
        """The store answers: this replica can serve."""
        try:
            store.tenant_for_key("0" * 64)
        except Exception as exc:
            logger.warning("readiness check failed: %s", exc)
            return JSONResponse({"status": "unavailable", "detail": f"store error: {exc}"}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/api/v1/intelligence/health", tags=["health"])
    def health() -> s.HealthResponse:
        return s.HealthResponse(status="healthy")


def _add_routing_routes(app: FastAPI, backend: Backend) -> None:
    @app.post("/api/v1/routing/paths", tags=["routing"])
    def register_path(body: s.PathRequest, tenant: Tenant) -> s.PathResponse:
        return backend.register_path(tenant, body)

    @app.get("/api/v1/routing/paths", tags=["routing"])
    def list_paths(tenant: Tenant, goal: str | None = None, include_disabled: bool = False) -> s.PathsResponse:
        return backend.list_paths(tenant, goal, include_disabled)

    @app.delete("/api/v1/routing/paths/{path_id}", tags=["routing"])
    def disable_path(path_id: str, tenant: Tenant) -> s.DisableResponse:
        return backend.disable_path(tenant, path_id)

    @app.post("/api/v1/routing/decide", tags=["routing"])
    async def decide(body: s.DecideRequest, tenant: Tenant) -> s.DecideResponse:
        return backend.decide(tenant, body)

    @app.get("/api/v1/routing/config", tags=["routing"])
    def get_config(tenant: Tenant, goal: str = "*") -> s.ConfigBody:
        return backend.get_config(tenant, goal)

    @app.post("/api/v1/routing/config", tags=["routing"])
    def set_config(body: s.ConfigBody, tenant: Tenant) -> s.ConfigBody:
        return backend.set_config(tenant, body)


def _add_intelligence_routes(app: FastAPI, backend: Backend) -> None:
    @app.post("/api/v1/intelligence/report-outcome", tags=["outcomes"])
    async def report_outcome(body: s.ReportRequest, tenant: Tenant) -> s.ReportResponse:
        return await backend.report(tenant, body)

    @app.post("/api/v1/intelligence/report-outcomes", tags=["outcomes"])
    def report_outcomes(body: s.ReportBatchRequest, tenant: Tenant) -> s.ReportBatchResponse:
        """Extension: up to 1,000 outcomes at once; each item is accepted or rejected on its own."""
        return backend.report_batch(tenant, body)

    @app.post("/api/v1/intelligence/update-outcome", tags=["outcomes"])
    def update_outcome(body: s.UpdateRequest, tenant: Tenant) -> s.UpdateResponse:
        return backend.update_outcome(tenant, body)

    @app.post("/api/v1/intelligence/policy", tags=["intelligence"])
    def policy(body: s.PolicyRequest, tenant: Tenant) -> s.PolicyResponse:
        return backend.policy(tenant, body)

    @app.get("/api/v1/intelligence/insights", tags=["intelligence"])
    def insights(
        tenant: Tenant,
        goal: str | None = None,
        window_hours: Annotated[float, Query(gt=0, le=24 * 366)] = 168,
    ) -> dict[str, Any]:
        return backend.insights(tenant, goal, window_hours)


def _add_error_handlers(app: FastAPI) -> None:
    async def answer(request: Request, exc: Exception) -> JSONResponse:
        status, body = error_response(exc, f"{request.method} {request.url.path}")
        return JSONResponse(body, status_code=status)

    for kind in (ServiceError, RequestValidationError, UserError, StoreError, Exception):
        app.add_exception_handler(kind, answer)
