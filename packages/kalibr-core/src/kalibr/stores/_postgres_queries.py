"""The PostgreSQL store's statements. Batches travel as one JSON document each, read by ``json_to_recordset``, so
every text is fixed; psycopg would dump a list parameter element by element in Python, which cost more CPU than
the rest of a flush."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC
from typing import Any

from kalibr._domain import Decision
from kalibr.policies.base import ArmState
from kalibr.stores._records import ARM_FIELDS, arm_values, decision_record
from kalibr.stores.base import OutcomeRecord

_ARM_COLUMNS = ", ".join(ARM_FIELDS)

GOAL_ARMS = f"SELECT path_id, {_ARM_COLUMNS} FROM arms WHERE tenant = %s AND goal = %s"

# Create missing arms and lock all of them, in key order (so concurrent batches cannot deadlock on each other),
# returning each arm's latest committed state. DO UPDATE, unlike DO NOTHING, takes the row lock.
LOCK_ARMS = f"""
    INSERT INTO arms (tenant, goal, path_id, model)
    SELECT %s, k.goal, k.path_id, k.model FROM json_to_recordset(%s::json) AS k(goal text, path_id text, model text)
    ORDER BY k.goal, k.path_id
    ON CONFLICT (tenant, goal, path_id) DO UPDATE SET model = arms.model
    RETURNING goal, path_id, {_ARM_COLUMNS}
"""

_ARM_TYPES = ("float8", "float8", "int8", "int8", "float8", "int8", "float8", "int8", "float8", "text")
_ARM_COLUMN_TYPES = ", ".join(f"{name} {kind}" for name, kind in zip(ARM_FIELDS, _ARM_TYPES, strict=True))
SAVE_ARMS = f"""
    UPDATE arms AS a SET model = v.model, {", ".join(f"{name} = v.{name}" for name in ARM_FIELDS[:-1])},
        extra = v.extra::jsonb
    FROM json_to_recordset(%s::json) AS v(goal text, path_id text, model text, {_ARM_COLUMN_TYPES})
    WHERE a.tenant = %s AND a.goal = v.goal AND a.path_id = v.path_id
"""

MODEL_TOTALS = """
    SELECT model, SUM(successes), SUM(failures) FROM arms
    WHERE tenant = %s AND model != '' GROUP BY model ORDER BY model
"""

MODEL_COSTS = """
    SELECT model, SUM(cost_sum), SUM(cost_count) FROM arms
    WHERE tenant = %s AND model != '' AND cost_count > 0 GROUP BY model ORDER BY model
"""

INSERT_DECISIONS = """
    INSERT INTO decisions (tenant, trace_id, goal, path_id, model, exploration, decided_at)
    SELECT %s, * FROM json_to_recordset(%s::json)
        AS d(trace_id text, goal text, path_id text, model text, exploration bool, decided_at timestamptz)
    ON CONFLICT (tenant, trace_id) DO NOTHING
"""
SELECT_DECISION = (
    "SELECT goal, path_id, model, exploration, decided_at FROM decisions WHERE tenant = %s AND trace_id = %s"
)

_OUTCOME_FIELDS = (
    "trace_id",
    "goal",
    "path_id",
    "model",
    "score",
    "success",
    "failure_category",
    "reason",
    "cost_usd",
    "latency_ms",
    "input_tokens",
    "output_tokens",
    "source",
    "reported_at",
)
_OUTCOME_TYPES: tuple[str, ...] = ("text", "text", "text", "text", "float8", "bool", "text", "text")
_OUTCOME_TYPES += ("float8", "float8", "int8", "int8", "text", "timestamptz")
_DECISION_FIELDS = ("trace_id", "goal", "path_id", "model", "exploration", "decided_at")

INSERT_OUTCOMES = f"""
    INSERT INTO outcomes (tenant, {", ".join(_OUTCOME_FIELDS)})
    SELECT %s, * FROM json_to_recordset(%s::json)
        AS o({", ".join(f"{name} {kind}" for name, kind in zip(_OUTCOME_FIELDS, _OUTCOME_TYPES, strict=True))})
    ON CONFLICT (tenant, trace_id) DO NOTHING
    RETURNING trace_id
"""
# Outcomes come back with the registered path's params (for parameter-sensitivity insights).
_SELECT_OUTCOMES = f"""
    SELECT {", ".join(f"o.{name}" for name in _OUTCOME_FIELDS)}, p.params
    FROM outcomes o LEFT JOIN paths p ON p.tenant = o.tenant AND p.goal = o.goal AND p.path_id = o.path_id
"""
LOCK_OUTCOME = _SELECT_OUTCOMES + "WHERE o.tenant = %s AND o.trace_id = %s FOR UPDATE OF o"
OUTCOMES_SINCE = _SELECT_OUTCOMES + "WHERE o.tenant = %s AND o.reported_at >= %s ORDER BY o.reported_at, o.id"
GOAL_OUTCOMES_SINCE = (
    _SELECT_OUTCOMES + "WHERE o.tenant = %s AND o.goal = %s AND o.reported_at >= %s ORDER BY o.reported_at, o.id"
)
# Insights' read: the goal's outcomes as one row of arrays, oldest first (ties in arrival order). The arrays are
# aggregated from one sorted subquery, in its order: PostgreSQL before 16 sorts once per array_agg(... ORDER BY),
# eight sorts where one does (1.8x the read's time at 20,000 outcomes).
GOAL_OUTCOME_COLUMNS = """
    SELECT count(*), array_agg(path_id), array_agg(model), array_agg(score), array_agg(cost_usd),
        array_agg(latency_ms), array_agg(failure_category), array_agg(source = 'error'),
        array_agg((extract(epoch FROM reported_at) * 1000000)::int8)
    FROM (
        SELECT path_id, model, score, cost_usd, latency_ms, failure_category, source, reported_at FROM outcomes
        WHERE tenant = %s AND goal = %s AND reported_at >= %s ORDER BY reported_at, id
    ) oldest_first
"""
UPDATE_OUTCOME = """
    UPDATE outcomes SET score = %s, success = %s, failure_category = %s, reason = %s, source = %s
    WHERE tenant = %s AND trace_id = %s
"""
GOALS = "SELECT goal FROM paths WHERE tenant = %s UNION SELECT goal FROM outcomes WHERE tenant = %s ORDER BY goal"

_PATH_FIELDS = "goal, model, params, tools, provider, base_url, enabled, risk_level, tool_id, created_at"
INSERT_PATH = """
    INSERT INTO paths (tenant, goal, path_id, model, params, tools, provider, base_url, enabled, risk_level,
                       tool_id, created_at)
    VALUES (%s, %s, %s, %s, %s::jsonb, %s::jsonb, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (tenant, goal, path_id) DO NOTHING
"""
SELECT_PATH = f"SELECT {_PATH_FIELDS} FROM paths WHERE tenant = %s AND goal = %s AND path_id = %s"
LIST_PATHS = f"""
    SELECT {_PATH_FIELDS} FROM paths
    WHERE tenant = %s AND (%s::text IS NULL OR goal = %s) AND (enabled OR %s)
    ORDER BY created_at, id
"""
ENABLE_PATH = "UPDATE paths SET enabled = %s WHERE tenant = %s AND path_id = %s"

SELECT_CONFIG = "SELECT goal, fields FROM config WHERE tenant = %s AND goal IN (%s, '*')"
UPSERT_CONFIG = """
    INSERT INTO config (tenant, goal, fields) VALUES (%s, %s, %s::jsonb)
    ON CONFLICT (tenant, goal) DO UPDATE SET fields = excluded.fields
"""

INSERT_KEY = "INSERT INTO api_keys (key_hash, tenant, created_at) VALUES (%s, %s, now()) ON CONFLICT DO NOTHING"
SELECT_KEY = "SELECT tenant FROM api_keys WHERE key_hash = %s"
LIST_KEYS = """
    SELECT tenant, key_hash, created_at FROM api_keys
    WHERE %s::text IS NULL OR tenant = %s ORDER BY created_at, key_hash
"""
DELETE_KEY = "DELETE FROM api_keys WHERE key_hash = %s"

PRUNE_DECISIONS = """
    DELETE FROM decisions WHERE ctid IN (SELECT ctid FROM decisions WHERE decided_at < %s LIMIT %s)
"""
PRUNE_OUTCOMES = "DELETE FROM outcomes WHERE id IN (SELECT id FROM outcomes WHERE reported_at < %s LIMIT %s)"

INSERT_EVENT = "INSERT INTO events (tenant, goal, kind, data, at) VALUES (%s, %s, %s, %s::jsonb, %s)"
EVENTS_SINCE = "SELECT at, goal, kind, data FROM events WHERE tenant = %s AND at >= %s ORDER BY at, id"
GOAL_EVENTS_SINCE = (
    "SELECT at, goal, kind, data FROM events WHERE tenant = %s AND goal = %s AND at >= %s ORDER BY at, id"
)


def decisions_json(decisions: Sequence[Decision]) -> str:
    """The decisions as the JSON rows ``INSERT_DECISIONS`` reads."""
    return json.dumps([_row(decision_record(decision), _DECISION_FIELDS, "decided_at") for decision in decisions])


def outcomes_json(records: Sequence[OutcomeRecord]) -> str:
    """The records as the JSON rows ``INSERT_OUTCOMES`` reads."""
    return json.dumps([_row(record, _OUTCOME_FIELDS, "reported_at") for record in records])


def arm_keys_json(keys: Sequence[tuple[str, str, str]]) -> str:
    """(goal, path id, model) keys as the JSON rows ``LOCK_ARMS`` reads."""
    return json.dumps([{"goal": goal, "path_id": path_id, "model": model} for goal, path_id, model in keys])


def arms_json(arms: Iterable[tuple[str, ArmState]]) -> str:
    """(goal, arm) pairs as the JSON rows ``SAVE_ARMS`` reads."""
    rows = []
    for goal, arm in arms:
        row = dict(zip(ARM_FIELDS, arm_values(arm), strict=True))
        row.update(goal=goal, path_id=arm.path_id, model=arm.model)
        rows.append(row)
    return json.dumps(rows)


def _row(record: Any, fields: Sequence[str], time_field: str) -> dict[str, Any]:
    row = {name: getattr(record, name) for name in fields}
    row[time_field] = row[time_field].isoformat()
    return row


def outcome_from_row(row: Sequence[Any]) -> OutcomeRecord:
    values = dict(zip(_OUTCOME_FIELDS, row, strict=False))
    values["reported_at"] = values["reported_at"].astimezone(UTC)
    return OutcomeRecord(**values, params=row[len(_OUTCOME_FIELDS)] or {})
