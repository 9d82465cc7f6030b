"""Thompson sampling over Beta posteriors, with a cold-start floor, staleness and change detection.

Each arm's success rate has a Beta posterior: ``1 + successes`` and ``1 + failures`` (fractional scores count
fractionally), plus optional prior pseudo-counts (the model's record on the tenant's other goals). ``choose``
draws one sample per arm and takes the best; an exploration floor sends ``exploration_rate`` of the traffic to
paths still under ``min_samples_before_exploit`` (or untried for ``staleness_days``). ``update`` folds an outcome
in and runs a change detector (``kalibr.policies.drift``) that restarts an arm's evidence when it degrades.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from kalibr._exceptions import UserError
from kalibr.policies.base import ArmState, Choice, PolicyConfig
from kalibr.policies.cost import cost_aware_index, cost_matters, mean_costs, still_promising
from kalibr.policies.drift import PROBATION_PROBES, DropDetector, on_probation

__all__ = ["PreparedChoice", "ThompsonPolicy", "count_outcome", "sample_beta"]

_DAY_SECONDS = 86_400.0
RULE_OUT_AFTER = 1
_SCALAR_DRAWS_UP_TO = 6
FIRST_PROBE_SHARE = 0.1
"""Chance per decision of the first probe of a path just put on probation (so it comes within ~10 decisions)."""
PROBE_SHARE = 0.2
"""Share of the exploration budget spent probing paths on probation after a detected drop."""
_BITS_PER_DOUBLE = 2.0**53
"""``Generator.random()`` is the top 53 of 64 raw bits over this, with numpy's PCG64."""


class ThompsonPolicy:
    """The default policy. Stateless: everything it learns lives in the ``ArmState`` values it returns.

    ``sharpness`` draws Thompson samples from Beta(sharpness * alpha, sharpness * beta): the same means with a
    posterior about sqrt(sharpness) times narrower, so clearly worse paths stop getting traffic sooner. Over the
    few hundred requests a goal sees in the replay tables that cuts regret against the best fixed path
    (measured in ``benchmarks/routing.py``); near-ties are still explored. ``rule_out_z``: how
    many posterior standard deviations a path under the sample floor may be below the best before the floor
    stops forcing traffic to it. ``sharpen_after``: an arm's draws are sharpened only in proportion to its
    evidence, full once it holds this many outcomes (0: always). Sharpening a path judged on one or two
    outcomes locks a big goal out of it for good (plain Thompson would try it again): on llmrouter's 14 goals
    merged into one, full sharpening from the first outcome ends below plain Thompson.
    ``cost_sharpness``: the full sharpness under a cost setting. There a path is picked by its draw net of cost,
    so a draw that wins by noise spends money as well as quality. On llmrouter with list prices, 21 (with the
    floor judging untried paths on their priors, ``still_promising``) takes lambda=0.2 from 96.1% of the
    strongest model's quality at 25.1% of its cost to 97.0% at 23.2% (``benchmarks/routing.py``, 10 seeds; from
    96.5% at 25.2% to 96.6% at 23.2% on seeds 10-29). Without a cost setting no draw changes.

    >>> import numpy as np
    >>> from kalibr.policies.base import ArmState, PolicyConfig
    >>> arms = [ArmState("a", successes=30, failures=10, samples=40, total_samples=40),
    ...         ArmState("b", successes=5, failures=35, samples=40, total_samples=40)]
    >>> ThompsonPolicy().choose(arms, config=PolicyConfig(), rng=np.random.default_rng(1), now=0.0).index
    0
    """

    def __init__(
        self,
        *,
        detector: DropDetector | None = None,
        rule_out_z: float = 0.5,
        sharpness: float = 6.0,
        sharpen_after: float = 8.0,
        cost_sharpness: float = 21.0,
    ) -> None:
        self.sharpness = sharpness
        self.cost_sharpness = cost_sharpness
        self.sharpen_after = sharpen_after
        self.detector = detector if detector is not None else DropDetector()
        self.rule_out_z = rule_out_z

    # --- choosing ----------------------------------------------------------------------------------------------
    def choose(
        self,
        arms: Sequence[ArmState],
        *,
        config: PolicyConfig,
        rng: np.random.Generator,
        now: float,
        priors: Sequence[tuple[float, float]] | None = None,
        explore: bool = True,
        cost_priors: Sequence[float | None] | None = None,
    ) -> Choice:
        return self.prepare(arms, config=config, priors=priors, cost_priors=cost_priors).choose(rng, now, explore)

    def prepare(
        self,
        arms: Sequence[ArmState],
        *,
        config: PolicyConfig,
        priors: Sequence[tuple[float, float]] | None = None,
        cost_priors: Sequence[float | None] | None = None,
    ) -> PreparedChoice:
        """What ``choose`` computes from the arms alone, for many choices over the same arms: the engine keeps one
        per goal until an outcome or the config changes it, so a decide pays only for its random draws."""
        return PreparedChoice(self, arms, config, priors, cost_priors)

    def _exploit(self, prepared: PreparedChoice, draws: list[float], rng: np.random.Generator) -> Choice:
        """The choice the posterior draws make (by the cost setting, if any), ties broken as usual."""
        config = prepared.config
        if prepared.costed:
            index = cost_aware_index(prepared.arms, draws, config, rng, prepared.costs)
        else:
            index = _break_tie(prepared.arms, prepared.means, _argmax(draws), config)
        choice = prepared.exploit_choices.get(index)
        if choice is None:
            choice = prepared.exploit_choices[index] = self._exploit_choice(prepared, index)
        return choice

    def _exploit_choice(self, prepared: PreparedChoice, index: int) -> Choice:
        arms, means, best_mean = prepared.arms, prepared.means, prepared.best_mean
        return Choice(
            index,
            index != best_mean,
            _reason(arms, index, best_mean, means),
            _probability_best(index, best_mean, means, prepared.alpha, prepared.beta),
            arms[index].success_rate,
            arms[index].samples,
        )

    def _sharpness(
        self, arms: Sequence[ArmState], alpha: list[float], beta: list[float], costed: bool = False
    ) -> list[float]:
        """Per arm, ``sharpness`` (``cost_sharpness`` under a cost setting) once it has ``sharpen_after`` outcomes
        (ever, or in its posterior with the prior pseudo-counts beyond the flat Beta(1, 1)), ramping up from 1
        (the plain posterior) before that. Outcomes ever: a path whose record a detected drop restarted is not
        new, and stays sharp."""
        full = self.cost_sharpness if costed else self.sharpness
        if self.sharpen_after <= 0.0:
            return [full] * len(arms)
        ramp, after = full - 1.0, self.sharpen_after
        sharpness = []
        for arm, a, b in zip(arms, alpha, beta, strict=True):  # conditionals, not min/max calls: runs per decide
            outcomes = a + b - 2.0
            total = arm.total_samples
            share = (outcomes if outcomes > total else total) / after  # never negative: total_samples >= 0
            sharpness.append(1.0 + ramp * (share if share < 1.0 else 1.0))
        return sharpness

    def _best_now(
        self,
        arms: Sequence[ArmState],
        config: PolicyConfig,
        alpha: list[float],
        beta: list[float],
        means: list[float],
        costs: Sequence[float],
    ) -> Choice:
        """The best posterior mean (cost-adjusted in cost-aware mode), ties broken as usual: no exploration."""
        best = _argmax(means)
        index = (
            cost_aware_index(arms, means, config, None, costs)
            if cost_matters(config)
            else _break_tie(arms, means, best, config)
        )
        arm = arms[index]
        return Choice(
            index,
            False,
            f"no exploration for a high-risk task: {_reason(arms, index, index, means)}",
            _probability_best(index, best, means, alpha, beta),
            arm.success_rate,
            arm.samples,
        )

    def _forced_exploration(
        self,
        arms: Sequence[ArmState],
        config: PolicyConfig,
        rng: np.random.Generator,
        now: float,
        alpha: list[float],
        beta: list[float],
        means: list[float],
        draw: float,
        costs: Sequence[float],
    ) -> Choice | None:
        """With probability ``exploration_rate`` (``draw``, uniform in [0, 1), below it), a stale path or one under
        the sample floor not yet ruled out.

        A path under ``min_samples_before_exploit`` whose optimistic estimate (``rule_out_z`` standard deviations
        above its mean) is already below the best mean minus ``tie_tolerance`` has lost: more forced samples of
        it would only add regret, so the floor skips it (Thompson sampling may still try it), but only for
        ``recheck_hours`` at a time until it has the floor's samples. Without a cost setting a path never tried
        is never ruled out: a prior alone is no verdict on quality. Under one, a forced call costs money too: a
        path never tried is judged on its prior's optimistic estimate (``still_promising``), and Thompson
        sampling may still try it.
        """
        if draw < FIRST_PROBE_SHARE:
            # A path just put on probation gets its first probe soon: a false alarm (a burst of bad luck) would
            # otherwise keep its traffic on worse paths until the ordinary 2% of probes comes round.
            fresh = [i for i, arm in enumerate(arms) if arm.extra and _awaiting_first_probe(arm)]
            if fresh:
                return self._probe([arms[i] for i in fresh], rng, indices=fresh)
        if draw >= config.exploration_rate:
            return None
        if draw < config.exploration_rate * PROBE_SHARE:
            probe = self._probe(arms, rng)
            if probe is not None:
                return probe
        floor = config.min_samples_before_exploit
        stale_before = now - config.staleness_days * _DAY_SECONDS
        bar = max(means) * (1.0 - config.tie_tolerance)
        z = self.rule_out_z

        def optimistic(i: int) -> float:
            mean = means[i]
            return mean + z * math.sqrt(mean * (1.0 - mean) / (alpha[i] + beta[i] + 1.0))

        # Under a cost setting, "not yet ruled out" weighs the cost too, and an untried path's cost can rule it out.
        costed = cost_matters(config)
        promising = (
            still_promising(arms, means, optimistic, config, costs) if costed else lambda i: optimistic(i) >= bar
        )
        recheck_before = now - config.recheck_hours * 3_600.0
        candidates = [
            i
            for i, arm in enumerate(arms)
            if (arm.total_samples < floor and ((arm.total_samples < RULE_OUT_AFTER and not costed) or promising(i)))
            or (arm.last_outcome_at is not None and arm.last_outcome_at < stale_before)
            or (arm.total_samples < floor and arm.last_outcome_at is not None and arm.last_outcome_at < recheck_before)
        ]
        if not candidates:
            return None
        # Among the candidates, the one whose posterior draw is highest: the floor's traffic goes where it informs.
        if len(candidates) > 1:
            draws = sample_beta(rng, [alpha[i] for i in candidates], [beta[i] for i in candidates])
            index = candidates[_argmax(draws)]
        else:
            index = candidates[0]
        arm = arms[index]
        if arm.total_samples < floor:
            why = f"exploring {_name(arm)}: {arm.total_samples} of {floor} samples needed before exploiting"
        else:
            why = f"exploring {_name(arm)} again: untried for over {config.staleness_days:g} days"
        return Choice(index, True, why, 0.0, arm.success_rate, arm.samples)

    def _probe(
        self, arms: Sequence[ArmState], rng: np.random.Generator, indices: Sequence[int] | None = None
    ) -> Choice | None:
        """A path on probation after a detected drop, to confirm the drop or restore its record.

        ``indices``, when given, are the positions of ``arms`` in the caller's full list.
        """
        suspects = [i for i, arm in enumerate(arms) if on_probation(arm)]
        if not suspects:
            return None
        picked = suspects[int(rng.integers(len(suspects)))]
        index = picked if indices is None else indices[picked]
        arms_index = picked
        arm = arms[arms_index]
        why = f"probing {_name(arm)}: its success rate dropped; checking whether the drop is real"
        return Choice(index, True, why, 0.0, arm.success_rate, arm.samples)

    # --- learning ----------------------------------------------------------------------------------------------
    def update(
        self,
        arm: ArmState,
        *,
        score: float,
        cost_usd: float | None,
        latency_ms: float | None,
        now: float,
    ) -> ArmState:
        updated = count_outcome(arm, score=score, cost_usd=cost_usd, latency_ms=latency_ms, now=now)
        return self.detector.observe(arm, updated, score)

    def adjust(self, arm: ArmState, *, old_score: float, new_score: float) -> ArmState:
        """Move one outcome's weight from ``old_score`` to ``new_score`` (never below zero evidence), the change
        detector's run counts with it."""
        delta = new_score - old_score
        adjusted = replace(
            arm,
            successes=max(0.0, arm.successes + delta),
            failures=max(0.0, arm.failures - delta),
        )
        return self.detector.adjust(arm, adjusted, old_score, new_score)


class PreparedChoice:
    """``ThompsonPolicy.choose`` over fixed arms, config and priors, with everything that does not depend on the
    random draws computed once: the posterior, the sharpened draw parameters, the cost offsets, and (as they come
    up) the choice each winning draw leads to. Immutable once built but for those memos and the generator's raw
    draw (``_coin``), whose concurrent filling is benign (two threads store the same value, or one a tuple the
    other replaces whole), so threads share one without a lock."""

    __slots__ = (
        "alpha",
        "arms",
        "best_mean",
        "beta",
        "by_winning_draw",
        "config",
        "costed",
        "costs",
        "exploit_choices",
        "explore_bits_below",
        "gamma_shapes",
        "may_explore_below",
        "means",
        "only",
        "pair_shapes",
        "policy",
        "random_raw",
        "safe_choice",
        "scalar_shapes",
    )

    def __init__(
        self,
        policy: ThompsonPolicy,
        arms: Sequence[ArmState],
        config: PolicyConfig,
        priors: Sequence[tuple[float, float]] | None,
        cost_priors: Sequence[float | None] | None = None,
    ) -> None:
        count = len(arms)
        if count == 0:
            raise UserError("no paths to choose from: give the goal at least one enabled path")
        self.policy, self.arms, self.config = policy, arms, config
        self.may_explore_below = max(FIRST_PROBE_SHARE, config.exploration_rate)  # the coin's first test
        # The same test on the coin's raw bits: draw < p exactly when bits < ceil(p * 2**53) << 11.
        self.explore_bits_below = math.ceil(self.may_explore_below * _BITS_PER_DOUBLE) << 11
        self.random_raw: tuple[np.random.Generator, Callable[[], int]] | None = None  # see _coin
        self.only: Choice | None = None
        if count == 1:
            arm = arms[0]
            self.only = Choice(0, False, f"{_name(arm)} is the only path", 1.0, arm.success_rate, arm.samples)
            arms = []  # nothing to draw: the rest stays empty
        self.safe_choice: Choice | None = None  # the no-exploration choice, once asked for
        self.exploit_choices: dict[int, Choice] = {}
        self.alpha, self.beta = _posterior(arms, priors if arms else None)
        self.means = [a / (a + b) for a, b in zip(self.alpha, self.beta, strict=True)]
        self.costed = cost_matters(config)
        sharpness = policy._sharpness(arms, self.alpha, self.beta, self.costed)
        shapes_a = [a * s for a, s in zip(self.alpha, sharpness, strict=True)]
        shapes_b = [b * s for b, s in zip(self.beta, sharpness, strict=True)]
        scalar = count <= _SCALAR_DRAWS_UP_TO
        self.gamma_shapes = None if scalar else np.array([*shapes_a, *shapes_b])
        # Up to _SCALAR_DRAWS_UP_TO arms, one scalar Beta draw each, its shapes as 0-d arrays: Generator.beta takes
        # those as they are, where it turns each float into one first (0.1 us per draw). Two arms, as a flat tuple.
        # Typed Any: numpy's stubs say an array argument draws an array, but a 0-d one draws a float.
        self.scalar_shapes: list[tuple[Any, Any]] = (
            [(np.array(a), np.array(b)) for a, b in zip(shapes_a, shapes_b, strict=True)] if scalar else []
        )
        self.pair_shapes: tuple[Any, ...] | None = (
            (*self.scalar_shapes[0], *self.scalar_shapes[1]) if count == 2 else None
        )
        # Each arm's cost as the cost setting sees it (measured, else its prior); no setting reads no cost.
        self.costs = mean_costs(arms, cost_priors if arms else None) if self.costed else []
        if not arms:
            self.best_mean = 0
        elif self.costed:
            self.best_mean = cost_aware_index(arms, self.means, config, None, self.costs)
        else:
            self.best_mean = _argmax(self.means)
        # Without a cost setting the arm with the winning draw alone decides (through the tie-break): the choice
        # per winner, as they come up. A cost setting weighs every draw (and the budget mixes two paths).
        plain = not self.costed
        self.by_winning_draw: dict[int, Choice] | None = {} if plain else None

    def choose(self, rng: np.random.Generator, now: float, explore: bool = True) -> Choice:
        """One choice, drawing from ``rng`` exactly as ``ThompsonPolicy.choose`` does: the exploration coin, then
        (unless it explores) one Beta draw per arm."""
        if self.only is not None:
            return self.only
        policy = self.policy
        if not explore:
            if self.safe_choice is None:
                self.safe_choice = policy._best_now(
                    self.arms, self.config, self.alpha, self.beta, self.means, self.costs
                )
            return self.safe_choice
        raw = self.random_raw
        if raw is not None and raw[0] is rng:
            bits = raw[1]()
            draw = (bits >> 11) / _BITS_PER_DOUBLE if bits < self.explore_bits_below else None
        else:
            draw = self._coin(rng)
        if draw is not None:  # the coin fell below may_explore_below
            forced = policy._forced_exploration(
                self.arms, self.config, rng, now, self.alpha, self.beta, self.means, draw, self.costs
            )
            if forced is not None:
                return forced
        pair = self.pair_shapes
        if pair is not None:  # the most common router: two plain calls, and one comparison finds the winner
            alpha_0, beta_0, alpha_1, beta_1 = pair
            first, second = rng.beta(alpha_0, beta_0), rng.beta(alpha_1, beta_1)
            memo = self.by_winning_draw
            if memo is None:
                return policy._exploit(self, [first, second], rng)
            winner = 0 if first >= second else 1  # the first best, as _argmax
            choice = memo.get(winner)
            if choice is None:
                choice = memo[winner] = policy._exploit(self, [first, second], rng)
            return choice
        gamma_shapes = self.gamma_shapes
        if gamma_shapes is None:
            beta = rng.beta
            draws = [beta(a, b) for a, b in self.scalar_shapes]
        else:  # one gamma call over both shape arrays: Beta = X / (X + Y)
            draws = _ratios_of_gammas(rng, rng.standard_gamma(gamma_shapes), gamma_shapes)
        memo = self.by_winning_draw
        if memo is None:
            return policy._exploit(self, draws, rng)
        winner = draws.index(max(draws))
        choice = memo.get(winner)
        if choice is None:
            choice = memo[winner] = policy._exploit(self, draws, rng)
        return choice

    def _coin(self, rng: np.random.Generator) -> float | None:
        """The exploration coin ``rng.random()`` if it is below ``may_explore_below``, else None.

        For numpy's PCG64 (``default_rng``, the engine's) it keeps the generator's raw draw: ``random()`` is the
        top 53 of its 64 bits over 2**53, and ``choose`` then draws the bits directly (0.13 us less a decide)."""
        bit_generator = rng.bit_generator
        if type(bit_generator) is np.random.PCG64:
            self.random_raw = (rng, bit_generator.random_raw)
        draw = rng.random()
        return draw if draw < self.may_explore_below else None


def count_outcome(
    arm: ArmState, *, score: float, cost_usd: float | None, latency_ms: float | None, now: float
) -> ArmState:
    """``arm`` with one outcome added: ``score`` of a success and ``1 - score`` of a failure, plus cost and latency."""
    if not 0.0 <= score <= 1.0:
        raise UserError(f"invalid score {score!r}: a score is a number in [0, 1]")
    # Built whole rather than with dataclasses.replace, which costs 1.3 us more on every report.
    return ArmState(
        path_id=arm.path_id,
        model=arm.model,
        successes=arm.successes + score,
        failures=arm.failures + (1.0 - score),
        samples=arm.samples + 1,
        total_samples=arm.total_samples + 1,
        cost_sum=arm.cost_sum + (cost_usd if cost_usd is not None else 0.0),
        cost_count=arm.cost_count + (cost_usd is not None),
        latency_sum=arm.latency_sum + (latency_ms if latency_ms is not None else 0.0),
        latency_count=arm.latency_count + (latency_ms is not None),
        last_outcome_at=now,
        extra=arm.extra,
    )


# --- helpers (plain floats: ``choose`` runs on every decide, and numpy's fixed cost per call outweighs its speed on a
# few dozen arms; only the many-arm draw uses it) -----------------------------------------------------------------
def _posterior(
    arms: Sequence[ArmState], priors: Sequence[tuple[float, float]] | None
) -> tuple[list[float], list[float]]:
    """Beta parameters per arm: evidence plus ``priors`` when given, else plus the flat Beta(1, 1)."""
    if priors is None:
        return [arm.successes + 1.0 for arm in arms], [arm.failures + 1.0 for arm in arms]
    if len(priors) != len(arms):
        raise UserError(f"got {len(priors)} priors for {len(arms)} paths: give one (alpha, beta) per path")
    # Beta needs positive parameters: tolerate a zero prior on an arm without evidence.
    alpha = [arm.successes + prior[0] for arm, prior in zip(arms, priors, strict=True)]
    beta = [arm.failures + prior[1] for arm, prior in zip(arms, priors, strict=True)]
    return [a if a > 1e-3 else 1e-3 for a in alpha], [b if b > 1e-3 else 1e-3 for b in beta]


def sample_beta(rng: np.random.Generator, alpha: Sequence[float], beta: Sequence[float]) -> list[float]:
    """One Beta draw per arm, by the cheapest exact route for the size.

    ``Generator.beta`` on arrays costs ~7 us of fixed overhead; a few scalar draws are cheaper, and beyond a
    handful of arms one ``standard_gamma`` call over both parameter arrays (Beta = X / (X + Y)) is.
    """
    if len(alpha) <= _SCALAR_DRAWS_UP_TO:
        return [rng.beta(a, b) for a, b in zip(alpha, beta, strict=True)]
    shapes = np.array([*alpha, *beta])
    return _ratios_of_gammas(rng, rng.standard_gamma(shapes), shapes)


def _ratios_of_gammas(rng: np.random.Generator, gammas: np.ndarray, shapes: np.ndarray) -> list[float]:
    """Beta draws X / (X + Y) from gamma draws (the first half X, the second Y). Where both underflowed to 0 (a
    shape near 0 does, with P ~ exp(-744 * shape)), 0 / 0: that arm draws by ``Generator.beta`` instead, which
    handles small shapes; every other draw is the plain ratio."""
    count = len(gammas) // 2
    successes = gammas[:count]
    totals = successes + gammas[count:]
    if totals.all():
        draws: list[float] = (successes / totals).tolist()
        return draws
    draws = (successes / np.where(totals > 0.0, totals, 1.0)).tolist()
    for index in np.flatnonzero(totals == 0.0).tolist():
        draws[index] = rng.beta(shapes[index], shapes[count + index])
    return draws


def _argmax(values: list[float]) -> int:
    """The index of the largest value, the first one on a tie (as ``numpy.argmax``)."""
    return values.index(max(values))


def _break_tie(arms: Sequence[ArmState], means: Sequence[float], index: int, config: PolicyConfig) -> int:
    """Within ``tie_tolerance`` of the best mean, prefer the cheapest proven path, then the fastest."""
    if config.tie_tolerance <= 0.0 or config.cost_weight > 0.0:
        return index
    floor = config.min_samples_before_exploit
    if arms[index].samples < floor:
        return index
    threshold = max(means) * (1.0 - config.tie_tolerance)
    if means[index] < threshold:
        return index
    tied = [i for i, mean in enumerate(means) if mean >= threshold and arms[i].samples >= floor]
    if len(tied) < 2 or not any(arms[i].cost_count or arms[i].latency_count for i in tied):
        return index

    def key(i: int) -> tuple[float, float]:
        arm = arms[i]
        return (arm.mean_cost if arm.mean_cost is not None else math.inf, arm.mean_latency_ms or math.inf)

    cheapest = min(tied, key=key)
    return cheapest if key(cheapest) < key(index) else index


def _probability_best(
    index: int, best: int, means: Sequence[float], alpha: Sequence[float], beta: Sequence[float]
) -> float:
    """Approximate P(chosen arm beats its strongest rival), from the normal approximation of both posteriors."""
    if index == best:  # the strongest other arm, the first on a tie
        others = [*means[:index], *means[index + 1 :]]
        rival = others.index(max(others))
        best = rival if rival < index else rival + 1
    z = (means[index] - means[best]) / math.sqrt(_variance(alpha, beta, index) + _variance(alpha, beta, best))
    return 1.0 / (1.0 + math.exp(-1.702 * z))  # logistic approximation of the normal CDF


def _variance(alpha: Sequence[float], beta: Sequence[float], i: int) -> float:
    a, b = alpha[i], beta[i]
    return a * b / ((a + b) ** 2 * (a + b + 1.0))


def _reason(arms: Sequence[ArmState], index: int, best: int, means: Sequence[float]) -> str:
    arm = arms[index]
    if index == best:
        return f"{_name(arm)} has the best estimated success rate ({means[index]:.2f} over {arm.samples} samples)"
    return (
        f"exploring {_name(arm)} (estimated {means[index]:.2f} over {arm.samples} samples): its sample beat "
        f"{_name(arms[best])} ({means[best]:.2f})"
    )


def _awaiting_first_probe(arm: ArmState) -> bool:
    return on_probation(arm) and not arm.extra.get(PROBATION_PROBES)


def _name(arm: ArmState) -> str:
    return arm.model or arm.path_id
