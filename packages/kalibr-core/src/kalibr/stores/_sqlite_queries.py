"""The SQLite store's statements and row conversions, kept apart from its transaction handling."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Any

from kalibr.stores._columns import UNIT_SEPARATOR
from kalibr.stores._records import ARM_FIELDS, from_micros, to_micros
from kalibr.stores.base import OutcomeRecord

_ARM_COLUMNS = ", ".join(ARM_FIELDS)


@functools.lru_cache(maxsize=64)
def select_arms(count: int) -> str:
    """One indexed lookup for ``count`` path ids (the primary key is tenant, goal, path_id)."""
    marks = ", ".join("?" * count)
    return f"SELECT path_id, {_ARM_COLUMNS} FROM arms WHERE tenant = ? AND goal = ? AND path_id IN ({marks})"


# A goal has an arm per path it was ever routed over: a handful. One range scan of the primary key reads them
# all faster than a lookup per path id.
GOAL_ARMS = f"SELECT path_id, {_ARM_COLUMNS} FROM arms WHERE tenant = ? AND goal = ?"

UPSERT_ARM = (
    f"INSERT INTO arms (tenant, goal, path_id, model, {_ARM_COLUMNS}) "
    f"VALUES ({', '.join('?' * (4 + len(ARM_FIELDS)))}) "
    "ON CONFLICT (tenant, goal, path_id) DO UPDATE SET model = excluded.model, "
    + ", ".join(f"{name} = excluded.{name}" for name in ARM_FIELDS)
)

MODEL_TOTALS = """
    SELECT model, SUM(successes), SUM(failures) FROM arms
    WHERE tenant = ? AND model != '' GROUP BY model ORDER BY model
"""

MODEL_COSTS = """
    SELECT model, SUM(cost_sum), SUM(cost_count) FROM arms
    WHERE tenant = ? AND model != '' AND cost_count > 0 GROUP BY model ORDER BY model
"""

# One statement for the whole batch (rows as a JSON array): executemany releases and retakes the GIL around
# every row, and from the engine's background writer each handoff stalls the thread that is deciding.
INSERT_DECISIONS_JSON = (
    "INSERT INTO decisions (tenant, trace_id, goal, path_id, model, exploration, decided_at) "
    "SELECT ?, json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'), "
    "json_extract(value, '$[3]'), json_extract(value, '$[4]'), json_extract(value, '$[5]') "
    "FROM json_each(?) WHERE true ON CONFLICT (tenant, trace_id) DO NOTHING"
)
SELECT_DECISION = (
    "SELECT goal, path_id, model, exploration, decided_at FROM decisions WHERE tenant = ? AND trace_id = ?"
)

_OUTCOME_FIELDS = (
    "trace_id, goal, path_id, model, score, success, failure_category, reason, cost_usd, latency_ms, "
    "input_tokens, output_tokens, source, reported_at"
)
INSERT_OUTCOME = (
    f"INSERT INTO outcomes (tenant, {_OUTCOME_FIELDS}) VALUES ({', '.join('?' * 15)}) "
    "ON CONFLICT (tenant, trace_id) DO NOTHING"
)
# Outcomes come back with the registered path's params (for parameter-sensitivity insights).
_SELECT_OUTCOMES = (
    "SELECT " + ", ".join(f"o.{name.strip()}" for name in _OUTCOME_FIELDS.split(",")) + ", p.params "
    "FROM outcomes o LEFT JOIN paths p ON p.tenant = o.tenant AND p.goal = o.goal AND p.path_id = o.path_id "
)
SELECT_OUTCOME = _SELECT_OUTCOMES + "WHERE o.tenant = ? AND o.trace_id = ?"
OUTCOMES_SINCE = _SELECT_OUTCOMES + "WHERE o.tenant = ? AND o.reported_at >= ? ORDER BY o.reported_at, o.id"
GOAL_OUTCOMES_SINCE = (
    _SELECT_OUTCOMES + "WHERE o.tenant = ? AND o.goal = ? AND o.reported_at >= ? ORDER BY o.reported_at, o.id"
)
# Insights' read: the goal's outcomes as one row of joined columns (sqlite3 builds a Python tuple per row, which
# costs more than the query; one row of text lets numpy parse the numbers). The aggregates read the covering index
# on (tenant, goal, reported_at, id, ...these columns) in its order: time order, ties in arrival order, without a
# sort or a table lookup (an ordered subquery would hand each row through a co-routine: a third of the cost).
# SQLite does not promise an aggregate's input order, so the caller checks the times and else reads the rows.
_GOAL_WINDOW = "WHERE tenant = ? AND goal = ? AND reported_at >= ?"
# Formatting a REAL as text is most of a number's cost: the usual scores, 1.0 and 0.0, go as the integers 1 and 0
# (the same floats parsed). Provider failures go as one digit each, unseparated. The separator is a literal
# (char(31) would be a function call per value).
_SEP = f"'{UNIT_SEPARATOR}'"
GOAL_OUTCOME_COLUMNS = (
    f"SELECT count(*), group_concat(path_id, {_SEP}), group_concat(ifnull(model, ''), {_SEP}), "
    "group_concat(iif(score = 1.0, 1, iif(score = 0.0, 0, score))), group_concat(ifnull(cost_usd, 'nan')), "
    f"group_concat(ifnull(latency_ms, 'nan')), group_concat(ifnull(failure_category, ''), {_SEP}), "
    "group_concat(source = 'error', ''), group_concat(reported_at) "
    f"FROM outcomes INDEXED BY outcomes_by_goal_time_covering {_GOAL_WINDOW}"
)
GOAL_OUTCOME_ROWS = (
    "SELECT path_id, model, score, cost_usd, latency_ms, failure_category, source = 'error', reported_at "
    f"FROM outcomes {_GOAL_WINDOW} ORDER BY reported_at, id"
)
UPDATE_OUTCOME = (
    "UPDATE outcomes SET score = ?, success = ?, failure_category = ?, reason = ?, source = ? "
    "WHERE tenant = ? AND trace_id = ?"
)
GOALS = "SELECT goal FROM paths WHERE tenant = ? UNION SELECT goal FROM outcomes WHERE tenant = ? ORDER BY goal"

_PATH_FIELDS = "goal, model, params, tools, provider, base_url, enabled, risk_level, tool_id, created_at"
INSERT_PATH = (
    "INSERT INTO paths (tenant, goal, path_id, model, params, tools, provider, base_url, enabled, risk_level, "
    "tool_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant, goal, path_id) DO NOTHING"
)
SELECT_PATH = f"SELECT {_PATH_FIELDS} FROM paths WHERE tenant = ? AND goal = ? AND path_id = ?"
LIST_PATHS = (
    f"SELECT {_PATH_FIELDS} FROM paths WHERE tenant = ? AND (? IS NULL OR goal = ?) AND (enabled OR ?) "
    "ORDER BY created_at, rowid"
)
ENABLE_PATH = "UPDATE paths SET enabled = ? WHERE tenant = ? AND path_id = ?"

SELECT_CONFIG = "SELECT goal, fields FROM config WHERE tenant = ? AND goal IN (?, '*')"
UPSERT_CONFIG = (
    "INSERT INTO config (tenant, goal, fields) VALUES (?, ?, ?) "
    "ON CONFLICT (tenant, goal) DO UPDATE SET fields = excluded.fields"
)

INSERT_KEY = "INSERT INTO api_keys (key_hash, tenant, created_at) VALUES (?, ?, ?) ON CONFLICT (key_hash) DO NOTHING"
SELECT_KEY = "SELECT tenant FROM api_keys WHERE key_hash = ?"
LIST_KEYS = """
    SELECT tenant, key_hash, created_at FROM api_keys WHERE ? IS NULL OR tenant = ? ORDER BY created_at, key_hash
"""
DELETE_KEY = "DELETE FROM api_keys WHERE key_hash = ?"

PRUNE_DECISIONS = """
    DELETE FROM decisions
    WHERE (tenant, trace_id) IN (SELECT tenant, trace_id FROM decisions WHERE decided_at < ? LIMIT ?)
"""
PRUNE_OUTCOMES = "DELETE FROM outcomes WHERE id IN (SELECT id FROM outcomes WHERE reported_at < ? LIMIT ?)"

INSERT_EVENT = "INSERT INTO events (tenant, goal, kind, data, at) VALUES (?, ?, ?, ?, ?)"
EVENTS_SINCE = "SELECT at, goal, kind, data FROM events WHERE tenant = ? AND at >= ? ORDER BY at, id"
GOAL_EVENTS_SINCE = "SELECT at, goal, kind, data FROM events WHERE tenant = ? AND goal = ? AND at >= ? ORDER BY at, id"


def outcome_values(record: OutcomeRecord) -> tuple[Any, ...]:
    """The record's columns in ``_OUTCOME_FIELDS`` order."""
    success = None if record.success is None else int(record.success)
    return (
        record.trace_id,
        record.goal,
        record.path_id,
        record.model,
        record.score,
        success,
        record.failure_category,
        record.reason,
        record.cost_usd,
        record.latency_ms,
        record.input_tokens,
        record.output_tokens,
        record.source,
        to_micros(record.reported_at, "reported_at"),
    )


def changeable_values(record: OutcomeRecord) -> tuple[Any, ...]:
    """The columns ``update_outcome`` may change, in ``UPDATE_OUTCOME`` order."""
    return (
        record.score,
        None if record.success is None else int(record.success),
        record.failure_category,
        record.reason,
        record.source,
    )


def outcome_from_row(row: Sequence[Any]) -> OutcomeRecord:
    (trace_id, goal, path_id, model, score, success, category, reason, cost, latency, tokens_in, tokens_out) = row[:12]
    source, reported_at, params = row[12:]
    return OutcomeRecord(
        trace_id=trace_id,
        goal=goal,
        path_id=path_id,
        model=model,
        score=score,
        success=None if success is None else bool(success),
        failure_category=category,
        reason=reason,
        cost_usd=cost,
        latency_ms=latency,
        input_tokens=tokens_in,
        output_tokens=tokens_out,
        source=source,
        reported_at=from_micros(reported_at),
        params=json.loads(params) if params else {},
    )
