"""The PostgreSQL schema and its migrations, run when a store starts.

Several replicas may start at once, so migrating holds a session advisory lock (keyed by the schema name);
each migration then runs in its own transaction, after re-reading the version.
"""

from __future__ import annotations

import hashlib

import psycopg
from psycopg import sql

from kalibr._exceptions import StoreError
from kalibr.stores._rollups import POSTGRES_ROLLUPS

__all__ = ["LATEST_VERSION", "migrate"]

_V1 = (
    """CREATE TABLE arms (
        tenant TEXT NOT NULL, goal TEXT NOT NULL, path_id TEXT NOT NULL, model TEXT NOT NULL DEFAULT '',
        successes DOUBLE PRECISION NOT NULL DEFAULT 0, failures DOUBLE PRECISION NOT NULL DEFAULT 0,
        samples BIGINT NOT NULL DEFAULT 0, total_samples BIGINT NOT NULL DEFAULT 0,
        cost_sum DOUBLE PRECISION NOT NULL DEFAULT 0, cost_count BIGINT NOT NULL DEFAULT 0,
        latency_sum DOUBLE PRECISION NOT NULL DEFAULT 0, latency_count BIGINT NOT NULL DEFAULT 0,
        last_outcome_at DOUBLE PRECISION, extra JSONB NOT NULL DEFAULT '{}',
        PRIMARY KEY (tenant, goal, path_id)
    )""",
    """CREATE TABLE decisions (
        tenant TEXT NOT NULL, trace_id TEXT NOT NULL, goal TEXT NOT NULL, path_id TEXT NOT NULL,
        model TEXT NOT NULL, exploration BOOLEAN NOT NULL, decided_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (tenant, trace_id)
    )""",
    """CREATE TABLE outcomes (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, tenant TEXT NOT NULL, trace_id TEXT NOT NULL,
        goal TEXT NOT NULL, path_id TEXT NOT NULL, model TEXT, score DOUBLE PRECISION NOT NULL, success BOOLEAN,
        failure_category TEXT, reason TEXT, cost_usd DOUBLE PRECISION, latency_ms DOUBLE PRECISION,
        input_tokens BIGINT, output_tokens BIGINT, source TEXT NOT NULL, reported_at TIMESTAMPTZ NOT NULL,
        UNIQUE (tenant, trace_id)
    )""",
    "CREATE INDEX outcomes_by_goal_time ON outcomes (tenant, goal, reported_at)",
    "CREATE INDEX outcomes_by_time ON outcomes (tenant, reported_at)",
    """CREATE TABLE paths (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, tenant TEXT NOT NULL, goal TEXT NOT NULL,
        path_id TEXT NOT NULL, model TEXT NOT NULL, params JSONB NOT NULL, tools JSONB, provider TEXT,
        base_url TEXT, enabled BOOLEAN NOT NULL, risk_level TEXT NOT NULL, tool_id TEXT,
        created_at TIMESTAMPTZ NOT NULL,
        UNIQUE (tenant, goal, path_id)
    )""",
    "CREATE INDEX paths_by_id ON paths (tenant, path_id)",
    """CREATE TABLE config (
        tenant TEXT NOT NULL, goal TEXT NOT NULL, fields JSONB NOT NULL, PRIMARY KEY (tenant, goal)
    )""",
    """CREATE TABLE api_keys (
        key_hash TEXT PRIMARY KEY, tenant TEXT NOT NULL, created_at TIMESTAMPTZ NOT NULL
    )""",
)

# The change log.
_V2 = (
    """CREATE TABLE events (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, tenant TEXT NOT NULL, goal TEXT NOT NULL,
        kind TEXT NOT NULL, data JSONB NOT NULL, at TIMESTAMPTZ NOT NULL
    )""",
    "CREATE INDEX events_by_goal_time ON events (tenant, goal, at)",
    "CREATE INDEX events_by_time ON events (tenant, at)",
)

# Roll-ups of the outcomes for the dashboard, kept by triggers (``_rollups``).
MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1, _V2, POSTGRES_ROLLUPS)
LATEST_VERSION = len(MIGRATIONS)


def migrate(conn: psycopg.Connection[tuple[object, ...]], schema: str | None, location: str) -> None:
    """Bring the schema to the latest version, or refuse one written by a newer Kalibr. ``conn`` is autocommit.

    ``schema`` None means the connection's own search path (usually ``public``).
    """
    lock_name = f"kalibr-schema:{schema or ''}"
    lock_key = int.from_bytes(hashlib.sha256(lock_name.encode()).digest()[:8], "big", signed=True)
    conn.execute("SELECT pg_advisory_lock(%s)", (lock_key,))
    try:
        with conn.transaction():
            if schema is not None:
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        current = _version(conn)
        _check_not_newer(current, location)
        for target in range(current + 1, LATEST_VERSION + 1):
            with conn.transaction():
                for statement in MIGRATIONS[target - 1]:
                    conn.execute(statement)
                conn.execute("DELETE FROM schema_version")
                conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (target,))
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (lock_key,))


def _version(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return 0 if row is None or row[0] is None else int(str(row[0]))


def _check_not_newer(version: int, location: str) -> None:
    if version > LATEST_VERSION:
        raise StoreError(
            f"the database {location} has schema version {version}, newer than this Kalibr knows "
            f"({LATEST_VERSION}): upgrade kalibr-core on every replica"
        )
