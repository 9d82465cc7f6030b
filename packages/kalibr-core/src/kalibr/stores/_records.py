"""Conversions every store shares: datetimes, arms, paths, outcomes and config, to and from plain values.

Stores keep metadata only. A path loses its API key, client and price on the way in; an outcome keeps a
reason capped at ``MAX_REASON_CHARS``; a change-log entry's data is JSON of at most ``MAX_EVENT_DATA_CHARS``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Concatenate, ParamSpec, TypeVar

from kalibr._domain import Decision, Outcome, Path
from kalibr._exceptions import StoreError, UserError
from kalibr._types import source_replaces
from kalibr.policies.base import ArmState, PolicyConfig
from kalibr.stores.base import DecisionRecord, OutcomeChanges, OutcomeRecord, PathRecord

__all__ = [
    "ARM_FIELDS",
    "MAX_EVENT_DATA_CHARS",
    "MAX_REASON_CHARS",
    "arm_for",
    "arm_from_values",
    "arm_values",
    "cap_reason",
    "changed_outcome",
    "config_from_json",
    "config_to_json",
    "decision_record",
    "delete_in_batches",
    "event_entry",
    "event_json",
    "from_micros",
    "outcome_record",
    "path_columns",
    "path_from_values",
    "path_record_from_row",
    "storable_path",
    "to_micros",
    "translate_errors",
    "utc",
]

_S = TypeVar("_S")
_P = ParamSpec("_P")
_R = TypeVar("_R")

MAX_REASON_CHARS = 1000
"""A reason is a short label from the caller; anything longer is cut so no transcript can hide in it."""

MAX_EVENT_DATA_CHARS = 16_000
"""A change-log entry holds ids, params and rates; a bigger one is refused so no transcript can hide in it."""

ARM_FIELDS = (
    "successes",
    "failures",
    "samples",
    "total_samples",
    "cost_sum",
    "cost_count",
    "latency_sum",
    "latency_count",
    "last_outcome_at",
    "extra",
)
"""The stored columns of an arm after (tenant, goal, path_id, model), in this order."""


def utc(value: datetime, what: str = "datetime") -> datetime:
    """``value`` in UTC; a naive datetime is refused since its zone is a guess."""
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise UserError(f"{what} {value!r} must be a timezone-aware datetime, e.g. datetime.now(UTC)")
    return value.astimezone(UTC)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_micros(value: datetime, what: str = "datetime") -> int:
    """Whole microseconds since the epoch: exact, sortable, and indexable as an integer."""
    delta = utc(value, what) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    return datetime.fromtimestamp(micros // 1_000_000, UTC).replace(microsecond=micros % 1_000_000)


def cap_reason(reason: str | None) -> str | None:
    """At most ``MAX_REASON_CHARS``, without NUL characters (PostgreSQL text cannot hold them)."""
    return None if reason is None else reason.replace("\x00", "")[:MAX_REASON_CHARS]


def storable_path(path: Path) -> Path:
    """The path as a store keeps it: model, params, tools, provider and base URL; never a key or client."""
    if path.api_key is None and path.client is None and path.price is None:
        return path
    return Path(
        path.model,
        params=dict(path.params),
        tools=None if path.tools is None else [dict(tool) for tool in path.tools],
        provider=path.provider,
        base_url=path.base_url,
    )


PRUNE_BATCH = 5_000
"""Rows one pruning transaction deletes at most: short transactions, so writers never wait behind a long delete."""


def delete_in_batches(delete_batch: Callable[[int], int]) -> int:
    """Call ``delete_batch(limit)`` (one transaction deleting at most ``limit`` rows, returning how many) until it
    deletes fewer than a batch; returns the total."""
    deleted = 0
    while True:
        count = delete_batch(PRUNE_BATCH)
        deleted += count
        if count < PRUNE_BATCH:
            return deleted


def translate_errors(
    errors: tuple[type[Exception], ...],
) -> Callable[[Callable[Concatenate[_S, _P], _R]], Callable[Concatenate[_S, _P], _R]]:
    """Turn a database driver's ``errors`` into ``StoreError`` naming the store (its repr hides passwords)."""

    def decorate(method: Callable[Concatenate[_S, _P], _R]) -> Callable[Concatenate[_S, _P], _R]:
        @functools.wraps(method)
        def wrapper(self: _S, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
            try:
                return method(self, *args, **kwargs)
            except errors as exc:
                raise StoreError(f"{self!r}: {exc}") from exc

        return wrapper

    return decorate


def _json(value: Any) -> Any:
    """A JSON column as read back: text from SQLite, already decoded from PostgreSQL's jsonb."""
    return json.loads(value) if isinstance(value, str) else value


def path_from_values(model: str, params: Any, tools: Any, provider: str | None, base_url: str | None) -> Path:
    return Path(
        model,
        params=_json(params),
        tools=None if tools is None else _json(tools),
        provider=provider,
        base_url=base_url,
    )


def path_record_from_row(row: Sequence[Any]) -> PathRecord:
    """A path record from (goal, model, params, tools, provider, base_url, enabled, risk_level, tool_id, created_at)."""
    goal, model, params, tools, provider, base_url, enabled, risk_level, tool_id, created_at = row
    path = path_from_values(model, params, tools, provider, base_url)
    created = from_micros(created_at) if isinstance(created_at, int) else utc(created_at)
    return PathRecord(goal, path, bool(enabled), created, risk_level, tool_id)


def path_columns(record: PathRecord) -> tuple[Any, ...]:
    """(path_id, model, params, tools, provider, base_url, enabled, risk_level, tool_id) as stored values."""
    path = record.path
    tools = None if path.tools is None else json.dumps([dict(tool) for tool in path.tools], default=str)
    return (
        path.path_id,
        path.model,
        json.dumps(dict(path.params), sort_keys=True, default=str),
        tools,
        path.provider,
        path.base_url,
        record.enabled,
        record.risk_level,
        record.tool_id,
    )


def arm_values(arm: ArmState) -> tuple[Any, ...]:
    """The arm's ``ARM_FIELDS`` as stored values (``extra`` as JSON)."""
    return (
        float(arm.successes),
        float(arm.failures),
        int(arm.samples),
        int(arm.total_samples),
        float(arm.cost_sum),
        int(arm.cost_count),
        float(arm.latency_sum),
        int(arm.latency_count),
        arm.last_outcome_at,
        json.dumps(dict(arm.extra)) if arm.extra else "{}",
    )


def arm_from_values(path_id: str, model: str, values: Sequence[Any]) -> ArmState:
    """An ``ArmState`` from ``ARM_FIELDS`` values as read back."""
    extra = values[9]
    return ArmState(
        path_id,
        model,
        values[0],
        values[1],
        values[2],
        values[3],
        values[4],
        values[5],
        values[6],
        values[7],
        values[8],
        {} if extra in ("{}", None) else dict(_json(extra)),
    )


def arm_for(path: Path, row: Sequence[Any] | None) -> ArmState:
    """The arm a ``(path_id, *ARM_FIELDS)`` row holds, or a fresh one when there is no row."""
    return ArmState(path.path_id, path.model) if row is None else arm_from_values(path.path_id, path.model, row[1:])


def decision_record(decision: Decision) -> DecisionRecord:
    return DecisionRecord(
        trace_id=decision.trace_id,
        goal=decision.goal,
        path_id=decision.path_id,
        model=decision.model,
        exploration=decision.exploration,
        decided_at=utc(decision.decided_at, "decided_at"),
    )


def outcome_record(outcome: Outcome, params: Mapping[str, Any] | None = None) -> OutcomeRecord:
    usage = outcome.usage
    return OutcomeRecord(
        trace_id=outcome.trace_id,
        goal=outcome.goal,
        path_id=outcome.path_id,
        model=outcome.model,
        score=float(outcome.score),
        success=outcome.success,
        failure_category=outcome.failure_category,
        reason=cap_reason(outcome.reason),
        cost_usd=outcome.cost_usd,
        latency_ms=outcome.latency_ms,
        input_tokens=None if usage is None else usage.input_tokens,
        output_tokens=None if usage is None else usage.output_tokens,
        source=outcome.source,
        reported_at=utc(outcome.reported_at, "reported_at"),
        params=dict(params or {}),
    )


def changed_outcome(old: OutcomeRecord, changes: OutcomeChanges) -> OutcomeRecord:
    """``old`` with the fields ``changes`` gives; the rest kept, or cleared when ``changes.replace``. A replacement
    from a source that does not outrank the stored one (``source_replaces``: a judge after an explicit report, say)
    changes nothing: every store applies the replace rule in the transaction that reads the stored outcome."""
    if changes.replace and changes.source is not None and not source_replaces(changes.source, old.source):
        return old
    keep = not changes.replace
    category = changes.failure_category
    return dataclasses.replace(
        old,
        score=old.score if changes.score is None else float(changes.score),
        success=old.success if changes.success is None else changes.success,
        failure_category=old.failure_category if keep and category is None else category,
        reason=old.reason if keep and changes.reason is None else cap_reason(changes.reason),
        source=changes.source or old.source,
    )


_CONFIG_FIELDS = frozenset(f.name for f in dataclasses.fields(PolicyConfig))


def config_to_json(config: PolicyConfig) -> str:
    return json.dumps(dataclasses.asdict(config), sort_keys=True)


def config_from_json(text: str | Mapping[str, Any]) -> PolicyConfig:
    """A config from stored fields; fields this version does not know (written by a newer one) are ignored."""
    fields = json.loads(text) if isinstance(text, str) else dict(text)
    return PolicyConfig(**{name: value for name, value in fields.items() if name in _CONFIG_FIELDS})


def event_json(goal: str, kind: str, data: Mapping[str, Any]) -> str:
    """A change-log entry's ``data`` as JSON text, or a ``UserError`` saying why it cannot be stored."""
    if not isinstance(goal, str) or not goal or not isinstance(kind, str) or not kind:
        raise UserError(f"a change-log entry needs a goal and a kind (non-empty strings), got {goal!r} and {kind!r}")
    if not isinstance(data, Mapping):
        raise UserError(f"change-log data for {kind!r} must be a mapping of metadata, got {type(data).__name__}")
    try:
        text = json.dumps(dict(data), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise UserError(
            f"change-log data for {kind!r} must be JSON-serialisable metadata (ids, params, rates): {exc}"
        ) from exc
    if len(text) > MAX_EVENT_DATA_CHARS:
        raise UserError(
            f"change-log data for {kind!r} is {len(text)} characters, over {MAX_EVENT_DATA_CHARS}: "
            "store ids, params and rates, never prompt or completion text"
        )
    return text


def event_entry(at: datetime, goal: str, kind: str, data: Any) -> dict[str, Any]:
    """A change-log entry as ``Store.events`` returns it; ``data`` is JSON text or an already decoded value."""
    return {"at": at.astimezone(UTC).isoformat(), "goal": goal, "kind": kind, "data": _json(data)}
