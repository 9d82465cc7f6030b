"""Prompt-aware routing: the features, the prompt clusters, and the replay with --prompts / --merge-goals."""

from __future__ import annotations

import copy
import csv
import math
import socket
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import kalibr
from kalibr._exceptions import UserError
from kalibr.cli.replay import replay as replay_command
from kalibr.context import SentenceEmbedding, auto_featurizer, lexical_features, prompt_text
from kalibr.intelligence.engine import Engine
from kalibr.policies import ArmState, PolicyConfig, default_policy
from kalibr.policies.contextual import PromptClusters, PromptHandle
from kalibr.replay import (
    ReplayOptions,
    load_prompts,
    load_table,
    merge_goals,
    prompt_lift,
    replay,
    to_json,
    with_features,
)
from kalibr.stores.memory import MemoryStore

MATHS = "Compute 17 * 23 + 4 = ? Show the arithmetic: {n} + {m}"
CODE = "```python\ndef solve(items):\n    return sorted(items)  # {n} {m}\n```\nFix this function."


def write_tables(directory: Path, *, signal: bool, queries: int = 600, seed: int = 0) -> tuple[Path, Path]:
    """One goal mixing maths and code prompts. With ``signal``, model ``a`` solves the maths and ``b`` the code;
    without, both solve either kind at the same rates (``a`` slightly better), so the prompt says nothing."""
    rng = np.random.default_rng(seed)
    table, prompts = directory / "outcomes.csv", directory / "prompts.csv"
    with table.open("w", newline="") as t, prompts.open("w", newline="") as p:
        rows, texts = csv.writer(t), csv.writer(p)
        rows.writerow(["query_id", "goal", "model", "score"])
        texts.writerow(["query_id", "prompt"])
        for q in range(queries):
            maths = bool(rng.random() < 0.5)
            rates = ({"a": 0.9, "b": 0.2} if maths else {"a": 0.2, "b": 0.9}) if signal else {"a": 0.6, "b": 0.5}
            for model, rate in rates.items():
                rows.writerow([f"q{q}", "answer", model, float(rng.random() < rate)])
            texts.writerow([f"q{q}", (MATHS if maths else CODE).format(n=q, m=int(rng.integers(100)))])
    return table, prompts


def prompt_replay(directory: Path, *, signal: bool) -> tuple[float, float]:
    table_path, prompts_path = write_tables(directory, signal=signal)
    table = with_features(load_table(table_path), load_prompts(prompts_path), auto_featurizer(embedding=False))
    result = replay(table, ReplayOptions(seeds=3, contenders=("kalibr",), processes=1))
    assert set(result.scores) == {"kalibr", "kalibr+prompts"}
    lift = prompt_lift(result)
    assert lift is not None
    return lift


def test_reading_the_prompt_lifts_a_goal_whose_prompts_decide_the_best_model(tmp_path: Path) -> None:
    lift, spread = prompt_replay(tmp_path, signal=True)
    # Per-goal routing can only pick one model (55% of the best per-kind choice); the prompt tells which.
    assert lift > 15.0, (lift, spread)


def test_reading_the_prompt_loses_nothing_where_it_carries_no_signal(tmp_path: Path) -> None:
    lift, spread = prompt_replay(tmp_path, signal=False)
    assert lift > -1.0, (lift, spread)


def route(
    rates: Callable[[int], tuple[float, ...]], *, steps: int, seed: int, prompts: bool
) -> tuple[list[int], list[int], PromptClusters]:
    """One goal routed by the default policy for ``steps`` requests, each of a kind (0 or 1) whose feature vector
    is noisy; ``rates(kind)`` are the paths' success rates. Returns the kinds, the picks and the clusters."""
    policy, config = default_policy(), PolicyConfig()
    goal_arms = [ArmState(name, model=name) for name in ("a", "b", "c")[: len(rates(0))]]
    clusters = PromptClusters()
    rng, world = np.random.default_rng(seed), np.random.default_rng(1_000 + seed)
    kinds, picks = [], []
    for step in range(steps):
        kind = int(world.random() < 0.5)
        features = np.eye(4)[kind] + 0.3 * world.random(4)
        coin = world.random()
        prompt = clusters.assign(features)
        priors = clusters.priors(prompt, goal_arms, None) if prompts else None
        picked = policy.choose(goal_arms, config=config, rng=rng, now=float(step), priors=priors).index
        score = float(coin < rates(kind)[picked])
        before = goal_arms[picked]
        after = goal_arms[picked] = policy.update(before, score=score, cost_usd=None, latency_ms=None, now=step)
        clusters.learn(prompt, before, after, score)
        kinds.append(kind)
        picks.append(picked)
    return kinds, picks, clusters


def test_a_goal_mixing_two_kinds_of_prompt_learns_the_best_path_of_each() -> None:
    def rates(kind: int) -> tuple[float, ...]:
        return (0.85, 0.35, 0.3) if kind == 0 else (0.35, 0.85, 0.3)

    for seed in range(3):
        kinds, picks, clusters = route(rates, steps=800, seed=seed, prompts=True)
        right = [pick == kind for kind, pick in zip(kinds[-300:], picks[-300:], strict=True)]
        assert sum(right) > 0.85 * len(right), (seed, sum(right))
        assert clusters.pooling < 50.0
        _, plain, _ = route(rates, steps=800, seed=seed, prompts=False)
        plain_right = [pick == kind for kind, pick in zip(kinds[-300:], plain[-300:], strict=True)]
        assert sum(plain_right) < 0.65 * len(plain_right)


def test_a_goal_whose_prompts_carry_no_signal_routes_as_without_prompts() -> None:
    def rates(kind: int) -> tuple[float, ...]:
        return (0.7, 0.55, 0.4)

    identical, rewarded = 0, {True: 0, False: 0}
    for seed in range(6):
        _, with_prompts, _ = route(rates, steps=400, seed=seed, prompts=True)
        _, without, _ = route(rates, steps=400, seed=seed, prompts=False)
        identical += with_prompts == without
        for prompts, picks in ((True, with_prompts), (False, without)):
            rewarded[prompts] += sum(pick == 0 for pick in picks)
    # Pooling stays full while the spread between clusters is chance: the same picks, draw for draw.
    assert identical >= 5, identical
    assert rewarded[True] >= rewarded[False] - 60, rewarded


def test_a_path_that_breaks_is_left_in_every_cluster() -> None:
    def rates(kind: int) -> tuple[float, ...]:
        return (0.9, 0.6, 0.3) if kind == 0 else (0.9, 0.3, 0.6)

    steps, broken_from = 1_200, 600

    def degrading(kind: int, step: list[int] = [0]) -> tuple[float, ...]:  # noqa: B006 - a step counter
        step[0] += 1
        healthy = rates(kind)
        return (0.0, *healthy[1:]) if step[0] > broken_from else healthy

    kinds, picks, _ = route(degrading, steps=steps, seed=2, prompts=True)
    for kind in (0, 1):
        late = zip(kinds[broken_from + 100 :], picks[broken_from + 100 :], strict=True)
        after = [pick for k, pick in late if k == kind]
        assert sum(pick == 0 for pick in after) < 0.1 * len(after), kind
        assert sum(pick == 1 + kind for pick in after) > 0.6 * len(after), kind


def test_an_engine_decides_a_prompt_as_without_it_until_its_prompts_show_signal() -> None:
    paths = (kalibr.Path("model-a"), kalibr.Path("model-b"), kalibr.Path("model-c"))
    # No re-reads of the store during the test: both engines see only their own outcomes.
    with_prompts, without = (Engine(MemoryStore(), seed=3, write_behind=False, refresh_interval=3_600.0) for _ in "ab")
    world = np.random.default_rng(0)

    def report(engine: Engine, decision: kalibr.Decision, rate: float, coin: float) -> None:
        score = float(coin < rate)
        engine.report(kalibr.Outcome(decision.trace_id, "g", decision.path_id, score, model=decision.model))

    def choice(decision: kalibr.Decision) -> tuple[str, bool, str]:
        return decision.path_id, decision.exploration, decision.reason

    for step in range(400):  # two kinds of prompt, the same rates on both: no signal
        kind, coin = step % 2, world.random()
        prompted = with_prompts.decide_for_prompt("g", paths, np.eye(4)[kind], high_risk=step % 7 == 0)
        plain = without.decide("g", paths, high_risk=step % 7 == 0)
        assert choice(prompted) == choice(plain)
        rate = (0.7, 0.55, 0.4)[paths.index(prompted.path)]
        report(with_prompts, prompted, rate, coin)
        report(without, plain, rate, coin)
    clusters = with_prompts._clusters["g"]
    assert clusters.pooling == math.inf and clusters.clusters == 2
    with_prompts.decide_for_prompt("g", paths, np.eye(4)[0])
    view = with_prompts._views["g"]
    with_prompts.decide_for_prompt("g", paths, np.eye(4)[1])
    assert with_prompts._views["g"] is view  # decide's view serves every prompt: none prepares a choice of its own

    for step in range(2_000):  # now model-a serves kind 0 and model-b kind 1
        kind = step % 2
        decision = with_prompts.decide_for_prompt("g", paths, np.eye(4)[kind])
        report(with_prompts, decision, 0.9 if paths.index(decision.path) == kind else 0.1, world.random())
        if clusters.pooling < math.inf and step > 200:
            break
    assert clusters.pooling < math.inf
    views = {}
    for kind in (0, 1):
        decision = with_prompts.decide_for_prompt("g", paths, np.eye(4)[kind])
        views[kind] = with_prompts._cluster_of[decision.trace_id][1].means
    assert views[0][paths[0].path_id] > views[0][paths[1].path_id]
    assert views[1][paths[1].path_id] > views[1][paths[0].path_id]


def test_a_clusters_view_is_kept_between_outcomes_and_dropped_by_each() -> None:
    """Between two outcomes every prompt of a cluster reads the same pooled view (only its correction is its own);
    an outcome, or other goal states, must give the priors a fresh computation would."""
    _, _, clusters = route(lambda kind: (0.85, 0.35, 0.3) if kind == 0 else (0.35, 0.85, 0.3), steps=800, seed=0,
                           prompts=True)  # fmt: skip
    assert clusters.pooling < math.inf
    goal_arms = [ArmState("a", successes=300, failures=100), ArmState("b", successes=200, failures=200),
                 ArmState("c", successes=20, failures=60)]  # fmt: skip
    first, second = clusters.assign(np.array([1.0, 0.1, 0.2, 0.0])), clusters.assign(np.array([1.0, 0.1, 0.2, 0.02]))
    assert first.cluster == second.cluster

    def fresh(prompt: PromptHandle, arms: list[ArmState]) -> object:
        computed = copy.deepcopy(clusters)
        computed._views.clear()  # what an outcome does: the priors computed afresh
        return computed.priors(copy.deepcopy(prompt), arms, None)

    clusters.priors(first, goal_arms, None)
    assert clusters.priors(second, goal_arms, None) == fresh(second, goal_arms)
    before = goal_arms[1]
    after = goal_arms[1] = default_policy().update(before, score=1.0, cost_usd=None, latency_ms=None, now=900.0)
    clusters.learn(first, before, after, 1.0)  # the list changes in place: only the outcome says so
    assert clusters.priors(second, goal_arms, None) == fresh(second, goal_arms)
    other_states = [*goal_arms[:2], ArmState("c", successes=70, failures=10)]
    assert clusters.priors(second, other_states, None) == fresh(second, other_states)


def test_clusters_are_seeded_by_distinct_prompts_and_keep_them_apart() -> None:
    clusters = PromptClusters(max_clusters=2)
    maths, code = np.array([1.0, 0.1, 0.0]), np.array([0.0, 0.1, 1.0])
    assert clusters.assign(maths).cluster == 0
    assert clusters.assign(maths * 2.0).cluster == 0  # the same direction is the same prompt
    assert clusters.assign(code).cluster == 1
    assert clusters.assign(maths + 0.05).cluster == 0
    assert clusters.assign(code + 0.05).cluster == 1
    assert clusters.assign(np.array([0.0, 1.0, 0.0])).cluster in (0, 1)
    assert clusters.clusters == 2


def test_features_of_another_length_are_refused() -> None:
    clusters = PromptClusters()
    clusters.assign(np.ones(3))
    with pytest.raises(UserError, match="one length"):
        clusters.assign(np.ones(4))
    with pytest.raises(UserError, match="NaN"):
        clusters.assign(np.array([np.nan, 1.0, 0.0]))


def test_lexical_features_tell_code_from_maths_from_multiple_choice() -> None:
    code = lexical_features(CODE.format(n=1, m=2))
    maths = lexical_features("What is 3/4 + 5^2 - 7 = ? Give 12.5 or 13.75")
    choice = lexical_features("Which is a mammal?\nA. shark\nB. whale\nC. trout\nD. eel")
    assert code.shape == maths.shape == (12,)
    assert code[2] > maths[2] and code[2] > choice[2]  # code markers
    assert maths[3] > code[3] and maths[5] > choice[5]  # maths symbols, digits
    assert choice[4] > code[4] and choice[4] > maths[4]  # lettered options
    assert prompt_text([{"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"text": "Hi"}]}]) == (
        "Be brief.\nHi"
    )


def test_sentence_embedding_loads_from_the_wheel_without_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    SentenceEmbedding._shared.clear()
    model = SentenceEmbedding()
    sums = model.embed("Add these two numbers and give the sum: 12 and 30")
    totals = model.embed("What is the total of 45 plus 17?")
    poem = model.embed("Write a short poem about autumn leaves falling in the forest")
    assert sums.shape == (256,) and float(np.linalg.norm(sums)) == pytest.approx(1.0, abs=1e-4)
    assert float(sums @ totals) > float(sums @ poem)
    vector = auto_featurizer()([{"role": "user", "content": "What is 2 + 2?"}])
    assert vector.shape == (256 + 12,)


def test_merge_goals_needs_the_same_models_everywhere(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("query_id,goal,model,score\nq1,g1,a,1\nq1,g1,b,0\nq2,g2,a,1\nq2,g2,c,0\n")
    with pytest.raises(UserError, match="same models"):
        merge_goals(load_table(path))


def test_a_query_without_a_prompt_is_named(tmp_path: Path) -> None:
    table_path, prompts_path = write_tables(tmp_path, signal=True, queries=5)
    prompts = load_prompts(prompts_path)
    del prompts["q3"]
    with pytest.raises(UserError, match="'q3'"):
        with_features(load_table(table_path), prompts, auto_featurizer(embedding=False))


def test_cli_replays_with_prompts_and_merged_goals(tmp_path: Path) -> None:
    table_path, prompts_path = write_tables(tmp_path, signal=True, queries=300)
    runner = CliRunner()
    args = [str(table_path), "--prompts", str(prompts_path), "--lexical-only", "--seeds", "2", "--processes", "1"]
    result = runner.invoke(replay_command, [*args, "--merge-goals"])
    assert result.exit_code == 0, result.output
    assert "kalibr+prompts" in result.output
    assert "Prompt-aware lift: +" in result.output
    as_json = runner.invoke(replay_command, [*args, "--json"])
    assert as_json.exit_code == 0, as_json.output
    lift = to_json_lift(as_json.output)
    assert lift > 10.0


def to_json_lift(output: str) -> float:
    import json

    start = output.index("{")
    return float(json.loads(output[start:])["prompt_lift_points"][0])


def test_cli_names_a_missing_prompt_table(tmp_path: Path) -> None:
    table_path, _ = write_tables(tmp_path, signal=True, queries=5)
    result = CliRunner().invoke(replay_command, [str(table_path), "--prompts", str(tmp_path / "nope.csv")])
    assert result.exit_code != 0
    assert "no prompt table" in result.output


def test_to_json_has_no_lift_without_prompts(tmp_path: Path) -> None:
    table_path, _ = write_tables(tmp_path, signal=True, queries=50)
    result = replay(load_table(table_path), ReplayOptions(seeds=1, contenders=("kalibr",), processes=1))
    assert to_json(result)["prompt_lift_points"] is None


def test_router_with_context_learns_which_path_serves_which_kind_of_prompt(tmp_path: Path) -> None:
    from kalibr import Router

    def kind(messages: object) -> np.ndarray:
        text = prompt_text(messages)  # type: ignore[arg-type]
        return np.array([1.0, 0.0]) if "maths" in text else np.array([0.0, 1.0])

    outcome = np.random.default_rng(4)
    routers = {
        context: Router("mixed", ["model-a", "model-b"], store="memory:", context=context) for context in (kind, None)
    }
    right = {context: [] for context in routers}
    for step in range(1_200):
        maths = bool(outcome.random() < 0.5)
        messages = [{"role": "user", "content": f"{'maths' if maths else 'code'} question {step}"}]
        for context, router in routers.items():
            decision = router.decide(messages=messages)
            correct = (decision.model == "model-a") == maths
            right[context].append(correct)
            router.report(success=bool(correct and outcome.random() < 0.9), trace_id=decision.trace_id)
    with_prompt, without = np.mean(right[kind][-300:]), np.mean(right[None][-300:])
    assert with_prompt > 0.8, with_prompt
    assert without < 0.65, without


def test_router_refuses_an_unknown_context() -> None:
    from kalibr import Router

    with pytest.raises(UserError, match="'maybe'"):
        Router("mixed", ["model-a", "model-b"], store="memory:", context="maybe")  # type: ignore[arg-type]
