"""What the service does, without HTTP: one engine per tenant over one shared store.

Routes in ``app.py`` only parse, authenticate and call these methods; every failure here is a
``ServiceError`` carrying its status, so the batch endpoint reuses the single-report logic unchanged.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any, get_args

import anyio.to_thread

from kalibr._domain import Decision, Outcome, Path, Usage, resolve_score
from kalibr._exceptions import UserError
from kalibr._types import FailureCategory, OutcomeSource, check_failure_category
from kalibr.intelligence.base import Constraints
from kalibr.intelligence.engine import Engine
from kalibr.service import _schemas as s
from kalibr.service._caches import PathCache, RecentDecisions
from kalibr.service._errors import Invalid, NotFound, ServiceError
from kalibr.stores.base import OutcomeChanges, PathRecord, Store

__all__ = ["Backend", "EngineFactory"]

EngineFactory = Callable[[Store, str], Engine]
"""Builds the engine of one tenant over the shared store."""

_NUMERIC_METADATA = ("cost_usd", "latency_ms", "input_tokens", "output_tokens")
_PROVIDER_PREFIXES = (
    ("gpt-", "openai"),
    ("o1", "openai"),
    ("o3", "openai"),
    ("o4", "openai"),
    ("claude", "anthropic"),
    ("gemini", "google"),
    ("deepseek", "deepseek"),
    ("llama", "meta"),
    ("mistral", "mistral"),
)


def default_engine_factory(refresh_interval: float) -> EngineFactory:
    """Engines that re-read arms every ``refresh_interval`` and write in groups.

    Decisions are written behind (within 5 ms, many per transaction). A report is answered once it is committed,
    but concurrent reports share one commit (``Engine.flushed``): write-through engines, one commit per report,
    serialized reports at one fsync each (~80/s on PostgreSQL here).
    """

    def build(store: Store, tenant: str) -> Engine:
        return Engine(store, tenant=tenant, write_behind=True, refresh_interval=refresh_interval, flush_interval=0.005)

    return build


class Backend:
    """The service's operations, each scoped to the tenant the caller authenticated as."""

    def __init__(self, store: Store, engine_factory: EngineFactory, *, path_cache_seconds: float = 0.5) -> None:
        self.store = store
        self._engine_factory = engine_factory
        self._engines: dict[str, Engine] = {}
        self._engines_lock = threading.Lock()
        self._paths = PathCache(store, path_cache_seconds)
        self._recent = RecentDecisions()
        self._commits: dict[tuple[Future[None], asyncio.AbstractEventLoop], asyncio.Future[None]] = {}
        self._generators: list[Any] = []

    def engine(self, tenant: str) -> Engine:
        engine = self._engines.get(tenant)
        if engine is None:
            with self._engines_lock:
                engine = self._engines.get(tenant)
                if engine is None:
                    engine = self._engines[tenant] = self._engine_factory(self.store, tenant)
                    self._start_path_generation(tenant)
        return engine

    def _start_path_generation(self, tenant: str) -> None:
        """With ``KALIBR_AUTO_PATH_GENERATION`` set, one generation job per tenant: the paths it registers are
        ordinary registered paths, so every decide of the goal considers them."""
        from kalibr.path_generation import PathGenerator, flag_enabled

        if flag_enabled():
            job = PathGenerator(self.store, tenant=tenant)
            job.start()
            self._generators.append(job)

    def close(self) -> None:
        with self._engines_lock:
            engines, self._engines = list(self._engines.values()), {}
            generators, self._generators = self._generators, []
        for job in generators:
            job.stop()
        for engine in engines:
            engine.flush()
            engine.close()

    def warm_up(self) -> None:
        """Import and run, once at start, what a tenant's first decide would (the policy, numpy's generator, path
        generation): ~200 ms that would push a fresh replica's first decide past a client's 50 ms timeout, and a
        timeout opens the client's breaker."""
        import kalibr.path_generation  # noqa: F401
        from kalibr.stores.memory import MemoryStore

        scratch = self._engine_factory(MemoryStore(), "warm-up")
        try:
            scratch.decide("warm_up", [Path("warm-up-a"), Path("warm-up-b")])
        finally:
            scratch.close()

    def readiness(self) -> s.HealthResponse:
        """Ready when the store answers (a StoreError is a 503 saying only that)."""
        self.store.tenant_for_key("0" * 64)
        return s.HealthResponse(status="ready")

    # --- paths ----------------------------------------------------------------------------------------------
    def register_path(self, tenant: str, request: s.PathRequest) -> s.PathResponse:
        record = self._register(
            tenant, request.goal, request.model_id, request.params, request.tool_id, request.risk_level
        )
        return _path_response(record)

    def list_paths(self, tenant: str, goal: str | None, include_disabled: bool) -> s.PathsResponse:
        records = self.store.list_paths(tenant, goal, include_disabled=include_disabled)
        return s.PathsResponse(paths=[_path_response(r) for r in records])

    def disable_path(self, tenant: str, path_id: str) -> s.DisableResponse:
        if not self.store.set_path_enabled(tenant, path_id, False):
            raise NotFound(f"no path {path_id!r}: list this tenant's paths with GET /api/v1/routing/paths")
        self._paths.forget(tenant)
        return s.DisableResponse(status="disabled", path_id=path_id)

    def _register(
        self,
        tenant: str,
        goal: str,
        model: str,
        params: Mapping[str, Any] | None,
        tool_id: str | None,
        risk_level: str = "low",
    ) -> PathRecord:
        try:
            path = Path(model, params=dict(params or {}))
        except UserError as exc:
            raise Invalid(str(exc)) from exc
        record = PathRecord(
            goal=goal, path=path, enabled=True, created_at=datetime.now(UTC), risk_level=risk_level, tool_id=tool_id
        )
        stored = self.store.register_path(tenant, record)
        self._paths.forget(tenant, goal)
        return stored

    # --- decide ---------------------------------------------------------------------------------------------
    def decide(self, tenant: str, request: s.DecideRequest) -> s.DecideResponse:
        """``request.count`` independent draws (our extension), each decided and recorded on its own."""
        candidates = self._candidates(tenant, request)
        paths = [record.path for record in candidates]
        engine = self.engine(tenant)
        high_risk = request.task_risk_level == "high"
        draws = [
            self._decided(tenant, request.goal, candidates, engine.decide(request.goal, paths, high_risk=high_risk))
            for _ in range(request.count)
        ]
        return s.DecideResponse(**draws[0], more=[s.Decided(**draw) for draw in draws[1:]])

    def _decided(self, tenant: str, goal: str, candidates: list[PathRecord], decision: Decision) -> dict[str, Any]:
        """The wire fields of one decision, remembered so its report needs no store read."""
        self._recent.add(tenant, decision.trace_id, (goal, decision.path_id, decision.model))
        chosen = next((r for r in candidates if r.path.path_id == decision.path_id), candidates[0])
        return {
            "trace_id": decision.trace_id,
            "path_id": decision.path_id,
            "model_id": decision.model,
            "tool_id": chosen.tool_id,
            "params": dict(decision.path.params),
            "goal": goal,
            "reason": decision.reason,
            "confidence": decision.confidence,
            "exploration": decision.exploration,
            "success_rate": decision.success_rate,
            "sample_count": decision.sample_count,
            "decided_at": decision.decided_at,
            "alternatives_considered": len(candidates),
        }

    def _candidates(self, tenant: str, request: s.DecideRequest) -> list[PathRecord]:
        goal = request.goal
        records = self._paths.get(tenant, goal)
        if request.paths:
            records = self._ensure_registered(tenant, goal, request.paths, records)
        if not records:
            raise NotFound(f"goal {goal!r} has no registered paths: register one with POST /api/v1/routing/paths")
        enabled = [r for r in records if r.enabled]
        if request.candidate_model_ids is not None:
            wanted = set(request.candidate_model_ids)
            enabled = [r for r in enabled if r.path.model in wanted]
            if not enabled:
                raise NotFound(
                    f"none of candidate_model_ids {sorted(wanted)} is an enabled path of goal {goal!r}: "
                    "register them with POST /api/v1/routing/paths"
                )
        if not enabled:
            raise NotFound(f"every path of goal {goal!r} is disabled: register or re-enable one")
        return enabled

    def _ensure_registered(
        self, tenant: str, goal: str, wanted: Sequence[s.CandidatePath], records: list[PathRecord]
    ) -> list[PathRecord]:
        by_id = {r.path.path_id: r for r in records}
        chosen: list[PathRecord] = []
        for candidate in wanted:
            try:
                path_id = Path(candidate.model_id, params=dict(candidate.params or {})).path_id
            except UserError as exc:
                raise Invalid(f"paths: {exc}") from exc
            record = by_id.get(path_id)
            if record is None:
                record = self._register(tenant, goal, candidate.model_id, candidate.params, candidate.tool_id)
            chosen.append(record)
        return chosen

    # --- outcomes -------------------------------------------------------------------------------------------
    async def report(self, tenant: str, request: s.ReportRequest) -> s.ReportResponse:
        """Apply an outcome and answer once it is committed, without blocking the event loop. The first outcome of a
        decision this replica made is applied right here, in memory; any other needs the store (to find its
        decision, or to correct the outcome already written), so it is applied in a worker thread. Either way the
        answer waits for the commit it shares with every report queued meanwhile (group commit)."""
        engine = self.engine(tenant)
        decided = self._recent.get(tenant, request.trace_id)
        if decided is not None and not engine.has_outcome(request.trace_id):
            engine.report(self._outcome(tenant, request, decided))
        else:
            await anyio.to_thread.run_sync(lambda: engine.report(self._outcome(tenant, request)))
        await self._committed(engine)
        self._recent.forget(tenant, [request.trace_id])
        return s.ReportResponse(status="accepted", trace_id=request.trace_id, goal=request.goal)

    async def _committed(self, engine: Engine) -> None:
        """Wait, without blocking the event loop, for the commit every report queued so far shares. Reports waiting for
        the same commit share one asyncio future, so the writer wakes the loop once per commit, not once per report;
        each waits through a shield, so a cancelled request cannot cancel the others' wait."""
        commit = engine.flushed()
        key = (commit, asyncio.get_running_loop())
        waiting = self._commits.get(key)
        if waiting is None:
            waiting = self._commits[key] = asyncio.wrap_future(commit)
            waiting.add_done_callback(lambda _: self._commits.pop(key, None))
        await asyncio.shield(waiting)

    def report_batch(self, tenant: str, request: s.ReportBatchRequest) -> s.ReportBatchResponse:
        """Each item is accepted or rejected on its own; the accepted ones share one commit."""
        engine = self.engine(tenant)
        results: list[s.BatchItemResult] = []
        for item in request.outcomes:
            try:
                engine.report(self._outcome(tenant, item))
                results.append(s.BatchItemResult(trace_id=item.trace_id, status="accepted", status_code=200))
            except ServiceError as exc:
                rejected = s.BatchItemResult(
                    trace_id=item.trace_id, status="rejected", status_code=exc.status_code, message=exc.message
                )
                results.append(rejected)
        engine.flushed().result()
        self._recent.forget(tenant, [result.trace_id for result in results if result.status == "accepted"])
        return s.ReportBatchResponse(results=results)

    def _outcome(self, tenant: str, request: s.ReportRequest, decided: tuple[str, str, str] | None = None) -> Outcome:
        path_id, model = self._attribute(tenant, request, decided or self._recent.get(tenant, request.trace_id))
        metadata = _numeric_metadata(request.metadata)
        try:
            return Outcome(
                trace_id=request.trace_id,
                goal=request.goal,
                path_id=path_id,
                model=model,
                score=resolve_score(request.success, request.score),
                success=request.success,
                failure_category=_category(request.failure_category),
                reason=request.failure_reason,
                cost_usd=metadata.get("cost_usd"),
                latency_ms=metadata.get("latency_ms"),
                usage=_usage(metadata),
                source=_source(request.metadata),
            )
        except UserError as exc:
            raise Invalid(str(exc)) from exc

    def _attribute(
        self, tenant: str, request: s.ReportRequest, decided: tuple[str, str, str] | None
    ) -> tuple[str, str | None]:
        """The path an outcome counts for: its decision's (``decided``: from this replica's memory, if it made the
        decision; else from the store), else the registered path of its ``model_id``."""
        if decided is None:
            decided = self._stored_decision(tenant, request.trace_id, wait=request.model_id is None)
        if decided is not None:
            goal, path_id, model = decided
            if goal != request.goal:
                raise Invalid(
                    f"goal: trace_id {request.trace_id!r} was decided for goal {goal!r}, not {request.goal!r}"
                )
            return path_id, model
        if request.model_id is None:
            raise NotFound(
                f"unknown trace_id {request.trace_id!r}: this service issued no such decision; "
                "send model_id as well so the outcome can be counted for that model's path"
            )
        matches = [r for r in self._paths.get(tenant, request.goal) if r.path.model == request.model_id]
        if request.execution_params and matches:
            # Params name one path of the model; a model's other paths count only if none of them is registered.
            matches = [r for r in matches if dict(r.path.params) == request.execution_params] or (
                [] if self._registers(request) else matches
            )
        if not matches:
            if not self._registers(request):
                raise NotFound(
                    f"unknown trace_id {request.trace_id!r}, and model_id {request.model_id!r} is no registered path "
                    f"of goal {request.goal!r}: register it with POST /api/v1/routing/paths, or send "
                    "execution_params (even {}) with the outcome so the service registers its path"
                )
            # The client says which path it took (a fallback during an outage, a store that was reset): that path
            # is registered, as a decide naming it would, so no outcome is lost for want of a registration.
            record = self._register(tenant, request.goal, request.model_id, request.execution_params, request.tool_id)
            return record.path.path_id, record.path.model
        return matches[0].path.path_id, matches[0].path.model

    @staticmethod
    def _registers(request: s.ReportRequest) -> bool:
        """An outcome that carries its path's params (our client always sends them) registers an unknown path;
        one with a bare model_id (the official SDK) only counts for a registered path of that model."""
        return request.model_id is not None and request.execution_params is not None

    def _stored_decision(self, tenant: str, trace_id: str, *, wait: bool) -> tuple[str, str, str] | None:
        """The decision of ``trace_id`` from the store. With ``wait``, a decision just made by another replica may
        still be in that replica's write-behind queue (flushed every few ms): look again, briefly, before 404."""
        for pause in (0.0, 0.01, 0.02, 0.04, 0.08) if wait else (0.0,):
            if pause:
                time.sleep(pause)  # bounded (150 ms in all); only for a report about to be refused
            record = self.store.get_decision(tenant, trace_id)
            if record is not None:
                return record.goal, record.path_id, record.model
        return None

    def update_outcome(self, tenant: str, request: s.UpdateRequest) -> s.UpdateResponse:
        score = request.score
        if score is None and request.success is not None:
            score = 1.0 if request.success else 0.0
        changes = OutcomeChanges(
            score=score,
            success=request.success,
            failure_category=_category(request.failure_category),
            reason=request.failure_reason,
        )
        try:
            fields = self.engine(tenant).update_outcome(request.trace_id, request.goal, changes)
        except LookupError as exc:  # kalibr.OutcomeNotFound
            raise NotFound(
                f"no outcome with trace_id {request.trace_id!r} for goal {request.goal!r}: "
                "report it first with POST /api/v1/intelligence/report-outcome"
            ) from exc
        except UserError as exc:
            raise Invalid(str(exc)) from exc
        wire_names = {"reason": "failure_reason"}
        return s.UpdateResponse(
            status="updated",
            trace_id=request.trace_id,
            goal=request.goal,
            fields_updated=[wire_names.get(name, name) for name in fields],
        )

    # --- policy, insights, config ---------------------------------------------------------------------------
    def policy(self, tenant: str, request: s.PolicyRequest) -> s.PolicyResponse:
        limits = request.constraints or s.PolicyConstraints()
        constraints = Constraints(
            max_cost_usd=limits.max_cost_usd,
            max_latency_ms=limits.max_latency_ms,
            min_quality=limits.min_quality,
            min_confidence=limits.min_confidence,
        )
        answer = self.engine(tenant).get_policy(
            request.goal, window_hours=request.window_hours, constraints=constraints
        )
        return s.PolicyResponse(
            goal=request.goal,
            recommended_model=answer.recommended_model,
            recommended_provider=_provider_of(answer.recommended_model),
            outcome_success_rate=answer.success_rate,
            outcome_sample_count=answer.sample_count,
            confidence=answer.confidence,
            risk_score=1.0 - answer.success_rate if answer.success_rate is not None else 1.0,
            reasoning=answer.reasoning,
            alternatives=[dict(alternative) for alternative in answer.alternatives],
        )

    def insights(self, tenant: str, goal: str | None, window_hours: float) -> dict[str, Any]:
        report = dict(self.engine(tenant).get_insights(goal, window_hours=window_hours))
        report["tenant_id"] = tenant
        return report

    def get_config(self, tenant: str, goal: str) -> s.ConfigBody:
        return s.ConfigBody.of(goal, self.store.get_config(tenant, goal))

    def set_config(self, tenant: str, body: s.ConfigBody) -> s.ConfigBody:
        current = self.store.get_config(tenant, body.goal)
        try:
            config = body.applied_to(current)
        except UserError as exc:  # e.g. two cost settings at once
            raise Invalid(str(exc)) from exc
        self.engine(tenant).set_config(body.goal, config)  # applied by this replica's next decide
        return s.ConfigBody.of(body.goal, config)


def _path_response(record: PathRecord) -> s.PathResponse:
    return s.PathResponse(
        path_id=record.path.path_id,
        goal=record.goal,
        model_id=record.path.model,
        tool_id=record.tool_id,
        params=dict(record.path.params),
        risk_level=record.risk_level,
        created_at=record.created_at,
        enabled=record.enabled,
    )


def _category(wire: str | None) -> FailureCategory | None:
    """``healed`` (sent by the official SDK) is a recovered call, not a failure mode: stored as none."""
    return None if wire is None or wire == "healed" else check_failure_category(wire)


def _source(metadata: Mapping[str, Any] | None) -> OutcomeSource:
    """Who produced the outcome (our client sends it), so an explicit report can override an automatic one."""
    source = (metadata or {}).get("source")
    for known in get_args(OutcomeSource):
        if source == known:
            return known  # type: ignore[no-any-return]
    return "explicit"


def _numeric_metadata(metadata: Mapping[str, Any] | None) -> dict[str, float]:
    """Only the known numeric fields of ``metadata`` are kept; anything else may be private and is dropped."""
    if not metadata:
        return {}
    kept: dict[str, float] = {}
    for name in _NUMERIC_METADATA:
        value = metadata.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
            kept[name] = float(value)
    return kept


def _usage(metadata: Mapping[str, float]) -> Usage | None:
    if "input_tokens" not in metadata and "output_tokens" not in metadata:
        return None
    return Usage(int(metadata.get("input_tokens", 0)), int(metadata.get("output_tokens", 0)))


def _provider_of(model: str | None) -> str | None:
    if model is None:
        return None
    if "/" in model:
        return model.split("/", 1)[0]
    lowered = model.lower()
    return next((provider for prefix, provider in _PROVIDER_PREFIXES if lowered.startswith(prefix)), None)
