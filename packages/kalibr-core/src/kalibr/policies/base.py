"""The policy protocol and the state it works on.

A policy never touches a store, a clock or the network: the engine loads ``ArmState`` values, passes the
current time in, and persists what ``update`` returns. That keeps every policy testable as a table of
inputs and outputs, and deterministic under a seed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

__all__ = ["ArmState", "Choice", "Policy", "PolicyConfig"]


@dataclass(frozen=True, slots=True)
class ArmState:
    """What the policy knows about one (goal, path): the evidence it acts on.

    ``successes``/``failures`` are fractional sums of the evidence currently trusted (a change detector may
    have discarded older evidence); ``total_samples`` counts every outcome ever applied. ``extra`` is
    policy-owned state (a change detector's statistic, say) that stores persist as JSON without reading it.
    """

    path_id: str
    model: str = ""
    successes: float = 0.0
    failures: float = 0.0
    samples: int = 0
    total_samples: int = 0
    cost_sum: float = 0.0
    cost_count: int = 0
    latency_sum: float = 0.0
    latency_count: int = 0
    last_outcome_at: float | None = None
    extra: Mapping[str, float] = field(default_factory=dict)

    @property
    def mean_cost(self) -> float | None:
        return self.cost_sum / self.cost_count if self.cost_count else None

    @property
    def mean_latency_ms(self) -> float | None:
        return self.latency_sum / self.latency_count if self.latency_count else None

    @property
    def success_rate(self) -> float | None:
        n = self.successes + self.failures
        return self.successes / n if n > 0 else None


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """Knobs of the routing policy, per goal. Defaults follow the Kalibr wire contract.

    Usage::

        PolicyConfig(exploration_rate=0.05, min_samples_before_exploit=10)
    """

    exploration_rate: float = 0.1
    min_samples_before_exploit: int = 20
    staleness_days: float = 7.0
    recheck_hours: float = 24.0
    """A path ruled out on fewer than ``min_samples_before_exploit`` outcomes is explored again this often until
    it has them: a verdict on a handful of outcomes (an outage at start-up, bad luck) is provisional."""
    tie_tolerance: float = 0.05
    """Paths within this much of the best success rate are ties, broken by cost then latency."""
    cost_weight: float = 0.0
    """Cost-aware mode: reward = score - cost_weight * cost_usd. 0 means success rate alone decides."""
    quality_tolerance: float = 0.0
    """The cheapest path within this much success rate of the best (0.01: "within 1 point"): of the paths whose
    Thompson draw is at most this far below the best draw, the one with the lowest mean cost. 0: off."""
    budget_per_1k_calls_usd: float | None = None
    """Spend about this much per 1,000 calls of the goal, on average, for the best success rate it buys: the
    router paces the goal's spend so far against the budget (``kalibr.policies.cost``). Only calls with a known cost
    count: a model missing from the price table needs a ``price`` on its path. None: off."""
    rollback_threshold: float = 0.3
    exploration_on_high_risk: bool = False
    """Whether a decision for a high-risk task (``task_risk_level="high"``) may explore; by default it takes the
    path that looks best now."""

    def __post_init__(self) -> None:
        from kalibr._exceptions import UserError

        if not 0.0 <= self.exploration_rate <= 1.0:
            raise UserError(f"exploration_rate {self.exploration_rate!r} must be in [0, 1]")
        if self.min_samples_before_exploit < 0:
            raise UserError(f"min_samples_before_exploit {self.min_samples_before_exploit!r} must be >= 0")
        if self.staleness_days <= 0:
            raise UserError(f"staleness_days {self.staleness_days!r} must be > 0")
        if self.recheck_hours <= 0:
            raise UserError(f"recheck_hours {self.recheck_hours!r} must be > 0")
        if self.cost_weight < 0:
            raise UserError(f"cost_weight {self.cost_weight!r} must be >= 0")
        if not 0.0 <= self.quality_tolerance <= 1.0:
            raise UserError(
                f"quality_tolerance {self.quality_tolerance!r} must be in [0, 1]: 0.01 means within 1 point of the best"
            )
        budget = self.budget_per_1k_calls_usd
        if budget is not None and not (math.isfinite(budget) and budget > 0.0):
            raise UserError(
                f"budget_per_1k_calls_usd {budget!r} must be a positive number of USD per 1,000 calls "
                "(2.5 means $0.0025 a call), or None for no budget"
            )
        settings = [
            name
            for name, on in (
                ("cost_weight", self.cost_weight > 0.0),
                ("quality_tolerance", self.quality_tolerance > 0.0),
                ("budget_per_1k_calls_usd", budget is not None),
            )
            if on
        ]
        if len(settings) > 1:
            raise UserError(
                f"{' and '.join(settings)} are set together: choose one way to trade quality for cost and leave the "
                "others at their defaults"
            )


@dataclass(frozen=True, slots=True)
class Choice:
    """A policy's pick among the arms it was given, by index, with the why."""

    index: int
    exploration: bool
    reason: str
    confidence: float
    success_rate: float | None = None
    sample_count: int = 0


class Policy(Protocol):
    """A pure routing policy."""

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
        """Pick one arm. ``priors`` are optional Beta pseudo-counts per arm (from other goals, or an import).

        ``explore=False`` (a high-risk task): the arm that looks best now, never a probe or a sample's gamble.
        ``cost_priors``: per arm, the cost per call to expect before its own is measured (None: unknown); read
        only under a cost setting (``kalibr.policies.cost``)."""
        ...

    def update(
        self,
        arm: ArmState,
        *,
        score: float,
        cost_usd: float | None,
        latency_ms: float | None,
        now: float,
    ) -> ArmState:
        """Fold one outcome (score in [0, 1]) into the arm's state."""
        ...

    def adjust(self, arm: ArmState, *, old_score: float, new_score: float) -> ArmState:
        """Correct an already-applied outcome whose score changed (a late ``update_outcome``)."""
        ...
