"""The cost setting in the user's units: "the cheapest path within N points of the best"."""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import kalibr
from kalibr import Outcome
from kalibr._exceptions import UserError
from kalibr.intelligence.engine import Engine
from kalibr.policies import ArmState, PolicyConfig, ThompsonPolicy
from kalibr.policies.cost import cost_priors_from_model_costs
from kalibr.replay import ReplayOptions, load_table, replay, to_markdown, with_features
from kalibr.sandbox import SandboxServer
from kalibr.sandbox.tasks import TaskGenerator
from kalibr.stores import open_store


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


def write_table(folder: Path, models: list[tuple[str, float, float]], queries: int, seed: int) -> Path:
    """Two goals; each query answered by each (model, success rate, cost) with a Bernoulli score."""
    path = folder / "outcomes.csv"
    rng = np.random.default_rng(seed)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["query_id", "goal", "model", "score", "cost_usd"])
        for goal in ("g1", "g2"):
            for q in range(queries):
                for model, rate, cost in models:
                    writer.writerow([f"{goal}-{q}", goal, model, float(rng.random() < rate), cost])
    return path


def test_replay_sweeps_the_tolerance_and_its_points_cost_less(tmp_path: Path) -> None:
    path = write_table(tmp_path, [("strong", 0.9, 0.01), ("close", 0.84, 0.001), ("weak", 0.4, 0.0001)], 400, 0)
    options = ReplayOptions(
        seeds=2,
        cost_aware=True,
        contenders=("kalibr",),
        cost_weights=(0.0,),
        tolerances=(0.08,),
        budget_shares=(),
        processes=1,
    )
    result = replay(load_table(path), options)
    default, within = result.cost_curve
    assert within.label == "within 8 pt"
    assert within.cost < 0.5 * default.cost
    assert within.quality > default.quality - 8.0
    assert "Cost frontier: matches" in to_markdown(result, command="test")


def test_once_the_posteriors_are_certain_the_tolerance_takes_the_cheapest_path_within_it() -> None:
    arms = [
        proven("best", 0.90, 1.0, 20_000),
        proven("half a point below", 0.895, 0.5, 20_000),
        proven("five points below", 0.85, 0.1, 20_000),
    ]
    config = PolicyConfig(exploration_rate=0.0)
    assert picks(replace(config, quality_tolerance=0.01), arms)[1] > 0.97
    assert picks(replace(config, quality_tolerance=0.06), arms)[2] > 0.97
    assert picks(replace(config, quality_tolerance=0.001), arms)[0] > 0.97


def spend(config: PolicyConfig, paths: list[tuple[str, float, float]], calls: int = 3_000) -> tuple[float, float]:
    """Route ``calls`` requests of one goal through the policy; (mean cost per call, success rate)."""
    rng = np.random.default_rng(7)
    policy = ThompsonPolicy()
    arms = [ArmState(name, model=name) for name, _, _ in paths]
    cost = successes = 0.0
    for step in range(calls):
        index = policy.choose(arms, config=config, rng=rng, now=float(step)).index
        _, rate, price = paths[index]
        score = float(rng.random() < rate)
        arms[index] = policy.update(arms[index], score=score, cost_usd=price, latency_ms=None, now=float(step))
        cost += price
        successes += score
    return cost / calls, successes / calls


PATHS = [("large", 0.9, 0.004), ("medium", 0.75, 0.001), ("small", 0.5, 0.0002)]


@pytest.mark.parametrize("budget", [0.5, 1.5, 2.5])
def test_the_pacer_holds_the_average_cost_per_call_at_the_budget(budget: float) -> None:
    mean_cost, _ = spend(PolicyConfig(budget_per_1k_calls_usd=budget), PATHS)
    assert mean_cost * 1000.0 == pytest.approx(budget, rel=0.05)


def test_the_budget_buys_the_best_success_rate_it_can() -> None:
    # $1.5 per 1,000 calls affords the medium path and a sixth of the large one: better than the medium alone.
    _, paced = spend(PolicyConfig(budget_per_1k_calls_usd=1.5), PATHS)
    _, generous = spend(PolicyConfig(budget_per_1k_calls_usd=10.0), PATHS)
    _, unbudgeted = spend(PolicyConfig(), PATHS)
    assert paced > 0.75
    assert generous == pytest.approx(unbudgeted, abs=0.02)  # above the dearest path's cost: success rate decides


def test_a_budget_below_every_path_takes_the_cheapest() -> None:
    mean_cost, _ = spend(PolicyConfig(budget_per_1k_calls_usd=0.01), PATHS)
    assert mean_cost * 1000.0 < 0.25  # the small path costs 0.2 per 1,000; only cold-start calls cost more


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"budget_per_1k_calls_usd": 0.0}, "must be a positive number of USD per 1,000 calls"),
        ({"budget_per_1k_calls_usd": float("nan")}, "or None for no budget"),
        ({"budget_per_1k_calls_usd": 2.0, "quality_tolerance": 0.01}, "choose one way to trade quality for cost"),
        ({"cost_weight": 0.5, "quality_tolerance": 0.01}, "cost_weight and quality_tolerance are set together"),
    ],
)
def test_bad_cost_settings_name_the_fix(settings: dict[str, float], message: str) -> None:
    with pytest.raises(UserError, match=message):
        PolicyConfig(**settings)  # type: ignore[arg-type]


def test_replay_paces_each_budget_point_to_its_share_of_the_strongest_models_cost(tmp_path: Path) -> None:
    path = write_table(tmp_path, [("strong", 0.9, 0.01), ("close", 0.8, 0.002), ("weak", 0.4, 0.0005)], 500, 1)
    options = ReplayOptions(
        seeds=2, cost_aware=True, contenders=("kalibr",), cost_weights=(0.0,), tolerances=(), budget_shares=(0.4,),
        processes=1,
    )  # fmt: skip
    _, budget = replay(load_table(path), options).cost_curve
    assert budget.label == "budget 40% of strongest"
    assert budget.cost == pytest.approx(40.0, abs=2.0)
    assert budget.quality > 100.0 * 0.8 / 0.9  # better than the close path alone, which costs 20%


def test_the_prompt_aware_policy_paces_the_same_budget(tmp_path: Path) -> None:
    path = write_table(tmp_path, [("strong", 0.9, 0.01), ("close", 0.8, 0.002), ("weak", 0.4, 0.0005)], 500, 2)
    table = load_table(path)
    prompts = {query: f"question {query}" for goal in table.goals for query in goal.query_ids}
    table = with_features(table, prompts, lambda prompt: np.array([len(prompt) % 3, 1.0]))
    options = ReplayOptions(
        seeds=1, cost_aware=True, contenders=("kalibr",), cost_weights=(0.0,), tolerances=(), budget_shares=(0.4,),
        processes=1,
    )  # fmt: skip
    points = {point.label: point for point in replay(table, options).cost_curve}
    assert points["budget 40% of strongest (kalibr+prompts)"].cost == pytest.approx(40.0, abs=2.0)


def test_the_exploration_floor_skips_a_dear_path_the_budget_cannot_afford() -> None:
    # The dear path has 3 of the 20 outcomes the floor asks for: without a budget the floor keeps exploring it.
    arms = [proven("cheap", 0.80, 0.0002, 400), proven("dear", 0.85, 0.01, 3)]
    floor_only = PolicyConfig(exploration_rate=1.0)
    assert picks(floor_only, arms)[1] > 0.5
    assert picks(replace(floor_only, budget_per_1k_calls_usd=0.5), arms)[1] < 0.1


PACED = {
    "name": "paced",
    "models": {"cheap": {"output_tokens": 40}, "dear": {"output_tokens": 40}},
    "goals": {"extract": {"task": "extraction", "accuracy": {"cheap": 0.5, "dear": 0.95}}},
    "default_goal": "extract",
}


def test_a_router_paces_real_calls_to_its_budget(start_sandbox: Callable[..., SandboxServer]) -> None:
    server = start_sandbox(PACED)
    prices = {
        "cheap": {"input_per_mtok": 1.0, "output_per_mtok": 1.0},
        "dear": {"input_per_mtok": 20.0, "output_per_mtok": 20.0},
    }
    paths = [{"model": model, "base_url": server.openai_base_url, "price": price} for model, price in prices.items()]
    router = kalibr.Router("extract", paths, store="memory:")
    tasks = TaskGenerator(kind="extraction", seed=5)

    def call(force_model: str | None = None) -> kalibr.Completion:
        task = tasks.next()
        completion = router.completion(task.messages, force_model=force_model)
        router.report(success=task.check(completion.text))
        return completion

    costs = {model: call(model).cost_usd or 0.0 for model in prices}
    budget = (costs["cheap"] + costs["dear"]) / 2.0  # per call: about half the calls can go to the dear path
    router.set_config(kalibr.PolicyConfig(budget_per_1k_calls_usd=1000.0 * budget))
    paced = [call() for _ in range(300)]
    spent = sum(costs.values()) + sum(completion.cost_usd or 0.0 for completion in paced)
    assert spent / (len(paced) + 2) == pytest.approx(budget, rel=0.1)
    assert 0.3 < sum(completion.model == "dear" for completion in paced) / len(paced) < 0.7


def untried_dear_share(config: PolicyConfig, cost_priors: list[float | None] | None) -> float:
    """How often a fresh dear path is picked beside a proven cheap one, with or without knowing its cost."""
    arms = [proven("cheap", 0.80, 0.0003, 400), ArmState("dear", model="dear")]
    rng = np.random.default_rng(5)
    policy = ThompsonPolicy()
    chosen = [policy.choose(arms, config=config, rng=rng, now=0.0, cost_priors=cost_priors).index for _ in range(300)]
    return sum(chosen) / len(chosen)


def test_a_dear_path_whose_cost_is_known_elsewhere_is_not_tried_under_a_tight_budget() -> None:
    tight = PolicyConfig(budget_per_1k_calls_usd=0.3)  # the cheap path's cost: nothing left for the dear one
    assert untried_dear_share(tight, None) > 0.1  # unknown cost counts as free: tried to learn it
    assert untried_dear_share(tight, [None, 0.01]) == 0.0


def test_a_cost_prior_changes_nothing_without_a_cost_setting() -> None:
    plain = PolicyConfig()
    assert untried_dear_share(plain, [None, 0.01]) == untried_dear_share(plain, None) > 0.0


def test_cost_priors_are_the_models_cost_elsewhere_at_this_goals_scale() -> None:
    # This goal's calls to "m1" cost twice what they cost elsewhere: "m2" should cost twice its mean elsewhere.
    measured = ArmState("a", model="m1", cost_sum=0.4, cost_count=2)
    untried, unknown = ArmState("b", model="m2"), ArmState("c", model="m3")
    priors = cost_priors_from_model_costs([measured, untried, unknown], {"m1": (0.9, 7), "m2": (5.0, 5)})
    assert priors == [None, pytest.approx(2.0), None]


def test_the_engine_expects_a_new_goals_paths_to_cost_what_they_cost_on_other_goals() -> None:
    store = open_store("memory:")
    paths = (kalibr.Path("cheap"), kalibr.Path("dear"))
    engine = Engine(store, seed=2)
    for model, cost in (("cheap", 0.0002), ("dear", 0.01)):
        for _ in range(5):
            decision = engine.decide("summarize", paths)
            engine.report(Outcome(decision.trace_id, "summarize", model, 1.0, model=model, cost_usd=cost))
    engine.flush()
    engine.close()

    fresh = Engine(store, seed=2)  # a process started later: it learns the costs from the store
    fresh.set_config("extract", PolicyConfig(budget_per_1k_calls_usd=0.3))
    picked = []
    for _ in range(100):
        decision = fresh.decide("extract", paths)
        picked.append(decision.model)
        cost = 0.0002 if decision.model == "cheap" else 0.01
        fresh.report(Outcome(decision.trace_id, "extract", decision.path_id, 1.0, model=decision.model, cost_usd=cost))
    fresh.close()
    assert picked.count("dear") == 0


def fresh_picks(config: PolicyConfig, hints: list[float | None] | None, count: int = 200) -> list[int]:
    """What a goal with no outcomes anywhere picks, with or without list-price hints for its paths."""
    arms = [ArmState(model, model=model) for model in ("dear", "cheap", "mid")]
    cost_priors = None if hints is None else cost_priors_from_model_costs(arms, {}, hints)
    rng = np.random.default_rng(11)
    policy = ThompsonPolicy()
    return [policy.choose(arms, config=config, rng=rng, now=0.0, cost_priors=cost_priors).index for _ in range(count)]


def test_with_nothing_measured_a_tight_budget_tries_the_cheapest_path_by_list_price_first() -> None:
    tight = PolicyConfig(budget_per_1k_calls_usd=0.1)
    assert set(fresh_picks(tight, None)) == {0, 1, 2}  # no hint: every untried path counts as free
    assert set(fresh_picks(tight, [40.0, 0.5, 5.0])) == {1}


def test_list_price_hints_change_nothing_without_a_cost_setting() -> None:
    plain = PolicyConfig()
    assert fresh_picks(plain, [40.0, 0.5, 5.0]) == fresh_picks(plain, None)


def test_an_unpriced_path_takes_its_list_price_at_the_dollars_per_price_unit_measured() -> None:
    measured = ArmState("a", model="m1", cost_sum=0.003, cost_count=3)  # 0.001 per call at a list price of 2
    priors = cost_priors_from_model_costs(
        [measured, ArmState("b", model="m2"), ArmState("c", model="m3")], {}, [2.0, 30.0, None]
    )
    assert priors == [None, pytest.approx(0.015), None]


def test_a_router_tries_the_cheapest_listed_model_first_and_never_an_unaffordable_one() -> None:
    rates = {"gpt-4.1-nano": 0.0005, "gpt-4o": 0.0125, "claude-opus-4-1": 0.09}  # USD per call, as listed
    router = kalibr.Router("triage", ["claude-opus-4-1", "gpt-4o", "gpt-4.1-nano"], store="memory:")
    router.set_config(kalibr.PolicyConfig(budget_per_1k_calls_usd=1.0))
    models = []
    for _ in range(40):
        decision = router.decide()
        models.append(decision.model)
        router.report(success=True, trace_id=decision.trace_id, cost_usd=rates[decision.model])
    assert models == ["gpt-4.1-nano"] * 40


def worse_share(policy: ThompsonPolicy, config: PolicyConfig, draws: int = 2000) -> float:
    """How often the worse of two equally priced proven paths is picked, with no exploration floor."""
    arms = [proven("better", 0.60, 0.001, 40), proven("worse", 0.50, 0.001, 40)]
    rng, config = np.random.default_rng(7), replace(config, exploration_rate=0.0)
    return float(np.mean([policy.choose(arms, config=config, rng=rng, now=0.0).index for _ in range(draws)]))


def test_under_a_cost_setting_the_draws_are_sharper() -> None:
    weighted = PolicyConfig(cost_weight=0.1)
    as_without_cost = ThompsonPolicy(cost_sharpness=ThompsonPolicy().sharpness)
    assert worse_share(ThompsonPolicy(), weighted) < 0.5 * worse_share(as_without_cost, weighted)


def test_the_cost_sharpness_changes_no_draw_without_a_cost_setting() -> None:
    plain = PolicyConfig()
    assert worse_share(ThompsonPolicy(cost_sharpness=1.0), plain) == worse_share(ThompsonPolicy(), plain) > 0.0


def forced_dear_share(prior: tuple[float, float]) -> float:
    """How often the exploration floor sends a call to an untried dear path beside a proven cheap one, given the
    dear path's prior from the other goals."""
    arms = [proven("cheap", 0.80, 0.1, 400), ArmState("dear", model="dear")]
    config = PolicyConfig(cost_weight=0.05, exploration_rate=1.0)  # every call flips the floor's coin
    rng, policy = np.random.default_rng(9), ThompsonPolicy()
    chosen = [
        policy.choose(arms, config=config, rng=rng, now=0.0, priors=[(1.0, 1.0), prior], cost_priors=[None, 1.0])
        for _ in range(300)
    ]
    return float(np.mean([choice.index == 1 and choice.exploration for choice in chosen]))


def test_an_untried_dear_path_gets_forced_calls_only_if_its_prior_could_earn_its_cost() -> None:
    # Net of cost the cheap path is worth 0.80 - 0.005; the dear one pays 0.05 for its call. Judged as perfect
    # (0.95 net) it would get every forced call; judged on a prior at a third, it cannot win and gets none.
    assert forced_dear_share((2.0, 4.0)) == 0.0
    assert forced_dear_share((9.0, 1.0)) > 0.9
