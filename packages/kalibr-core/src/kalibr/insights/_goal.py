"""Goal-level analysis: trend, failure modes, parameter sensitivity and the goal's status."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from kalibr.insights._stats import PathStats, RateComparison, compare_rates, rounded, sequential_sum

__all__ = [
    "GoalStatus",
    "ParamEffect",
    "ParamGroup",
    "failure_modes",
    "goal_status",
    "numeric_groups",
    "param_sensitivity",
    "path_status",
    "trend",
]

GoalStatus = Literal["healthy", "degraded", "failing", "insufficient_data"]

MIN_GOAL_SAMPLES = 20
"""Below this many outcomes in the window a goal is ``insufficient_data``."""
MIN_VALUE_SAMPLES = 10
"""A parameter value needs this many outcomes to take part in a sensitivity comparison."""
SENSITIVITY_P_VALUE = 0.05
SENSITIVITY_MIN_DIFFERENCE = 0.05


def trend(scores: np.ndarray) -> dict[str, Any]:
    """Compare the later half of the window's outcomes with the earlier half (chronological order).

    ``direction`` is ``declining`` or ``improving`` only when the change is at least 5 points and |z| >= 2.
    """
    n = len(scores)
    if n < 2 * MIN_VALUE_SAMPLES:
        return {"direction": "unknown", "earlier_success_rate": None, "recent_success_rate": None, "change": None}
    half = n // 2
    earlier, recent = sequential_sum(scores[:half]), sequential_sum(scores[half:])
    comparison = compare_rates(recent, n - half, earlier, half)
    direction = "stable"
    if abs(comparison.z) >= 2 and abs(comparison.difference) >= 0.05:
        direction = "improving" if comparison.difference > 0 else "declining"
    return {
        "direction": direction,
        "earlier_success_rate": rounded(earlier / half),
        "recent_success_rate": rounded(recent / (n - half)),
        "change": rounded(comparison.difference),
        "p_value": rounded(comparison.p_value),
    }


def failure_modes(stats: Sequence[PathStats], limit: int = 5) -> list[dict[str, Any]]:
    """The most frequent failure categories over every path, with their share of failures and of outcomes."""
    counts: Counter[str] = Counter()
    for item in stats:
        counts.update(item.failures)
    failures = sum(counts.values())
    outcomes = sum(item.samples for item in stats)
    return [
        {
            "category": category,
            "count": count,
            "share_of_failures": rounded(count / failures),
            "rate": rounded(count / outcomes),
            "paths": sorted(item.path_id for item in stats if item.failures.get(category)),
        }
        for category, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
    ]


@dataclass(frozen=True, slots=True)
class ParamGroup:
    """Paths of one model that differ only in one numeric parameter."""

    model: str
    param: str
    fixed_params: Mapping[str, Any]
    values: tuple[tuple[float, PathStats], ...]
    """(parameter value, path) sorted by value."""


def numeric_groups(stats: Sequence[PathStats]) -> list[ParamGroup]:
    """Group paths by (model, numeric parameter, every other parameter) to compare parameter values."""
    grouped: dict[tuple[str, str, str], list[tuple[float, PathStats]]] = {}
    fixed: dict[tuple[str, str, str], dict[str, Any]] = {}
    for item in stats:
        for name, value in item.params.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            others = {k: v for k, v in item.params.items() if k != name}
            key = (item.model, name, json.dumps(others, sort_keys=True, default=str))
            grouped.setdefault(key, []).append((float(value), item))
            fixed[key] = others
    return [
        ParamGroup(model, param, fixed[key], tuple(sorted(values, key=lambda pair: pair[0])))
        for key, values in sorted(grouped.items())
        if len({value for value, _ in values}) >= 2
        for model, param, _ in [key]
    ]


@dataclass(frozen=True, slots=True)
class ParamEffect:
    """Whether a parameter's value changes the success rate, from paths that differ only in it."""

    group: ParamGroup
    best: tuple[float, PathStats]
    worst: tuple[float, PathStats]
    comparison: RateComparison
    measured: tuple[tuple[float, PathStats], ...]

    @property
    def significant(self) -> bool:
        comparison = self.comparison
        return comparison.p_value < SENSITIVITY_P_VALUE and comparison.difference >= SENSITIVITY_MIN_DIFFERENCE

    @property
    def best_at_boundary(self) -> str | None:
        """``"highest"``/``"lowest"`` when the best value is the highest/lowest measured one."""
        values = [value for value, _ in self.measured]
        if self.best[0] == max(values):
            return "highest"
        if self.best[0] == min(values):
            return "lowest"
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.group.model,
            "param": self.group.param,
            "fixed_params": dict(self.group.fixed_params),
            "values": [
                {
                    "value": value,
                    "path_id": item.path_id,
                    "success_rate": rounded(item.success_rate),
                    "samples": item.samples,
                    "ci_low": rounded(item.interval[0]),
                    "ci_high": rounded(item.interval[1]),
                }
                for value, item in self.measured
            ],
            "best_value": self.best[0],
            "worst_value": self.worst[0],
            "difference": rounded(self.comparison.difference),
            "p_value": rounded(self.comparison.p_value),
            "probability_best_beats_worst": rounded(self.comparison.probability_a_better),
            "significant": self.significant,
            "best_at_boundary": self.best_at_boundary,
        }


def param_sensitivity(stats: Sequence[PathStats]) -> list[ParamEffect]:
    """One effect per parameter group with at least two values measured ``MIN_VALUE_SAMPLES`` times each."""
    effects = []
    for group in numeric_groups(stats):
        measured = tuple((value, item) for value, item in group.values if item.samples >= MIN_VALUE_SAMPLES)
        if len({value for value, _ in measured}) < 2:
            continue
        best = max(measured, key=lambda pair: pair[1].success_rate or 0.0)
        worst = min(measured, key=lambda pair: pair[1].success_rate or 0.0)
        comparison = compare_rates(best[1].successes, best[1].samples, worst[1].successes, worst[1].samples)
        effects.append(ParamEffect(group, best, worst, comparison, measured))
    return effects


def goal_status(success_rate: float | None, samples: int, *, degraded: bool) -> GoalStatus:
    """``insufficient_data`` under 20 outcomes; ``failing`` under 50% success; ``degraded`` when getting worse."""
    if samples < MIN_GOAL_SAMPLES or success_rate is None:
        return "insufficient_data"
    if success_rate < 0.5:
        return "failing"
    return "degraded" if degraded else "healthy"


def path_status(window: PathStats, current: PathStats, *, dropped: bool, min_samples: int) -> GoalStatus:
    """A path's status: ``failing`` when it never answered, or its current evidence (since a drop, if any) is
    under 50% success over ``min_samples``; ``degraded`` after a drop; ``insufficient_data`` under ``min_samples``
    current outcomes; else ``healthy``."""
    if window.never_answered:
        return "failing"
    if current.samples >= min_samples and (current.success_rate or 0.0) < 0.5:
        return "failing"
    if dropped:
        return "degraded"
    return "insufficient_data" if current.samples < min_samples else "healthy"
