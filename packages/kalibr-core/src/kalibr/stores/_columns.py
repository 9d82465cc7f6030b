"""Building ``OutcomeColumns``: from per-outcome values (the SQL stores' reads), from records, and kept up to date
outcome by outcome (the memory store).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

import numpy as np

from kalibr.stores._records import to_micros
from kalibr.stores.base import OutcomeColumns, OutcomeRecord

__all__ = ["GoalColumns", "columns_from_joined", "columns_from_records", "columns_from_values"]

UNIT_SEPARATOR = "\x1f"
"""Joins a text column's values in one string (no path id, model or category contains it)."""


def _coded(values: Sequence[str | None], *, empty: bool = False) -> tuple[tuple[str, ...], np.ndarray]:
    """The distinct values (sorted), and each value's index among them: -1 for None (and for '' when ``empty``,
    as the SQL stores write a missing category). A dictionary lookup per value, in C (``map``)."""
    names = tuple(sorted(value for value in set(values) if value is not None and (value or not empty)))
    index: dict[str | None, int] = {name: i for i, name in enumerate(names)}
    index[None] = -1
    if empty:
        index[""] = -1
    return names, np.fromiter(map(index.__getitem__, values), dtype=np.intp, count=len(values))


def _latest_models(
    path: np.ndarray, models: Sequence[str | None], count: int, rows: np.ndarray | None = None
) -> tuple[str | None, ...]:
    """Per path code, the model of its last row (rows are oldest first; ``rows[i]`` is row i's index in
    ``models`` when they are not in the same order)."""
    codes, first_from_end = np.unique(path[::-1], return_index=True)
    latest: list[str | None] = [None] * count
    for code, offset in zip(codes.tolist(), first_from_end.tolist(), strict=True):
        row = len(path) - 1 - offset
        latest[code] = models[row if rows is None else int(rows[row])] or None  # the SQL stores write None as ''

    return tuple(latest)


def columns_from_values(
    path_ids: Sequence[str],
    models: Sequence[str | None],
    scores: Sequence[float] | np.ndarray,
    costs: Sequence[float | None] | np.ndarray,
    latencies: Sequence[float | None] | np.ndarray,
    categories: Sequence[str | None],
    provider_failed: Sequence[bool] | np.ndarray,
    reported_at: Sequence[int] | np.ndarray,
) -> OutcomeColumns:
    """Columns from one value per outcome and field, the outcomes already oldest first."""
    known_paths, path = _coded(path_ids)
    known_categories, category = _coded(categories, empty=True)
    return OutcomeColumns(
        path_ids=known_paths,
        models=_latest_models(path, models, len(known_paths)),
        path=path,
        score=np.asarray(scores, dtype=np.float64),
        cost_usd=np.asarray(costs, dtype=np.float64),  # None becomes NaN
        latency_ms=np.asarray(latencies, dtype=np.float64),
        categories=known_categories,
        category=category,
        provider_failed=np.asarray(provider_failed, dtype=np.bool_),
        reported_at=np.asarray(reported_at, dtype=np.int64),
    )


def columns_from_records(records: Sequence[OutcomeRecord]) -> OutcomeColumns:
    """Columns of records given oldest first."""
    return columns_from_values(
        [r.path_id for r in records],
        [r.model for r in records],
        [r.score for r in records],
        [r.cost_usd for r in records],
        [r.latency_ms for r in records],
        [r.failure_category for r in records],
        [r.source == "error" for r in records],
        [to_micros(r.reported_at) for r in records],
    )


def columns_from_joined(count: int, joined: Sequence[str | None]) -> OutcomeColumns | None:
    """Columns from one row of joined values: path ids, models, categories (joined by ``UNIT_SEPARATOR``, '' for
    none); scores, costs, latencies and times (joined by commas, 'nan' for none); provider failures (a 0 or 1 digit
    per outcome, unjoined). None when a text value held the separator, or the times are not in order (SQLite does
    not promise an aggregate's input order): read the rows one by one instead."""
    paths, models, categories = (_split(joined[i], count) for i in (0, 1, 5))
    reported_at = _numbers(joined[7], count, np.int64)
    if paths is None or models is None or categories is None or bool(np.any(reported_at[1:] < reported_at[:-1])):
        return None
    scores, costs, latencies = (_numbers(joined[i], count, np.float64) for i in (2, 3, 4))
    failed = np.frombuffer((joined[6] or "").encode("ascii"), dtype=np.uint8) == ord("1")
    return columns_from_values(paths, models, scores, costs, latencies, categories, failed, reported_at)


def _split(text: str | None, count: int) -> list[str] | None:
    if count == 0:
        return []
    values = (text or "").split(UNIT_SEPARATOR)
    return values if len(values) == count else None


def _numbers(text: str | None, count: int, dtype: type[np.generic]) -> np.ndarray:
    # numpy parses the comma-separated text in C: far faster than a Python float per value.
    return np.fromstring(text or "", dtype=dtype, sep=",") if count else np.zeros(0, dtype=dtype)


class GoalColumns:
    """One goal's outcomes as growing columns, in arrival order (the memory store keeps one per goal)."""

    __slots__ = (
        "_at",
        "_category",
        "_cost",
        "_failed",
        "_latency",
        "_model",
        "_path",
        "_row",
        "_score",
        "categories",
        "paths",
    )

    def __init__(self) -> None:
        self.paths: dict[str, int] = {}
        self.categories: dict[str, int] = {}
        self._row: dict[str, int] = {}
        self._path: list[int] = []
        self._model: list[str | None] = []
        self._score: list[float] = []
        self._cost: list[float] = []
        self._latency: list[float] = []
        self._category: list[int] = []
        self._failed: list[bool] = []
        self._at: list[int] = []

    def add(self, record: OutcomeRecord) -> None:
        self._row[record.trace_id] = len(self._path)
        self._path.append(self.paths.setdefault(record.path_id, len(self.paths)))
        self._model.append(record.model)
        self._score.append(record.score)
        self._cost.append(math.nan if record.cost_usd is None else record.cost_usd)
        self._latency.append(math.nan if record.latency_ms is None else record.latency_ms)
        self._category.append(self._category_code(record.failure_category))
        self._failed.append(record.source == "error")
        self._at.append(to_micros(record.reported_at))

    def replace(self, record: OutcomeRecord) -> None:
        """A stored outcome changed (``update_outcome`` changes its score, category and source)."""
        row = self._row[record.trace_id]
        self._score[row] = record.score
        self._category[row] = self._category_code(record.failure_category)
        self._failed[row] = record.source == "error"

    def _category_code(self, category: str | None) -> int:
        return -1 if category is None else self.categories.setdefault(category, len(self.categories))

    def columns(self, since: datetime) -> OutcomeColumns:
        at = np.array(self._at, dtype=np.int64)
        # Oldest first; a stable sort keeps arrival order among outcomes reported at the same moment.
        order = np.argsort(at, kind="stable")
        order = order[at[order] >= to_micros(since)]
        path = np.array(self._path, dtype=np.intp)[order]
        return OutcomeColumns(
            path_ids=tuple(self.paths),
            models=_latest_models(path, self._model, len(self.paths), order),
            path=path,
            score=np.array(self._score, dtype=np.float64)[order],
            cost_usd=np.array(self._cost, dtype=np.float64)[order],
            latency_ms=np.array(self._latency, dtype=np.float64)[order],
            categories=tuple(self.categories),
            category=np.array(self._category, dtype=np.intp)[order],
            provider_failed=np.array(self._failed, dtype=np.bool_)[order],
            reported_at=at[order],
        )
