"""``get_policy``'s answer, computed from per-path summaries: the best path that meets the constraints.

Ranking follows the routing contract: success rate dominates; among paths within ``tie_tolerance`` of the best
rate, the cheaper wins, then the faster. A path needs ``min_samples`` outcomes in the window to be recommended:
below that the answer says "not enough data" instead of guessing. ``stats`` are each path's current evidence: a
path whose success rate dropped is judged on its outcomes since the drop (``kalibr.insights._drops``), and the
answer says what changed and when, in ``reasoning`` and in the path's ``alternatives`` row (``drift``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from kalibr.insights._drops import Drop
from kalibr.insights._stats import PathStats, rounded
from kalibr.intelligence.base import Constraints, PolicyAnswer

__all__ = ["DEFAULT_MIN_SAMPLES", "answer_policy", "not_enough_data", "rank_paths"]

DEFAULT_MIN_SAMPLES = 20
_DRAWS = 4000


def answer_policy(
    goal: str,
    stats: Sequence[PathStats],
    *,
    window_hours: float,
    constraints: Constraints | None = None,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    tie_tolerance: float = 0.05,
    drops: Mapping[str, Drop] | None = None,
) -> PolicyAnswer:
    """Recommend a path from ``stats`` (enabled paths only), or say why none can be recommended."""
    constraints = constraints or Constraints()
    drops = drops or {}
    usable = [item for item in stats if item.enabled]
    measured = [item for item in usable if item.samples >= min_samples]
    changed = _what_changed(usable, drops)
    if not measured:
        answer = not_enough_data(goal, usable, window_hours=window_hours, min_samples=min_samples, drops=drops)
        return _with_changes(answer, changed)
    excluded = {item.path_id: why for item in measured if (why := _violation(item, constraints)) is not None}
    candidates = [item for item in measured if item.path_id not in excluded]
    alternatives = _alternatives(usable, excluded, min_samples, drops)
    if not candidates:
        reasons = "; ".join(f"{_label(stats, pid)}: {why}" for pid, why in excluded.items())
        reasoning = f"no path meets the constraints ({reasons})" + changed
        return _answer(goal, None, window_hours, reasoning, alternatives, True)
    chosen = rank_paths(candidates, tie_tolerance)[0]
    confidence = _confidence(chosen, [item for item in usable if item.samples], tie_tolerance)
    reasoning = _reasoning(chosen, candidates, window_hours, tie_tolerance) + changed
    if constraints.min_confidence is not None and confidence < constraints.min_confidence:
        reasoning = (
            f"best path {chosen.label!r} has confidence {confidence:.2f}, below min_confidence "
            f"{constraints.min_confidence:.2f}: collect more outcomes or lower min_confidence"
        )
        return _answer(goal, None, window_hours, reasoning, alternatives, True, confidence=confidence)
    others = [alt for alt in alternatives if alt["path_id"] != chosen.path_id]
    return _answer(goal, chosen, window_hours, reasoning, others, True, confidence=confidence)


def not_enough_data(
    goal: str,
    stats: Sequence[PathStats],
    *,
    window_hours: float,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    drops: Mapping[str, Drop] | None = None,
) -> PolicyAnswer:
    """The explicit "not enough data" answer: no recommendation, and how far each path is from one."""
    total = sum(item.samples for item in stats)
    most = max((item.samples for item in stats), default=0)
    reasoning = (
        f"not enough data: {total} outcome(s) in the last {window_hours:g} h and no path has the {min_samples} "
        f"needed to recommend it (the best-covered has {most}); keep routing with exploration and ask again later"
    )
    alternatives = _alternatives(stats, {}, min_samples, drops or {})
    return _answer(goal, None, window_hours, reasoning, alternatives, False, samples=total)


def _what_changed(stats: Sequence[PathStats], drops: Mapping[str, Drop]) -> str:
    """The reasoning's account of the drops it took into account ("" when none)."""
    notes = [
        f"{drops[item.path_id].describe(item.label)}: judged on its {item.samples} outcome(s) since"
        for item in stats
        if item.path_id in drops and drops[item.path_id].direction == "down"
    ]
    return "".join(f"; {note}" for note in notes)


def _with_changes(answer: PolicyAnswer, changed: str) -> PolicyAnswer:
    return replace(answer, reasoning=answer.reasoning + changed) if changed else answer


def _violation(item: PathStats, constraints: Constraints) -> str | None:
    rate = item.success_rate or 0.0
    cost, latency = item.mean_cost_usd, item.mean_latency_ms
    if constraints.min_quality is not None and rate < constraints.min_quality:
        return f"success rate {rate:.3f} < min_quality {constraints.min_quality}"
    if constraints.max_cost_usd is not None:
        if cost is None:
            return "cost unknown (no outcome reported a cost), so max_cost_usd cannot be checked"
        if cost > constraints.max_cost_usd:
            return f"mean cost ${cost:.6f} > max_cost_usd {constraints.max_cost_usd}"
    if constraints.max_latency_ms is not None:
        if latency is None:
            return "latency unknown (no outcome reported one), so max_latency_ms cannot be checked"
        if latency > constraints.max_latency_ms:
            return f"mean latency {latency:.0f} ms > max_latency_ms {constraints.max_latency_ms}"
    return None


def rank_paths(candidates: Sequence[PathStats], tie_tolerance: float) -> list[PathStats]:
    """Best first: success rate, then (within ``tie_tolerance`` of the best) cost, then latency."""
    best_rate = max(item.success_rate or 0.0 for item in candidates)

    def key(item: PathStats) -> tuple[int, float, float, float]:
        tied = (item.success_rate or 0.0) >= best_rate - tie_tolerance
        cost = item.mean_cost_usd if item.mean_cost_usd is not None else float("inf")
        latency = item.mean_latency_ms if item.mean_latency_ms is not None else float("inf")
        if tied:
            return (0, cost, latency, -(item.success_rate or 0.0))
        return (1, -(item.success_rate or 0.0), cost, latency)

    return sorted(candidates, key=key)


def _confidence(chosen: PathStats, measured: Sequence[PathStats], tie_tolerance: float) -> float:
    """P(the chosen path's true rate is within ``tie_tolerance`` of the best true rate), by posterior sampling.

    With a single measured path there is nothing to beat, so it is P(its rate is within the tolerance of the
    observed rate): how precisely we know it.
    """
    rng = np.random.default_rng(0)  # fixed: the same data always gives the same confidence

    def draws(item: PathStats) -> Any:
        return rng.beta(1 + item.successes, 1 + item.samples - item.successes, _DRAWS)

    mine = draws(chosen)
    others = [draws(item) for item in measured if item.path_id != chosen.path_id]
    if not others:
        observed = chosen.success_rate or 0.0
        return float(np.mean(np.abs(mine - observed) <= tie_tolerance))
    best_other = np.max(np.stack(others), axis=0)
    return float(np.mean(mine >= best_other - tie_tolerance))


def _reasoning(chosen: PathStats, candidates: Sequence[PathStats], window_hours: float, tolerance: float) -> str:
    low, high = chosen.interval
    text = (
        f"{chosen.label!r} succeeded {chosen.success_rate or 0:.1%} of {chosen.samples} outcomes in the last "
        f"{window_hours:g} h (95% CI {low:.1%}-{high:.1%})"
    )
    ties = [
        item
        for item in candidates
        if item is not chosen and abs((item.success_rate or 0) - (chosen.success_rate or 0)) <= tolerance
    ]
    if ties:
        text += f"; tied within {tolerance:.0%} with {len(ties)} other path(s), chosen for lower cost/latency"
    return text


def _alternatives(
    stats: Sequence[PathStats], excluded: dict[str, str], min_samples: int, drops: Mapping[str, Drop]
) -> list[dict[str, Any]]:
    rows = []
    for item in stats:
        low, high = item.interval
        drop = drops.get(item.path_id)
        rows.append(
            {
                "path_id": item.path_id,
                "model": item.model,
                "params": dict(item.params),
                "success_rate": rounded(item.success_rate),
                "sample_count": item.samples,
                "ci_low": rounded(low) if item.samples else None,
                "ci_high": rounded(high) if item.samples else None,
                "mean_cost_usd": rounded(item.mean_cost_usd, 8),
                "mean_latency_ms": rounded(item.mean_latency_ms, 1),
                "eligible": item.samples >= min_samples and item.path_id not in excluded,
                "excluded_because": excluded.get(item.path_id)
                or (None if item.samples >= min_samples else f"only {item.samples} of {min_samples} samples"),
                "drift": None if drop is None else drop.to_dict(),
            }
        )
    return rows


def _answer(
    goal: str,
    chosen: PathStats | None,
    window_hours: float,
    reasoning: str,
    alternatives: list[dict[str, Any]],
    enough_data: bool,
    *,
    confidence: float = 0.0,
    samples: int = 0,
) -> PolicyAnswer:
    return PolicyAnswer(
        goal=goal,
        recommended_path_id=None if chosen is None else chosen.path_id,
        recommended_model=None if chosen is None else chosen.model,
        success_rate=None if chosen is None else rounded(chosen.success_rate),
        sample_count=samples if chosen is None else chosen.samples,
        confidence=round(confidence, 4),
        reasoning=reasoning,
        enough_data=enough_data,
        window_hours=window_hours,
        alternatives=tuple(alternatives),
        params={} if chosen is None else dict(chosen.params),
    )


def _label(stats: Sequence[PathStats], path_id: str) -> str:
    return next((item.label for item in stats if item.path_id == path_id), path_id)
