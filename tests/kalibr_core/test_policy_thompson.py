"""The default policy: Thompson sampling with a cold-start floor, staleness, tie-breaking and drop detection."""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kalibr._exceptions import UserError
from kalibr.policies import ArmState, PolicyConfig, ThompsonPolicy, default_policy
from kalibr.policies.drift import DropDetector, on_probation
from kalibr.policies.priors import priors_from_model_totals
from kalibr.policies.thompson import count_outcome, sample_beta

DAY = 86_400.0


def arm(name: str, successes: float = 0.0, failures: float = 0.0, **fields: object) -> ArmState:
    n = int(successes + failures)
    base: dict[str, object] = {"samples": n, "total_samples": n}
    base.update(fields)
    return ArmState(name, model=name, successes=successes, failures=failures, **base)  # type: ignore[arg-type]


def picks(arms: list[ArmState], config: PolicyConfig, n: int = 2000, seed: int = 0, **kw: object) -> np.ndarray:
    policy, rng = default_policy(), np.random.default_rng(seed)
    counts = np.zeros(len(arms), dtype=int)
    for _ in range(n):
        counts[policy.choose(arms, config=config, rng=rng, now=kw.get("now", 0.0), priors=kw.get("priors")).index] += 1  # type: ignore[arg-type]
    return counts


def test_exploits_the_clearly_better_arm() -> None:
    counts = picks([arm("a", 80, 20), arm("b", 20, 80)], PolicyConfig())
    assert counts[0] > 0.99 * counts.sum()


def test_choice_explains_itself() -> None:
    arms = [arm("good", 80, 20), arm("bad", 20, 80)]
    choice = default_policy().choose(arms, config=PolicyConfig(), rng=np.random.default_rng(0), now=0.0)
    assert choice.index == 0
    assert not choice.exploration
    assert "good" in choice.reason
    assert 0.99 < choice.confidence <= 1.0
    assert choice.sample_count == 100


def test_same_seed_same_choices() -> None:
    arms = [arm("a", 5, 5), arm("b", 6, 4), arm("c", 1, 1)]
    first = picks(arms, PolicyConfig(), n=200, seed=7)
    second = picks(arms, PolicyConfig(), n=200, seed=7)
    assert (first == second).all()


class _OtherPCG64(np.random.PCG64):
    """The same stream as PCG64, under another type: the policy draws its coin with ``random()`` for it."""


@pytest.mark.parametrize("count", [2, 4])
@pytest.mark.parametrize("exploration_rate", [0.0, 0.05, 0.1, 0.5, 1.0])
def test_the_coin_from_raw_bits_is_random(count: int, exploration_rate: float) -> None:
    # With numpy's PCG64 the exploration coin comes from the generator's raw bits: every choice and every bit
    # drawn must be what rng.random() gives (forced exploration reads the coin's value too).
    arms = [arm(f"p{i}", 3 * i, 2, total_samples=[0, 30, 5, 40][i]) for i in range(count)]
    prepared = default_policy().prepare(arms, config=PolicyConfig(exploration_rate=exploration_rate))
    raw, reference = np.random.default_rng(11), np.random.Generator(_OtherPCG64(11))
    for _ in range(3000):
        assert prepared.choose(raw, 0.0) == prepared.choose(reference, 0.0)
    assert raw.random() == reference.random()


def test_exploration_floor_goes_to_paths_under_min_samples() -> None:
    arms = [arm("proven", 90, 10), arm("new", 0, 0)]
    share = picks(arms, PolicyConfig(exploration_rate=0.1), n=4000)[1] / 4000
    without_floor = picks(arms, PolicyConfig(exploration_rate=0.0), n=4000)[1] / 4000
    assert share > without_floor + 0.05
    assert share < 0.2


def test_no_floor_once_every_path_has_min_samples() -> None:
    arms = [arm("proven", 90, 10), arm("weak", 2, 28)]
    assert picks(arms, PolicyConfig(exploration_rate=0.5))[1] < 10


def test_without_exploration_the_best_looking_arm_is_always_taken() -> None:
    """A high-risk task: no floor, no probe, no gamble on a close or untried rival."""
    arms = [arm("close", 11, 9), arm("best", 12, 8), arm("new", 0, 0)]
    policy, rng = default_policy(), np.random.default_rng(0)
    config = PolicyConfig(exploration_rate=1.0)
    choices = [policy.choose(arms, config=config, rng=rng, now=0.0, explore=False) for _ in range(300)]
    assert {choice.index for choice in choices} == {1}
    assert not any(choice.exploration for choice in choices)
    assert "high-risk" in choices[0].reason
    assert picks(arms, config, n=300)[[0, 2]].sum() > 30  # the same arms with exploration allowed


def test_stale_path_is_explored_again() -> None:
    now = 30 * DAY
    arms = [arm("fresh", 90, 10, last_outcome_at=now), arm("stale", 2, 28, last_outcome_at=now - 8 * DAY)]
    stale_share = picks(arms, PolicyConfig(exploration_rate=0.2), now=now)[1] / 2000
    assert 0.15 < stale_share < 0.25
    recent = [arms[0], arm("weak", 2, 28, last_outcome_at=now - 6 * DAY)]
    assert picks(recent, PolicyConfig(exploration_rate=0.2), now=now)[1] < 10


def test_cheaper_path_wins_a_tie() -> None:
    arms = [arm("dear", 90, 10, cost_sum=1.0, cost_count=100), arm("cheap", 89, 11, cost_sum=0.1, cost_count=100)]
    assert picks(arms, PolicyConfig(tie_tolerance=0.05))[1] > 1900
    assert picks(arms, PolicyConfig(tie_tolerance=0.0))[1] < 1500


def test_cost_weight_trades_quality_for_cost() -> None:
    arms = [arm("dear", 90, 10, cost_sum=100.0, cost_count=100), arm("cheap", 70, 30, cost_sum=0.0, cost_count=100)]
    assert picks(arms, PolicyConfig(cost_weight=0.0))[0] > 1900
    assert picks(arms, PolicyConfig(cost_weight=0.5))[1] > 1900


def test_priors_move_a_cold_choice() -> None:
    arms = [arm("a"), arm("b")]
    config = PolicyConfig(exploration_rate=0.0)
    assert picks(arms, config, priors=[(9.0, 1.0), (1.0, 9.0)])[0] > 1800


def test_update_counts_fractional_scores_and_costs() -> None:
    updated = ThompsonPolicy().update(arm("a"), score=0.75, cost_usd=0.002, latency_ms=120.0, now=5.0)
    assert (updated.successes, updated.failures) == (0.75, 0.25)
    assert (updated.samples, updated.total_samples) == (1, 1)
    assert updated.mean_cost == pytest.approx(0.002)
    assert updated.mean_latency_ms == pytest.approx(120.0)
    assert updated.last_outcome_at == 5.0


def test_counting_an_outcome_keeps_every_field_it_does_not_count() -> None:
    # count_outcome builds the arm whole: a field it does not name would fall back to its default.
    counted = {"successes", "failures", "samples", "total_samples", "cost_sum", "cost_count", "latency_sum"}
    counted |= {"latency_count", "last_outcome_at"}
    before = ArmState("p", "m", 3.0, 2.0, 5, 9, 0.5, 2, 300.0, 3, 7.0, {"statistic": 1.5})
    after = count_outcome(before, score=1.0, cost_usd=None, latency_ms=None, now=8.0)
    for name in {f.name for f in dataclasses.fields(ArmState)} - counted:
        assert getattr(after, name) == getattr(before, name), name
    assert after == dataclasses.replace(before, successes=4.0, samples=6, total_samples=10, last_outcome_at=8.0)


def test_adjust_moves_one_outcome() -> None:
    adjusted = ThompsonPolicy().adjust(arm("a", 3, 1), old_score=0.0, new_score=1.0)
    assert (adjusted.successes, adjusted.failures) == (4.0, 0.0)


def test_a_path_that_starts_failing_loses_its_record_within_a_few_failures() -> None:
    policy, state = ThompsonPolicy(), arm("a", 160, 40)
    for step in range(6):
        state = policy.update(state, score=0.0, cost_usd=None, latency_ms=None, now=float(step))
        if state.samples < 100:
            break
    assert state.samples < 10
    assert state.success_rate == 0.0
    assert state.total_samples > 200
    assert state.extra["resets"] == 1.0


def test_ordinary_bad_luck_keeps_the_record() -> None:
    policy, state, rng = ThompsonPolicy(), arm("a", 80, 20), np.random.default_rng(3)
    for step in range(2000):
        state = policy.update(state, score=float(rng.random() < 0.8), cost_usd=None, latency_ms=None, now=step)
    assert state.extra.get("resets", 0.0) <= state.extra.get("restores", 0.0) + 1.0
    assert state.samples > 1500


def fail(policy: ThompsonPolicy, state: ArmState, times: int, score: float = 0.0) -> ArmState:
    for _ in range(times):
        state = policy.update(state, score=score, cost_usd=None, latency_ms=None, now=0.0)
    return state


def test_a_success_on_probation_restores_the_record() -> None:
    policy = ThompsonPolicy()
    dropped = fail(policy, arm("a", 160, 40), 5)
    assert on_probation(dropped)
    restored = fail(policy, dropped, 1, score=1.0)
    assert not on_probation(restored)
    assert restored.successes == pytest.approx(161.0)
    assert restored.extra["restores"] == 1.0


def test_failed_probes_confirm_the_drop() -> None:
    policy = ThompsonPolicy()
    confirmed = fail(policy, fail(policy, arm("a", 160, 40), 5), 4)
    assert not on_probation(confirmed)
    assert confirmed.successes == 0.0
    assert confirmed.samples < 15


def test_a_path_on_probation_is_probed_soon_then_gets_a_fifth_of_the_exploration_budget() -> None:
    policy = ThompsonPolicy()
    suspect = fail(policy, arm("suspect", 160, 40), 5)
    healthy = arm("healthy", 70, 30)
    before_first_probe = picks([healthy, suspect], PolicyConfig(exploration_rate=0.1), n=5000)[1] / 5000
    assert 0.07 < before_first_probe < 0.14  # the first probe comes within ~10 decisions
    probed = fail(policy, suspect, 1)  # the first probe failed too
    assert on_probation(probed)
    afterwards = picks([healthy, probed], PolicyConfig(exploration_rate=0.1), n=5000)[1] / 5000
    assert 0.01 < afterwards < 0.04


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_bad_score_is_refused(bad: float) -> None:
    with pytest.raises(UserError, match="score"):
        ThompsonPolicy().update(arm("a"), score=bad, cost_usd=None, latency_ms=None, now=0.0)


def test_no_paths_is_a_user_error() -> None:
    with pytest.raises(UserError, match="at least one"):
        ThompsonPolicy().choose([], config=PolicyConfig(), rng=np.random.default_rng(0), now=0.0)


def test_priors_must_match_paths() -> None:
    with pytest.raises(UserError, match="priors"):
        ThompsonPolicy().choose(
            [arm("a"), arm("b")], config=PolicyConfig(), rng=np.random.default_rng(0), now=0.0, priors=[(1.0, 1.0)]
        )


def test_priors_carry_a_models_advantage_elsewhere_not_its_raw_rate() -> None:
    arms = [arm("strong", 1, 1), arm("weak", 1, 1)]
    totals = {"strong": (61.0, 41.0), "weak": (21.0, 81.0)}  # includes this goal's own (1, 1)
    (strong_a, strong_b), (weak_a, weak_b) = priors_from_model_totals(arms, totals)
    strong_mean, weak_mean = strong_a / (strong_a + strong_b), weak_a / (weak_a + weak_b)
    assert strong_mean > 0.5 > weak_mean
    assert strong_mean - weak_mean == pytest.approx(0.4, abs=0.02)
    assert 2.0 < strong_a + strong_b < 6.0  # a few pseudo-counts: the goal's own outcomes take over


def test_priors_without_a_record_elsewhere_sit_at_the_goal_rate() -> None:
    (a, b), (c, d) = priors_from_model_totals([arm("x", 9, 1), arm("y")], {"x": (9.0, 1.0)})
    assert a / (a + b) == pytest.approx(c / (c + d))
    assert a / (a + b) > 0.7


def test_a_path_ruled_out_on_a_few_outcomes_is_rechecked_until_it_has_min_samples() -> None:
    now = 10 * DAY
    unlucky = [arm("proven", 60, 40, last_outcome_at=now), arm("unlucky", 0, 2, last_outcome_at=now - 3_600)]
    # Ruled out by the floor, for now: only Thompson's own chance with its thin posterior (~0.4^3 = 6%).
    assert picks(unlucky, PolicyConfig(exploration_rate=0.2), now=now)[1] < 200
    a_day_later = [unlucky[0], arm("unlucky", 0, 2, last_outcome_at=now - 25 * 3_600)]
    assert picks(a_day_later, PolicyConfig(exploration_rate=0.2), now=now)[1] > 400  # the floor checks it again
    hourly = PolicyConfig(exploration_rate=0.2, recheck_hours=0.5)
    assert picks(unlucky, hourly, now=now)[1] > 400
    settled = [unlucky[0], arm("bad", 2, 28, last_outcome_at=now - 25 * 3_600)]
    assert picks(settled, PolicyConfig(exploration_rate=0.2), now=now)[1] < 10  # 30 outcomes: a real verdict


def test_correcting_the_failure_that_started_a_detector_run_ends_the_run() -> None:
    policy = ThompsonPolicy()
    state = fail(policy, arm("a", 30, 0), 1)
    assert state.extra["run_failures"] == 1.0
    corrected = policy.adjust(state, old_score=0.0, new_score=1.0)
    assert (corrected.successes, corrected.failures) == (31.0, 0.0)
    assert corrected.extra["run_failures"] == 0.0
    assert corrected.extra["drop_cusum"] == 0.0
    # The next failure is judged against a rate with every success in it, and does not raise.
    assert fail(policy, corrected, 1).extra["run_failures"] == 1.0


_SCORES = st.sampled_from([0.0, 1.0, 0.5, 0.25, 0.9])
_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("update"), _SCORES),
        st.tuples(st.just("adjust"), st.integers(min_value=0), _SCORES),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(start=st.tuples(st.integers(0, 40), st.integers(0, 40)), steps=_STEPS)
def test_any_updates_and_corrections_keep_the_arm_valid(start: tuple[int, int], steps: list[tuple[Any, ...]]) -> None:
    policy, state = ThompsonPolicy(detector=DropDetector(min_evidence=4.0, threshold=3.0)), arm("a", *start)
    scores: list[float] = []  # every outcome counted so far, as last reported: what a replacement can correct
    for step in steps:
        if step[0] == "update" or not scores:
            state = policy.update(state, score=step[-1], cost_usd=None, latency_ms=None, now=float(len(scores)))
            scores.append(step[-1])
        else:
            index = step[1] % len(scores)
            state = policy.adjust(state, old_score=scores[index], new_score=step[2])
            scores[index] = step[2]
        assert state.successes >= 0.0 and state.failures >= 0.0
        assert all(math.isfinite(value) for value in state.extra.values())
        assert min((value for key, value in state.extra.items() if key != "probation_llr"), default=0.0) >= 0.0
        if not on_probation(state):
            assert state.extra.get("run_successes", 0.0) <= state.successes + 1e-9
            assert state.extra.get("run_failures", 0.0) <= state.failures + 1e-9
    # Whatever happened, the arm can still be chosen and learn.
    policy.choose([state, arm("b", 5, 5)], config=PolicyConfig(), rng=np.random.default_rng(0), now=0.0)
    policy.update(state, score=0.0, cost_usd=None, latency_ms=None, now=0.0)


def share_of(arms: list[ArmState], index: int, policy: ThompsonPolicy, seed: int) -> float:
    """Share of 3,000 seeded choices, with no exploration floor, that go to ``arms[index]``."""
    rng, no_floor = np.random.default_rng(seed), PolicyConfig(exploration_rate=0.0)
    chosen = np.array([policy.choose(arms, config=no_floor, rng=rng, now=0.0).index for _ in range(3000)])
    return float(np.mean(chosen == index))


def test_a_path_judged_on_one_failure_keeps_its_plain_thompson_chance() -> None:
    # A big goal's good path that fails its first request: a sharpened Beta(6, 12) almost never beats a 60%
    # path again (it would be locked out for good); the plain Beta(1, 2) beats it about (1 - 0.6)^2 = 16% of draws.
    arms = [arm("unlucky", 0, 1), arm("proven", 30, 20)]
    assert 0.11 < share_of(arms, 0, ThompsonPolicy(), seed=3) < 0.22
    assert share_of(arms, 0, ThompsonPolicy(sharpen_after=0.0), seed=3) < 0.05


def test_paths_with_evidence_are_still_sharpened() -> None:
    # Once both hold the evidence, the sharpened posterior stops sending traffic to the clearly worse path
    # sooner than plain Thompson would.
    arms = [arm("better", 14, 6), arm("worse", 9, 11)]
    assert share_of(arms, 1, ThompsonPolicy(), seed=4) < 0.5 * share_of(arms, 1, ThompsonPolicy(sharpness=1.0), seed=4)


def test_many_arms_with_near_zero_priors_draw_numbers_not_nan() -> None:
    # Shapes this small make gamma draws underflow to 0, where X / (X + Y) would be 0 / 0.
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy warns on 0 / 0
        draws = sample_beta(np.random.default_rng(0), [1e-3] * 8, [1e-3] * 8)
        arms = [ArmState(f"p{i}", total_samples=50, samples=50) for i in range(8)]
        prepared = ThompsonPolicy().prepare(arms, config=PolicyConfig(), priors=[(1e-3, 1e-3)] * 8)
        rng = np.random.default_rng(1)
        picks = np.bincount([prepared.choose(rng, 0.0).index for _ in range(4_000)], minlength=8)
    assert all(0.0 <= draw <= 1.0 for draw in draws)
    assert picks.min() > 0
