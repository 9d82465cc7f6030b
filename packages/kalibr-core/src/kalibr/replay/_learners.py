"""Contenders of a replay: the real policy (with its cross-goal priors), the baselines, and MABWiser's TS."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from kalibr._exceptions import MissingExtraError, UserError
from kalibr.policies import ArmState, Policy, PolicyConfig, default_policy
from kalibr.policies.contextual import PromptClusters, PromptHandle
from kalibr.policies.cost import cost_priors_from_model_costs
from kalibr.policies.priors import priors_from_model_totals
from kalibr.replay._table import ReplayTable
from kalibr.replay.baselines import EpsilonGreedy, FirstPath, PlainThompson, UniformRandom, UpperConfidenceBound

__all__ = ["BASELINES", "KALIBR", "KALIBR_PROMPTS", "ContextualLearner", "Learner", "PolicyLearner", "make_learner"]

KALIBR = "kalibr"
KALIBR_PROMPTS = "kalibr+prompts"
MABWISER = "mabwiser-ts"
BASELINES = ("first-path", "uniform", "epsilon-greedy", "ucb1", "thompson", MABWISER)


class Learner(Protocol):
    """What the replay drives: pick an arm for a query (``row``) of a goal, then learn the (drawn) outcome of that
    arm only. Only a prompt-aware learner reads ``row`` (to look up the query's prompt features)."""

    def choose(self, goal: int, row: int, rng: np.random.Generator, now: float) -> int: ...

    def learn(self, goal: int, row: int, arm: int, outcome: float, cost: float, now: float) -> None: ...


class PolicyLearner:
    """Runs a ``Policy`` as the engine does: ``ArmState`` per (goal, path), priors from per-model totals.

    ``totals`` mirrors ``Store.model_totals``: per model, the trusted successes and failures over every goal;
    ``costs`` mirrors ``Store.model_costs``: per model, the cost sum and calls with a cost over every goal;
    ``price_hints`` per goal and path, the table's list price of its model (``price_for`` in the engine).
    """

    def __init__(
        self,
        policy: Policy,
        table: ReplayTable,
        config: PolicyConfig,
        *,
        use_priors: bool,
        report_cost: bool,
        prior_options: dict[str, float] | None = None,
    ) -> None:
        self.policy, self.config = policy, config
        self.use_priors, self.report_cost = use_priors, report_cost
        self.prior_options = prior_options or {}
        self.arms = [[ArmState(model, model=model) for model in goal.models] for goal in table.goals]
        self.totals: dict[str, tuple[float, float]] = {}
        self.costs: dict[str, tuple[float, int]] = {}
        hints = table.price_hints
        self.price_hints = [[hints.get(model) for model in goal.models] for goal in table.goals]

    def choose(self, goal: int, row: int, rng: np.random.Generator, now: float) -> int:
        arms = self.arms[goal]
        if not self.use_priors:
            return self.policy.choose(arms, config=self.config, rng=rng, now=now).index
        priors = priors_from_model_totals(arms, self.totals, **self.prior_options)
        return self.policy.choose(
            arms, config=self.config, rng=rng, now=now, priors=priors, cost_priors=self.cost_priors(goal)
        ).index

    def cost_priors(self, goal: int) -> list[float | None]:
        return cost_priors_from_model_costs(self.arms[goal], self.costs, self.price_hints[goal])

    def learn(self, goal: int, row: int, arm: int, outcome: float, cost: float, now: float) -> None:
        self._learn(goal, arm, outcome, cost, now)

    def _learn(self, goal: int, arm: int, outcome: float, cost: float, now: float) -> tuple[ArmState, ArmState]:
        before = self.arms[goal][arm]
        cost_usd = cost if self.report_cost else None
        after = self.policy.update(before, score=outcome, cost_usd=cost_usd, latency_ms=None, now=now)
        self.arms[goal][arm] = after
        successes, failures = self.totals.get(after.model, (0.0, 0.0))
        self.totals[after.model] = (
            successes + after.successes - before.successes,
            failures + after.failures - before.failures,
        )
        if cost_usd is not None:
            total, calls = self.costs.get(after.model, (0.0, 0))
            self.costs[after.model] = (total + cost_usd, calls + 1)
        return before, after


class ContextualLearner(PolicyLearner):
    """The same policy with the query's prompt features visible: ``PromptClusters`` per goal, the policy choosing
    over the goal's states with the query's cluster's priors (its view of them)."""

    def __init__(self, policy: Policy, table: ReplayTable, config: PolicyConfig, *, report_cost: bool) -> None:
        super().__init__(policy, table, config, use_priors=True, report_cost=report_cost)
        features = [goal.features for goal in table.goals]
        if any(vectors is None for vectors in features):
            raise UserError("prompt-aware replay needs prompt features for every goal: pass --prompts PROMPTS.csv")
        self.features: list[np.ndarray] = [vectors for vectors in features if vectors is not None]
        self.clusters = [PromptClusters() for _ in table.goals]
        self._prompt_of: dict[tuple[int, int], PromptHandle] = {}

    def choose(self, goal: int, row: int, rng: np.random.Generator, now: float) -> int:
        clusters = self.clusters[goal]
        prompt = self._prompt_of[(goal, row)] = clusters.assign(self.features[goal][row])
        arms = self.arms[goal]
        priors = clusters.priors(prompt, arms, priors_from_model_totals(arms, self.totals, **self.prior_options))
        return self.policy.choose(
            arms, config=self.config, rng=rng, now=now, priors=priors, cost_priors=self.cost_priors(goal)
        ).index

    def learn(self, goal: int, row: int, arm: int, outcome: float, cost: float, now: float) -> None:
        before, after = self._learn(goal, arm, outcome, cost, now)
        self.clusters[goal].learn(self._prompt_of.pop((goal, row)), before, after, outcome)


class MabwiserLearner:
    """MABWiser's Thompson sampling, one ``MAB`` per goal (imported lazily: it is a benchmark dependency)."""

    def __init__(self, table: ReplayTable, seed: int) -> None:
        try:
            from mabwiser.mab import MAB, LearningPolicy
        except ImportError as error:
            raise MissingExtraError("the MABWiser baseline", "bench") from error
        self._bandits: list[Any] = [
            MAB(arms=list(range(len(goal.models))), learning_policy=LearningPolicy.ThompsonSampling(), seed=seed + i)
            for i, goal in enumerate(table.goals)
        ]
        self._fitted = [False] * len(table.goals)

    def choose(self, goal: int, row: int, rng: np.random.Generator, now: float) -> int:
        if not self._fitted[goal]:
            return int(rng.integers(len(self._bandits[goal].arms)))
        return int(self._bandits[goal].predict())

    def learn(self, goal: int, row: int, arm: int, outcome: float, cost: float, now: float) -> None:
        bandit = self._bandits[goal]
        if self._fitted[goal]:
            bandit.partial_fit([arm], [outcome])
        else:
            bandit.fit([arm], [outcome])
            self._fitted[goal] = True


def mabwiser_available() -> bool:
    try:
        import mabwiser  # noqa: F401
    except ImportError:
        return False
    return True


_BASELINE_POLICIES: dict[str, Callable[[], Policy]] = {
    "first-path": FirstPath,
    "uniform": UniformRandom,
    "epsilon-greedy": EpsilonGreedy,
    "ucb1": UpperConfidenceBound,
    "thompson": PlainThompson,
}


def make_learner(
    name: str,
    table: ReplayTable,
    seed: int,
    *,
    cost_weight: float,
    report_cost: bool,
    tolerance: float = 0.0,
    budget_per_1k: float | None = None,
) -> Learner:
    """A fresh contender by name: ``kalibr`` (the default policy, exactly as the engine runs it), ``kalibr+prompts``
    (the same over prompt clusters) or a baseline. ``cost_weight``/``tolerance``/``budget_per_1k`` (in the table's
    cost units per 1,000 calls): the cost setting of the first two."""
    config = PolicyConfig(cost_weight=cost_weight, quality_tolerance=tolerance, budget_per_1k_calls_usd=budget_per_1k)
    if name == KALIBR:
        return PolicyLearner(default_policy(), table, config, use_priors=True, report_cost=report_cost)
    if name == KALIBR_PROMPTS:
        return ContextualLearner(default_policy(), table, config, report_cost=report_cost)
    if name == MABWISER:
        return MabwiserLearner(table, seed)
    if name not in _BASELINE_POLICIES:
        raise ValueError(
            f"unknown contender {name!r}: choose {KALIBR!r}, {KALIBR_PROMPTS!r} or one of {', '.join(BASELINES)}"
        )
    return PolicyLearner(_BASELINE_POLICIES[name](), table, PolicyConfig(), use_priors=False, report_cost=False)
