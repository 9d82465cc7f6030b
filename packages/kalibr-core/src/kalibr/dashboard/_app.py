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
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from kalibr._domain import check_goal
from kalibr._exceptions import UserError
from kalibr.dashboard import _views as views
from kalibr.dashboard._analysis import Analyses
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
    pages = _Pages(store, tenant_for_key, read_only, clock or (lambda: datetime.now(UTC)))
    return Starlette(
        routes=[
            Route("/", pages.goals, name="goals"),
            Route("/login", pages.login, methods=["GET", "POST"], name="login"),
            Route("/goals/{goal:path}/live", pages.goal_live, name="goal_live"),
            Route("/goals/{goal:path}/series.json", pages.goal_series, name="goal_series"),
            Route(
                "/goals/{goal:path}/paths/{path_id}/enabled", pages.set_enabled, methods=["POST"], name="set_enabled"
            ),
            Route("/goals/{goal:path}/config", pages.set_config, methods=["POST"], name="set_config"),
            Route("/goals/{goal:path}", pages.goal, name="goal"),
            Route("/decisions", pages.decisions, name="decisions"),
            Route("/traces/{trace_id}", pages.trace, name="trace"),
            Mount("/static", StaticFiles(directory=_HERE / "static"), name="static"),
        ],
        exception_handlers={
            _Unauthenticated: _unauthenticated,
            PermissionError: _refused,
            UserError: _bad_input,
            LookupError: _not_found,
        },
    )


class _Pages:
    """The route handlers, sharing the store, the key check and the templates."""

    def __init__(
        self, store: Store, tenant_for_key: TenantForKey, read_only: bool, clock: Callable[[], datetime]
    ) -> None:
        self.store = store
        self.tenant_for_key = tenant_for_key
        self.read_only = read_only
        self.clock = clock
        self.analyses = Analyses(store)
        self.templates = Jinja2Templates(directory=_HERE / "templates")
        self.templates.env.filters.update(pct=_pct, usd=_usd, ms=_ms)
        self.templates.env.auto_reload = False  # templates ship in the wheel: no stat() per render

    def tenant_of(self, request: Request) -> str:
        key = request.headers.get("x-api-key") or request.cookies.get(COOKIE)
        tenant = self.tenant_for_key(key) if key else None
        if tenant is None:
            raise _Unauthenticated
        return tenant

    def page(self, request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
        context.setdefault("read_only", self.read_only)
        context["base"] = request.scope.get("root_path", "")  # links are built from it: url_for is slow per row
        return self.templates.TemplateResponse(request, name, context, status_code=status_code)

    def window(self, request: Request) -> tuple[str, datetime, datetime]:
        chosen = request.query_params.get("window", "24h")
        if chosen not in WINDOWS:
            raise UserError(f"invalid window {chosen!r}: choose one of {', '.join(map(repr, WINDOWS))}")
        moment = self.clock()
        return chosen, moment - timedelta(hours=WINDOWS[chosen]), moment

    async def login(self, request: Request) -> Response:
        key = request.query_params.get("key")
        if request.method == "POST":
            key = (await _form(request)).get("key", "").strip()
        if not key:
            return self.page(request, "login.html", error=None)
        if self.tenant_for_key(key) is None:
            error = "that key is not valid: create one with `kalibr keys create --tenant NAME`"
            return self.page(request, "login.html", status_code=401, error=error)
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

    def goals(self, request: Request) -> Response:
        tenant = self.tenant_of(request)
        chosen, since, moment = self.window(request)
        rows = views.goal_rows(self.store, self.analyses, tenant, since, moment)
        return self.page(request, "goals.html", rows=rows, window=chosen, windows=WINDOWS, tenant=tenant)

    def goal_context(self, request: Request) -> dict[str, Any]:
        tenant = self.tenant_of(request)
        goal = _known_goal(self.store, tenant, request.path_params["goal"])
        chosen, since, moment = self.window(request)
        view = views.goal_view(self.store, self.analyses, tenant, goal, since, moment)
        return {"view": view, "window": chosen, "windows": WINDOWS, "tenant": tenant}

    def goal(self, request: Request) -> Response:
        return self.page(request, "goal.html", **self.goal_context(request))

    def goal_live(self, request: Request) -> Response:
        return self.page(request, "_goal_live.html", **self.goal_context(request))

    def goal_series(self, request: Request) -> Response:
        tenant = self.tenant_of(request)
        goal = _known_goal(self.store, tenant, request.path_params["goal"])
        _, since, moment = self.window(request)
        return JSONResponse(views.goal_series(self.store, tenant, goal, since, moment))

    def decisions(self, request: Request) -> Response:
        tenant = self.tenant_of(request)
        query = request.query_params
        goal = query.get("goal") or None
        if goal is not None:
            check_goal(goal)
        path_id = query.get("path_id") or None
        trace_id = query.get("trace_id") or None
        rows = self.store.recent_decisions(tenant, goal, path_id=path_id, trace_id=trace_id, limit=200)
        paths = self.store.list_paths(tenant, goal, include_disabled=True)
        return self.page(
            request,
            "decisions.html",
            rows=rows,
            goals=self.store.goals(tenant),
            paths=paths,
            labels={record.path.path_id: views.path_label(record) for record in paths},
            goal=goal,
            path_id=path_id,
            tenant=tenant,
        )

    def trace(self, request: Request) -> Response:
        tenant = self.tenant_of(request)
        found = self.store.recent_decisions(tenant, trace_id=request.path_params["trace_id"], limit=1)
        if not found:
            return self.page(request, "missing.html", status_code=404, what="trace", tenant=tenant)
        return self.page(request, "trace.html", row=found[0], tenant=tenant)

    def guard(self, request: Request) -> str:
        """The tenant of an action, refused in read-only mode or without the header a cross-site form lacks."""
        tenant = self.tenant_of(request)
        if self.read_only:
            raise PermissionError("this dashboard is read-only (started with --read-only)")
        if "hx-request" not in request.headers and "x-api-key" not in request.headers:
            raise PermissionError("actions come from the dashboard's own buttons (the HX-Request header is missing)")
        return tenant

    async def set_enabled(self, request: Request) -> Response:
        tenant = self.guard(request)
        goal = _known_goal(self.store, tenant, request.path_params["goal"])
        path_id = request.path_params["path_id"]
        records = [r for r in self.store.list_paths(tenant, goal, include_disabled=True) if r.path.path_id == path_id]
        if not records:
            raise LookupError(f"goal {goal!r} has no path {path_id!r}")
        enabled = (await _form(request)).get("enabled") == "1"
        self.store.set_path_enabled(tenant, path_id, enabled)
        data = {"path_id": path_id, "model": records[0].path.model, "by": "dashboard"}
        self.store.record_event(tenant, goal, "path_enabled" if enabled else "path_disabled", data)
        self.analyses.forget(tenant)
        return Response(status_code=204, headers={"HX-Refresh": "true"})

    async def set_config(self, request: Request) -> Response:
        tenant = self.guard(request)
        goal = _known_goal(self.store, tenant, request.path_params["goal"])
        form = await _form(request)
        current = self.store.get_config(tenant, goal)
        config = _config_from_form(current, {name: form.get(name, "") for name in _CONFIG_FIELDS})
        self.store.set_config(tenant, goal, config)
        changed = {
            name: {"from": getattr(current, name), "to": getattr(config, name)}
            for name in _CONFIG_FIELDS
            if getattr(current, name) != getattr(config, name)
        }
        self.store.record_event(tenant, goal, "config_changed", {"changes": changed, "by": "dashboard"})
        self.analyses.forget(tenant)
        return Response(status_code=204, headers={"HX-Refresh": "true"})


async def _unauthenticated(request: Request, exc: Exception) -> Response:
    if request.method == "GET" and "hx-request" not in request.headers:
        return RedirectResponse(request.url_for("login"), status_code=303)
    return PlainTextResponse("an API key is needed: log in again", status_code=401)


async def _refused(request: Request, exc: Exception) -> Response:
    return PlainTextResponse(str(exc), status_code=403)


async def _bad_input(request: Request, exc: Exception) -> Response:
    return PlainTextResponse(str(exc), status_code=422 if request.method == "POST" else 400)


async def _not_found(request: Request, exc: Exception) -> Response:
    return PlainTextResponse(str(exc), status_code=404)


async def _form(request: Request) -> dict[str, str]:
    """A URL-encoded form (what the dashboard's forms and htmx send), without the multipart parser's dependency."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        raise UserError("send the form URL-encoded (application/x-www-form-urlencoded)")
    return {name: values[-1] for name, values in parse_qs((await request.body()).decode()).items()}


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
