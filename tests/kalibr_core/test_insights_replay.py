"""After a break on the public replay tables, get_policy recommends the path that is best after the break.

The degradation run of the routing metrics (``kalibr replay --degrade``): queries in a random order, bandit feedback,
and from halfway through the goal's best path fails every request. The router is driven the way an application
drives it (``decide`` then ``report``) and asked for its policy at the end.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import kalibr
from kalibr.intelligence.engine import Engine
from kalibr.replay import GoalTable, load_table
from kalibr.stores.memory import MemoryStore

_ROOT = Path(__file__).resolve().parents[2]
_CANDIDATES = [Path(os.environ.get("KALIBR_REPLAY_DATA", _ROOT / "data")), _ROOT.parent / "shared" / "data"]
_CANDIDATES.append(_ROOT.parent.parent / "shared" / "data")
SEEDS = range(10)


def _goal(table_name: str, goal: str) -> GoalTable:
    found = next((folder / table_name for folder in _CANDIDATES if (folder / table_name).is_file()), None)
    if found is None:
        pytest.skip(f"{table_name} not found in {[str(c) for c in _CANDIDATES]}: set KALIBR_REPLAY_DATA")
    return next(item for item in load_table(found).goals if item.goal == goal)


def _recommendation_after_the_break(goal: GoalTable, seed: int) -> tuple[str | None, str, str]:
    """(the policy's model, the best model after the break, the broken one) for one seeded degradation run."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(goal.query_ids))
    broken = int(goal.scores.mean(axis=0).argmax())
    change_at = len(order) // 2
    router = kalibr.Router(goal.goal, list(goal.models), intelligence=Engine(MemoryStore(), seed=seed))
    try:
        for step, row in enumerate(order):
            decision = router.decide()
            arm = goal.models.index(decision.model)
            score = 0.0 if step >= change_at and arm == broken else float(goal.scores[row, arm])
            router.report(success=bool(rng.random() < score), trace_id=decision.trace_id)
        after = goal.scores[order[change_at:]].mean(axis=0)
        after[broken] = -1.0
        return router.get_policy().recommended_model, goal.models[int(after.argmax())], goal.models[broken]
    finally:
        router.intelligence.close()


@pytest.mark.parametrize(
    ("table", "goal"),
    [("routellm_2models.csv", "mmlu_professional_psychology"), ("routellm_2models.csv", "mmlu_professional_medicine")],
)
def test_after_the_break_the_policy_recommends_the_best_path_after_it(table: str, goal: str) -> None:
    data = _goal(table, goal)
    runs = [_recommendation_after_the_break(data, seed) for seed in SEEDS]
    right = [recommended == best for recommended, best, _ in runs]
    assert sum(right) >= 9, runs
    assert not any(recommended == broken for recommended, _, broken in runs), runs
