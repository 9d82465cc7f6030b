"""The store protocol: every store (memory, SQLite, PostgreSQL, a plugin's) implements it.

A store holds metadata only: decisions, outcomes, per-arm aggregates, registered paths, routing config,
hashed API keys and a change log of what automatic jobs did. Never a prompt, never a completion. Every
method is scoped by ``tenant``; the embedded engine uses ``DEFAULT_TENANT``.

Writes that change aggregates are atomic: ``apply_outcomes`` inserts the outcome (at most once per trace id)
and replaces the arm state with ``step(current)`` in one transaction, so concurrent reporters from many
threads or processes never lose an update.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from kalibr._domain import Decision, Outcome, Path
from kalibr.policies.base import ArmState, PolicyConfig

__all__ = [
    "DEFAULT_TENANT",
    "DecisionOutcome",
    "DecisionRecord",
    "OutcomeBucket",
    "OutcomeChanges",
    "OutcomeColumns",
    "OutcomeRecord",
    "PathRecord",
    "Store",
]

DEFAULT_TENANT = "default"


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """A decision as stored: enough to attribute a later outcome to its path."""

    trace_id: str
    goal: str
    path_id: str
    model: str
    exploration: bool
    decided_at: datetime


@dataclass(frozen=True, slots=True)
class OutcomeRecord:
    """An outcome as stored (the ``Outcome`` fields, flattened; usage as plain numbers)."""

    trace_id: str
    goal: str
    path_id: str
    model: str | None
    score: float
    success: bool | None
    failure_category: str | None
    reason: str | None
    cost_usd: float | None
    latency_ms: float | None
    input_tokens: int | None
    output_tokens: int | None
    source: str
    reported_at: datetime
    params: Mapping[str, Any] = field(default_factory=dict)
    """The path's params, joined from the registered path, for parameter-sensitivity insights."""


@dataclass(frozen=True, slots=True, eq=False)
class OutcomeColumns:
    """One goal's outcomes in a window, oldest first (by report time, then arrival), one array per field.

    Row ``i`` of every array is the same outcome. Insights and ``get_policy`` read this instead of records: a
    handful of arrays instead of an object per outcome, and numpy instead of a Python loop over them.
    """

    path_ids: tuple[str, ...]
    """The distinct path ids; ``path[i]`` indexes this tuple."""
    models: tuple[str | None, ...]
    """Per path id (same order), the model its latest outcome names."""
    path: npt.NDArray[np.intp]
    score: npt.NDArray[np.float64]
    cost_usd: npt.NDArray[np.float64]
    """NaN where the outcome reported no cost (likewise ``latency_ms``)."""
    latency_ms: npt.NDArray[np.float64]
    categories: tuple[str, ...]
    """The distinct failure categories; ``category[i]`` indexes this tuple, -1 for none."""
    category: npt.NDArray[np.intp]
    provider_failed: npt.NDArray[np.bool_]
    """Reported for a provider failure (source ``error``): the provider never answered that call."""
    reported_at: npt.NDArray[np.int64]
    """Microseconds since the epoch (UTC)."""

    def __len__(self) -> int:
        return len(self.score)


@dataclass(frozen=True, slots=True)
class OutcomeChanges:
    """The fields a late ``update_outcome`` changes; ``None`` keeps the stored value.

    With ``replace`` (a later explicit report, a run's verdict) the outcome is replaced as a whole: a
    ``failure_category`` or ``reason`` of None clears the stored one. ``source``, when given, is stored too.
    """

    score: float | None = None
    success: bool | None = None
    failure_category: str | None = None
    reason: str | None = None
    replace: bool = False
    source: str | None = None

    def fields(self) -> list[str]:
        return [name for name in ("success", "score", "failure_category", "reason") if getattr(self, name) is not None]


@dataclass(frozen=True, slots=True)
class PathRecord:
    """A path registered for a goal (the service's ``/routing/paths``; the embedded router registers its own)."""

    goal: str
    path: Path
    enabled: bool
    created_at: datetime
    risk_level: str = "low"
    tool_id: str | None = None


@dataclass(frozen=True, slots=True)
class OutcomeBucket:
    """The outcomes of one path of one goal reported in one time bucket, summed (for charts and the goal list)."""

    goal: str
    path_id: str
    start: datetime
    outcomes: int
    score_sum: float
    cost_sum: float
    cost_count: int
    latency_sum: float
    latency_count: int


@dataclass(frozen=True, slots=True)
class DecisionOutcome:
    """A stored decision with its outcome, when one was reported (metadata only)."""

    decision: DecisionRecord
    outcome: OutcomeRecord | None = None


@runtime_checkable
class Store(Protocol):
    """Persistence for the intelligence engine."""

    # --- arms -----------------------------------------------------------------------------------------------
    def load_arms(self, tenant: str, goal: str, paths: Sequence[Path]) -> list[ArmState]:
        """The state of each path's arm for ``goal``, in the order given; a fresh ``ArmState`` where none."""
        ...

    def update_arm(self, tenant: str, goal: str, path: Path, step: Callable[[ArmState], ArmState]) -> ArmState:
        """Set the arm of (goal, path) to ``step(current)`` atomically and return it (warm start uses this)."""
        ...

    def model_totals(self, tenant: str) -> Mapping[str, tuple[float, float]]:
        """Per model, (successes, failures) summed over every goal of the tenant: evidence for priors."""
        ...

    def model_costs(self, tenant: str) -> Mapping[str, tuple[float, int]]:
        """Per model with a known cost, (cost sum, calls with a cost) over every goal of the tenant: what a path
        not measured yet should be expected to cost (``kalibr.policies.cost``)."""
        ...

    # --- decisions and outcomes -----------------------------------------------------------------------------
    def record_decisions(self, tenant: str, decisions: Sequence[Decision]) -> None:
        """Remember decisions so later outcomes can be attributed to their paths (one transaction)."""
        ...

    def get_decision(self, tenant: str, trace_id: str) -> DecisionRecord | None: ...

    def apply_outcomes(
        self,
        tenant: str,
        items: Sequence[tuple[Outcome, Callable[[ArmState], ArmState]]],
        decisions: Sequence[Decision] = (),
    ) -> list[bool]:
        """For each (outcome, step): insert the outcome and set its arm to ``step(current)``, atomically.

        One transaction for the batch, which also records ``decisions`` (as ``record_decisions`` would): a
        write-behind flush is one commit. Each item's ``step`` sees the arm as left by the items before it.
        Returns, per item, False (changing nothing for it) when an outcome with that trace id already exists.
        """
        ...

    def update_outcome(
        self,
        tenant: str,
        trace_id: str,
        changes: OutcomeChanges,
        adjust: Callable[[ArmState, float, float], ArmState],
    ) -> OutcomeRecord | None:
        """Change a stored outcome; when the score changes, set its arm to ``adjust(arm, old, new)``.

        Returns the updated record, or None when no outcome has that trace id.
        """
        ...

    def outcomes(self, tenant: str, goal: str | None, since: datetime) -> list[OutcomeRecord]:
        """Outcomes reported since ``since`` (for one goal, or every goal), oldest first."""
        ...

    def outcome_columns(self, tenant: str, goal: str, since: datetime) -> OutcomeColumns:
        """The goal's outcomes reported since ``since``, oldest first, as columns (what insights analyse)."""
        ...

    def prune(self, before: datetime) -> tuple[int, int]:
        """Delete, for every tenant, decisions made and outcomes reported before ``before``; returns how many of
        each. What was learned stays: arms, paths, config, keys and the change log are kept. A pruned outcome can
        no longer be updated, and one re-sent after pruning counts again."""
        ...

    def goals(self, tenant: str) -> list[str]:
        """Every goal with a registered path or an outcome."""
        ...

    # --- paths and config -------------------------------------------------------------------------------
    def register_path(self, tenant: str, record: PathRecord) -> PathRecord:
        """Register a path for a goal (idempotent by goal and path id: returns the existing record)."""
        ...

    def list_paths(self, tenant: str, goal: str | None, *, include_disabled: bool = False) -> list[PathRecord]: ...

    def set_path_enabled(self, tenant: str, path_id: str, enabled: bool) -> bool:
        """Enable or disable a path wherever it is registered; False if the tenant has no such path."""
        ...

    def get_config(self, tenant: str, goal: str) -> PolicyConfig:
        """The goal's routing config, else the tenant's ``"*"`` config, else the defaults."""
        ...

    def set_config(self, tenant: str, goal: str, config: PolicyConfig) -> None: ...

    # --- change log -------------------------------------------------------------------------------------
    def record_event(self, tenant: str, goal: str, kind: str, data: Mapping[str, Any]) -> None:
        """Append an entry to the goal's change log (generated or retired paths, config changes).

        ``data`` is JSON-serialisable metadata only (path ids, params, rates): never prompt or completion text.
        The store stamps the entry with the current time.
        """
        ...

    def events(self, tenant: str, goal: str | None, since: datetime) -> list[dict[str, Any]]:
        """Change-log entries since ``since`` (one goal or all), oldest first.

        Each is ``{"at": iso8601 UTC, "goal": str, "kind": str, "data": dict}``.
        """
        ...

    # --- tenants ----------------------------------------------------------------------------------------
    def add_api_key(self, tenant: str, key_hash: str) -> None: ...

    def tenant_for_key(self, key_hash: str) -> str | None: ...

    def list_api_keys(self, tenant: str | None) -> list[tuple[str, str, datetime]]:
        """(tenant, key hash, created at) for one tenant's keys, or every tenant's when ``tenant`` is None."""
        ...

    def revoke_api_key(self, key_hash: str) -> bool:
        """Forget a key; False if no key has that hash."""
        ...

    # --- aggregates for the dashboard -------------------------------------------------------------------
    def outcome_buckets(
        self, tenant: str, goal: str | None, since: datetime, bucket_seconds: float
    ) -> list[OutcomeBucket]:
        """Outcomes reported since ``since`` (one goal or all), summed per goal, path and bucket of
        ``bucket_seconds`` counted from ``since``; ordered by goal, bucket start and path id."""
        ...

    def latency_percentiles(self, tenant: str, goal: str, since: datetime) -> dict[str, tuple[float, float]]:
        """Per path id, the (p50, p95) latency in ms of the outcomes since ``since`` that have one (nearest rank)."""
        ...

    def failure_counts(self, tenant: str, goal: str, since: datetime) -> list[tuple[str, str, int]]:
        """(path id, failure category, count) of the outcomes since ``since`` that carry a category."""
        ...

    def recent_decisions(
        self,
        tenant: str,
        goal: str | None = None,
        *,
        path_id: str | None = None,
        trace_id: str | None = None,
        limit: int = 100,
    ) -> list[DecisionOutcome]:
        """The latest decisions (newest first by trace id, which is time-ordered), each with its outcome if any."""
        ...

    def close(self) -> None: ...
