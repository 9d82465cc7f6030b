"""Warm start: seed a goal's paths from an offline evaluation table, lightly enough that live outcomes take over.

An offline table (one row per query and model, with a score) says which model tends to win a goal before any
traffic. ``import_priors`` turns each (goal, model) into pseudo-evidence, ``weight`` per offline row and at most
``max_pseudo_counts`` in all, and adds it to the arm of ``Path(model)`` through ``Store.update_arm``. Importing
again replaces the earlier import instead of adding to it (what was imported is remembered in the arm's extra).
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path as FilePath

from kalibr._domain import Path, check_goal
from kalibr._exceptions import UserError
from kalibr.policies.base import ArmState
from kalibr.stores.base import DEFAULT_TENANT, PathRecord, Store

__all__ = ["SeededArm", "aggregate_rows", "import_priors", "read_rows"]

_IMPORTED_SUCCESSES = "warm_start_successes"
_IMPORTED_FAILURES = "warm_start_failures"


@dataclass(frozen=True, slots=True)
class SeededArm:
    """What an import did to one (goal, model): the offline rows it saw and the pseudo-counts it set."""

    goal: str
    model: str
    rows: int
    offline_rate: float
    successes: float
    failures: float


def read_rows(path: str | FilePath, *, goal_column: str, model_column: str, score_column: str) -> list[dict[str, str]]:
    """The CSV's rows, after checking the three named columns exist."""
    path = FilePath(path)
    if not path.is_file():
        raise UserError(f"no table at {str(path)!r}: give the path of a CSV file")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        for option, column in (("--goal-column", goal_column), ("--model-column", model_column)):
            if column not in columns:
                raise UserError(f"{path.name} has no column {column!r} (columns: {', '.join(columns)}): set {option}")
        if score_column not in columns:
            raise UserError(f"{path.name} has no column {score_column!r}: set --score-column")
        return list(reader)


def aggregate_rows(
    rows: Iterable[Mapping[str, str]], *, goal_column: str, model_column: str, score_column: str
) -> dict[tuple[str, str], tuple[int, float]]:
    """(goal, model) -> (row count, score sum); a bad goal or score raises ``UserError`` naming the row."""
    sums: dict[tuple[str, str], tuple[int, float]] = {}
    for number, row in enumerate(rows, start=2):
        goal, model, raw = row.get(goal_column) or "", row.get(model_column) or "", row.get(score_column) or ""
        try:
            score = float(raw)
        except ValueError:
            raise UserError(f"row {number}: {score_column} {raw!r} is not a number in [0, 1]") from None
        if not 0.0 <= score <= 1.0:
            raise UserError(f"row {number}: {score_column} {score!r} is outside [0, 1]")
        if not model.strip():
            raise UserError(f"row {number}: {model_column} is empty: every row names its model")
        try:
            check_goal(goal)
        except UserError as error:
            raise UserError(f"row {number}: {error}") from None
        count, total = sums.get((goal, model), (0, 0.0))
        sums[(goal, model)] = (count + 1, total + score)
    if not sums:
        raise UserError("the table has no rows to import")
    return sums


def import_priors(
    store: Store,
    sums: Mapping[tuple[str, str], tuple[int, float]],
    *,
    weight: float = 0.2,
    max_pseudo_counts: float = 20.0,
    tenant: str = DEFAULT_TENANT,
    register_paths: bool = True,
) -> list[SeededArm]:
    """Seed ``Path(model)`` of each goal with ``weight`` pseudo-counts per offline row (capped)."""
    if not 0.0 < weight <= 1.0:
        raise UserError(f"weight {weight!r} must be in (0, 1]: it is how much one offline row counts")
    if max_pseudo_counts <= 0.0:
        raise UserError(f"max_pseudo_counts {max_pseudo_counts!r} must be > 0")
    seeded = []
    now = datetime.now(UTC)
    for (goal, model), (count, total) in sorted(sums.items()):
        pseudo = min(count * weight, max_pseudo_counts)
        rate = total / count
        successes, failures = rate * pseudo, (1.0 - rate) * pseudo
        path = Path(model)
        if register_paths:
            store.register_path(tenant, PathRecord(goal, path, enabled=True, created_at=now))
        store.update_arm(tenant, goal, path, functools.partial(_seed, successes=successes, failures=failures))
        seeded.append(SeededArm(goal, model, count, rate, successes, failures))
    return seeded


def _seed(arm: ArmState, successes: float, failures: float) -> ArmState:
    """Replace the arm's earlier import (if any) by this one, leaving live evidence alone."""
    extra = dict(arm.extra)
    old_s = extra.get(_IMPORTED_SUCCESSES, 0.0)
    old_f = extra.get(_IMPORTED_FAILURES, 0.0)
    extra[_IMPORTED_SUCCESSES], extra[_IMPORTED_FAILURES] = successes, failures
    return replace(
        arm,
        successes=max(0.0, arm.successes - old_s) + successes,
        failures=max(0.0, arm.failures - old_f) + failures,
        extra=extra,
    )
