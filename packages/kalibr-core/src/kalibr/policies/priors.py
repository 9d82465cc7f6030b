"""Priors across goals: what a model did on the tenant's other goals, shrunk to a few pseudo-counts.

Goals differ in difficulty (a model at 40% on math may be the best one; 80% on trivia may be the worst), so
the prior carries a model's *advantage* over its peers elsewhere, not its raw rate: each arm's prior mean is
this goal's pooled rate plus how far the model sits above or below the average of the goal's models on the
other goals. A few pseudo-counts (``strength``) let the first outcomes of the goal itself take over quickly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from kalibr.policies.base import ArmState

__all__ = ["priors_from_model_totals"]


def priors_from_model_totals(
    arms: Sequence[ArmState],
    totals: Mapping[str, tuple[float, float]],
    *,
    base: float = 2.0,
    strength: float = 4.0,
    confident_after: float = 20.0,
) -> list[tuple[float, float]]:
    """Beta pseudo-counts per arm from ``Store.model_totals`` (which includes this goal: it is subtracted).

    The priors replace the policy's flat Beta(1, 1): each arm gets ``base`` pseudo-counts at its prior mean,
    plus ``strength * n / (n + confident_after)`` when its model has ``n`` outcomes on other goals (an arm
    whose model has none is centred on the goal's pooled rate).

    >>> arm = ArmState("p1", model="m1", successes=1.0, failures=1.0)
    >>> other = ArmState("p2", model="m2")
    >>> [tuple(round(x, 2) for x in prior) for prior in
    ...  priors_from_model_totals([arm, other], {"m1": (41.0, 21.0), "m2": (20.0, 40.0)})]
    [(1.98, 1.02), (1.02, 1.98)]
    """
    elsewhere = [_elsewhere(arm, totals) for arm in arms]
    known = [(s + 1.0) / (s + f + 2.0) for s, f in elsewhere if s + f > 0.0]
    peer_rate = sum(known) / len(known) if known else 0.5
    own_s = sum(arm.successes for arm in arms)
    own_f = sum(arm.failures for arm in arms)
    goal_rate = (own_s + 2.0 * peer_rate) / (own_s + own_f + 2.0)
    priors = []
    for successes, failures in elsewhere:
        count = successes + failures
        rate = (successes + 1.0) / (count + 2.0) if count > 0.0 else peer_rate
        mean = min(0.98, max(0.02, goal_rate + rate - peer_rate))
        weight = base + strength * count / (count + confident_after)
        priors.append((mean * weight, (1.0 - mean) * weight))
    return priors


def _elsewhere(arm: ArmState, totals: Mapping[str, tuple[float, float]]) -> tuple[float, float]:
    successes, failures = totals.get(arm.model, (0.0, 0.0)) if arm.model else (0.0, 0.0)
    return max(0.0, successes - arm.successes), max(0.0, failures - arm.failures)
