"""The shared store: PostgreSQL through psycopg 3 and a connection pool, for several service replicas.

Writes that change arms lock the arms they touch (``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``, in key
order) before stepping them in Python, so concurrent reports from any number of processes lose no update.
A deadlock or serialization failure retries the whole transaction; steps are pure, so rerunning is safe.
"""

from __future__ import annotations

import dataclasses
import random
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg
import psycopg_pool
from psycopg import errors as pg_errors

from kalibr._domain import Decision, Outcome, Path
from kalibr._exceptions import UserError
from kalibr.policies.base import ArmState, PolicyConfig
from kalibr.stores import _aggregates as agg
from kalibr.stores import _postgres_queries as q
from kalibr.stores import _rollups as rollups
from kalibr.stores._columns import columns_from_values
from kalibr.stores._postgres_schema import migrate
from kalibr.stores._records import (
    arm_for,
    arm_from_values,
    changed_outcome,
    config_from_json,
    config_to_json,
    delete_in_batches,
    event_entry,
    event_json,
    outcome_record,
    path_columns,
    path_record_from_row,
    storable_path,
    translate_errors,
    utc,
)
from kalibr.stores.base import (
    DecisionOutcome,
    DecisionRecord,
    OutcomeBucket,
    OutcomeChanges,
    OutcomeColumns,
    OutcomeRecord,
    PathRecord,
)

__all__ = ["PostgresStore"]

_T = TypeVar("_T")
_Conn = psycopg.Connection[tuple[Any, ...]]
_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_RETRIES = 8
_translated = translate_errors((psycopg.Error, psycopg_pool.PoolTimeout))


class PostgresStore:
    """A store in a PostgreSQL database; tables are created (or migrated) on start.

    Usage::

        store = PostgresStore("postgresql://kalibr@db.internal/kalibr", max_connections=20)

    ``schema`` keeps Kalibr's tables in their own PostgreSQL schema (created if missing).
    """

    def __init__(
        self, url: str, *, schema: str | None = None, max_connections: int = 10, connect_timeout_s: float = 10.0
    ) -> None:
        if schema is not None and not _SCHEMA_NAME.fullmatch(schema):
            raise UserError(f"invalid schema {schema!r}: use letters, digits and _ (at most 63), e.g. 'kalibr'")
        self.url = url
        self.schema = schema
        options = "-c timezone=UTC" + ("" if schema is None else f" -c search_path={schema}")
        self._connect_kwargs: dict[str, Any] = {"autocommit": True, "options": options}
        self._pool = psycopg_pool.ConnectionPool(
            url, min_size=1, max_size=max_connections, kwargs=self._connect_kwargs, open=False, name="kalibr"
        )
        self._start(connect_timeout_s)

    def __repr__(self) -> str:
        # Never show a password from the URL.
        shown = re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", self.url)
        return (
            f"PostgresStore({shown!r})" if self.schema is None else f"PostgresStore({shown!r}, schema={self.schema!r})"
        )

    @_translated
    def _start(self, timeout_s: float) -> None:
        with psycopg.connect(self.url, connect_timeout=max(1, int(timeout_s)), **self._connect_kwargs) as conn:
            migrate(conn, self.schema, repr(self))
        self._pool.open(wait=True, timeout=timeout_s)

    def _transaction(self, work: Callable[[_Conn], _T], *, pipeline: bool = False) -> _T:
        """Run ``work`` in one transaction, again from the start if PostgreSQL reports a deadlock or conflict.

        ``pipeline``: statements are sent without waiting for each result, until ``work`` fetches one.
        """
        for attempt in range(_RETRIES):
            try:
                with (
                    self._pool.connection() as conn,
                    conn.pipeline() if pipeline else nullcontext(),
                    conn.transaction(),
                ):
                    return work(conn)
            except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure):
                if attempt == _RETRIES - 1:
                    raise
                time.sleep(random.uniform(0, 0.005 * 2**attempt))  # jitter, not security
        raise AssertionError("unreachable")

    def _query(self, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self._pool.connection() as conn:
            return conn.execute(query, params).fetchall()

    # --- arms -----------------------------------------------------------------------------------------------
    @_translated
    def load_arms(self, tenant: str, goal: str, paths: Sequence[Path]) -> list[ArmState]:
        found = {row[0]: row for row in self._query(q.GOAL_ARMS, (tenant, goal))}
        return [arm_for(path, found.get(path.path_id)) for path in paths]

    @_translated
    def update_arm(self, tenant: str, goal: str, path: Path, step: Callable[[ArmState], ArmState]) -> ArmState:
        def work(conn: _Conn) -> ArmState:
            (arm,) = _lock_arms(conn, tenant, [(goal, path.path_id, path.model)]).values()
            new = step(arm)
            _save_arms(conn, tenant, [(goal, new)])
            return new

        return self._transaction(work)

    @_translated
    def model_totals(self, tenant: str) -> Mapping[str, tuple[float, float]]:
        return {model: (float(s), float(f)) for model, s, f in self._query(q.MODEL_TOTALS, (tenant,))}

    @_translated
    def model_costs(self, tenant: str) -> Mapping[str, tuple[float, int]]:
        return {model: (float(total), int(calls)) for model, total, calls in self._query(q.MODEL_COSTS, (tenant,))}

    # --- decisions and outcomes -----------------------------------------------------------------------------
    @_translated
    def record_decisions(self, tenant: str, decisions: Sequence[Decision]) -> None:
        if decisions:

            def insert(conn: _Conn) -> None:
                # A decision lost in a database crash costs nothing (its outcome is still matched by model),
                # so it need not wait for the disk: the commit returns before the WAL is flushed.
                conn.execute("SET LOCAL synchronous_commit = off")
                conn.execute(q.INSERT_DECISIONS, (tenant, q.decisions_json(decisions)))

            self._transaction(insert)

    @_translated
    def get_decision(self, tenant: str, trace_id: str) -> DecisionRecord | None:
        rows = self._query(q.SELECT_DECISION, (tenant, trace_id))
        if not rows:
            return None
        goal, path_id, model, exploration, decided_at = rows[0]
        return DecisionRecord(trace_id, goal, path_id, model, exploration, decided_at.astimezone(UTC))

    @_translated
    def apply_outcomes(
        self,
        tenant: str,
        items: Sequence[tuple[Outcome, Callable[[ArmState], ArmState]]],
        decisions: Sequence[Decision] = (),
    ) -> list[bool]:
        records = [(outcome_record(outcome), step) for outcome, step in items]
        first: dict[str, int] = {}
        for index, (record, _) in enumerate(records):
            first.setdefault(record.trace_id, index)
        unique = [records[index] for index in first.values()]
        models: dict[tuple[str, str], str] = {}
        for record, _ in unique:
            if not models.get((record.goal, record.path_id)):
                models[record.goal, record.path_id] = record.model or ""
        keys = [(goal, path_id, model) for (goal, path_id), model in sorted(models.items())]

        def work(conn: _Conn) -> set[str]:
            # Pipelined: the decisions, the outcomes and the arm locks go in one round trip. Every arm of the
            # batch is locked, though a duplicate outcome leaves its arm as it was.
            if decisions:
                conn.execute(q.INSERT_DECISIONS, (tenant, q.decisions_json(decisions)))
            inserted_rows = conn.execute(q.INSERT_OUTCOMES, (tenant, q.outcomes_json([r for r, _ in unique])))
            arms = _lock_arms(conn, tenant, keys)  # fetching its rows sends all three statements at once
            inserted = {row[0] for row in inserted_rows.fetchall()}
            for record, step in unique:
                if record.trace_id in inserted:
                    key = (record.goal, record.path_id)
                    arms[key] = step(arms[key])
            _save_arms(conn, tenant, [(goal, arm) for (goal, _), arm in arms.items()])
            return inserted

        if not unique:
            self.record_decisions(tenant, decisions)
            return [False] * len(records)
        inserted = self._transaction(work, pipeline=True)
        return [index == first[r.trace_id] and r.trace_id in inserted for index, (r, _) in enumerate(records)]

    @_translated
    def update_outcome(
        self,
        tenant: str,
        trace_id: str,
        changes: OutcomeChanges,
        adjust: Callable[[ArmState, float, float], ArmState],
    ) -> OutcomeRecord | None:
        def work(conn: _Conn) -> OutcomeRecord | None:
            row = conn.execute(q.LOCK_OUTCOME, (tenant, trace_id)).fetchone()
            if row is None:
                return None
            old = q.outcome_from_row(row)
            new = changed_outcome(old, changes)
            changed = (new.score, new.success, new.failure_category, new.reason, new.source)
            conn.execute(q.UPDATE_OUTCOME, (*changed, tenant, trace_id))
            if new.score != old.score:
                (arm,) = _lock_arms(conn, tenant, [(old.goal, old.path_id, old.model or "")]).values()
                _save_arms(conn, tenant, [(old.goal, adjust(arm, old.score, new.score))])
            return new

        return self._transaction(work)

    @_translated
    def outcomes(self, tenant: str, goal: str | None, since: datetime) -> list[OutcomeRecord]:
        start = utc(since, "since")
        if goal is None:
            rows = self._query(q.OUTCOMES_SINCE, (tenant, start))
        else:
            rows = self._query(q.GOAL_OUTCOMES_SINCE, (tenant, goal, start))
        return [q.outcome_from_row(row) for row in rows]

    @_translated
    def outcome_columns(self, tenant: str, goal: str, since: datetime) -> OutcomeColumns:
        ((_, *arrays),) = self._query(q.GOAL_OUTCOME_COLUMNS, (tenant, goal, utc(since, "since")))
        return columns_from_values(*(values or [] for values in arrays))  # no outcome: every array is NULL

    @_translated
    def prune(self, before: datetime) -> tuple[int, int]:
        cutoff = utc(before, "before")

        def deleter(statement: str) -> Callable[[int], int]:
            return lambda limit: self._transaction(lambda conn: conn.execute(statement, (cutoff, limit)).rowcount)

        return delete_in_batches(deleter(q.PRUNE_DECISIONS)), delete_in_batches(deleter(q.PRUNE_OUTCOMES))

    @_translated
    def goals(self, tenant: str) -> list[str]:
        return [goal for (goal,) in self._query(q.GOALS, (tenant, tenant))]

    # --- paths and config -------------------------------------------------------------------------------
    @_translated
    def register_path(self, tenant: str, record: PathRecord) -> PathRecord:
        record = dataclasses.replace(record, path=storable_path(record.path))
        values = (tenant, record.goal, *path_columns(record), utc(record.created_at, "created_at"))

        def work(conn: _Conn) -> tuple[Any, ...] | None:
            conn.execute(q.INSERT_PATH, values)
            return conn.execute(q.SELECT_PATH, (tenant, record.goal, record.path.path_id)).fetchone()

        row = self._transaction(work)
        assert row is not None, "a path just inserted (or already there) must be found"
        return path_record_from_row(row)

    @_translated
    def list_paths(self, tenant: str, goal: str | None, *, include_disabled: bool = False) -> list[PathRecord]:
        return [path_record_from_row(row) for row in self._query(q.LIST_PATHS, (tenant, goal, goal, include_disabled))]

    @_translated
    def set_path_enabled(self, tenant: str, path_id: str, enabled: bool) -> bool:
        return self._transaction(lambda conn: conn.execute(q.ENABLE_PATH, (enabled, tenant, path_id)).rowcount > 0)

    @_translated
    def get_config(self, tenant: str, goal: str) -> PolicyConfig:
        found = dict(self._query(q.SELECT_CONFIG, (tenant, goal)))
        fields = found.get(goal, found.get("*"))
        return PolicyConfig() if fields is None else config_from_json(fields)

    @_translated
    def set_config(self, tenant: str, goal: str, config: PolicyConfig) -> None:
        self._transaction(lambda conn: conn.execute(q.UPSERT_CONFIG, (tenant, goal, config_to_json(config))))

    # --- change log -------------------------------------------------------------------------------------
    @_translated
    def record_event(self, tenant: str, goal: str, kind: str, data: Mapping[str, Any]) -> None:
        values = (tenant, goal, kind, event_json(goal, kind, data), datetime.now(UTC))
        self._transaction(lambda conn: conn.execute(q.INSERT_EVENT, values))

    @_translated
    def events(self, tenant: str, goal: str | None, since: datetime) -> list[dict[str, Any]]:
        start = utc(since, "since")
        if goal is None:
            rows = self._query(q.EVENTS_SINCE, (tenant, start))
        else:
            rows = self._query(q.GOAL_EVENTS_SINCE, (tenant, goal, start))
        return [event_entry(at, event_goal, kind, data) for at, event_goal, kind, data in rows]

    # --- tenants ----------------------------------------------------------------------------------------
    @_translated
    def add_api_key(self, tenant: str, key_hash: str) -> None:
        def work(conn: _Conn) -> tuple[Any, ...] | None:
            conn.execute(q.INSERT_KEY, (key_hash, tenant))
            return conn.execute(q.SELECT_KEY, (key_hash,)).fetchone()

        row = self._transaction(work)
        if row is None or row[0] != tenant:
            raise UserError("that API key already belongs to another tenant: generate a new key")

    @_translated
    def tenant_for_key(self, key_hash: str) -> str | None:
        rows = self._query(q.SELECT_KEY, (key_hash,))
        return str(rows[0][0]) if rows else None

    @_translated
    def list_api_keys(self, tenant: str | None) -> list[tuple[str, str, datetime]]:
        """(tenant, key hash, created at) of every key, or of one tenant's, oldest first."""
        rows = self._query(q.LIST_KEYS, (tenant, tenant))
        return [(owner, key_hash, created.astimezone(UTC)) for owner, key_hash, created in rows]

    @_translated
    def revoke_api_key(self, key_hash: str) -> bool:
        """Forget a key; False if there was no such key."""
        return self._transaction(lambda conn: conn.execute(q.DELETE_KEY, (key_hash,)).rowcount > 0)

    # --- aggregates for the dashboard -------------------------------------------------------------------
    @_translated
    def outcome_buckets(
        self, tenant: str, goal: str | None, since: datetime, bucket_seconds: float
    ) -> list[OutcomeBucket]:
        since = utc(since, "since")
        agg.check_buckets(since, bucket_seconds)
        if bucket_seconds >= 60:
            minute, minutes = int(since.timestamp()) // 60, int(bucket_seconds // 60)
            if goal is None:
                rows = self._query(rollups.minute_buckets("%s", True), (minute, minutes, tenant, minute))
            else:
                rows = self._query(rollups.minute_buckets("%s", False), (minute, minutes, tenant, goal, minute))
        elif goal is None:
            rows = self._query(agg.POSTGRES_ALL_BUCKETS, (since, bucket_seconds, tenant, since))
        else:
            rows = self._query(agg.POSTGRES_GOAL_BUCKETS, (since, bucket_seconds, tenant, goal, since))
        return agg.buckets_from_rows(rows, since, bucket_seconds)

    @_translated
    def latency_percentiles(self, tenant: str, goal: str, since: datetime) -> dict[str, tuple[float, float]]:
        query = rollups.hour_details("%s", rollups.LATENCY_PREFIX)
        return rollups.percentiles_by_path(self._query(query, (tenant, goal, agg.hour_of(utc(since, "since")))))

    @_translated
    def failure_counts(self, tenant: str, goal: str, since: datetime) -> list[tuple[str, str, int]]:
        query = rollups.hour_details("%s", rollups.FAILURE_PREFIX)
        rows = self._query(query, (tenant, goal, agg.hour_of(utc(since, "since"))))
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
        statement = agg.postgres_recent_decisions(goal, path_id, trace_id)
        rows = self._query(statement, agg.decision_filters(tenant, goal, path_id, trace_id, limit))
        return [agg.decision_outcome_from_row(row, _as_utc, q.outcome_from_row) for row in rows]

    def close(self) -> None:
        self._pool.close()


def _lock_arms(conn: _Conn, tenant: str, keys: Sequence[tuple[str, str, str]]) -> dict[tuple[str, str], ArmState]:
    """Lock (creating where missing) the arms of ``keys`` (goal, path id, model) and return their state."""
    model_of = {(goal, path_id): model for goal, path_id, model in keys}
    rows = conn.execute(q.LOCK_ARMS, (tenant, q.arm_keys_json(keys))).fetchall()
    return {(row[0], row[1]): arm_from_values(row[1], model_of[row[0], row[1]], row[2:]) for row in rows}


def _save_arms(conn: _Conn, tenant: str, arms: Iterable[tuple[str, ArmState]]) -> None:
    rows = list(arms)
    if rows:
        conn.execute(q.SAVE_ARMS, (q.arms_json(rows), tenant))


def _as_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)
