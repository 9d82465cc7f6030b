"""Actionable signals: what a person or a coding agent should look at, each with a severity and its data.

Every signal is ``{"type", "severity", "message", "data"}``; severities are ``info < low < medium < high``.
Thresholds are module constants so that tests and docs can name them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from kalibr.insights._drops import Drop
from kalibr.insights._goal import ParamEffect
from kalibr.insights._stats import PathStats, compare_rates, rounded
from kalibr.intelligence.base import PolicyAnswer

__all__ = [
    "SEVERITY_ORDER",
    "SIGNAL_TYPES",
    "cost_inefficiency",
    "drift_detected",
    "failure_mode_dominant",
    "goal_healthy",
    "low_confidence",
    "param_sensitivity_detected",
    "path_failing",
    "path_underperforming",
]

Severity = Literal["info", "low", "medium", "high"]
MIN_PATH_SAMPLES = 20
"""A path needs this many outcomes (of its current evidence) before a signal is raised about it, or a status."""
SEVERITY_ORDER: dict[str, int] = {"info": 0, "low": 1, "medium": 2, "high": 3}
SIGNAL_TYPES = (
    "path_failing",
    "path_underperforming",
    "failure_mode_dominant",
    "param_sensitivity_detected",
    "drift_detected",
    "cost_inefficiency",
    "low_confidence",
    "goal_healthy",
)

UNDERPERFORMING_P_VALUE = 0.01
UNDERPERFORMING_GAP = 0.10
FAILURE_MODE_RATE = 0.20
"""A failure category is dominant on a path when it hits at least 20% of its calls..."""
FAILURE_MODE_SHARE = 0.50
"""...and makes up at least half of its failures."""
COST_RATIO = 1.5
COST_MIN_TRAFFIC = 0.20
LOW_CONFIDENCE = 0.6


def _signal(kind: str, severity: Severity, message: str, data: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": kind, "severity": severity, "message": message, "data": dict(data)}


def path_underperforming(stats: Sequence[PathStats], total: int) -> list[dict[str, Any]]:
    """A path clearly worse than the best one: gap >= 10 points at p < 0.01."""
    measured = [item for item in stats if item.samples >= MIN_PATH_SAMPLES]
    if len(measured) < 2:
        return []
    best = max(measured, key=lambda item: item.success_rate or 0.0)
    found = []
    for item in measured:
        if item is best:
            continue
        comparison = compare_rates(best.successes, best.samples, item.successes, item.samples)
        if comparison.p_value >= UNDERPERFORMING_P_VALUE or comparison.difference < UNDERPERFORMING_GAP:
            continue
        share = item.samples / total
        severity: Severity = "high" if share >= 0.25 else "medium" if comparison.difference >= 0.2 else "low"
        message = (
            f"{item.label!r} succeeds {item.success_rate:.0%} vs {best.success_rate:.0%} for {best.label!r} "
            f"and still gets {share:.0%} of traffic: disable it or fix its prompt/params"
        )
        data = {
            "path_id": item.path_id,
            "success_rate": rounded(item.success_rate),
            "samples": item.samples,
            "traffic_share": rounded(share),
            "best_path_id": best.path_id,
            "best_success_rate": rounded(best.success_rate),
            "gap": rounded(comparison.difference),
            "p_value": rounded(comparison.p_value, 6),
            "generated": item.generated,
        }
        found.append(_signal("path_underperforming", severity, message, data))
    return found


def failure_mode_dominant(stats: Sequence[PathStats]) -> list[dict[str, Any]]:
    """One failure category causing most of a path's failures and a large share of its calls."""
    found = []
    for item in stats:
        failures = sum(item.failures.values())
        if item.samples < MIN_PATH_SAMPLES or not failures:
            continue
        category, count = max(item.failures.items(), key=lambda kv: (kv[1], kv[0]))
        rate, share = count / item.samples, count / failures
        if rate < FAILURE_MODE_RATE or share < FAILURE_MODE_SHARE:
            continue
        severity: Severity = "high" if rate >= 0.5 else "medium" if rate >= 0.3 else "low"
        message = f"{category!r} causes {share:.0%} of failures on {item.label!r} ({rate:.0%} of its calls)"
        data = {
            "path_id": item.path_id,
            "failure_category": category,
            "count": count,
            "samples": item.samples,
            "rate": rounded(rate),
            "share_of_failures": rounded(share),
        }
        found.append(_signal("failure_mode_dominant", severity, message, data))
    return found


def param_sensitivity_detected(effects: Sequence[ParamEffect]) -> list[dict[str, Any]]:
    """A parameter whose best and worst measured values differ significantly."""
    found = []
    for effect in effects:
        if not effect.significant:
            continue
        diff = effect.comparison.difference
        severity: Severity = "medium" if diff >= 0.1 else "low"
        message = (
            f"{effect.group.param}={effect.best[0]:g} beats {effect.group.param}={effect.worst[0]:g} on "
            f"{effect.group.model!r} by {diff:.0%} (p={effect.comparison.p_value:.3g})"
        )
        if effect.best_at_boundary:
            message += f"; the best is the {effect.best_at_boundary} value tried: try beyond it"
        found.append(_signal("param_sensitivity_detected", severity, message, effect.to_dict()))
    return found


def drift_detected(drops: Mapping[str, Drop], stats: Sequence[PathStats]) -> list[dict[str, Any]]:
    """A path whose success rate shifted inside the window: the router's detector fired on it, or the
    likelihood-ratio scan of every split point finds a clear change."""
    labels = {item.path_id: item.label for item in stats}
    found = []
    for path_id, drop in sorted(drops.items()):
        delta = drop.change.after_rate - drop.change.before_rate
        severity: Severity = "high" if delta <= -0.3 else "medium" if delta <= -0.15 else "low"
        message = drop.describe(labels.get(path_id, path_id))
        if drop.direction == "down":
            message += f"; judged on its {drop.change.after_samples} outcome(s) since"
        found.append(_signal("drift_detected", severity, message, {"path_id": path_id, **drop.to_dict()}))
    return found


def path_failing(stats: Sequence[PathStats]) -> list[dict[str, Any]]:
    """A path that has never answered in the window: every call to it failed at the provider (a model that does
    not exist, a wrong endpoint, a revoked key), so the router falls back from it on every call it gets."""
    found = []
    for item in stats:
        if not item.never_answered:
            continue
        categories = ", ".join(f"{category} x{count}" for category, count in sorted(item.failures.items()))
        message = (
            f"{item.label!r} never answered: all {item.samples} call(s) in the window failed at the provider "
            f"({categories}); check the model name, base_url and key, or remove the path"
        )
        data = {"path_id": item.path_id, "samples": item.samples, "failure_modes": dict(item.failures)}
        found.append(_signal("path_failing", "high", message, data))
    return found


def cost_inefficiency(stats: Sequence[PathStats], total: int, tie_tolerance: float) -> list[dict[str, Any]]:
    """A busy path costing 1.5x or more than a path that does as well (within the tie tolerance)."""
    priced = [item for item in stats if item.samples >= MIN_PATH_SAMPLES and item.mean_cost_usd is not None]
    found = []
    for item in priced:
        share = item.samples / total
        cost, rate = item.mean_cost_usd or 0.0, item.success_rate or 0.0
        cheaper = [
            other
            for other in priced
            if (other.mean_cost_usd or 0.0) * COST_RATIO <= cost and (other.success_rate or 0.0) >= rate - tie_tolerance
        ]
        if share < COST_MIN_TRAFFIC or not cheaper:
            continue
        best = min(cheaper, key=lambda other: other.mean_cost_usd or 0.0)
        other_cost = best.mean_cost_usd or 0.0
        ratio = cost / other_cost if other_cost > 0 else float("inf")
        severity: Severity = "medium" if ratio >= 3 else "low"
        message = (
            f"{item.label!r} gets {share:.0%} of traffic at ${cost:.6f}/call while {best.label!r} does as well "
            f"({best.success_rate:.0%} vs {rate:.0%}) at ${other_cost:.6f}/call"
        )
        data = {
            "path_id": item.path_id,
            "mean_cost_usd": rounded(cost, 8),
            "success_rate": rounded(rate),
            "traffic_share": rounded(share),
            "cheaper_path_id": best.path_id,
            "cheaper_mean_cost_usd": rounded(other_cost, 8),
            "cheaper_success_rate": rounded(best.success_rate),
            "cost_ratio": rounded(ratio, 2) if ratio != float("inf") else None,
            "savings_per_1k_calls_usd": rounded((cost - other_cost) * 1000, 6),
        }
        found.append(_signal("cost_inefficiency", severity, message, data))
    return found


def low_confidence(answer: PolicyAnswer, samples: int, min_goal_samples: int) -> list[dict[str, Any]]:
    """Too few outcomes to recommend a path, or a recommendation we are not yet sure of."""
    data = {
        "samples": samples,
        "min_samples": min_goal_samples,
        "recommended_path_id": answer.recommended_path_id,
        "confidence": answer.confidence,
        "window_hours": answer.window_hours,
    }
    if not answer.enough_data or samples < min_goal_samples:
        return [_signal("low_confidence", "medium", answer.reasoning, data)]
    if answer.recommended_path_id is not None and answer.confidence < LOW_CONFIDENCE:
        message = (
            f"the best path is only {answer.confidence:.0%} likely to be within the tie tolerance of the true best: "
            "more outcomes are needed before acting on this ranking"
        )
        return [_signal("low_confidence", "low", message, data)]
    return []


def goal_healthy(status: str, signals: Sequence[Mapping[str, Any]], success_rate: float | None) -> list[dict[str, Any]]:
    """The all-clear: a healthy goal with no signal of medium or high severity."""
    if status != "healthy" or any(SEVERITY_ORDER[s["severity"]] >= SEVERITY_ORDER["medium"] for s in signals):
        return []
    message = f"healthy: {success_rate or 0:.0%} success, nothing needs attention"
    return [_signal("goal_healthy", "info", message, {"success_rate": rounded(success_rate)})]
