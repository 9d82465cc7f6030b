"""Cost settings of a policy: a weight on cost, a quality tolerance, or a budget per 1,000 calls.

Pure functions of the arm states and one decision's posterior draws, so any sampling policy (per goal, or per
prompt cluster) can apply them after it draws. Three ways to state what cost is worth:

- ``cost_weight``: reward = score - cost_weight * cost. Useful only if you know your exchange rate.
- ``quality_tolerance``: the cheapest path whose success rate is within that many points of the best one.
- ``budget_per_1k_calls_usd``: the best success rate at an average cost per call that tracks the budget.
  The pacer holds no state: a goal's spend so far is in its arms' cost sums, and each decision aims at the
  budget plus a share of what is left unspent (or minus the overspend), repaid over ``PACING_CALLS`` calls.
  With that target it takes the best mixture of two paths whose expected cost equals it: Thompson sampling
  over the linear programme "most successes for this cost per call".

An arm whose cost is not measured yet takes its cost prior when the caller has one (``cost_priors``: its model's
mean cost per call on the tenant's other goals, else its list price at the dollars per price unit measured, from
``cost_priors_from_model_costs``), so a dear path is not tried just to learn what it costs; without one it counts as
free, so it gets tried and its cost measured.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from kalibr._exceptions import UserError
from kalibr.policies.base import ArmState, PolicyConfig

__all__ = [
    "PACING_CALLS",
    "cost_aware_index",
    "cost_matters",
    "cost_priors_from_model_costs",
    "mean_costs",
    "pacing_target",
    "still_promising",
]

PACING_CALLS = 50.0
"""Calls over which the pacer repays an overspend (or spends a saving): short enough to hold the average near the
budget, long enough that one dear call does not swing the next few."""


def cost_matters(config: PolicyConfig) -> bool:
    """Whether ``config`` states any cost setting."""
    return config.cost_weight > 0.0 or config.quality_tolerance > 0.0 or config.budget_per_1k_calls_usd is not None


def mean_costs(arms: Sequence[ArmState], cost_priors: Sequence[float | None] | None = None) -> list[float]:
    """Each arm's mean cost; an arm with no cost yet takes its prior, or counts as free (which gets it measured)."""
    if cost_priors is None:
        return [arm.mean_cost or 0.0 for arm in arms]
    if len(cost_priors) != len(arms):
        raise UserError(f"got {len(cost_priors)} cost priors for {len(arms)} paths: give one (or None) per path")
    return [
        mean if (mean := arm.mean_cost) is not None else (prior or 0.0)
        for arm, prior in zip(arms, cost_priors, strict=True)
    ]


def cost_priors_from_model_costs(
    arms: Sequence[ArmState],
    model_costs: Mapping[str, tuple[float, int]],
    price_hints: Sequence[float | None] | None = None,
) -> list[float | None]:
    """Per arm, the cost a path not measured yet should be expected to have (None where nothing is known).

    ``model_costs`` is ``Store.model_costs``: per model, (cost sum, calls with a cost) over every goal of the
    tenant, this goal included (its part is subtracted). The estimate is the model's mean cost elsewhere, scaled
    by how dear this goal's calls run against the same models elsewhere (longer prompts cost more on every
    model), measured on the goal's paths that have costs. Arms with a measured cost get None: their own mean
    decides.

    ``price_hints`` (one per arm, None where unknown) are relative prices known before any call, such as a list
    price per token. A path whose model has no cost anywhere is expected to cost its hint times the dollars per
    hint unit of the goal's paths with a measured cost (else of its paths with a cost elsewhere). While no path
    has a cost yet, nothing sets that scale: the cheapest path by hint counts as free and the dearer hinted ones
    as out of reach (infinite), so a cost setting tries the cheapest first and its cost anchors the scale.

    >>> measured = ArmState("a", model="m1", cost_sum=0.4, cost_count=2)
    >>> untried = ArmState("b", model="m2")
    >>> cost_priors_from_model_costs([measured, untried], {"m1": (0.9, 7), "m2": (5.0, 5)})
    [None, 2.0]
    >>> cost_priors_from_model_costs([measured, ArmState("c", model="m3")], {}, price_hints=[0.5, 2.0])
    [None, 0.8]
    """
    elsewhere = [_cost_elsewhere(arm, model_costs) for arm in arms]
    own = other = 0.0
    for arm, mean in zip(arms, elsewhere, strict=True):
        if (own_mean := arm.mean_cost) is not None and mean is not None:
            own += own_mean
            other += mean
    scale = own / other if own > 0.0 and other > 0.0 else 1.0
    priors = [
        None if arm.cost_count or mean is None else mean * scale for arm, mean in zip(arms, elsewhere, strict=True)
    ]
    if price_hints is None:
        return priors
    if len(price_hints) != len(arms):
        raise UserError(f"got {len(price_hints)} price hints for {len(arms)} paths: give one (or None) per path")
    return _hinted(arms, priors, price_hints)


def _hinted(arms: Sequence[ArmState], priors: list[float | None], hints: Sequence[float | None]) -> list[float | None]:
    """``priors`` with a cost from its hint for each hinted arm that has neither a measured cost nor a prior."""
    own = [(mean, hint) for arm, hint in zip(arms, hints, strict=True) if (mean := arm.mean_cost) is not None and hint]
    # No own cost yet: the costs the goal's hinted paths have elsewhere set the rate.
    known = own or [(prior, hint) for prior, hint in zip(priors, hints, strict=True) if prior is not None and hint]
    hinted = {
        i: hint
        for i, (arm, prior, hint) in enumerate(zip(arms, priors, hints, strict=True))
        if hint is not None and prior is None and not arm.cost_count
    }
    if known:
        rate = sum(cost for cost, _ in known) / sum(hint for _, hint in known)
        return [hinted[i] * rate if i in hinted else prior for i, prior in enumerate(priors)]
    # No scale yet: only until a hinted path has an outcome (one reported without a cost must not lock out the rest).
    if not hinted or any(arms[i].total_samples for i in hinted):
        return priors
    cheapest = min(hinted.values())
    return [(0.0 if hinted[i] <= cheapest else math.inf) if i in hinted else prior for i, prior in enumerate(priors)]


def _cost_elsewhere(arm: ArmState, model_costs: Mapping[str, tuple[float, int]]) -> float | None:
    """The mean cost per call of the arm's model on the tenant's other paths, None when it has none."""
    total, calls = model_costs.get(arm.model, (0.0, 0)) if arm.model else (0.0, 0)
    calls -= arm.cost_count
    return max(0.0, total - arm.cost_sum) / calls if calls > 0 else None


def pacing_target(arms: Sequence[ArmState], budget_per_1k_calls_usd: float) -> float:
    """The cost this call should aim at: the budget per call, corrected by the goal's spend so far."""
    per_call = budget_per_1k_calls_usd / 1000.0
    calls = sum(arm.cost_count for arm in arms)
    spent = sum(arm.cost_sum for arm in arms)
    return max(0.0, per_call + (per_call * calls - spent) / PACING_CALLS)


def cost_aware_index(
    arms: Sequence[ArmState],
    draws: Sequence[float],
    config: PolicyConfig,
    rng: np.random.Generator | None,
    costs: Sequence[float],
) -> int:
    """The arm a cost setting picks given one posterior draw (or mean) per arm and each arm's cost (``mean_costs``).

    ``rng`` is needed by the budget (it mixes two paths) and None only for a decision that must not gamble:
    then the budget takes the side its mixture leans to. A path of infinite cost is out of reach.
    """
    if math.inf in costs:
        draws = [-math.inf if cost == math.inf else draw for draw, cost in zip(draws, costs, strict=True)]
    if config.budget_per_1k_calls_usd is not None:
        return _paced(draws, costs, pacing_target(arms, config.budget_per_1k_calls_usd), rng)
    if config.quality_tolerance > 0.0:
        return _cheapest_within(draws, costs, config.quality_tolerance)
    weight = config.cost_weight
    return max(range(len(draws)), key=lambda i: draws[i] - weight * costs[i])


def still_promising(
    arms: Sequence[ArmState],
    means: Sequence[float],
    optimistic: Callable[[int], float],
    config: PolicyConfig,
    costs: Sequence[float],
) -> Callable[[int], bool]:
    """Whether a path under the exploration floor is still worth its forced samples under the cost setting.

    Without a cost setting, a path whose optimistic estimate falls short of the best mean has lost. With one,
    the comparison is the setting's own: a cheap path a little below the best may be the one to pick, and a dear
    path that could not change the pick is not worth exploring. Under a weight: its optimistic score net of
    cost against the best net score. Under a tolerance: a path no dearer than today's pick must be able to reach
    the bar (the best mean minus the tolerance); a dearer one must be able to beat the pick by more than the
    tolerance. Under a budget: it must cost no more than the pacer's target, and be able to reach the best mean
    among those. Each comparison keeps ``tie_tolerance`` of slack, as without costs. A path never tried is
    judged on its prior (``optimistic`` of its prior alone), not as perfect: a forced call to a dear path the
    other goals say cannot earn its cost is money spent for nothing, and Thompson sampling may still try it.
    An infinite cost always rules a path out.
    """
    slack = config.tie_tolerance * max(means)

    if config.budget_per_1k_calls_usd is not None:
        target = pacing_target(arms, config.budget_per_1k_calls_usd)
        affordable = [mean for mean, cost in zip(means, costs, strict=True) if cost <= target]
        best = max(affordable, default=max(means))
        return lambda i: costs[i] <= target and optimistic(i) >= best - slack
    if config.quality_tolerance > 0.0:
        tolerance = config.quality_tolerance
        pick = cost_aware_index(arms, means, config, None, costs)
        bar = max(means) - tolerance - slack
        return lambda i: (
            optimistic(i) >= bar
            if costs[i] <= costs[pick]
            else costs[i] < math.inf and optimistic(i) - tolerance > means[pick]
        )
    weight = config.cost_weight
    best_net = max(mean - weight * cost for mean, cost in zip(means, costs, strict=True))
    return lambda i: optimistic(i) - weight * costs[i] >= best_net - slack


def _cheapest_within(values: Sequence[float], costs: Sequence[float], tolerance: float) -> int:
    """Of the arms whose value is within ``tolerance`` of the best, the cheapest; equal costs go to the higher."""
    top = max(values) - tolerance
    return min((i for i, value in enumerate(values) if value >= top), key=lambda i: (costs[i], -values[i]))


def _paced(draws: Sequence[float], costs: Sequence[float], target: float, rng: np.random.Generator | None) -> int:
    """The best draw among arms costing at most ``target``, or a mixture of a cheaper and a dearer arm whose
    expected cost is ``target`` when that has a higher expected draw (the upper hull of cost against draw)."""
    count = len(draws)
    affordable = [i for i in range(count) if costs[i] <= target]
    if not affordable:
        return min(range(count), key=lambda i: (costs[i], -draws[i]))
    low = max(affordable, key=draws.__getitem__)
    best_value, best_pair = draws[low], (low, low, 0.0)
    for high in range(count):
        if costs[high] <= target or draws[high] <= draws[low]:
            continue
        for cheap in affordable:
            share = (target - costs[cheap]) / (costs[high] - costs[cheap])
            value = draws[cheap] + share * (draws[high] - draws[cheap])
            if value > best_value:
                best_value, best_pair = value, (cheap, high, share)
    cheap, high, share = best_pair
    if high == cheap:
        return cheap
    if rng is None:
        return high if share >= 0.5 else cheap
    return high if rng.random() < share else cheap
