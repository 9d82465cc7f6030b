"""The cost setting in the user's units: "the cheapest path within N points of the best"."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from kalibr._exceptions import UserError
from kalibr.policies import ArmState, PolicyConfig, ThompsonPolicy
from kalibr.replay import ReplayOptions, load_table, replay, to_markdown


def proven(path: str, rate: float, cost: float, samples: int = 400) -> ArmState:
    successes = rate * samples
    return ArmState(
        path, model=path, successes=successes, failures=samples - successes, samples=samples,
        total_samples=samples, cost_sum=cost * samples, cost_count=samples,
    )  # fmt: skip


def picks(config: PolicyConfig, arms: list[ArmState], draws: int = 300) -> np.ndarray:
    rng = np.random.default_rng(3)
    policy = ThompsonPolicy()
    chosen = [policy.choose(arms, config=config, rng=rng, now=0.0).index for _ in range(draws)]
    return np.bincount(chosen, minlength=len(arms)) / draws


def test_within_a_few_points_the_cheapest_path_wins() -> None:
    arms = [proven("strong", 0.90, 1.0), proven("close", 0.88, 0.1), proven("weak", 0.60, 0.01)]
    plain = picks(PolicyConfig(exploration_rate=0.0, tie_tolerance=0.0), arms)
    within = picks(PolicyConfig(exploration_rate=0.0, tie_tolerance=0.0, quality_tolerance=0.05), arms)
    assert plain[0] > 0.6
    assert within[1] > 0.9  # 2 points below the best at a tenth of the cost
    assert within[2] < 0.02  # 30 points below: never "within 5 points"


def test_a_tolerance_below_the_gap_keeps_the_best_path() -> None:
    arms = [proven("strong", 0.90, 1.0), proven("cheap", 0.80, 0.1)]
    assert picks(PolicyConfig(exploration_rate=0.0, quality_tolerance=0.01), arms)[0] > 0.95


def test_high_risk_decisions_apply_the_tolerance_to_the_means() -> None:
    arms = [proven("strong", 0.90, 1.0), proven("close", 0.885, 0.1)]
    choice = ThompsonPolicy().choose(
        arms, config=PolicyConfig(quality_tolerance=0.02), rng=np.random.default_rng(0), now=0.0, explore=False
    )
    assert choice.index == 1


def test_tolerance_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(UserError, match="within 1 point"):
        PolicyConfig(quality_tolerance=5.0)


def test_replay_sweeps_the_tolerance_and_its_points_cost_less(tmp_path: Path) -> None:
    path = tmp_path / "outcomes.csv"
    rng = np.random.default_rng(0)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["query_id", "goal", "model", "score", "cost_usd"])
        for goal in ("g1", "g2"):
            for q in range(400):
                for model, rate, cost in (("strong", 0.9, 0.01), ("close", 0.84, 0.001), ("weak", 0.4, 0.0001)):
                    writer.writerow([f"{goal}-{q}", goal, model, float(rng.random() < rate), cost])
    options = ReplayOptions(
        seeds=2, cost_aware=True, contenders=("kalibr",), cost_weights=(0.0,), tolerances=(0.08,), processes=1
    )
    result = replay(load_table(path), options)
    default, within = result.cost_curve
    assert within.label == "within 8 pt"
    assert within.cost < 0.5 * default.cost
    assert within.quality > default.quality - 8.0
    assert "Cost frontier: matches" in to_markdown(result, command="test")
