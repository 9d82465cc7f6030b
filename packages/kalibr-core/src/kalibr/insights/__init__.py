"""Insights and policy: what the outcomes say about each goal, in a shape a coding agent can act on.

``recommend`` answers ``get_policy``; ``build_insights`` answers ``get_insights``. Both read the store only
here, in the entry functions; the analysis itself is pure (``analyse_goal``: records in, dict out).

Both judge each path on the evidence the router routes on: when the router's change detector found a drop on a
path (``kalibr.policies.drift``; the arms are read from the store) or, failing that, the window's outcomes show a
clear change (a likelihood-ratio scan), the path's outcomes before the drop are left out of its "current"
evidence. The recommendation, ``path_underperforming`` and ``cost_inefficiency`` use the current evidence, so a
broken path is not recommended on its stale record and the path the router moved to is not advised against; the
recommendation's reasoning says what changed and when, and ``drift_detected`` names the broken path. A provider
failure (timeout, 429, 5xx, and a 404/405 for a model or endpoint that does not exist) is reported against its
path as ``provider_error`` (or ``timeout``, ``rate_limited``, ``auth_error``); a path whose every call failed so
is ``failing`` with a ``path_failing`` signal.

The insights document (``schema_version`` 1; field names are stable, new fields may be added)::

    schema_version      1
    tenant_id           the tenant
    generated_at        ISO 8601, UTC
    window_hours        how far back the outcomes go
    goals[]             one per goal, worst status first:
      goal, status            healthy | degraded | failing | insufficient_data
                              (insufficient_data: < 20 outcomes; failing: < 50% success;
                               degraded: a drift, a declining trend or a high-severity signal)
      success_rate            mean score over the window (a score of 0.85 counts 0.85 of a success)
      sample_count            outcomes in the window
      trend                   {direction: improving|stable|declining|unknown, earlier_success_rate,
                               recent_success_rate, change, p_value}: later half vs earlier half of the outcomes
      top_failure_modes[]     {category, count, share_of_failures, rate, paths}
      paths[]                 {path_id, model, params, label, samples, traffic_share, success_rate, ci_low,
                               ci_high (95% Wilson), mean_cost_usd, mean_latency_ms, p95_latency_ms,
                               failure_modes, enabled, generated, status, current_samples,
                               current_success_rate, drift}
                              status: failing (never answered, or current evidence < 50% over >= 20
                              outcomes) | degraded (a drop) | insufficient_data (< 20 current outcomes) | healthy;
                              current_*: the outcomes the path is judged on (since its drop, else the window);
                              drift: null or {direction: down|up, detected_by: router|insights, detected_at,
                              on_probation, changed_at, before_success_rate, after_success_rate, before_samples,
                              after_samples, statistic}
      param_sensitivity[]     {model, param, fixed_params, values[{value, path_id, success_rate, samples, ci_low,
                               ci_high}], best_value, worst_value, difference, p_value,
                               probability_best_beats_worst, significant, best_at_boundary: highest|lowest|null}
      recommendation          {path_id, model, params, success_rate, confidence, enough_data, reasoning}
                              (get_policy's answer; its alternatives[] rows carry each path's drift too)
      actionable_signals[]    {type, severity: info|low|medium|high, message, data}; type is one of
                              path_failing, path_underperforming, failure_mode_dominant,
                              param_sensitivity_detected, drift_detected, cost_inefficiency, low_confidence,
                              goal_healthy
      path_changes[]          {at, goal, kind: path_generated|path_retired, data}: automatic path generation
    cross_goal_summary  {goal_count, total_samples, success_rate, status_counts, signal_counts,
                         needs_attention[{goal, status, worst_severity, signals}]}
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from kalibr._domain import check_goal
from kalibr._exceptions import UserError
from kalibr.insights import _signals as signals
from kalibr.insights._changes import changes, record_change
from kalibr.insights._drops import find_drops, path_rows, since_drops
from kalibr.insights._goal import (
    MIN_GOAL_SAMPLES,
    failure_modes,
    goal_status,
    param_sensitivity,
    path_status,
    trend,
)
from kalibr.insights._policy import answer_policy
from kalibr.insights._stats import PathStats, rounded, sequential_sum, summarise_paths
from kalibr.intelligence.base import Constraints, PolicyAnswer
from kalibr.policies.base import ArmState, PolicyConfig
from kalibr.stores._columns import columns_from_records
from kalibr.stores.base import OutcomeColumns, OutcomeRecord, PathRecord, Store

__all__ = [
    "MAX_WINDOW_HOURS",
    "SCHEMA_VERSION",
    "analyse_goal",
    "build_insights",
    "changes",
    "generated_path_ids",
    "recommend",
    "record_change",
    "router_arms",
]

SCHEMA_VERSION = 1
MAX_WINDOW_HOURS = 90 * 24
"""A low-traffic goal's policy looks back 4x, then 16x the window, but never further than 90 days."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def recommend(
    store: Store,
    tenant: str,
    goal: str,
    *,
    window_hours: float = 168,
    constraints: Constraints | None = None,
    now: datetime | None = None,
) -> PolicyAnswer:
    """The best path for ``goal`` under ``constraints``, widening the window for low-traffic goals."""
    check_goal(goal)
    _check_window(window_hours)
    _check_constraints(constraints)
    now = now or datetime.now(UTC)
    config = store.get_config(tenant, goal)
    registered = store.list_paths(tenant, goal, include_disabled=True)
    generated = generated_path_ids(store, tenant, goal)
    arms = router_arms(store, tenant, goal, registered)
    answer: PolicyAnswer | None = None
    for hours in _windows(window_hours):
        columns = store.outcome_columns(tenant, goal, now - timedelta(hours=hours))
        evidence = _Evidence(columns, registered, generated, arms)
        answer = answer_policy(
            goal,
            evidence.current,
            window_hours=hours,
            constraints=constraints,
            min_samples=_min_samples(config),
            tie_tolerance=config.tie_tolerance,
            drops=evidence.drops,
        )
        if answer.enough_data:
            break
    assert answer is not None
    if answer.window_hours != window_hours:
        note = f"low traffic: looked back {answer.window_hours:g} h instead of {window_hours:g} h; "
        answer = dataclasses.replace(answer, reasoning=note + answer.reasoning)
    return answer


def build_insights(
    store: Store, tenant: str, goal: str | None, *, window_hours: float = 168, now: datetime | None = None
) -> dict[str, Any]:
    """The insights document for one goal, or for every goal of the tenant when ``goal`` is None."""
    if goal is not None:
        check_goal(goal)
    _check_window(window_hours)
    now = now or datetime.now(UTC)
    since = now - timedelta(hours=window_hours)
    names = [goal] if goal is not None else store.goals(tenant)
    all_changes = changes(store, tenant, goal, _EPOCH)
    goals = [
        analyse_goal(
            name,
            store.outcome_columns(tenant, name, since),
            registered,
            path_changes=[c for c in all_changes if c["goal"] == name],
            window_hours=window_hours,
            config=store.get_config(tenant, name),
            since=since,
            arms=router_arms(store, tenant, name, registered),
        )
        for name in names
        for registered in [store.list_paths(tenant, name, include_disabled=True)]
    ]
    goals.sort(key=lambda item: (_STATUS_ORDER[item["status"]], item["goal"]))
    return {
        "schema_version": SCHEMA_VERSION,
        "tenant_id": tenant,
        "generated_at": now.isoformat(),
        "window_hours": window_hours,
        "goals": goals,
        "cross_goal_summary": _summary(goals),
    }


_STATUS_ORDER = {"failing": 0, "degraded": 1, "insufficient_data": 2, "healthy": 3}


def analyse_goal(
    goal: str,
    outcomes: OutcomeColumns | Sequence[OutcomeRecord],
    registered: Sequence[PathRecord],
    *,
    path_changes: Sequence[Mapping[str, Any]] = (),
    window_hours: float = 168,
    config: PolicyConfig | None = None,
    since: datetime = _EPOCH,
    arms: Mapping[str, ArmState] | None = None,
) -> dict[str, Any]:
    """One goal's insights from its outcomes (columns, or records oldest first), registered paths, change log and
    the router's arms (path id -> ``ArmState``: its drop detections). Pure."""
    config = config or PolicyConfig()
    columns = outcomes if isinstance(outcomes, OutcomeColumns) else columns_from_records(outcomes)
    evidence = _Evidence(columns, registered, _generated_in(path_changes), arms or {})
    total = len(columns)
    rate = sequential_sum(columns.score) / total if total else None
    answer = answer_policy(
        goal,
        evidence.current,
        window_hours=window_hours,
        min_samples=_min_samples(config),
        tie_tolerance=config.tie_tolerance,
        drops=evidence.drops,
    )
    effects = param_sensitivity(evidence.current)
    goal_trend = trend(columns.score)
    found = _signals_for(evidence, effects, answer, total, config)
    drifted = any(s["type"] == "drift_detected" and s["data"]["direction"] == "down" for s in found)
    degraded = drifted or goal_trend["direction"] == "declining" or any(s["severity"] == "high" for s in found)
    status = goal_status(rate, total, degraded=degraded)
    found += signals.goal_healthy(status, found, rate)
    found.sort(key=lambda s: (-signals.SEVERITY_ORDER[s["severity"]], signals.SIGNAL_TYPES.index(s["type"])))
    return {
        "goal": goal,
        "status": status,
        "success_rate": rounded(rate),
        "sample_count": total,
        "window_hours": window_hours,
        "trend": goal_trend,
        "top_failure_modes": failure_modes(evidence.window),
        "paths": [evidence.path_row(item, total) for item in evidence.window],
        "param_sensitivity": [effect.to_dict() for effect in effects],
        "recommendation": _recommendation(answer),
        "actionable_signals": found,
        "path_changes": [dict(c) for c in path_changes if datetime.fromisoformat(c["at"]) >= since],
    }


class _Evidence:
    """A goal's outcomes per path over the window, and the part of them each path is judged on now."""

    def __init__(
        self,
        columns: OutcomeColumns,
        registered: Sequence[PathRecord],
        generated: set[str],
        arms: Mapping[str, ArmState],
    ) -> None:
        per_path = path_rows(columns)
        self.drops = find_drops(columns, per_path, arms)
        self.window = summarise_paths(columns, registered, generated)
        self.current_total = len(columns)
        if any(drop.direction == "down" for drop in self.drops.values()):
            kept = since_drops(columns, per_path, self.drops)
            self.current = summarise_paths(columns, registered, generated, kept)
            self.current_total = int(np.count_nonzero(kept))
        else:  # nothing dropped: every path is judged on the whole window
            self.current = self.window
        self._current_by_id = {item.path_id: item for item in self.current}

    def path_row(self, item: PathStats, total: int) -> dict[str, Any]:
        current = self._current_by_id[item.path_id]
        drop = self.drops.get(item.path_id)
        dropped = drop is not None and drop.direction == "down"
        return {
            **item.to_dict(total),
            "status": path_status(item, current, dropped=dropped, min_samples=signals.MIN_PATH_SAMPLES),
            "current_samples": current.samples,
            "current_success_rate": rounded(current.success_rate),
            "drift": None if drop is None else drop.to_dict(),
        }


def _signals_for(
    evidence: _Evidence, effects: Sequence[Any], answer: PolicyAnswer, total: int, config: PolicyConfig
) -> list[dict[str, Any]]:
    current, current_total = evidence.current, evidence.current_total
    return [
        *signals.path_failing(evidence.window),
        *signals.path_underperforming(current, current_total),
        *signals.failure_mode_dominant(evidence.window),
        *signals.param_sensitivity_detected(effects),
        *signals.drift_detected(evidence.drops, evidence.window),
        *signals.cost_inefficiency(current, current_total, config.tie_tolerance),
        *signals.low_confidence(answer, total, MIN_GOAL_SAMPLES),
    ]


def router_arms(store: Store, tenant: str, goal: str, registered: Sequence[PathRecord]) -> dict[str, ArmState]:
    """The router's state of each registered path of ``goal``: the evidence it routes on, its drop detections."""
    if not registered:
        return {}
    return {arm.path_id: arm for arm in store.load_arms(tenant, goal, [record.path for record in registered])}


def _recommendation(answer: PolicyAnswer) -> dict[str, Any]:
    return {
        "path_id": answer.recommended_path_id,
        "model": answer.recommended_model,
        "params": dict(answer.params),
        "success_rate": answer.success_rate,
        "confidence": answer.confidence,
        "enough_data": answer.enough_data,
        "reasoning": answer.reasoning,
    }


def _summary(goals: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    total = sum(item["sample_count"] for item in goals)
    weighted = sum((item["success_rate"] or 0.0) * item["sample_count"] for item in goals)
    signal_counts: dict[str, int] = {}
    attention = []
    for item in goals:
        kinds = [s["type"] for s in item["actionable_signals"]]
        for kind in kinds:
            signal_counts[kind] = signal_counts.get(kind, 0) + 1
        worst = max((s["severity"] for s in item["actionable_signals"]), key=_severity_rank, default="info")
        if item["status"] != "healthy" or _severity_rank(worst) >= _severity_rank("medium"):
            row = {"goal": item["goal"], "status": item["status"], "worst_severity": worst, "signals": kinds}
            attention.append(row)
    attention.sort(key=lambda row: (-_severity_rank(row["worst_severity"]), row["goal"]))
    return {
        "goal_count": len(goals),
        "total_samples": total,
        "success_rate": rounded(weighted / total) if total else None,
        "status_counts": {status: sum(1 for g in goals if g["status"] == status) for status in _STATUS_ORDER},
        "signal_counts": dict(sorted(signal_counts.items())),
        "needs_attention": attention,
    }


def _severity_rank(severity: str) -> int:
    return signals.SEVERITY_ORDER[severity]


def generated_path_ids(store: Store, tenant: str, goal: str | None) -> set[str]:
    """The ids of paths that automatic path generation added (from the change log)."""
    return _generated_in(changes(store, tenant, goal, _EPOCH))


def _generated_in(path_changes: Sequence[Mapping[str, Any]]) -> set[str]:
    return {str(c["data"].get("path_id")) for c in path_changes if c["kind"] == "path_generated"}


def _windows(window_hours: float) -> list[float]:
    wider = [w for w in (window_hours * 4, window_hours * 16) if w <= MAX_WINDOW_HOURS]
    if window_hours < MAX_WINDOW_HOURS and (not wider or wider[-1] < MAX_WINDOW_HOURS):
        wider.append(MAX_WINDOW_HOURS)
    return [window_hours, *wider]


def _min_samples(config: PolicyConfig) -> int:
    return max(1, config.min_samples_before_exploit)


def _check_window(window_hours: float) -> None:
    if isinstance(window_hours, bool) or not isinstance(window_hours, int | float) or not 0 < window_hours < math.inf:
        raise UserError(f"invalid window_hours {window_hours!r}: give a positive number of hours, e.g. 168 (a week)")


def _check_constraints(constraints: Constraints | None) -> None:
    if constraints is None:
        return
    for name in ("max_cost_usd", "max_latency_ms"):
        value = getattr(constraints, name)
        if value is not None and value < 0:
            raise UserError(f"invalid constraint {name}={value!r}: it must be >= 0 (or left out)")
    for name in ("min_quality", "min_confidence"):
        value = getattr(constraints, name)
        if value is not None and not 0 <= value <= 1:
            raise UserError(f"invalid constraint {name}={value!r}: it must be in [0, 1] (or left out)")
