"""Automatic path generation: try parameter values between and beyond the ones declared, keep what works.

Behind the ``auto_path_generation`` feature flag (``KALIBR_AUTO_PATH_GENERATION=1``, or passing
``enabled=True``), a background job runs every ``interval_s`` (an hour by default). For each goal it looks at
paths of one model that differ in one numeric parameter (temperature, top_p...) and proposes:

* an interpolated value: halfway between the best measured value and its better neighbour;
* an extrapolated value, when the best is the highest or lowest value tried: one step beyond it.

Values stay within safe bounds (temperature 0-2, top_p 0-1 by default; parameters without bounds are never
touched). A new path gets ordinary exploration traffic; once it has ``min_samples`` outcomes and is clearly
worse than the goal's best path (more than the tie tolerance below it, p < 0.1) it is disabled, and so is one
the policy stopped exploring because even its 95% upper bound is below the best (after 5 outcomes). Every
generation and retirement is written to the change log that insights shows (``path_changes``).

Routers learn about generated paths through ``GeneratedPathsIntelligence``, which wraps any intelligence and
adds the goal's enabled generated paths to the ones the router declares.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from kalibr._domain import Decision, Outcome, Path
from kalibr._exceptions import UserError
from kalibr.insights import generated_path_ids, record_change
from kalibr.insights._goal import ParamGroup, numeric_groups
from kalibr.insights._stats import PathStats, compare_rates, summarise_paths
from kalibr.intelligence.base import Constraints, Intelligence, PolicyAnswer
from kalibr.stores.base import DEFAULT_TENANT, OutcomeChanges, PathRecord, Store

__all__ = [
    "FLAG_ENV",
    "GeneratedPathsIntelligence",
    "PathGenerationConfig",
    "PathGenerator",
    "Proposal",
    "Retirement",
    "flag_enabled",
    "propose_paths",
    "retire_paths",
]

logger = logging.getLogger("kalibr.path_generation")

FLAG_ENV = "KALIBR_AUTO_PATH_GENERATION"
_EARLY_SAMPLES = 5
DEFAULT_BOUNDS: Mapping[str, tuple[float, float]] = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "frequency_penalty": (-2.0, 2.0),
    "presence_penalty": (-2.0, 2.0),
}


def flag_enabled(explicit: bool | None = None) -> bool:
    """The ``auto_path_generation`` flag: ``explicit`` when given, else ``KALIBR_AUTO_PATH_GENERATION``."""
    if explicit is not None:
        return explicit
    return os.environ.get(FLAG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True, slots=True)
class PathGenerationConfig:
    """How the job explores. Usage::

    PathGenerationConfig(interval_s=600, min_samples=30, bounds={"temperature": (0.0, 1.5)})
    """

    interval_s: float = 3600.0
    min_samples: int = 30
    """Outcomes a generated path needs before it can be retired as underperforming."""
    min_samples_to_propose: int = 1
    """Outcomes each parameter value needs before the values guide a proposal. One on purpose: the router
    rightly starves a value that looks worse, so waiting for many outcomes of every value stalls the search
    (measured: 9 runs in 10 on the param-curve sandbox never proposed anything at 30). Bad guesses cost little:
    at most ``max_generated`` live at once, each retired when it proves worse."""
    max_generated: int = 4
    """Generated paths alive at once per (model, parameter) group."""
    min_step: float = 0.05
    """Never propose a value closer than this to one already tried."""
    window_hours: float = 168.0
    tie_tolerance: float = 0.05
    retire_p_value: float = 0.1
    bounds: Mapping[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_BOUNDS))

    def __post_init__(self) -> None:
        if self.interval_s <= 0:
            raise UserError(f"interval_s {self.interval_s!r} must be > 0 seconds (3600 runs hourly)")
        if self.min_samples < 1 or self.min_samples_to_propose < 1:
            raise UserError(
                f"min_samples ({self.min_samples!r}) and min_samples_to_propose ({self.min_samples_to_propose!r}) "
                "must be >= 1"
            )
        for name, (low, high) in self.bounds.items():
            if not low < high:
                raise UserError(f"bounds for {name!r} must be (low, high) with low < high, got {(low, high)!r}")


@dataclass(frozen=True, slots=True)
class Proposal:
    """A new path to try: ``base_path_id`` with ``param`` set to ``value``."""

    goal: str
    base_path_id: str
    model: str
    param: str
    value: float
    params: Mapping[str, Any]
    kind: Literal["interpolate", "extrapolate"]
    reason: str


@dataclass(frozen=True, slots=True)
class Retirement:
    """A generated path to disable, and why."""

    goal: str
    path_id: str
    label: str
    reason: str


def propose_paths(goal: str, stats: Sequence[PathStats], config: PathGenerationConfig) -> list[Proposal]:
    """New parameter values worth trying for ``goal``, from its per-path results. Pure."""
    proposals: list[Proposal] = []
    for group in numeric_groups(stats):
        bounds = config.bounds.get(group.param)
        if bounds is not None:
            proposals += _propose_in_group(goal, group, bounds, config)
    return proposals


def _propose_in_group(
    goal: str, group: ParamGroup, bounds: tuple[float, float], config: PathGenerationConfig
) -> list[Proposal]:
    live_generated = [item for _, item in group.values if item.generated and item.enabled]
    if any(item.samples < config.min_samples_to_propose for item in live_generated):
        return []  # the last round is still being evaluated
    room = config.max_generated - len(live_generated)
    enough = config.min_samples_to_propose
    measured = [(v, item) for v, item in group.values if item.enabled and item.samples >= enough]
    if room <= 0 or len({v for v, _ in measured}) < 2:
        return []
    tried = [v for v, _ in group.values]
    best_index = max(range(len(measured)), key=lambda i: measured[i][1].success_rate or 0.0)
    best_value, best = measured[best_index]
    candidates: list[tuple[float, Literal["interpolate", "extrapolate"]]] = []
    neighbours = [measured[i] for i in (best_index - 1, best_index + 1) if 0 <= i < len(measured)]
    better = max(neighbours, key=lambda pair: pair[1].success_rate or 0.0)
    candidates.append(((best_value + better[0]) / 2, "interpolate"))
    if best_index in (0, len(measured) - 1):
        step = abs(best_value - neighbours[0][0])
        candidates.append((best_value + (step if best_index else -step), "extrapolate"))
    found = []
    for raw, kind in candidates:
        value = round(min(max(raw, bounds[0]), bounds[1]), 4)
        if any(abs(value - other) < config.min_step for other in tried):
            continue
        tried.append(value)
        params = {**group.fixed_params, group.param: value}
        reason = (
            f"{group.param}={best_value:g} is the best of {sorted({v for v, _ in measured})} for {group.model!r} "
            f"({best.success_rate:.0%}); {kind} to {value:g}"
        )
        found.append(Proposal(goal, best.path_id, group.model, group.param, value, params, kind, reason))
    return found[:room]


def retire_paths(goal: str, stats: Sequence[PathStats], config: PathGenerationConfig) -> list[Retirement]:
    """Generated paths doing clearly worse than the goal's best path. Pure.

    Retired after ``min_samples`` outcomes when more than ``tie_tolerance`` below the best (p <
    ``retire_p_value``); or sooner, after ``_EARLY_SAMPLES``, when even its 95% upper bound is that far below:
    the policy stops exploring such a path, so it would otherwise never reach ``min_samples``.
    """
    measured = [item for item in stats if item.enabled and item.samples >= config.min_samples]
    if not measured:
        return []
    best = max(measured, key=lambda item: item.success_rate or 0.0)
    best_rate = best.success_rate or 0.0
    retired = []
    for item in stats:
        if not item.generated or not item.enabled or item is best or item.samples < _EARLY_SAMPLES:
            continue
        comparison = compare_rates(best.successes, best.samples, item.successes, item.samples)
        worse = comparison.difference > config.tie_tolerance and comparison.p_value < config.retire_p_value
        ruled_out = item.interval[1] < best_rate - config.tie_tolerance
        if (worse and item.samples >= config.min_samples) or ruled_out:
            reason = (
                f"{item.label!r} succeeded {item.success_rate:.0%} over {item.samples} outcomes vs "
                f"{best_rate:.0%} for {best.label!r} (p={comparison.p_value:.3g})"
            )
            retired.append(Retirement(goal, item.path_id, item.label, reason))
    return retired


class PathGenerator:
    """The job: ``run_once()`` makes one pass over the goals; ``start()`` runs it every ``interval_s``.

    Usage::

        job = PathGenerator(store, config=PathGenerationConfig(interval_s=600))
        job.start()  # ... job.stop()
    """

    def __init__(
        self,
        store: Store,
        *,
        tenant: str = DEFAULT_TENANT,
        config: PathGenerationConfig | None = None,
        goals: Sequence[str] | None = None,
    ) -> None:
        self.store = store
        self.tenant = tenant
        self.config = config or PathGenerationConfig()
        self.goals = None if goals is None else tuple(goals)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """One pass: retire what underperforms, then propose and register new paths; returns the changes."""
        now = now or datetime.now(UTC)
        made: list[dict[str, Any]] = []
        with self._lock:  # two passes at once would propose the same value twice
            for goal in self.goals if self.goals is not None else self.store.goals(self.tenant):
                made += self._run_goal(goal, now)
        return made

    def _run_goal(self, goal: str, now: datetime) -> list[dict[str, Any]]:
        registered = self.store.list_paths(self.tenant, goal, include_disabled=True)
        columns = self.store.outcome_columns(self.tenant, goal, now - timedelta(hours=self.config.window_hours))
        stats = summarise_paths(columns, registered, generated_path_ids(self.store, self.tenant, goal))
        made = []
        retirements = retire_paths(goal, stats, self.config)
        for retirement in retirements:
            self.store.set_path_enabled(self.tenant, retirement.path_id, False)
            why = {"path_id": retirement.path_id, "label": retirement.label, "reason": retirement.reason}
            made.append(record_change(self.store, self.tenant, goal, "path_retired", why))
        retired = {retirement.path_id for retirement in retirements}
        stats = [dataclasses.replace(item, enabled=False) if item.path_id in retired else item for item in stats]
        by_id = {record.path.path_id: record.path for record in registered}
        for proposal in propose_paths(goal, stats, self.config):
            base = by_id.get(proposal.base_path_id) or Path(proposal.model)
            path = dataclasses.replace(base, params=dict(proposal.params))
            self.store.register_path(self.tenant, PathRecord(goal, path, True, now))
            data: dict[str, Any] = {
                "path_id": path.path_id,
                "label": path.label,
                "based_on": proposal.base_path_id,
                "param": proposal.param,
                "value": proposal.value,
                "kind": proposal.kind,
                "reason": proposal.reason,
            }
            made.append(record_change(self.store, self.tenant, goal, "path_generated", data))
        return made

    def start(self) -> None:
        """Run ``run_once`` now and then every ``interval_s`` in a daemon thread, until ``stop()``."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="kalibr-path-generation", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:
                logger.exception("kalibr: path generation pass failed; retrying at the next interval")
            self._stop.wait(self.config.interval_s)


class GeneratedPathsIntelligence:
    """Wraps an intelligence so that decisions also consider the goal's enabled generated paths.

    A generated path is called like the declared path of the same model (same provider, base URL, key and
    price), with the generated params. ``job``, when given, is started here and stopped by ``close()``.

    Usage::

        engine = Engine(store)
        router = Router("summarize", paths, intelligence=GeneratedPathsIntelligence(engine, job=PathGenerator(store)))
    """

    def __init__(
        self,
        inner: Intelligence,
        store: Store | None = None,
        *,
        tenant: str | None = None,
        refresh_interval: float = 5.0,
        job: PathGenerator | None = None,
    ) -> None:
        found = store if store is not None else getattr(inner, "store", None)
        if found is None:
            raise UserError("GeneratedPathsIntelligence needs the store the generated paths live in: pass store=")
        self.inner = inner
        self.store: Store = found
        self.tenant: str = tenant or str(getattr(inner, "tenant", DEFAULT_TENANT))
        self.refresh_interval = refresh_interval
        self.job = job
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, tuple[Path, ...]]] = {}
        if job is not None:
            job.start()

    def paths_for(self, goal: str, declared: Sequence[Path]) -> tuple[Path, ...]:
        """The declared paths followed by the goal's enabled generated ones."""
        generated = self._generated(goal)
        known = {path.path_id for path in declared}
        extra = [_callable_like(stored, declared) for stored in generated if stored.path_id not in known]
        return (*declared, *extra)

    def _generated(self, goal: str) -> tuple[Path, ...]:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(goal)
            if cached is not None and now - cached[0] < self.refresh_interval:
                return cached[1]
        ids = generated_path_ids(self.store, self.tenant, goal)
        paths = tuple(r.path for r in self.store.list_paths(self.tenant, goal) if r.path.path_id in ids)
        with self._lock:
            self._cache[goal] = (now, paths)
        return paths

    def decide(self, goal: str, paths: Sequence[Path], *, high_risk: bool = False) -> Decision:
        return self.inner.decide(goal, self.paths_for(goal, paths), high_risk=high_risk)

    async def adecide(self, goal: str, paths: Sequence[Path], *, high_risk: bool = False) -> Decision:
        return await self.inner.adecide(goal, self.paths_for(goal, paths), high_risk=high_risk)

    def register_paths(self, goal: str, paths: Sequence[Path]) -> None:
        register = getattr(self.inner, "register_paths", None)
        if callable(register):
            register(goal, paths)

    def record_forced(self, decision: Decision) -> None:
        self.inner.record_forced(decision)

    def disabled_paths(self, goal: str) -> frozenset[str]:
        disabled_paths = getattr(self.inner, "disabled_paths", None)
        return disabled_paths(goal) if callable(disabled_paths) else frozenset()

    def report(self, outcome: Outcome) -> None:
        self.inner.report(outcome)

    async def areport(self, outcome: Outcome) -> None:
        await self.inner.areport(outcome)

    def update_outcome(self, trace_id: str, goal: str, changes: OutcomeChanges) -> list[str]:
        return self.inner.update_outcome(trace_id, goal, changes)

    def get_policy(
        self, goal: str, *, window_hours: float = 168, constraints: Constraints | None = None
    ) -> PolicyAnswer:
        return self.inner.get_policy(goal, window_hours=window_hours, constraints=constraints)

    def get_insights(self, goal: str | None = None, *, window_hours: float = 168) -> dict[str, Any]:
        return self.inner.get_insights(goal, window_hours=window_hours)

    def flush(self) -> None:
        self.inner.flush()

    def close(self) -> None:
        if self.job is not None:
            self.job.stop()
        self.inner.close()


def _callable_like(stored: Path, declared: Sequence[Path]) -> Path:
    """The stored generated path with the connection settings of the declared path of the same model."""
    for sibling in declared:
        if sibling.model == stored.model:
            candidate = dataclasses.replace(sibling, params=dict(stored.params))
            if candidate.path_id == stored.path_id:
                return candidate
    return stored
