"""The dashboard's routes: server-rendered pages (Jinja2), fragments polled by htmx, the charts' JSON, actions.

A request's tenant comes from its API key: an ``X-API-Key`` header, or the cookie the login form (or a one-time
``?key=`` link) sets. Actions are POSTs that must also carry htmx's ``HX-Request`` header (or the key as a
header): a cross-site form cannot set one, so the SameSite cookie alone never changes anything.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path as FilePath
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from kalibr._domain import check_goal
from kalibr._exceptions import UserError
from kalibr.dashboard import _views as views
from kalibr.policies.base import PolicyConfig
from kalibr.stores.base import Store

__all__ = ["COOKIE", "TenantForKey", "build_dashboard"]

TenantForKey = Callable[[str], str | None]
"""An API key's tenant, or None when the key is not valid."""

COOKIE = "kalibr_dashboard_key"
WINDOWS = {"1h": 1.0, "24h": 24.0, "7d": 168.0, "30d": 720.0}
_HERE = FilePath(__file__).parent
_CONFIG_FIELDS = ("exploration_rate", "min_samples_before_exploit", "staleness_days", "exploration_on_high_risk")


class _Unauthenticated(Exception):
    pass


def build_dashboard(
    store: Store, *, tenant_for_key: TenantForKey, read_only: bool = False, clock: Callable[[], datetime] | None = None
) -> Starlette:
    templates = Jinja2Templates(directory=_HERE / "templates")
    templates.env.filters["pct"] = _pct
    templates.env.filters["usd"] = _usd
    templates.env.filters["ms"] = _ms
    now = clock or (lambda: datetime.now(UTC))

    def tenant_of(request: Request) -> str:
        key = request.headers.get("x-api-key") or request.cookies.get(COOKIE)
        tenant = tenant_for_key(key) if key else None
        if tenant is None:
            raise _Unauthenticated
        return tenant

    def page(request: Request, name: str, **context: Any) -> Response:
        context.setdefault("read_only", read_only)
        return templates.TemplateResponse(request, name, context)

    def window(request: Request) -> tuple[str, datetime, datetime]:
        chosen = request.query_params.get("window", "24h")
        if chosen not in WINDOWS:
            raise UserError(f"invalid window {chosen!r}: choose one of {', '.join(map(repr, WINDOWS))}")
        moment = now()
        return chosen, moment - timedelta(hours=WINDOWS[chosen]), moment

    async def login(request: Request) -> Response:
        key = request.query_params.get("key")
        error = None
        if request.method == "POST":
            key = str((await request.form()).get("key", "")).strip()
        if key:
            if tenant_for_key(key) is not None:
                response = RedirectResponse(request.url_for("goals"), status_code=303)
                response.set_cookie(
                    COOKIE,
                    key,
                    httponly=True,
                    samesite="strict",
                    secure=request.url.scheme == "https",
                    path=request.scope.get("root_path") or "/",
                )
                return response
            error = "that key is not valid: create one with `kalibr keys create --tenant NAME`"
        return page(request, "login.html", error=error, status_code=401 if error else 200)

    def goals(request: Request) -> Response:
        tenant = tenant_of(request)
        chosen, since, moment = window(request)
        rows = views.goal_rows(store, tenant, since, moment)
        return page(request, "goals.html", rows=rows, window=chosen, windows=WINDOWS, tenant=tenant)

    def goal_context(request: Request) -> dict[str, Any]:
        tenant = tenant_of(request)
        goal = _known_goal(store, tenant, request.path_params["goal"])
        chosen, since, moment = window(request)
        view = views.goal_view(store, tenant, goal, since, moment)
        return {"view": view, "window": chosen, "windows": WINDOWS, "tenant": tenant}

    def goal(request: Request) -> Response:
        return page(request, "goal.html", **goal_context(request))

    def goal_live(request: Request) -> Response:
        return page(request, "_goal_live.html", **goal_context(request))

    def goal_series(request: Request) -> Response:
        tenant = tenant_of(request)
        goal = _known_goal(store, tenant, request.path_params["goal"])
        _, since, moment = window(request)
        return JSONResponse(views.goal_series(store, tenant, goal, since, moment))

    def decisions(request: Request) -> Response:
        tenant = tenant_of(request)
        query = request.query_params
        goal = query.get("goal") or None
        if goal is not None:
            check_goal(goal)
        path_id = query.get("path_id") or None
        rows = store.recent_decisions(tenant, goal, path_id=path_id, trace_id=query.get("trace_id") or None, limit=200)
        paths = store.list_paths(tenant, goal, include_disabled=True)
        return page(
            request,
            "decisions.html",
            rows=rows,
            goals=store.goals(tenant),
            paths=paths,
            labels={record.path.path_id: views.path_label(record) for record in paths},
            goal=goal,
            path_id=path_id,
            tenant=tenant,
        )

    def trace(request: Request) -> Response:
        tenant = tenant_of(request)
        found = store.recent_decisions(tenant, trace_id=request.path_params["trace_id"], limit=1)
        if not found:
            return page(request, "missing.html", what="trace", status_code=404, tenant=tenant)
        return page(request, "trace.html", row=found[0], tenant=tenant)

    def guard(request: Request) -> str:
        tenant = tenant_of(request)
        if read_only:
            raise PermissionError("this dashboard is read-only (started with --read-only)")
        if "hx-request" not in request.headers and "x-api-key" not in request.headers:
            raise PermissionError("actions come from the dashboard's own buttons (the HX-Request header is missing)")
        return tenant

    async def set_enabled(request: Request) -> Response:
        tenant = guard(request)
        goal = _known_goal(store, tenant, request.path_params["goal"])
        path_id = request.path_params["path_id"]
        records = [r for r in store.list_paths(tenant, goal, include_disabled=True) if r.path.path_id == path_id]
        if not records:
            return PlainTextResponse(f"goal {goal!r} has no path {path_id!r}", status_code=404)
        enabled = str((await request.form()).get("enabled")) == "1"
        store.set_path_enabled(tenant, path_id, enabled)
        data = {"path_id": path_id, "model": records[0].path.model, "by": "dashboard"}
        store.record_event(tenant, goal, "path_enabled" if enabled else "path_disabled", data)
        return Response(status_code=204, headers={"HX-Refresh": "true"})

    async def set_config(request: Request) -> Response:
        tenant = guard(request)
        goal = _known_goal(store, tenant, request.path_params["goal"])
        form = await request.form()
        current = store.get_config(tenant, goal)
        config = _config_from_form(current, {name: str(form.get(name, "")) for name in _CONFIG_FIELDS})
        store.set_config(tenant, goal, config)
        changed = {
            name: {"from": getattr(current, name), "to": getattr(config, name)}
            for name in _CONFIG_FIELDS
            if getattr(current, name) != getattr(config, name)
        }
        store.record_event(tenant, goal, "config_changed", {"changes": changed, "by": "dashboard"})
        return Response(status_code=204, headers={"HX-Refresh": "true"})

    async def unauthenticated(request: Request, exc: Exception) -> Response:
        if request.method == "GET" and "hx-request" not in request.headers and "json" not in request.url.path:
            return RedirectResponse(request.url_for("login"), status_code=303)
        return PlainTextResponse("an API key is needed: log in again", status_code=401)

    async def refused(request: Request, exc: Exception) -> Response:
        return PlainTextResponse(str(exc), status_code=403)

    async def bad_input(request: Request, exc: Exception) -> Response:
        return PlainTextResponse(str(exc), status_code=422 if request.method == "POST" else 400)

    async def not_found(request: Request, exc: Exception) -> Response:
        return PlainTextResponse(str(exc), status_code=404)

    return Starlette(
        routes=[
            Route("/", goals, name="goals"),
            Route("/login", login, methods=["GET", "POST"], name="login"),
            Route("/goals/{goal:path}/live", goal_live, name="goal_live"),
            Route("/goals/{goal:path}/series.json", goal_series, name="goal_series"),
            Route("/goals/{goal:path}/paths/{path_id}/enabled", set_enabled, methods=["POST"], name="set_enabled"),
            Route("/goals/{goal:path}/config", set_config, methods=["POST"], name="set_config"),
            Route("/goals/{goal:path}", goal, name="goal"),
            Route("/decisions", decisions, name="decisions"),
            Route("/traces/{trace_id}", trace, name="trace"),
            Mount("/static", StaticFiles(directory=_HERE / "static"), name="static"),
        ],
        exception_handlers={
            _Unauthenticated: unauthenticated,
            PermissionError: refused,
            UserError: bad_input,
            LookupError: not_found,
        },
    )


def _known_goal(store: Store, tenant: str, goal: str) -> str:
    """``goal`` if the tenant has it; another tenant's goal is as unknown as a goal nobody has."""
    check_goal(goal)
    if goal not in store.goals(tenant):
        raise LookupError(f"no goal {goal!r} for this API key's tenant")
    return goal


def _config_from_form(current: PolicyConfig, form: dict[str, str]) -> PolicyConfig:
    try:
        values: dict[str, Any] = {
            "exploration_rate": float(form["exploration_rate"]),
            "min_samples_before_exploit": int(form["min_samples_before_exploit"]),
            "staleness_days": float(form["staleness_days"]),
        }
    except ValueError as exc:
        raise UserError(f"invalid exploration config {form!r}: give numbers ({exc})") from exc
    values["exploration_on_high_risk"] = form["exploration_on_high_risk"] in ("1", "on", "true")
    return dataclasses.replace(current, **values)


def _pct(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value * 100:.{digits}f}%"


def _usd(value: float | None) -> str:
    return "–" if value is None else f"${value:.5f}"


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f} ms"
