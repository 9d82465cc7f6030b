"""One replay run: a random order of the table's queries, bandit feedback, and what it scored.

The environment (query order and the Bernoulli draws of fractional scores) is drawn from the seed before the
contender touches the generator, so every contender of a seed sees the same queries and the same coin flips.
Rewards are counted as expected scores (the score of the chosen cell), which lowers the variance of the
metrics without changing their expectation; the contender learns only the drawn 0/1 outcome.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kalibr.replay._learners import Learner
from kalibr.replay._table import ReplayTable

__all__ = ["GoalRun", "Run", "simulate"]

WINDOW = 20
"""Time to recover counts until the share of the last ``WINDOW`` requests on the broken path is under 10%."""
RECOVERED_SHARE = 0.1


@dataclass(frozen=True)
class GoalRun:
    """One goal's requests in the order they came: the query rows, the arms chosen, what each scored."""

    rows: np.ndarray
    steps: np.ndarray
    """The global step (over all goals) of each request."""
    chosen: np.ndarray
    rewards: np.ndarray
    costs: np.ndarray
    scores: np.ndarray
    """The goal's score matrix as the run saw it (with the broken path zeroed after the change)."""
    broken: int
    change_at: int
    """Index into ``rows`` of the first request after the change; -1 when nothing broke."""


@dataclass(frozen=True)
class Run:
    goals: tuple[GoalRun, ...]

    @property
    def reward(self) -> float:
        return float(sum(goal.rewards.sum() for goal in self.goals))

    @property
    def cost(self) -> float:
        return float(sum(goal.costs.sum() for goal in self.goals))

    @property
    def requests(self) -> int:
        return sum(len(goal.rows) for goal in self.goals)

    @property
    def best_fixed(self) -> float:
        """Reward of the per-goal best fixed path in hindsight."""
        return float(sum(goal.scores.sum(axis=0).max() for goal in self.goals))

    @property
    def oracle(self) -> float:
        """Reward of the per-query oracle (the best path for each single query)."""
        return float(sum(goal.scores.max(axis=1).sum() for goal in self.goals))

    def recoveries(self) -> list[tuple[int, float, bool]]:
        """Per broken goal: (time to recover in requests, regret while recovering, recovered before the end)."""
        return [_recovery(goal) for goal in self.goals if goal.change_at >= 0]


def simulate(table: ReplayTable, learner: Learner, seed: int, *, degrade: bool) -> Run:
    """Replay every query of ``table`` once, in an order drawn from ``seed``; with ``degrade``, from halfway
    through each goal its best path fails every request."""
    rng = np.random.default_rng(seed)
    goal_of = np.concatenate([np.full(len(goal.query_ids), g) for g, goal in enumerate(table.goals)])
    row_of = np.concatenate([np.arange(len(goal.query_ids)) for goal in table.goals])
    order = rng.permutation(len(goal_of))
    coins = rng.random(len(order))
    broken = [int(goal.scores.mean(axis=0).argmax()) for goal in table.goals]
    change_at = [len(goal.query_ids) // 2 if degrade else -1 for goal in table.goals]
    visited = [np.empty(len(goal.query_ids), dtype=np.int64) for goal in table.goals]
    steps = [np.empty(len(goal.query_ids), dtype=np.int64) for goal in table.goals]
    chosen = [np.empty(len(goal.query_ids), dtype=np.int64) for goal in table.goals]
    seen = [0] * len(table.goals)
    for step, position in enumerate(order):
        g, row = int(goal_of[position]), int(row_of[position])
        k = seen[g]
        now = float(step)
        arm = learner.choose(g, row, rng, now)
        score = 0.0 if 0 <= change_at[g] <= k and arm == broken[g] else float(table.goals[g].scores[row, arm])
        learner.learn(g, row, arm, 1.0 if coins[step] < score else 0.0, float(table.goals[g].costs[row, arm]), now)
        visited[g][k], chosen[g][k], steps[g][k] = row, arm, step
        seen[g] = k + 1
    return Run(
        tuple(_goal_run(table, g, visited[g], steps[g], chosen[g], broken[g], change_at[g]) for g in range(len(seen)))
    )


def _goal_run(
    table: ReplayTable, g: int, rows: np.ndarray, steps: np.ndarray, chosen: np.ndarray, broken: int, change_at: int
) -> GoalRun:
    goal = table.goals[g]
    scores = goal.scores[rows]  # in visit order
    if change_at >= 0:
        scores[change_at:, broken] = 0.0
    rewards = scores[np.arange(len(rows)), chosen]
    costs = goal.costs[rows, chosen]
    return GoalRun(rows, steps, chosen, rewards, costs, scores, broken, change_at)


def _recovery(goal: GoalRun) -> tuple[int, float, bool]:
    on_broken = (goal.chosen == goal.broken).astype(np.float64)
    window_counts = np.convolve(on_broken, np.ones(WINDOW), mode="full")[: len(on_broken)]
    after = window_counts[goal.change_at :] / WINDOW
    recovered = np.flatnonzero(after < RECOVERED_SHARE)
    ttr = int(recovered[0]) + 1 if recovered.size else len(after)
    segment = slice(goal.change_at, goal.change_at + ttr)
    best_after = int(goal.scores[goal.change_at :].sum(axis=0).argmax())
    regret = float((goal.scores[segment, best_after] - goal.rewards[segment]).sum())
    return ttr, regret, bool(recovered.size)
