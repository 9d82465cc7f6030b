"""What the pages show: counts, rates, costs, latencies and charts from the store's aggregates
(``outcome_buckets``, ``latency_percentiles``, ``failure_counts``), the arms the router learned (``load_arms``), the
registered paths, the config and the change log; a page's cost grows with the minutes and paths in its window, not
with the outcomes. A goal's status, trend, signals, parameter sensitivity and recommendation are its insights
document's (``_analysis``): one definition for the dashboard and ``get_insights``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from kalibr.dashboard._analysis import Analyses
from kalibr.insights._stats import wilson_interval
from kalibr.policies.base import ArmState, PolicyConfig
from kalibr.policies.drift import RESETS, RESTORES, on_probation
from kalibr.stores.base import OutcomeBucket, PathRecord, Store

__all__ = ["GoalRow", "GoalView", "PathRow", "goal_rows", "goal_series", "goal_view"]

CHART_BUCKETS = 60


@dataclass(frozen=True, slots=True)
class Totals:
    """Summed outcome buckets."""

    outcomes: int = 0
    score_sum: float = 0.0
    cost_sum: float = 0.0
    cost_count: int = 0
    latency_sum: float = 0.0
    latency_count: int = 0

    def add(self, bucket: OutcomeBucket | Totals) -> Totals:
        return Totals(
            self.outcomes + bucket.outcomes,
            self.score_sum + bucket.score_sum,
            self.cost_sum + bucket.cost_sum,
            self.cost_count + bucket.cost_count,
            self.latency_sum + bucket.latency_sum,
            self.latency_count + bucket.latency_count,
        )

    @property
    def success_rate(self) -> float | None:
        return self.score_sum / self.outcomes if self.outcomes else None

    @property
    def cost_per_call(self) -> float | None:
        return self.cost_sum / self.cost_count if self.cost_count else None

    @property
    def mean_latency_ms(self) -> float | None:
        return self.latency_sum / self.latency_count if self.latency_count else None


def _total(buckets: Sequence[OutcomeBucket | Totals]) -> Totals:
    total = Totals()
    for bucket in buckets:
        total = total.add(bucket)
    return total


@dataclass(frozen=True, slots=True)
class GoalRow:
    """One line of the goals page."""

    goal: str
    status: str
    totals: Totals
    trend: Mapping[str, Any]
    signals: Sequence[str]


def goal_rows(store: Store, analyses: Analyses, tenant: str, since: datetime, now: datetime) -> list[GoalRow]:
    """Every goal of the tenant, worst status first."""
    rows = []
    for goal in store.goals(tenant):
        _, _, buckets = fine_buckets(store, tenant, goal, since, now)
        analysis = analyses.of(tenant, goal, _hours(since, now), now)
        rows.append(GoalRow(goal, analysis["status"], _total(buckets), analysis["trend"], _signals(analysis)))
    order = {"failing": 0, "degraded": 1, "insufficient_data": 2, "healthy": 3}
    rows.sort(key=lambda row: (order[row.status], row.goal))
    return rows


def _hours(since: datetime, now: datetime) -> float:
    return (now - since).total_seconds() / 3600


def _signals(analysis: Mapping[str, Any]) -> list[str]:
    """What needs attention: the insights' signals, worst first (the all-clear is the status itself)."""
    return [signal["message"] for signal in analysis["actionable_signals"] if signal["type"] != "goal_healthy"]


@dataclass(frozen=True, slots=True)
class PathRow:
    """One path of a goal: what the window's outcomes say, and what the router has learned."""

    record: PathRecord
    totals: Totals
    traffic_share: float
    interval: tuple[float, float]
    latency: tuple[float, float] | None
    failures: Mapping[str, int]
    arm: ArmState
    generated: bool

    @property
    def path_id(self) -> str:
        return self.record.path.path_id

    @property
    def label(self) -> str:
        return path_label(self.record)

    @property
    def learned_rate(self) -> float:
        """The posterior mean of the arm the router routes on (uniform prior)."""
        return (self.arm.successes + 1) / (self.arm.successes + self.arm.failures + 2)

    @property
    def on_probation(self) -> bool:
        return on_probation(self.arm)

    @property
    def drift_resets(self) -> int:
        return int(self.arm.extra.get(RESETS, 0))


@dataclass(frozen=True, slots=True)
class GoalView:
    """Everything the goal page shows."""

    goal: str
    status: str
    totals: Totals
    trend: Mapping[str, Any]
    paths: Sequence[PathRow]
    failure_categories: Sequence[tuple[str, int, float]]
    sensitivity: Sequence[Mapping[str, Any]]
    """The insights' ``param_sensitivity``."""
    recommendation: Mapping[str, Any]
    config: PolicyConfig
    events: Sequence[Mapping[str, Any]]
    signals: Sequence[str] = field(default_factory=list)


def goal_view(store: Store, analyses: Analyses, tenant: str, goal: str, since: datetime, now: datetime) -> GoalView:
    registered = store.list_paths(tenant, goal, include_disabled=True)
    _, _, buckets = fine_buckets(store, tenant, goal, since, now)
    per_path: dict[str, list[OutcomeBucket]] = {}
    for bucket in buckets:
        per_path.setdefault(bucket.path_id, []).append(bucket)
    totals = _total(buckets)
    latency = store.latency_percentiles(tenant, goal, since)
    failures: dict[str, dict[str, int]] = {}
    for path_id, category, count in store.failure_counts(tenant, goal, since):
        failures.setdefault(path_id, {})[category] = count
    arms = store.load_arms(tenant, goal, [record.path for record in registered])
    events = store.events(tenant, goal, since)
    generated = {
        str(e["data"].get("path_id")) for e in store.events(tenant, goal, _EPOCH) if e["kind"] == "path_generated"
    }
    rows = []
    for record, arm in zip(registered, arms, strict=True):
        path_id = record.path.path_id
        path_totals = _total(per_path.get(path_id, []))
        share = path_totals.outcomes / totals.outcomes if totals.outcomes else 0.0
        interval = wilson_interval(path_totals.score_sum, path_totals.outcomes)
        rows.append(
            PathRow(
                record,
                path_totals,
                share,
                interval,
                latency.get(path_id),
                failures.get(path_id, {}),
                arm,
                path_id in generated,
            )
        )
    analysis = analyses.of(tenant, goal, _hours(since, now), now)
    recommended = analysis["recommendation"]
    return GoalView(
        goal=goal,
        status=analysis["status"],
        totals=totals,
        trend=analysis["trend"],
        paths=rows,
        failure_categories=_categories(failures, totals.outcomes),
        sensitivity=analysis["param_sensitivity"],
        recommendation={
            "path": next((row for row in rows if row.path_id == recommended["path_id"]), None),
            "reasoning": recommended["reasoning"],
        },
        config=store.get_config(tenant, goal),
        events=events,
        signals=_signals(analysis),
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _categories(failures: Mapping[str, Mapping[str, int]], outcomes: int) -> list[tuple[str, int, float]]:
    counts: dict[str, int] = {}
    for per_category in failures.values():
        for category, count in per_category.items():
            counts[category] = counts.get(category, 0) + count
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [(category, count, count / outcomes if outcomes else 0.0) for category, count in ordered]


def fine_buckets(
    store: Store, tenant: str, goal: str, since: datetime, now: datetime
) -> tuple[datetime, float, list[OutcomeBucket]]:
    """The goal's outcomes in about ``CHART_BUCKETS`` buckets: (start, bucket width in seconds, buckets).

    When traffic began after ``since`` (a demo of a few minutes in a day's window), the buckets start again from
    the first one that has outcomes, until the outcomes begin in the first bucket: each step narrows them.
    """
    start, width = _grid(since, now)
    buckets = store.outcome_buckets(tenant, goal, start, width)
    for _ in range(6):
        first = min((b.start for b in buckets), default=start)
        if first <= start or width <= _MIN_WIDTH:
            break
        start, width = _grid(first, now)
        buckets = store.outcome_buckets(tenant, goal, start, width)
    return start, width, buckets


def _grid(since: datetime, now: datetime) -> tuple[datetime, float]:
    """Buckets of a minute or more are whole minutes from a whole minute (the store's per-minute roll-ups)."""
    width = (now - since).total_seconds() / CHART_BUCKETS
    if width < 60:
        return since, max(_MIN_WIDTH, width)
    return since.replace(second=0, microsecond=0), 60.0 * math.ceil(width / 60)


_MIN_WIDTH = 0.5


def goal_series(store: Store, tenant: str, goal: str, since: datetime, now: datetime) -> dict[str, Any]:
    """The charts' data: per bucket, each path's traffic share and success rate, and the change-log marks."""
    start, width, buckets = fine_buckets(store, tenant, goal, since, now)
    starts = [start + timedelta(seconds=i * width) for i in range(CHART_BUCKETS + 1)]
    per_bucket = [0] * len(starts)
    counts: dict[str, list[int]] = {}
    success: dict[str, list[float | None]] = {}
    for bucket in buckets:
        i = round((bucket.start - start).total_seconds() / width)  # the store rounds widths to its clock's unit
        if not 0 <= i < len(starts):
            continue
        per_bucket[i] += bucket.outcomes
        counts.setdefault(bucket.path_id, [0] * len(starts))[i] = bucket.outcomes
        success.setdefault(bucket.path_id, [None] * len(starts))[i] = bucket.score_sum / bucket.outcomes
    registered = store.list_paths(tenant, goal, include_disabled=True)
    labels = {record.path.path_id: path_label(record) for record in registered}
    arms = store.load_arms(tenant, goal, [record.path for record in registered])
    return {
        "t": [moment.timestamp() for moment in starts],
        "paths": [
            {
                "path_id": path_id,
                "label": labels.get(path_id, path_id),
                "share": [n / total if total else None for n, total in zip(counts[path_id], per_bucket, strict=True)],
                "success": success[path_id],
            }
            for path_id in sorted(counts, key=lambda path_id: labels.get(path_id, path_id))
        ],
        "marks": [
            {"t": datetime.fromisoformat(e["at"]).timestamp(), "kind": e["kind"], "label": _mark_label(e)}
            for e in store.events(tenant, goal, start)
        ]
        + _drift_marks(arms, counts, starts, labels),
    }


def _drift_marks(
    arms: Sequence[ArmState], counts: Mapping[str, list[int]], starts: Sequence[datetime], labels: Mapping[str, str]
) -> list[dict[str, Any]]:
    """Where each path's last detected drop began: a restarted arm counts the outcomes since the change point the
    detector estimated, so it lies that many outcomes before the path's last one (when the chart holds it)."""
    marks = []
    for arm in arms:
        per_bucket = counts.get(arm.path_id)
        if not arm.extra.get(RESETS) or arm.extra.get(RESTORES, 0) >= arm.extra[RESETS] or per_bucket is None:
            continue
        before_change = sum(per_bucket) - arm.samples
        seen = 0
        for moment, n in zip(starts, per_bucket, strict=True):
            seen += n
            if seen > before_change >= 0:
                label = f"drift detected {labels.get(arm.path_id, arm.path_id)}"
                marks.append({"t": moment.timestamp(), "kind": "drift_detected", "label": label})
                break
    return marks


def path_label(record: PathRecord) -> str:
    params = record.path.params
    suffix = " " + ", ".join(f"{k}={v}" for k, v in sorted(params.items())) if params else ""
    return record.path.model + suffix


def _mark_label(event: Mapping[str, Any]) -> str:
    data = event["data"]
    subject = data.get("model") or data.get("path_id") or ""
    return f"{event['kind'].replace('_', ' ')} {subject}".strip()
