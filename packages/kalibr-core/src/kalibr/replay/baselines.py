"""Textbook policies the default policy is measured against, written to the same pure ``Policy`` protocol.

None of them uses priors, costs, a sample floor or change detection: they are the classic algorithms as a
reader would implement them, so that a gain of the default policy shows what its additions are worth.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from kalibr.policies.base import ArmState, Choice, PolicyConfig
from kalibr.policies.thompson import count_outcome

__all__ = ["EpsilonGreedy", "FirstPath", "PlainThompson", "UniformRandom", "UpperConfidenceBound"]


class _Counting:
    """Shared steps: ``choose`` delegates to ``pick`` (no config, no priors); ``update`` only counts."""

    def choose(
        self,
        arms: Sequence[ArmState],
        *,
        config: PolicyConfig,
        rng: np.random.Generator,
        now: float,
        priors: Sequence[tuple[float, float]] | None = None,
        explore: bool = True,  # baselines know no risk levels
        cost_priors: Sequence[float | None] | None = None,
    ) -> Choice:
        return self.pick(arms, rng)

    def pick(self, arms: Sequence[ArmState], rng: np.random.Generator) -> Choice:
        raise NotImplementedError

    def update(
        self, arm: ArmState, *, score: float, cost_usd: float | None, latency_ms: float | None, now: float
    ) -> ArmState:
        return count_outcome(arm, score=score, cost_usd=cost_usd, latency_ms=latency_ms, now=now)

    def adjust(self, arm: ArmState, *, old_score: float, new_score: float) -> ArmState:
        delta = new_score - old_score
        return replace(arm, successes=arm.successes + delta, failures=arm.failures - delta)


def _choice(index: int, exploration: bool, reason: str) -> Choice:
    return Choice(index, exploration, reason, 0.0)


class FirstPath(_Counting):
    """Always the first path: what a hard-coded model does."""

    def pick(self, arms: Sequence[ArmState], rng: np.random.Generator) -> Choice:
        return _choice(0, False, "always the first path")


class UniformRandom(_Counting):
    """A path uniformly at random: what load balancing without feedback does."""

    def pick(self, arms: Sequence[ArmState], rng: np.random.Generator) -> Choice:
        return _choice(int(rng.integers(len(arms))), True, "uniform random")


def _means(arms: Sequence[ArmState]) -> np.ndarray:
    """Empirical success rates; an untried arm counts as perfect so that every arm is tried once."""
    return np.array([arm.successes / arm.samples if arm.samples else math.inf for arm in arms])


class EpsilonGreedy(_Counting):
    """The best empirical rate, except a random path with probability ``epsilon``."""

    def __init__(self, epsilon: float = 0.1) -> None:
        self.epsilon = epsilon

    def pick(self, arms: Sequence[ArmState], rng: np.random.Generator) -> Choice:
        if rng.random() < self.epsilon:
            return _choice(int(rng.integers(len(arms))), True, "epsilon exploration")
        return _choice(int(_means(arms).argmax()), False, "best empirical rate")


class UpperConfidenceBound(_Counting):
    """UCB1 (Auer et al. 2002): the best of rate + sqrt(2 ln t / n)."""

    def pick(self, arms: Sequence[ArmState], rng: np.random.Generator) -> Choice:
        samples = np.array([arm.samples for arm in arms], dtype=np.float64)
        if not samples.all():
            return _choice(int(samples.argmin()), True, "UCB1 tries every path once")
        bonus = np.sqrt(2.0 * math.log(samples.sum()) / samples)
        return _choice(int((_means(arms) + bonus).argmax()), False, "best upper confidence bound")


class PlainThompson(_Counting):
    """Beta-Bernoulli Thompson sampling from Beta(1 + successes, 1 + failures), nothing added."""

    def pick(self, arms: Sequence[ArmState], rng: np.random.Generator) -> Choice:
        counts = np.array([(arm.successes, arm.failures) for arm in arms]) + 1.0
        return _choice(int(rng.beta(counts[:, 0], counts[:, 1]).argmax()), False, "Thompson sample")
