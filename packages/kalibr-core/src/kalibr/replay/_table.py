"""Load and check a per-query outcome table (long format: one row per query and model)."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from kalibr._exceptions import UserError

__all__ = ["GoalTable", "ReplayTable", "load_prompts", "load_table", "merge_goals", "table_from_rows", "with_features"]

REQUIRED = ("query_id", "goal", "model", "score")
PRICE_COLUMNS = ("input_price_per_mtok", "output_price_per_mtok")


@dataclass(frozen=True)
class GoalTable:
    """One goal: ``scores[q, m]`` and ``costs[q, m]`` for its queries and models (costs relative, max 1).

    ``features[q]``, when the replay has prompts, is query ``q``'s prompt feature vector."""

    goal: str
    models: tuple[str, ...]
    query_ids: tuple[str, ...]
    scores: np.ndarray
    costs: np.ndarray
    features: np.ndarray | None = None


@dataclass(frozen=True)
class ReplayTable:
    """Every goal of a table, and where its costs came from (``cost_usd``, ``list prices`` or ``none``).

    ``price_hints``: per model, its mean list price (in the table's price units) when the table has price
    columns: what a router knows of a model's relative cost before any call, as the engine's price table."""

    goals: tuple[GoalTable, ...]
    cost_source: str
    price_hints: Mapping[str, float] = field(default_factory=dict)

    @property
    def query_count(self) -> int:
        return sum(len(goal.query_ids) for goal in self.goals)

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(sorted({model for goal in self.goals for model in goal.models}))

    @property
    def has_features(self) -> bool:
        return all(goal.features is not None for goal in self.goals)


def load_table(path: str | Path) -> ReplayTable:
    """Read a CSV table and check it; a malformed table raises ``UserError`` naming the row or column."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no table at {str(path)!r}: give the path of a CSV file")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in REQUIRED if column not in (reader.fieldnames or [])]
        if missing:
            raise UserError(
                f"{path.name} has no column {', '.join(map(repr, missing))}: a replay table needs the columns "
                f"{', '.join(REQUIRED)} (and optionally cost_usd, {', '.join(PRICE_COLUMNS)})"
            )
        return table_from_rows(reader, columns=reader.fieldnames or [])


def table_from_rows(rows: Iterable[Mapping[str, str]], *, columns: Iterable[str]) -> ReplayTable:
    """Build a table from CSV-like rows (string values). Row numbers in errors count the header as row 1."""
    columns = list(columns)
    has_prices = all(column in columns for column in PRICE_COLUMNS)
    cells: dict[str, dict[str, dict[str, tuple[float, float | None, float | None]]]] = {}
    for number, row in enumerate(rows, start=2):
        score = _number(row.get("score"), "score", number)
        if not 0.0 <= score <= 1.0:
            raise UserError(f"row {number}: score {score!r} is outside [0, 1]: scores are 0..1 (1 = correct)")
        cost = _optional_number(row.get("cost_usd"), "cost_usd", number)
        price = None
        if has_prices:
            price = sum(_number(row.get(column), column, number) for column in PRICE_COLUMNS) / 2.0
        goal, model, query = (row.get(name) or "" for name in ("goal", "model", "query_id"))
        if not goal or not model or not query:
            raise UserError(f"row {number}: empty goal, model or query_id: every row names all three")
        cells.setdefault(goal, {}).setdefault(query, {})[model] = (score, cost, price)
    if not cells:
        raise UserError("the table has no rows: give at least one goal with two models")
    source = _cost_source(cells)
    goals = tuple(_goal_table(goal, queries, source) for goal, queries in cells.items())
    return _normalise_costs(ReplayTable(goals, source, _price_hints(cells)))


def _goal_table(
    goal: str, queries: dict[str, dict[str, tuple[float, float | None, float | None]]], source: str
) -> GoalTable:
    models = tuple(sorted({model for by_model in queries.values() for model in by_model}))
    if len(models) < 2:
        raise UserError(f"goal {goal!r} has only one model ({models[0]!r}): routing needs at least two per goal")
    scores = np.empty((len(queries), len(models)))
    costs = np.zeros_like(scores)
    for q, (query, by_model) in enumerate(queries.items()):
        absent = [model for model in models if model not in by_model]
        if absent:
            raise UserError(
                f"query {query!r} of goal {goal!r} has no row for model {absent[0]!r}: every query of a "
                "goal needs a score for each of the goal's models"
            )
        for m, model in enumerate(models):
            score, cost, price = by_model[model]
            scores[q, m] = score
            costs[q, m] = (cost if source == "cost_usd" else price if source == "list prices" else 0.0) or 0.0
    return GoalTable(goal, models, tuple(queries), scores, costs)


def _cost_source(cells: dict[str, dict[str, dict[str, tuple[float, float | None, float | None]]]]) -> str:
    values = [cell for queries in cells.values() for by_model in queries.values() for cell in by_model.values()]
    if all(cost is not None for _, cost, _ in values):
        return "cost_usd"
    if all(price is not None for _, _, price in values):
        return "list prices"
    return "none"


def _price_hints(cells: dict[str, dict[str, dict[str, tuple[float, float | None, float | None]]]]) -> dict[str, float]:
    """Per model, the mean of its rows' list prices (models with no price left out)."""
    prices: dict[str, list[float]] = {}
    for queries in cells.values():
        for by_model in queries.values():
            for model, (_, _, price) in by_model.items():
                if price is not None:
                    prices.setdefault(model, []).append(price)
    return {model: sum(values) / len(values) for model, values in prices.items()}


def _normalise_costs(table: ReplayTable) -> ReplayTable:
    """Scale costs so the dearest (query, model) cell costs 1: lambda then reads as score per max cost."""
    peak = max((float(goal.costs.max()) for goal in table.goals), default=0.0)
    if peak <= 0.0:
        return table
    return replace(table, goals=tuple(replace(g, costs=g.costs / peak) for g in table.goals))


def _number(value: str | None, column: str, number: int) -> float:
    result = _optional_number(value, column, number)
    if result is None:
        raise UserError(f"row {number}: {column} is empty: give a number")
    return result


def _optional_number(value: str | None, column: str, number: int) -> float | None:
    if value is None or value.strip() == "":
        return None
    try:
        result = float(value)
    except ValueError:
        raise UserError(f"row {number}: {column} {value!r} is not a number") from None
    if not math.isfinite(result) or result < 0.0:
        raise UserError(f"row {number}: {column} {value!r} must be a finite number >= 0")
    return result


def merge_goals(table: ReplayTable, goal: str = "all") -> ReplayTable:
    """The table as one goal, as a user who never split goals would route it; every goal needs the same models."""
    models = table.goals[0].models
    for other in table.goals[1:]:
        if other.models != models:
            raise UserError(
                f"--merge-goals needs the same models in every goal: {table.goals[0].goal!r} has "
                f"{', '.join(models)} but {other.goal!r} has {', '.join(other.models)}"
            )
    features = (
        np.concatenate([g.features for g in table.goals if g.features is not None]) if table.has_features else None
    )
    merged = GoalTable(
        goal,
        models,
        tuple(query for g in table.goals for query in g.query_ids),
        np.concatenate([g.scores for g in table.goals]),
        np.concatenate([g.costs for g in table.goals]),
        features,
    )
    return replace(table, goals=(merged,))


def load_prompts(path: str | Path) -> dict[str, str]:
    """Read a prompt table (CSV: ``query_id, prompt``) into a mapping."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no prompt table at {str(path)!r}: give the path of a CSV file with query_id, prompt")
    csv.field_size_limit(1 << 30)
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not {"query_id", "prompt"} <= set(reader.fieldnames or []):
            raise UserError(f"{path.name} needs the columns query_id and prompt, got {reader.fieldnames!r}")
        return {row["query_id"]: row["prompt"] or "" for row in reader}


def with_features(
    table: ReplayTable, prompts: Mapping[str, str], featurize: Callable[[str], np.ndarray]
) -> ReplayTable:
    """``table`` with each query's prompt features; every query of the table needs a prompt."""
    goals = []
    for goal in table.goals:
        missing = [query for query in goal.query_ids if query not in prompts]
        if missing:
            raise UserError(
                f"the prompt table has no prompt for query {missing[0]!r} of goal {goal.goal!r} "
                f"({len(missing)} missing): give a prompt for every query_id of the outcome table"
            )
        vectors = np.stack([np.asarray(featurize(prompts[query]), dtype=np.float32) for query in goal.query_ids])
        goals.append(replace(goal, features=vectors))
    return replace(table, goals=tuple(goals))
