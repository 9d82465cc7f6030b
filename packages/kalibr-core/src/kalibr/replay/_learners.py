"""Contenders of a replay: the real policy (with its cross-goal priors), the baselines, and MABWiser's TS."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from kalibr._exceptions import MissingExtraError
from kalibr.policies import ArmState, Policy, PolicyConfig, default_policy
from kalibr.policies.priors import priors_from_model_totals
from kalibr.replay._table import ReplayTable
from kalibr.replay.baselines import EpsilonGreedy, FirstPath, PlainThompson, UniformRandom, UpperConfidenceBound

__all__ = ["BASELINES", "KALIBR", "Learner", "PolicyLearner", "make_learner"]

KALIBR = "kalibr"
MABWISER = "mabwiser-ts"
BASELINES = ("first-path", "uniform", "epsilon-greedy", "ucb1", "thompson", MABWISER)


class Learner(Protocol):
    """What the replay drives: pick an arm of a goal, then learn the (drawn) outcome of that arm only."""

    def choose(self, goal: int, rng: np.random.Generator, now: float) -> int: ...

    def learn(self, goal: int, arm: int, outcome: float, cost: float, now: float) -> None: ...


class PolicyLearner:
    """Runs a ``Policy`` as the engine does: ``ArmState`` per (goal, path), priors from per-model totals.

    ``totals`` mirrors ``Store.model_totals``: per model, the trusted successes and failures over every goal.
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

    def choose(self, goal: int, rng: np.random.Generator, now: float) -> int:
        arms = self.arms[goal]
        priors = priors_from_model_totals(arms, self.totals, **self.prior_options) if self.use_priors else None
        return self.policy.choose(arms, config=self.config, rng=rng, now=now, priors=priors).index

    def learn(self, goal: int, arm: int, outcome: float, cost: float, now: float) -> None:
        before = self.arms[goal][arm]
        cost_usd = cost if self.report_cost else None
        after = self.policy.update(before, score=outcome, cost_usd=cost_usd, latency_ms=None, now=now)
        self.arms[goal][arm] = after
        successes, failures = self.totals.get(after.model, (0.0, 0.0))
        self.totals[after.model] = (
            successes + after.successes - before.successes,
            failures + after.failures - before.failures,
        )


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

    def choose(self, goal: int, rng: np.random.Generator, now: float) -> int:
        if not self._fitted[goal]:
            return int(rng.integers(len(self._bandits[goal].arms)))
        return int(self._bandits[goal].predict())

    def learn(self, goal: int, arm: int, outcome: float, cost: float, now: float) -> None:
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


def make_learner(name: str, table: ReplayTable, seed: int, *, cost_weight: float, report_cost: bool) -> Learner:
    """A fresh contender by name: ``kalibr`` (the default policy, exactly as the engine runs it) or a baseline."""
    if name == KALIBR:
        config = PolicyConfig(cost_weight=cost_weight)
        return PolicyLearner(default_policy(), table, config, use_priors=True, report_cost=report_cost)
    if name == MABWISER:
        return MabwiserLearner(table, seed)
    if name not in _BASELINE_POLICIES:
        raise ValueError(f"unknown contender {name!r}: choose {KALIBR!r} or one of {', '.join(BASELINES)}")
    return PolicyLearner(_BASELINE_POLICIES[name](), table, PolicyConfig(), use_priors=False, report_cost=False)
