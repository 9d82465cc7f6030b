"""The default store: one SQLite file, safe for many threads and several processes on one machine.

Each thread gets its own connection (WAL lets readers run beside the writer). Every write is one
``BEGIN IMMEDIATE`` transaction: it takes the write lock before reading, so a read-modify-write of an arm
from another thread or process waits (``busy_timeout``) instead of losing an update.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path as FilePath
from typing import Any

from kalibr._domain import Decision, Outcome, Path
from kalibr._exceptions import StoreError, UserError
from kalibr.policies.base import ArmState, PolicyConfig
from kalibr.stores import _aggregates as agg
from kalibr.stores import _rollups as rollups
from kalibr.stores import _sqlite_queries as q
from kalibr.stores._columns import columns_from_joined, columns_from_values
from kalibr.stores._records import (
    arm_for,
    arm_from_values,
    arm_values,
    changed_outcome,
    config_from_json,
    config_to_json,
    decision_record,
    delete_in_batches,
    event_entry,
    event_json,
    from_micros,
    outcome_record,
    path_columns,
    path_record_from_row,
    storable_path,
    to_micros,
    translate_errors,
    utc,
)
from kalibr.stores._sqlite_schema import migrate
from kalibr.stores.base import (
    DecisionOutcome,
    DecisionRecord,
    OutcomeBucket,
    OutcomeChanges,
    OutcomeColumns,
    OutcomeRecord,
    PathRecord,
)

__all__ = ["SQLiteStore", "sqlite_path_from_url"]


def sqlite_path_from_url(url: str) -> str:
    """The file a ``sqlite:`` URL (``sqlite:///abs/path.db``, ``sqlite:relative.db``) or a plain path names."""
    if url.lower().startswith("sqlite:"):
        rest = url[len("sqlite:") :]
        path = rest[2:] if rest.startswith("//") else rest
    else:
        path = url
    if not path or path == ":memory:" or path.startswith("file:"):
        raise UserError(
            f"invalid SQLite location {url!r}: name a file (sqlite:///abs/kalibr.db); for memory use 'memory:'"
        )
    return path


_translated = translate_errors((sqlite3.Error,))

_MAX_CACHED = 256


class _ThreadConnection:
    """One thread's connection, and the arm reads it may serve again while nobody has written since."""

    __slots__ = ("__weakref__", "arms", "loads", "sql", "writes")

    def __init__(self, sql: sqlite3.Connection) -> None:
        self.sql = sql
        self.writes = 0
        self.loads: dict[tuple[str, str, tuple[str, ...]], tuple[tuple[int, int], list[ArmState]]] = {}
        self.arms: dict[tuple[str, str, str], tuple[tuple[Any, ...], ArmState]] = {}

    def arm(self, tenant: str, goal: str, path: Path, row: tuple[Any, ...] | None) -> ArmState:
        """The arm a row holds; building an ``ArmState`` costs more than the query, so unchanged rows reuse one."""
        if row is None:
            return arm_for(path, None)
        key = (tenant, goal, path.path_id)
        known = self.arms.get(key)
        if known is not None and known[0] == row:
            return known[1]
        arm = arm_for(path, row)
        if len(self.arms) >= _MAX_CACHED * 16:
            self.arms.clear()
        self.arms[key] = (row, arm)
        return arm

    def __del__(self) -> None:
        # The thread ended (its thread-local state is dropped) or the store was: release the file handle.
        self.sql.close()

    def stamp(self) -> tuple[int, int]:
        """Changes whenever a write commits: from another connection (``data_version``) or from this one."""
        row = self.sql.execute("PRAGMA data_version").fetchone()
        return (int(row[0]), self.writes)


class SQLiteStore:
    """A store in one SQLite file, created (with its folder) if missing and migrated on open.

    Usage::

        store = SQLiteStore("/var/lib/kalibr/kalibr.db")
    """

    def __init__(self, location: str | os.PathLike[str], *, busy_timeout_s: float = 30.0) -> None:
        self.location = os.fspath(location)
        self._busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._connections: weakref.WeakSet[_ThreadConnection] = weakref.WeakSet()
        self._connections_lock = threading.Lock()
        self._closed = False
        FilePath(self.location).expanduser().parent.mkdir(parents=True, exist_ok=True)
        self._open()

    def __repr__(self) -> str:
        return f"SQLiteStore({self.location!r})"

    @_translated
    def _open(self) -> None:
        conn = self._conn()
        conn.execute("PRAGMA journal_mode=WAL")
        migrate(conn, self.location)

    def _thread(self) -> _ThreadConnection:
        thread: _ThreadConnection | None = getattr(self._local, "thread", None)
        if thread is None:
            if self._closed:
                raise StoreError(f"SQLite store {self.location!r} is closed")
            # check_same_thread=False only so close() can close every thread's connection; each is used by one.
            conn = sqlite3.connect(
                os.path.expanduser(self.location),
                timeout=self._busy_timeout_s,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute("PRAGMA synchronous=NORMAL")
            thread = self._local.thread = _ThreadConnection(conn)
            with self._connections_lock:
                self._connections.add(thread)
        return thread

    def _conn(self) -> sqlite3.Connection:
        return self._thread().sql

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction holding the file's write lock from its first statement."""
        thread = self._thread()
        conn = thread.sql
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        thread.writes += 1

    # --- arms -----------------------------------------------------------------------------------------------
    @_translated
    def load_arms(self, tenant: str, goal: str, paths: Sequence[Path]) -> list[ArmState]:
        thread = self._thread()
        ids = tuple(path.path_id for path in paths)
        key = (tenant, goal, ids)
        stamp = thread.stamp()
        cached = thread.loads.get(key)
        if cached is not None and cached[0] == stamp:
            return list(cached[1])
        found = {row[0]: row for row in thread.sql.execute(q.GOAL_ARMS, (tenant, goal))}
        arms = [thread.arm(tenant, goal, path, found.get(path.path_id)) for path in paths]
        if len(thread.loads) >= _MAX_CACHED:
            thread.loads.clear()
        thread.loads[key] = (stamp, arms)
        return list(arms)

    @_translated
    def update_arm(self, tenant: str, goal: str, path: Path, step: Callable[[ArmState], ArmState]) -> ArmState:
        with self._write() as conn:
            arm = step(self._read_arm(conn, tenant, goal, path.path_id, path.model))
            self._save_arms(conn, tenant, [(goal, arm)])
        return arm

    @_translated
    def model_totals(self, tenant: str) -> Mapping[str, tuple[float, float]]:
        rows = self._conn().execute(q.MODEL_TOTALS, (tenant,))
        return {model: (float(successes), float(failures)) for model, successes, failures in rows}

    @_translated
    def model_costs(self, tenant: str) -> Mapping[str, tuple[float, int]]:
        rows = self._conn().execute(q.MODEL_COSTS, (tenant,))
        return {model: (float(total), int(calls)) for model, total, calls in rows}

    @staticmethod
    def _read_arm(conn: sqlite3.Connection, tenant: str, goal: str, path_id: str, model: str | None) -> ArmState:
        row = conn.execute(q.select_arms(1), (tenant, goal, path_id)).fetchone()
        return ArmState(path_id, model or "") if row is None else arm_from_values(path_id, model or "", row[1:])

    @staticmethod
    def _save_arms(conn: sqlite3.Connection, tenant: str, arms: Iterable[tuple[str, ArmState]]) -> None:
        rows = [(tenant, goal, arm.path_id, arm.model, *arm_values(arm)) for goal, arm in arms]
        conn.executemany(q.UPSERT_ARM, rows)

    # --- decisions and outcomes -----------------------------------------------------------------------------
    @_translated
    def record_decisions(self, tenant: str, decisions: Sequence[Decision]) -> None:
        with self._write() as conn:
            _insert_decisions(conn, tenant, decisions)

    @_translated
    def get_decision(self, tenant: str, trace_id: str) -> DecisionRecord | None:
        row = self._conn().execute(q.SELECT_DECISION, (tenant, trace_id)).fetchone()
        if row is None:
            return None
        goal, path_id, model, exploration, decided_at = row
        return DecisionRecord(trace_id, goal, path_id, model, bool(exploration), from_micros(decided_at))

    @_translated
    def apply_outcomes(
        self,
        tenant: str,
        items: Sequence[tuple[Outcome, Callable[[ArmState], ArmState]]],
        decisions: Sequence[Decision] = (),
    ) -> list[bool]:
        records = [(outcome_record(outcome), step) for outcome, step in items]
        applied: list[bool] = []
        staged: dict[tuple[str, str], ArmState] = {}
        with self._write() as conn:
            if decisions:
                _insert_decisions(conn, tenant, decisions)
            for record, step in records:
                inserted = conn.execute(q.INSERT_OUTCOME, (tenant, *q.outcome_values(record))).rowcount == 1
                applied.append(inserted)
                if inserted:
                    key = (record.goal, record.path_id)
                    arm = staged.get(key) or self._read_arm(conn, tenant, *key, record.model)
                    staged[key] = step(arm)
            self._save_arms(conn, tenant, [(goal, arm) for (goal, _), arm in staged.items()])
        return applied

    @_translated
    def update_outcome(
        self,
        tenant: str,
        trace_id: str,
        changes: OutcomeChanges,
        adjust: Callable[[ArmState, float, float], ArmState],
    ) -> OutcomeRecord | None:
        with self._write() as conn:
            row = conn.execute(q.SELECT_OUTCOME, (tenant, trace_id)).fetchone()
            if row is None:
                return None
            old = q.outcome_from_row(row)
            new = changed_outcome(old, changes)
            conn.execute(q.UPDATE_OUTCOME, (*q.changeable_values(new), tenant, trace_id))
            if new.score != old.score:
                arm = adjust(self._read_arm(conn, tenant, old.goal, old.path_id, old.model), old.score, new.score)
                self._save_arms(conn, tenant, [(old.goal, arm)])
        return new

    @_translated
    def outcomes(self, tenant: str, goal: str | None, since: datetime) -> list[OutcomeRecord]:
        start = to_micros(since, "since")
        if goal is None:
            rows = self._conn().execute(q.OUTCOMES_SINCE, (tenant, start))
        else:
            rows = self._conn().execute(q.GOAL_OUTCOMES_SINCE, (tenant, goal, start))
        return [q.outcome_from_row(row) for row in rows]

    @_translated
    def outcome_columns(self, tenant: str, goal: str, since: datetime) -> OutcomeColumns:
        parameters = (tenant, goal, to_micros(since, "since"))
        count, *joined = self._conn().execute(q.GOAL_OUTCOME_COLUMNS, parameters).fetchone()
        found = columns_from_joined(count, joined)
        if found is None:
            rows = self._conn().execute(q.GOAL_OUTCOME_ROWS, parameters).fetchall()
            found = columns_from_values(*zip(*rows, strict=True))
        return found

    @_translated
    def prune(self, before: datetime) -> tuple[int, int]:
        cutoff = to_micros(before, "before")

        def deleter(statement: str) -> Callable[[int], int]:
            def delete_batch(limit: int) -> int:
                with self._write() as conn:
                    return conn.execute(statement, (cutoff, limit)).rowcount

            return delete_batch

        return delete_in_batches(deleter(q.PRUNE_DECISIONS)), delete_in_batches(deleter(q.PRUNE_OUTCOMES))

    @_translated
    def goals(self, tenant: str) -> list[str]:
        return [goal for (goal,) in self._conn().execute(q.GOALS, (tenant, tenant))]

    # --- paths and config -------------------------------------------------------------------------------
    @_translated
    def register_path(self, tenant: str, record: PathRecord) -> PathRecord:
        record = PathRecord(
            record.goal,
            storable_path(record.path),
            record.enabled,
            record.created_at,
            record.risk_level,
            record.tool_id,
        )
        with self._write() as conn:
            values = (tenant, record.goal, *path_columns(record), to_micros(record.created_at, "created_at"))
            conn.execute(q.INSERT_PATH, values)
            row = conn.execute(q.SELECT_PATH, (tenant, record.goal, record.path.path_id)).fetchone()
        return path_record_from_row(row)

    @_translated
    def list_paths(self, tenant: str, goal: str | None, *, include_disabled: bool = False) -> list[PathRecord]:
        rows = self._conn().execute(q.LIST_PATHS, (tenant, goal, goal, int(include_disabled)))
        return [path_record_from_row(row) for row in rows]

    @_translated
    def set_path_enabled(self, tenant: str, path_id: str, enabled: bool) -> bool:
        with self._write() as conn:
            return conn.execute(q.ENABLE_PATH, (int(enabled), tenant, path_id)).rowcount > 0

    @_translated
    def get_config(self, tenant: str, goal: str) -> PolicyConfig:
        found = dict(self._conn().execute(q.SELECT_CONFIG, (tenant, goal)).fetchall())
        fields = found.get(goal, found.get("*"))
        return PolicyConfig() if fields is None else config_from_json(fields)

    @_translated
    def set_config(self, tenant: str, goal: str, config: PolicyConfig) -> None:
        with self._write() as conn:
            conn.execute(q.UPSERT_CONFIG, (tenant, goal, config_to_json(config)))

    # --- change log -------------------------------------------------------------------------------------
    @_translated
    def record_event(self, tenant: str, goal: str, kind: str, data: Mapping[str, Any]) -> None:
        text = event_json(goal, kind, data)
        with self._write() as conn:
            # Stamped inside the write lock, so entries from several processes are stored in time order.
            conn.execute(q.INSERT_EVENT, (tenant, goal, kind, text, to_micros(datetime.now(UTC))))

    @_translated
    def events(self, tenant: str, goal: str | None, since: datetime) -> list[dict[str, Any]]:
        start = to_micros(since, "since")
        if goal is None:
            rows = self._conn().execute(q.EVENTS_SINCE, (tenant, start))
        else:
            rows = self._conn().execute(q.GOAL_EVENTS_SINCE, (tenant, goal, start))
        return [event_entry(from_micros(at), event_goal, kind, data) for at, event_goal, kind, data in rows]

    # --- tenants ----------------------------------------------------------------------------------------
    @_translated
    def add_api_key(self, tenant: str, key_hash: str) -> None:
        with self._write() as conn:
            conn.execute(q.INSERT_KEY, (key_hash, tenant, to_micros(datetime.now(UTC))))
            (owner,) = conn.execute(q.SELECT_KEY, (key_hash,)).fetchone()
        if owner != tenant:
            raise UserError("that API key already belongs to another tenant: generate a new key")

    @_translated
    def tenant_for_key(self, key_hash: str) -> str | None:
        row = self._conn().execute(q.SELECT_KEY, (key_hash,)).fetchone()
        return None if row is None else str(row[0])

    @_translated
    def list_api_keys(self, tenant: str | None) -> list[tuple[str, str, datetime]]:
        """(tenant, key hash, created at) of every key, or of one tenant's, oldest first."""
        rows = self._conn().execute(q.LIST_KEYS, (tenant, tenant))
        return [(owner, key_hash, from_micros(created)) for owner, key_hash, created in rows]

    @_translated
    def revoke_api_key(self, key_hash: str) -> bool:
        """Forget a key; False if there was no such key."""
        with self._write() as conn:
            return conn.execute(q.DELETE_KEY, (key_hash,)).rowcount > 0

    # --- aggregates for the dashboard -------------------------------------------------------------------
    @_translated
    def outcome_buckets(
        self, tenant: str, goal: str | None, since: datetime, bucket_seconds: float
    ) -> list[OutcomeBucket]:
        agg.check_buckets(since, bucket_seconds)
        start = to_micros(since, "since")
        conn = self._conn()
        if bucket_seconds >= 60:
            minute, minutes = start // 60_000_000, int(bucket_seconds // 60)
            if goal is None:
                rows = conn.execute(rollups.minute_buckets("?", True), (minute, minutes, tenant, minute))
            else:
                rows = conn.execute(rollups.minute_buckets("?", False), (minute, minutes, tenant, goal, minute))
            return agg.buckets_from_rows(rows, from_micros(start), bucket_seconds)
        width = max(1, round(bucket_seconds * 1_000_000))
        if goal is None:
            rows = conn.execute(agg.SQLITE_ALL_BUCKETS, (start, width, tenant, start))
        else:
            rows = conn.execute(agg.SQLITE_GOAL_BUCKETS, (start, width, tenant, goal, start))
        return agg.buckets_from_rows(rows, from_micros(start), width / 1_000_000)

    @_translated
    def latency_percentiles(self, tenant: str, goal: str, since: datetime) -> dict[str, tuple[float, float]]:
        query = rollups.hour_details("?", rollups.LATENCY_PREFIX)
        return rollups.percentiles_by_path(self._conn().execute(query, (tenant, goal, agg.hour_of(utc(since)))))

    @_translated
    def failure_counts(self, tenant: str, goal: str, since: datetime) -> list[tuple[str, str, int]]:
        query = rollups.hour_details("?", rollups.FAILURE_PREFIX)
        rows = self._conn().execute(query, (tenant, goal, agg.hour_of(utc(since))))
        return [(path_id, category, int(n)) for path_id, category, n in rows]

    @_translated
    def recent_decisions(
        self,
        tenant: str,
        goal: str | None = None,
        *,
        path_id: str | None = None,
        trace_id: str | None = None,
        limit: int = 100,
    ) -> list[DecisionOutcome]:
        statement = agg.sqlite_recent_decisions(goal, path_id, trace_id)
        rows = self._conn().execute(statement, agg.decision_filters(tenant, goal, path_id, trace_id, limit))
        return [agg.decision_outcome_from_row(row, from_micros, q.outcome_from_row) for row in rows]

    def close(self) -> None:
        """Close every thread's connection; the store cannot be used afterwards."""
        with self._connections_lock:
            self._closed = True
            connections = list(self._connections)
        for thread in connections:
            thread.sql.close()


def _insert_decisions(conn: sqlite3.Connection, tenant: str, decisions: Sequence[Decision]) -> None:
    rows = [
        (r.trace_id, r.goal, r.path_id, r.model, int(r.exploration), to_micros(r.decided_at))
        for r in map(decision_record, decisions)
    ]
    conn.execute(q.INSERT_DECISIONS_JSON, (tenant, json.dumps(rows)))
