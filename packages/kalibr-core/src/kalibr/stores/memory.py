"""An in-process store: dictionaries behind one lock. For tests, the sandbox and offline replay.

It keeps exactly what the SQL stores keep (a path without its key, a capped reason), so a test that passes
on it says something about them too.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from kalibr._domain import Decision, Outcome, Path
from kalibr._exceptions import UserError
from kalibr.policies.base import ArmState, PolicyConfig
from kalibr.stores._aggregates import check_buckets, hour_of
from kalibr.stores._columns import GoalColumns, columns_from_values
from kalibr.stores._records import (
    changed_outcome,
    decision_record,
    event_entry,
    event_json,
    outcome_record,
    storable_path,
    utc,
)
from kalibr.stores._rollups import latency_bin, percentiles_from_bins
from kalibr.stores.base import (
    DecisionOutcome,
    DecisionRecord,
    OutcomeBucket,
    OutcomeChanges,
    OutcomeColumns,
    OutcomeRecord,
    PathRecord,
)

__all__ = ["MemoryStore"]

_ArmKey = tuple[str, str, str]


class MemoryStore:
    """A thread-safe store in memory; everything is lost when it is dropped.

    Usage::

        store = MemoryStore()
        arms = store.load_arms("default", "summarize", [Path("gpt-4o")])
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._arms: dict[_ArmKey, ArmState] = {}
        self._decisions: dict[tuple[str, str], DecisionRecord] = {}
        self._outcomes: dict[tuple[str, str], OutcomeRecord] = {}
        # The same outcomes per (tenant, goal) as columns, kept beside the records for insights' reads.
        self._columns: dict[tuple[str, str], GoalColumns] = {}
        self._paths: dict[tuple[str, str, str], PathRecord] = {}
        self._configs: dict[tuple[str, str], PolicyConfig] = {}
        self._keys: dict[str, tuple[str, datetime]] = {}
        # (tenant, goal, kind, data as JSON text, at), in the order recorded: kept as text, as the SQL stores do.
        self._events: list[tuple[str, str, str, str, datetime]] = []

    def __repr__(self) -> str:
        return "MemoryStore()"

    # --- arms -----------------------------------------------------------------------------------------------
    def load_arms(self, tenant: str, goal: str, paths: Sequence[Path]) -> list[ArmState]:
        with self._lock:
            return [self._arm(tenant, goal, path.path_id, path.model) for path in paths]

    def update_arm(self, tenant: str, goal: str, path: Path, step: Callable[[ArmState], ArmState]) -> ArmState:
        with self._lock:
            arm = step(self._arm(tenant, goal, path.path_id, path.model))
            self._arms[tenant, goal, path.path_id] = arm
            return arm

    def model_totals(self, tenant: str) -> Mapping[str, tuple[float, float]]:
        totals: dict[str, tuple[float, float]] = {}
        with self._lock:
            for (arm_tenant, _, _), arm in self._arms.items():
                if arm_tenant == tenant and arm.model:
                    successes, failures = totals.get(arm.model, (0.0, 0.0))
                    totals[arm.model] = (successes + arm.successes, failures + arm.failures)
        return totals

    def model_costs(self, tenant: str) -> Mapping[str, tuple[float, int]]:
        costs: dict[str, tuple[float, int]] = {}
        with self._lock:
            for (arm_tenant, _, _), arm in self._arms.items():
                if arm_tenant == tenant and arm.model and arm.cost_count:
                    total, calls = costs.get(arm.model, (0.0, 0))
                    costs[arm.model] = (total + arm.cost_sum, calls + arm.cost_count)
        return costs

    def _arm(self, tenant: str, goal: str, path_id: str, model: str | None) -> ArmState:
        return self._arms.get((tenant, goal, path_id)) or ArmState(path_id, model or "")

    # --- decisions and outcomes -----------------------------------------------------------------------------
    def record_decisions(self, tenant: str, decisions: Sequence[Decision]) -> None:
        records = [decision_record(decision) for decision in decisions]
        with self._lock:
            self._record_decisions(tenant, records)

    def _record_decisions(self, tenant: str, records: Sequence[DecisionRecord]) -> None:
        for record in records:
            self._decisions.setdefault((tenant, record.trace_id), record)

    def get_decision(self, tenant: str, trace_id: str) -> DecisionRecord | None:
        with self._lock:
            return self._decisions.get((tenant, trace_id))

    def apply_outcomes(
        self,
        tenant: str,
        items: Sequence[tuple[Outcome, Callable[[ArmState], ArmState]]],
        decisions: Sequence[Decision] = (),
    ) -> list[bool]:
        records = [(outcome_record(outcome), step) for outcome, step in items]
        decided = [decision_record(decision) for decision in decisions]
        with self._lock:
            # Stage the batch so a step that raises leaves the store as it was: one transaction per batch.
            staged_arms: dict[_ArmKey, ArmState] = {}
            staged_outcomes: dict[tuple[str, str], OutcomeRecord] = {}
            applied: list[bool] = []
            for record, step in records:
                trace_key = (tenant, record.trace_id)
                if trace_key in self._outcomes or trace_key in staged_outcomes:
                    applied.append(False)
                    continue
                staged_outcomes[trace_key] = record
                key = (tenant, record.goal, record.path_id)
                current = staged_arms.get(key) or self._arm(*key, record.model)
                staged_arms[key] = step(current)
                applied.append(True)
            self._record_decisions(tenant, decided)
            self._arms.update(staged_arms)
            self._outcomes.update(staged_outcomes)
            for record in staged_outcomes.values():
                self._columns.setdefault((tenant, record.goal), GoalColumns()).add(record)
            return applied

    def update_outcome(
        self,
        tenant: str,
        trace_id: str,
        changes: OutcomeChanges,
        adjust: Callable[[ArmState, float, float], ArmState],
    ) -> OutcomeRecord | None:
        with self._lock:
            old = self._outcomes.get((tenant, trace_id))
            if old is None:
                return None
            new = changed_outcome(old, changes)
            if new.score != old.score:
                key = (tenant, old.goal, old.path_id)
                self._arms[key] = adjust(self._arm(*key, old.model), old.score, new.score)
            self._outcomes[tenant, trace_id] = new
            self._columns[tenant, new.goal].replace(new)
            return self._with_params(tenant, new)

    def outcomes(self, tenant: str, goal: str | None, since: datetime) -> list[OutcomeRecord]:
        since = utc(since, "since")
        with self._lock:
            found = [
                self._with_params(tenant, record)
                for (record_tenant, _), record in self._outcomes.items()
                if record_tenant == tenant and (goal is None or record.goal == goal) and record.reported_at >= since
            ]
        return sorted(found, key=lambda record: record.reported_at)

    def outcome_columns(self, tenant: str, goal: str, since: datetime) -> OutcomeColumns:
        since = utc(since, "since")
        with self._lock:
            kept = self._columns.get((tenant, goal))
            if kept is not None:
                return kept.columns(since)
        return columns_from_values(*[[]] * 8)

    def prune(self, before: datetime) -> tuple[int, int]:
        before = utc(before, "before")
        with self._lock:
            old_decisions = [key for key, record in self._decisions.items() if record.decided_at < before]
            old_outcomes = [key for key, record in self._outcomes.items() if record.reported_at < before]
            for key in old_decisions:
                del self._decisions[key]
            for key in old_outcomes:
                del self._outcomes[key]
            if old_outcomes:
                self._columns = {}
                for (tenant, _), record in self._outcomes.items():
                    self._columns.setdefault((tenant, record.goal), GoalColumns()).add(record)
        return len(old_decisions), len(old_outcomes)

    def goals(self, tenant: str) -> list[str]:
        with self._lock:
            found = {goal for (path_tenant, goal, _) in self._paths if path_tenant == tenant}
            found.update(
                record.goal for (outcome_tenant, _), record in self._outcomes.items() if outcome_tenant == tenant
            )
        return sorted(found)

    def _with_params(self, tenant: str, record: OutcomeRecord) -> OutcomeRecord:
        path_record = self._paths.get((tenant, record.goal, record.path_id))
        params = {} if path_record is None else dict(path_record.path.params)
        return dataclasses.replace(record, params=params)

    # --- paths and config -------------------------------------------------------------------------------
    def register_path(self, tenant: str, record: PathRecord) -> PathRecord:
        record = dataclasses.replace(record, path=storable_path(record.path), created_at=utc(record.created_at))
        with self._lock:
            return self._paths.setdefault((tenant, record.goal, record.path.path_id), record)

    def list_paths(self, tenant: str, goal: str | None, *, include_disabled: bool = False) -> list[PathRecord]:
        with self._lock:
            found = [
                record
                for (path_tenant, path_goal, _), record in self._paths.items()
                if path_tenant == tenant
                and (goal is None or path_goal == goal)
                and (record.enabled or include_disabled)
            ]
        return sorted(found, key=lambda record: record.created_at)

    def set_path_enabled(self, tenant: str, path_id: str, enabled: bool) -> bool:
        with self._lock:
            keys = [key for key in self._paths if key[0] == tenant and key[2] == path_id]
            for key in keys:
                self._paths[key] = dataclasses.replace(self._paths[key], enabled=enabled)
        return bool(keys)

    def get_config(self, tenant: str, goal: str) -> PolicyConfig:
        with self._lock:
            return self._configs.get((tenant, goal)) or self._configs.get((tenant, "*")) or PolicyConfig()

    def set_config(self, tenant: str, goal: str, config: PolicyConfig) -> None:
        with self._lock:
            self._configs[tenant, goal] = config

    # --- change log -------------------------------------------------------------------------------------
    def record_event(self, tenant: str, goal: str, kind: str, data: Mapping[str, Any]) -> None:
        text = event_json(goal, kind, data)
        with self._lock:
            # Stamped under the lock, so the list stays in time order.
            self._events.append((tenant, goal, kind, text, datetime.now(UTC)))

    def events(self, tenant: str, goal: str | None, since: datetime) -> list[dict[str, Any]]:
        since = utc(since, "since")
        with self._lock:
            found = [
                event
                for event in self._events
                if event[0] == tenant and (goal is None or event[1] == goal) and event[4] >= since
            ]
        return [event_entry(at, event_goal, kind, text) for _, event_goal, kind, text, at in found]

    # --- tenants ----------------------------------------------------------------------------------------
    def add_api_key(self, tenant: str, key_hash: str) -> None:
        with self._lock:
            owner, _ = self._keys.setdefault(key_hash, (tenant, datetime.now(UTC)))
        if owner != tenant:
            raise UserError("that API key already belongs to another tenant: generate a new key")

    def tenant_for_key(self, key_hash: str) -> str | None:
        with self._lock:
            found = self._keys.get(key_hash)
        return None if found is None else found[0]

    def list_api_keys(self, tenant: str | None) -> list[tuple[str, str, datetime]]:
        """(tenant, key hash, created at) of every key, or of one tenant's, oldest first."""
        with self._lock:
            keys = [(owner, key_hash, created) for key_hash, (owner, created) in self._keys.items()]
        return sorted((key for key in keys if tenant is None or key[0] == tenant), key=lambda key: key[2])

    def revoke_api_key(self, key_hash: str) -> bool:
        """Forget a key; False if there was no such key."""
        with self._lock:
            return self._keys.pop(key_hash, None) is not None

    def close(self) -> None:
        """Nothing to release."""

    # --- aggregates for the dashboard -------------------------------------------------------------------
    def _outcomes_since(self, tenant: str, goal: str | None, since: datetime) -> list[OutcomeRecord]:
        since = utc(since, "since")
        with self._lock:
            return [
                record
                for (record_tenant, _), record in self._outcomes.items()
                if record_tenant == tenant and (goal is None or record.goal == goal) and record.reported_at >= since
            ]

    def outcome_buckets(
        self, tenant: str, goal: str | None, since: datetime, bucket_seconds: float
    ) -> list[OutcomeBucket]:
        since = utc(since, "since")
        check_buckets(since, bucket_seconds)
        sums: dict[tuple[str, int, str], list[float]] = {}
        for record in self._outcomes_since(tenant, goal, since):
            index = int((record.reported_at - since).total_seconds() // bucket_seconds)
            row = sums.setdefault((record.goal, index, record.path_id), [0, 0.0, 0.0, 0, 0.0, 0])
            row[0] += 1
            row[1] += record.score
            if record.cost_usd is not None:
                row[2] += record.cost_usd
                row[3] += 1
            if record.latency_ms is not None:
                row[4] += record.latency_ms
                row[5] += 1
        return [
            OutcomeBucket(
                bucket_goal,
                path_id,
                since + timedelta(seconds=index * bucket_seconds),
                int(n),
                score,
                cost,
                int(costs),
                latency,
                int(latencies),
            )
            for (bucket_goal, index, path_id), (n, score, cost, costs, latency, latencies) in sorted(sums.items())
        ]

    def latency_percentiles(self, tenant: str, goal: str, since: datetime) -> dict[str, tuple[float, float]]:
        bins: dict[str, Counter[int]] = {}
        for record in self._outcomes_since(tenant, goal, _hour_start(since)):
            if record.latency_ms is not None:
                bins.setdefault(record.path_id, Counter())[latency_bin(record.latency_ms)] += 1
        found = {}
        for path_id, counts in bins.items():
            p50, p95 = percentiles_from_bins(counts.items(), (0.5, 0.95))
            found[path_id] = (p50, p95)
        return found

    def failure_counts(self, tenant: str, goal: str, since: datetime) -> list[tuple[str, str, int]]:
        counts = Counter(
            (record.path_id, record.failure_category)
            for record in self._outcomes_since(tenant, goal, _hour_start(since))
            if record.failure_category is not None
        )
        return [(path_id, category, n) for (path_id, category), n in sorted(counts.items())]

    def recent_decisions(
        self,
        tenant: str,
        goal: str | None = None,
        *,
        path_id: str | None = None,
        trace_id: str | None = None,
        limit: int = 100,
    ) -> list[DecisionOutcome]:
        with self._lock:
            found = [
                (record, self._outcomes.get((tenant, record.trace_id)))
                for (decision_tenant, _), record in self._decisions.items()
                if decision_tenant == tenant
                and goal in (None, record.goal)
                and path_id in (None, record.path_id)
                and trace_id in (None, record.trace_id)
            ]
        found.sort(key=lambda pair: pair[0].trace_id, reverse=True)
        return [DecisionOutcome(record, result) for record, result in found[:limit]]


def _hour_start(since: datetime) -> datetime:
    """Percentiles and failure counts cover whole hours, as the SQL stores' hourly roll-ups do."""
    return datetime.fromtimestamp(hour_of(utc(since, "since")) * 3600, UTC)
