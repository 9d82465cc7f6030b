"""After a break on the public replay tables, get_policy recommends the path that is best after the break.

The degradation run of the routing metrics (``kalibr replay --degrade``): queries in a random order, bandit feedback,
and from halfway through each goal its best path fails every request. The routers are driven the way an
application drives them (``decide`` then ``report``) and asked for their policy at the end.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest

import kalibr
from kalibr.intelligence.engine import Engine
from kalibr.replay import ReplayTable, load_table
from kalibr.stores.memory import MemoryStore

_ROOT = Path(__file__).resolve().parents[2]
_CANDIDATES = [Path(os.environ.get("KALIBR_REPLAY_DATA", _ROOT / "data")), _ROOT.parent / "shared" / "data"]
_CANDIDATES.append(_ROOT.parent.parent / "shared" / "data")
SEEDS = range(10)


def _table(table_name: str) -> ReplayTable:
    found = next((folder / table_name for folder in _CANDIDATES if (folder / table_name).is_file()), None)
    if found is None:
        pytest.skip(f"{table_name} not found in {[str(c) for c in _CANDIDATES]}: set KALIBR_REPLAY_DATA")
    return load_table(found)


def _degradation_run(table: ReplayTable, seed: int) -> dict[str, tuple[str | None, str, str]]:
    """Per goal: (the policy's model, the best model after the break, the broken one) after one seeded run.

    Every goal of the table in one shuffled stream, one Router per goal sharing one engine (so the cross-goal
    priors work as in production). The engine writes through and re-reads before every decision, which makes
    the run depend on the seed alone."""
    rng = np.random.default_rng(seed)
    goal_of = np.concatenate([np.full(len(goal.query_ids), g) for g, goal in enumerate(table.goals)])
    row_of = np.concatenate([np.arange(len(goal.query_ids)) for goal in table.goals])
    order = rng.permutation(len(goal_of))
    engine = Engine(MemoryStore(), seed=seed, write_behind=False, refresh_interval=0.0)
    routers = [kalibr.Router(goal.goal, list(goal.models), intelligence=engine) for goal in table.goals]
    broken = [int(goal.scores.mean(axis=0).argmax()) for goal in table.goals]
    visited: list[list[int]] = [[] for _ in table.goals]
    try:
        for position in order:
            g, row = int(goal_of[position]), int(row_of[position])
            goal, router = table.goals[g], routers[g]
            decision = router.decide()
            arm = goal.models.index(decision.model)
            after_break = len(visited[g]) >= len(goal.query_ids) // 2
            score = 0.0 if after_break and arm == broken[g] else float(goal.scores[row, arm])
            visited[g].append(row)
            router.report(success=bool(rng.random() < score), trace_id=decision.trace_id)
        found = {}
        for g, (goal, router) in enumerate(zip(table.goals, routers, strict=True)):
            rows = visited[g]
            after = goal.scores[rows[len(rows) // 2 :]].mean(axis=0)
            after[broken[g]] = -1.0
            best = goal.models[int(after.argmax())]
            found[goal.goal] = (router.get_policy().recommended_model, best, goal.models[broken[g]])
        return found
    finally:
        engine.close()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("table_name", "goals"),
    [
        ("routellm_2models.csv", ("mmlu_professional_psychology", "mmlu_professional_medicine")),
        # The goal whose best path after the break leads the next by more than the tie tolerance in every seed.
        ("llmrouter_dc_9models.csv", ("arc_challenge",)),
    ],
)
def test_after_the_break_the_policy_recommends_the_best_path_after_it(table_name: str, goals: tuple[str, ...]) -> None:
    table = _table(table_name)
    if table_name.startswith("routellm"):  # 58 goals of two models: the run of the goals judged is enough
        table = dataclasses.replace(table, goals=tuple(goal for goal in table.goals if goal.goal in goals))
    runs = [_degradation_run(table, seed) for seed in SEEDS]
    for goal in goals:
        outcomes = [run[goal] for run in runs]
        assert sum(recommended == best for recommended, best, _ in outcomes) >= 9, (goal, outcomes)
        assert not any(recommended == broken for recommended, _, broken in outcomes), (goal, outcomes)
