"""The dashboard's reads: outcomes summed per time bucket, latency percentiles, failure counts and recent
decisions joined to their outcomes. Buckets of a minute or more, percentiles and failure counts come from the
roll-ups (``_rollups``); buckets under a minute (a chart of the last hour at most) group the outcomes themselves.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from kalibr._exceptions import UserError
from kalibr.stores.base import DecisionOutcome, DecisionRecord, OutcomeBucket, OutcomeRecord

__all__ = [
    "buckets_from_rows",
    "check_buckets",
    "decision_filters",
    "decision_outcome_from_row",
    "hour_of",
    "postgres_recent_decisions",
    "sqlite_recent_decisions",
]

_SUMS = "COUNT(*), SUM(score), COALESCE(SUM(cost_usd), 0), COUNT(cost_usd), COALESCE(SUM(latency_ms), 0), "
_SUMS += "COUNT(latency_ms)"

# Buckets under a minute, from the outcomes. Times are integer microseconds in SQLite: an integer division.
SQLITE_GOAL_BUCKETS = (
    f"SELECT goal, path_id, (reported_at - ?) / ? AS bucket, {_SUMS} FROM outcomes "
    "WHERE tenant = ? AND goal = ? AND reported_at >= ? GROUP BY goal, bucket, path_id ORDER BY goal, bucket, path_id"
)
SQLITE_ALL_BUCKETS = (
    f"SELECT goal, path_id, (reported_at - ?) / ? AS bucket, {_SUMS} FROM outcomes "
    "WHERE tenant = ? AND reported_at >= ? GROUP BY goal, bucket, path_id ORDER BY goal, bucket, path_id"
)
POSTGRES_GOAL_BUCKETS = (
    f"SELECT goal, path_id, floor(extract(epoch FROM reported_at - %s) / %s)::bigint AS bucket, {_SUMS} "
    "FROM outcomes WHERE tenant = %s AND goal = %s AND reported_at >= %s "
    "GROUP BY goal, bucket, path_id ORDER BY goal, bucket, path_id"
)
POSTGRES_ALL_BUCKETS = (
    f"SELECT goal, path_id, floor(extract(epoch FROM reported_at - %s) / %s)::bigint AS bucket, {_SUMS} "
    "FROM outcomes WHERE tenant = %s AND reported_at >= %s "
    "GROUP BY goal, bucket, path_id ORDER BY goal, bucket, path_id"
)
# The outcome's columns as each store's ``outcome_from_row`` reads them (params last, not needed here).
_DECISION_COLUMNS = (
    "d.trace_id, d.goal, d.path_id, d.model, d.exploration, d.decided_at, o.trace_id, o.goal, o.path_id, o.model, "
    "o.score, o.success, o.failure_category, o.reason, o.cost_usd, o.latency_ms, o.input_tokens, o.output_tokens, "
    "o.source, o.reported_at, NULL"
)


def _recent_decisions(mark: str, goal: str | None, path_id: str | None, trace_id: str | None) -> str:
    """Newest first by the primary key (tenant, trace_id), whose trace ids are ordered by time: no sort."""
    filters = [name for name, value in (("goal", goal), ("path_id", path_id), ("trace_id", trace_id)) if value]
    where = " AND ".join([f"d.tenant = {mark}", *(f"d.{name} = {mark}" for name in filters)])
    return (
        f"SELECT {_DECISION_COLUMNS} FROM decisions d "
        "LEFT JOIN outcomes o ON o.tenant = d.tenant AND o.trace_id = d.trace_id "
        f"WHERE {where} ORDER BY d.trace_id DESC LIMIT {mark}"
    )


def sqlite_recent_decisions(goal: str | None, path_id: str | None, trace_id: str | None) -> str:
    return _recent_decisions("?", goal, path_id, trace_id)


def postgres_recent_decisions(goal: str | None, path_id: str | None, trace_id: str | None) -> str:
    return _recent_decisions("%s", goal, path_id, trace_id)


def decision_filters(tenant: str, goal: str | None, path_id: str | None, trace_id: str | None, limit: int) -> list[Any]:
    """The parameters of a ``*_recent_decisions`` statement, in its order."""
    return [tenant, *(value for value in (goal, path_id, trace_id) if value), limit]


def decision_outcome_from_row(
    row: Sequence[Any],
    to_datetime: Callable[[Any], datetime],
    outcome_from_row: Callable[[Sequence[Any]], OutcomeRecord],
) -> DecisionOutcome:
    """A ``*_recent_decisions`` row; ``to_datetime`` and ``outcome_from_row`` are the store's own conversions."""
    trace_id, goal, path_id, model, exploration, decided_at = row[:6]
    decision = DecisionRecord(trace_id, goal, path_id, model, bool(exploration), to_datetime(decided_at))
    return DecisionOutcome(decision, None if row[6] is None else outcome_from_row(row[6:]))


def buckets_from_rows(rows: Iterable[Sequence[Any]], since: datetime, bucket_seconds: float) -> list[OutcomeBucket]:
    """``*_BUCKETS`` rows as buckets starting ``bucket_seconds`` apart from ``since``."""
    return [
        OutcomeBucket(
            goal,
            path_id,
            since + timedelta(seconds=int(index) * bucket_seconds),
            int(n),
            float(score),
            float(cost),
            int(costs),
            float(latency),
            int(latencies),
        )
        for goal, path_id, index, n, score, cost, costs, latency, latencies in rows
    ]


def check_buckets(since: datetime, bucket_seconds: float) -> None:
    """Buckets of a minute or more come from per-minute roll-ups: whole minutes, from a whole minute."""
    if not bucket_seconds > 0:
        raise UserError(f"invalid bucket_seconds {bucket_seconds!r}: give a positive number of seconds")
    if bucket_seconds >= 60 and (bucket_seconds % 60 or since.second or since.microsecond):
        raise UserError(
            f"buckets of {bucket_seconds!r} s from {since.isoformat()!r}: buckets of a minute or more must be whole "
            "minutes and start on a whole minute (round both down)"
        )


def hour_of(since: datetime) -> int:
    """The hour (since the epoch) that contains ``since``: roll-up details start there."""
    return math.floor(since.timestamp() / 3600)
