"""The SQLite schema and its migrations, run when a store opens.

``MIGRATIONS[n]`` takes a file from version ``n`` to ``n + 1``; each runs in its own ``BEGIN IMMEDIATE``
transaction (SQLite DDL is transactional), re-reading the version first so that processes opening the same
file at once migrate it exactly once. Times are integer microseconds since the epoch (UTC).
"""

from __future__ import annotations

import sqlite3

from kalibr._exceptions import StoreError
from kalibr.stores._rollups import SQLITE_ROLLUPS

__all__ = ["LATEST_VERSION", "migrate"]

_V1 = (
    """CREATE TABLE arms (
        tenant TEXT NOT NULL, goal TEXT NOT NULL, path_id TEXT NOT NULL, model TEXT NOT NULL DEFAULT '',
        successes REAL NOT NULL DEFAULT 0, failures REAL NOT NULL DEFAULT 0,
        samples INTEGER NOT NULL DEFAULT 0, total_samples INTEGER NOT NULL DEFAULT 0,
        cost_sum REAL NOT NULL DEFAULT 0, cost_count INTEGER NOT NULL DEFAULT 0,
        latency_sum REAL NOT NULL DEFAULT 0, latency_count INTEGER NOT NULL DEFAULT 0,
        last_outcome_at REAL, extra TEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (tenant, goal, path_id)
    ) WITHOUT ROWID""",
    """CREATE TABLE decisions (
        tenant TEXT NOT NULL, trace_id TEXT NOT NULL, goal TEXT NOT NULL, path_id TEXT NOT NULL,
        model TEXT NOT NULL, exploration INTEGER NOT NULL, decided_at INTEGER NOT NULL,
        PRIMARY KEY (tenant, trace_id)
    ) WITHOUT ROWID""",
    """CREATE TABLE outcomes (
        id INTEGER PRIMARY KEY, tenant TEXT NOT NULL, trace_id TEXT NOT NULL, goal TEXT NOT NULL,
        path_id TEXT NOT NULL, model TEXT, score REAL NOT NULL, success INTEGER, failure_category TEXT,
        reason TEXT, cost_usd REAL, latency_ms REAL, input_tokens INTEGER, output_tokens INTEGER,
        source TEXT NOT NULL, reported_at INTEGER NOT NULL,
        UNIQUE (tenant, trace_id)
    )""",
    "CREATE INDEX outcomes_by_goal_time ON outcomes (tenant, goal, reported_at)",
    "CREATE INDEX outcomes_by_time ON outcomes (tenant, reported_at)",
    """CREATE TABLE paths (
        tenant TEXT NOT NULL, goal TEXT NOT NULL, path_id TEXT NOT NULL, model TEXT NOT NULL,
        params TEXT NOT NULL, tools TEXT, provider TEXT, base_url TEXT, enabled INTEGER NOT NULL,
        risk_level TEXT NOT NULL, tool_id TEXT, created_at INTEGER NOT NULL,
        UNIQUE (tenant, goal, path_id)
    )""",
    "CREATE INDEX paths_by_id ON paths (tenant, path_id)",
    """CREATE TABLE config (
        tenant TEXT NOT NULL, goal TEXT NOT NULL, fields TEXT NOT NULL, PRIMARY KEY (tenant, goal)
    ) WITHOUT ROWID""",
    """CREATE TABLE api_keys (
        key_hash TEXT PRIMARY KEY, tenant TEXT NOT NULL, created_at INTEGER NOT NULL
    ) WITHOUT ROWID""",
)

# The change log. JSON is kept as TEXT (a column declared JSON would get NUMERIC affinity in SQLite).
_V2 = (
    """CREATE TABLE events (
        id INTEGER PRIMARY KEY, tenant TEXT NOT NULL, goal TEXT NOT NULL, kind TEXT NOT NULL,
        data TEXT NOT NULL, at INTEGER NOT NULL
    )""",
    "CREATE INDEX events_by_goal_time ON events (tenant, goal, at)",
    "CREATE INDEX events_by_time ON events (tenant, at)",
)

# Insights read a goal's outcomes in time order, a few columns of each (``GOAL_OUTCOME_COLUMNS``): an index holding
# exactly those answers from the index alone, without a table lookup per outcome. The id after the time keeps ties
# in arrival order; the index replaces the narrower one on (tenant, goal, reported_at), whose reads it also serves.
_V4 = (
    "CREATE INDEX IF NOT EXISTS outcomes_by_goal_time_covering ON outcomes (tenant, goal, reported_at, id, "
    "path_id, model, score, cost_usd, latency_ms, failure_category, source)",
    "DROP INDEX IF EXISTS outcomes_by_goal_time",
)

# Roll-ups of the outcomes for the dashboard, kept by triggers (``_rollups``).
MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1, _V2, SQLITE_ROLLUPS, _V4)
LATEST_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection, location: str, migrations: tuple[tuple[str, ...], ...] = MIGRATIONS) -> None:
    """Bring the file to the latest schema, or refuse one written by a newer Kalibr. ``conn`` is in autocommit."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    for target in range(1, len(migrations) + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = _version(conn)
            _check_not_newer(current, len(migrations), location)
            if current < target:
                for statement in migrations[target - 1]:
                    conn.execute(statement)
                conn.execute("DELETE FROM schema_version")
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (target,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    _check_not_newer(_version(conn), len(migrations), location)


def _version(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def _check_not_newer(version: int, latest: int, location: str) -> None:
    if version > latest:
        raise StoreError(
            f"the database {location!r} has schema version {version}, newer than this Kalibr knows ({latest}): "
            "upgrade kalibr-core, or point KALIBR_DB at another file"
        )
