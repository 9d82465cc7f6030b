"""Insights and get_policy over a MemoryStore filled with synthetic outcomes: each signal on its own scenario."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kalibr._domain import Outcome, Path, new_trace_id
from kalibr._exceptions import UserError
from kalibr.insights import analyse_goal, build_insights, recommend
from kalibr.intelligence.base import Constraints
from kalibr.intelligence.engine import Engine
from kalibr.stores import MemoryStore, PathRecord

TENANT = "default"
GOAL = "extract"
NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)
CHEAP = Path("small-model")
SMART = Path("big-model")


def register(store: MemoryStore, *paths: Path, goal: str = GOAL) -> None:
    for path in paths:
        store.register_path(TENANT, PathRecord(goal, path, True, NOW - timedelta(days=30)))


def feed(
    store: MemoryStore,
    path: Path,
    rate: float,
    n: int,
    *,
    goal: str = GOAL,
    seed: int = 0,
    hours_ago: float = 48.0,
    span_hours: float = 24.0,
    failure_category: str | None = None,
    failure_mix: Sequence[tuple[str, float]] = (),
    cost: float | None = None,
    latency: float | None = None,
) -> None:
    """Report ``n`` outcomes of ``path`` succeeding with probability ``rate``, spread evenly over a span."""
    rng = random.Random(seed)
    start = NOW - timedelta(hours=hours_ago)
    items = []
    for i in range(n):
        success = rng.random() < rate
        category = None if success else _category(rng, failure_category, failure_mix)
        at = start + timedelta(hours=span_hours * i / n)
        items.append((outcome(path, success, at, goal=goal, category=category, cost=cost, latency=latency), _same))
    store.apply_outcomes(TENANT, items)


def outcome(
    path: Path,
    success: bool,
    at: datetime,
    *,
    goal: str = GOAL,
    category: str | None = None,
    cost: float | None = None,
    latency: float | None = None,
) -> Outcome:
    return Outcome(
        trace_id=new_trace_id(),
        goal=goal,
        path_id=path.path_id,
        model=path.model,
        score=1.0 if success else 0.0,
        success=success,
        failure_category=category,  # type: ignore[arg-type]
        cost_usd=cost,
        latency_ms=latency,
        reported_at=at,
    )


def _same(arm: Any) -> Any:
    return arm


def _category(rng: random.Random, default: str | None, mix: Sequence[tuple[str, float]]) -> str | None:
    roll = rng.random()
    for category, share in mix:
        if roll < share:
            return category
        roll -= share
    return default


def insights_for(store: MemoryStore, goal: str = GOAL) -> dict[str, Any]:
    document = build_insights(store, TENANT, goal, now=NOW)
    json.dumps(document)  # the service sends it as JSON
    [found] = document["goals"]
    assert isinstance(found, dict)
    return found


def signal_types(goal: dict[str, Any]) -> set[str]:
    return {signal["type"] for signal in goal["actionable_signals"]}


def signals_of(goal: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [signal for signal in goal["actionable_signals"] if signal["type"] == kind]


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


# --- a healthy goal: only goal_healthy fires -------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_healthy_goal_fires_only_goal_healthy(store: MemoryStore, seed: int) -> None:
    register(store, CHEAP, SMART)
    feed(store, CHEAP, 0.95, 300, seed=seed, cost=0.001, latency=200)
    feed(store, SMART, 0.95, 100, seed=seed + 10, cost=0.0012, latency=250)

    goal = insights_for(store)

    assert goal["status"] == "healthy"
    assert signal_types(goal) == {"goal_healthy"}
    assert goal["actionable_signals"][0]["severity"] == "info"
    assert goal["trend"]["direction"] == "stable"


# --- one scenario per signal -----------------------------------------------------------------------------------
def test_path_underperforming_fires_on_a_clearly_worse_busy_path(store: MemoryStore) -> None:
    register(store, CHEAP, SMART)
    feed(store, CHEAP, 0.5, 200, seed=1)
    feed(store, SMART, 0.92, 200, seed=2)

    goal = insights_for(store)

    [signal] = signals_of(goal, "path_underperforming")
    assert signal["data"]["path_id"] == CHEAP.path_id
    assert signal["data"]["best_path_id"] == SMART.path_id
    assert signal["severity"] == "high"  # half the traffic goes to it
    assert "goal_healthy" not in signal_types(goal)


def test_failure_mode_dominant_fires_on_a_path_timing_out_70_percent(store: MemoryStore) -> None:
    register(store, CHEAP, SMART)
    feed(store, CHEAP, 0.3, 200, seed=3, failure_category="timeout")
    feed(store, SMART, 0.95, 200, seed=4, failure_mix=[("malformed_output", 0.5)], failure_category="unknown")

    goal = insights_for(store)

    [signal] = signals_of(goal, "failure_mode_dominant")
    assert signal["data"]["path_id"] == CHEAP.path_id
    assert signal["data"]["failure_category"] == "timeout"
    assert signal["data"]["rate"] == pytest.approx(0.7, abs=0.08)
    assert signal["severity"] == "high"
    assert goal["top_failure_modes"][0]["category"] == "timeout"


def test_failure_mode_dominant_ignores_rare_failures_even_if_all_one_kind(store: MemoryStore) -> None:
    register(store, CHEAP)
    feed(store, CHEAP, 0.95, 300, seed=5, failure_category="timeout")

    assert signals_of(insights_for(store), "failure_mode_dominant") == []


@pytest.mark.parametrize(("high_rate", "significant"), [(0.6, True), (0.9, False)])
def test_param_sensitivity_of_one_model(store: MemoryStore, high_rate: float, significant: bool) -> None:
    low, high = Path("m", params={"temperature": 0.3}), Path("m", params={"temperature": 0.9})
    register(store, low, high)
    feed(store, low, 0.9, 150, seed=6)
    feed(store, high, high_rate, 150, seed=7)

    goal = insights_for(store)

    [effect] = goal["param_sensitivity"]
    assert (effect["param"], effect["significant"]) == ("temperature", significant)
    signals = signals_of(goal, "param_sensitivity_detected")
    if significant:
        assert (effect["best_value"], effect["worst_value"], effect["best_at_boundary"]) == (0.3, 0.9, "lowest")
        assert effect["probability_best_beats_worst"] > 0.99
        assert [signal["severity"] for signal in signals] == ["medium"]
    else:
        assert signals == []


def test_drift_detected_when_a_path_degrades_inside_the_window(store: MemoryStore) -> None:
    register(store, CHEAP)
    feed(store, CHEAP, 0.92, 200, seed=10, hours_ago=72, span_hours=24)
    feed(store, CHEAP, 0.45, 200, seed=11, hours_ago=48, span_hours=24)

    goal = insights_for(store)

    [signal] = signals_of(goal, "drift_detected")
    assert signal["data"]["direction"] == "down"
    assert signal["data"]["before_success_rate"] > 0.85 > 0.55 > signal["data"]["after_success_rate"]
    changed_at = datetime.fromisoformat(signal["data"]["changed_at"])
    assert abs(changed_at - (NOW - timedelta(hours=48))) < timedelta(hours=3)
    assert signal["severity"] == "high"
    assert goal["status"] == "degraded"
    assert goal["trend"]["direction"] == "declining"


def test_cost_inefficiency_when_a_busy_path_costs_far_more_for_the_same_success(store: MemoryStore) -> None:
    register(store, CHEAP, SMART)
    feed(store, CHEAP, 0.93, 100, seed=12, cost=0.001)
    feed(store, SMART, 0.94, 300, seed=13, cost=0.01)

    goal = insights_for(store)

    [signal] = signals_of(goal, "cost_inefficiency")
    assert signal["data"]["path_id"] == SMART.path_id
    assert signal["data"]["cheaper_path_id"] == CHEAP.path_id
    assert signal["data"]["cost_ratio"] == pytest.approx(10.0)
    assert signal["data"]["savings_per_1k_calls_usd"] == pytest.approx(9.0)
    assert signal["severity"] == "medium"


def test_low_confidence_and_insufficient_data_on_a_new_goal(store: MemoryStore) -> None:
    register(store, CHEAP, SMART)
    feed(store, CHEAP, 1.0, 6, seed=14)

    goal = insights_for(store)

    assert goal["status"] == "insufficient_data"
    [signal] = signals_of(goal, "low_confidence")
    assert signal["severity"] == "medium"
    assert signal["data"]["samples"] == 6
    assert goal["recommendation"]["path_id"] is None
    assert "goal_healthy" not in signal_types(goal)


def test_failing_goal_status(store: MemoryStore) -> None:
    register(store, CHEAP)
    feed(store, CHEAP, 0.2, 100, seed=15)

    assert insights_for(store)["status"] == "failing"


# --- the document ----------------------------------------------------------------------------------------------
def test_document_shape_and_cross_goal_summary(store: MemoryStore) -> None:
    register(store, CHEAP, SMART)
    register(store, CHEAP, goal="other")
    feed(store, CHEAP, 0.95, 100, seed=16, cost=0.001, latency=120.0)
    feed(store, SMART, 0.95, 100, seed=17)
    feed(store, CHEAP, 0.2, 50, seed=18, goal="other")

    document = build_insights(store, "default", None, window_hours=168, now=NOW)

    keys = {"schema_version", "tenant_id", "generated_at", "window_hours", "goals", "cross_goal_summary"}
    assert set(document) == keys
    assert [g["goal"] for g in document["goals"]] == ["other", GOAL]  # worst status first
    summary = document["cross_goal_summary"]
    assert summary["goal_count"] == 2
    assert summary["total_samples"] == 250
    assert summary["status_counts"]["failing"] == 1
    assert [row["goal"] for row in summary["needs_attention"]] == ["other"]
    row = next(p for p in document["goals"][1]["paths"] if p["path_id"] == CHEAP.path_id)
    assert row["samples"] == 100
    assert row["traffic_share"] == 0.5
    assert row["ci_low"] < row["success_rate"] < row["ci_high"]
    assert row["mean_cost_usd"] == pytest.approx(0.001)
    assert row["mean_latency_ms"] == 120.0


def test_window_excludes_old_outcomes(store: MemoryStore) -> None:
    register(store, CHEAP)
    feed(store, CHEAP, 0.1, 100, seed=19, hours_ago=400)
    feed(store, CHEAP, 0.95, 100, seed=20, hours_ago=30)

    goal = insights_for(store)

    assert goal["sample_count"] == 100
    assert goal["success_rate"] > 0.85


def test_analyse_goal_is_pure_and_lists_declared_paths_without_outcomes() -> None:
    record = PathRecord(GOAL, SMART, True, NOW)

    goal = analyse_goal(GOAL, [], [record])

    assert goal["status"] == "insufficient_data"
    assert [p["path_id"] for p in goal["paths"]] == [SMART.path_id]
    assert goal["paths"][0]["samples"] == 0


def test_bad_window_is_a_user_error(store: MemoryStore) -> None:
    with pytest.raises(UserError, match="window_hours"):
        build_insights(store, TENANT, GOAL, window_hours=0)
    with pytest.raises(UserError, match="invalid goal"):
        build_insights(store, TENANT, "not a goal!")


# --- get_policy ------------------------------------------------------------------------------------------------
def test_policy_recommends_the_best_path_with_its_evidence(store: MemoryStore) -> None:
    register(store, CHEAP, SMART)
    feed(store, CHEAP, 0.6, 200, seed=21)
    feed(store, SMART, 0.93, 200, seed=22)

    answer = recommend(store, TENANT, GOAL, now=NOW)

    assert answer.enough_data is True
    assert answer.recommended_path_id == SMART.path_id
    assert answer.recommended_model == "big-model"
    assert answer.sample_count == 200
    assert answer.success_rate is not None and answer.success_rate > 0.88
    assert answer.confidence > 0.99
    assert [alt["path_id"] for alt in answer.alternatives] == [CHEAP.path_id]


def test_policy_breaks_ties_by_cost(store: MemoryStore) -> None:
    register(store, CHEAP, SMART)
    feed(store, CHEAP, 0.92, 200, seed=23, cost=0.001)
    feed(store, SMART, 0.94, 200, seed=24, cost=0.01)

    answer = recommend(store, TENANT, GOAL, now=NOW)

    assert answer.recommended_path_id == CHEAP.path_id
    assert "tied" in answer.reasoning


@pytest.mark.parametrize(
    ("constraints", "expected"),
    [
        (Constraints(max_cost_usd=0.005), "cheap"),
        (Constraints(max_latency_ms=500), "cheap"),
        (Constraints(min_quality=0.9), "smart"),
        (Constraints(min_quality=0.99), None),
    ],
)
def test_policy_honours_constraints(store: MemoryStore, constraints: Constraints, expected: str | None) -> None:
    register(store, CHEAP, SMART)
    feed(store, CHEAP, 0.8, 200, seed=25, cost=0.001, latency=300)
    feed(store, SMART, 0.95, 200, seed=26, cost=0.01, latency=900)

    answer = recommend(store, TENANT, GOAL, constraints=constraints, now=NOW)

    want = {"cheap": CHEAP.path_id, "smart": SMART.path_id, None: None}[expected]
    assert answer.recommended_path_id == want
    assert answer.enough_data is True
    if expected is None:
        assert "no path meets the constraints" in answer.reasoning


def test_policy_never_guesses_a_cost_it_does_not_know(store: MemoryStore) -> None:
    register(store, CHEAP)
    feed(store, CHEAP, 0.9, 100, seed=27)  # no cost reported

    answer = recommend(store, TENANT, GOAL, constraints=Constraints(max_cost_usd=1.0), now=NOW)

    assert answer.recommended_path_id is None
    assert "cost unknown" in answer.reasoning


def test_policy_says_not_enough_data_instead_of_guessing(store: MemoryStore) -> None:
    register(store, CHEAP, SMART)
    feed(store, CHEAP, 1.0, 8, seed=28)

    answer = recommend(store, TENANT, GOAL, now=NOW)

    assert (answer.enough_data, answer.recommended_path_id, answer.confidence) == (False, None, 0.0)
    assert answer.reasoning.startswith("low traffic") and "not enough data" in answer.reasoning
    assert answer.sample_count == 8


def test_policy_widens_the_window_for_a_low_traffic_goal(store: MemoryStore) -> None:
    register(store, CHEAP)
    feed(store, CHEAP, 0.9, 40, seed=29, hours_ago=400, span_hours=10)

    answer = recommend(store, TENANT, GOAL, window_hours=168, now=NOW)

    assert answer.window_hours == 672
    assert answer.recommended_path_id == CHEAP.path_id
    assert "looked back 672 h instead of 168 h" in answer.reasoning


def test_policy_skips_disabled_paths_and_min_confidence(store: MemoryStore) -> None:
    register(store, CHEAP, SMART)
    feed(store, CHEAP, 0.8, 200, seed=30)
    feed(store, SMART, 0.95, 200, seed=31)
    store.set_path_enabled(TENANT, SMART.path_id, False)

    answer = recommend(store, TENANT, GOAL, now=NOW)
    assert answer.recommended_path_id == CHEAP.path_id
    assert 0.5 < answer.confidence < 0.99
    strict = recommend(store, TENANT, GOAL, constraints=Constraints(min_confidence=0.99), now=NOW)
    assert strict.recommended_path_id is None
    assert "below min_confidence" in strict.reasoning


def test_policy_rejects_impossible_constraints(store: MemoryStore) -> None:
    with pytest.raises(UserError, match="min_quality"):
        recommend(store, TENANT, GOAL, constraints=Constraints(min_quality=1.5))
    with pytest.raises(UserError, match="max_cost_usd"):
        recommend(store, TENANT, GOAL, constraints=Constraints(max_cost_usd=-1))


def test_engine_serves_policy_and_insights() -> None:
    store = MemoryStore()
    engine = Engine(store, write_behind=False, seed=0)
    paths = [CHEAP, SMART]
    engine.register_paths(GOAL, paths)
    rng = random.Random(32)
    for _ in range(300):
        decision = engine.decide(GOAL, paths)
        rate = 0.95 if decision.path == SMART else 0.5
        engine.report(Outcome.build(decision, success=rng.random() < rate))

    answer = engine.get_policy(GOAL)
    document = engine.get_insights(GOAL)

    assert answer.recommended_path_id == SMART.path_id
    assert document["goals"][0]["recommendation"]["path_id"] == SMART.path_id
    engine.close()


@pytest.mark.slow
def test_sandbox_degradation_schedule_fires_drift_detected() -> None:
    from kalibr import Router
    from kalibr.sandbox import builtin_scenario, serve
    from kalibr.sandbox.tasks import TaskGenerator

    scenario = builtin_scenario("demo")  # atlas-large breaks from the goal's 300th request on
    models = list(scenario.models)
    with serve(scenario, seed=0) as sandbox:
        paths = [{"model": name, "base_url": sandbox.openai_base_url, "api_key": "sandbox"} for name in models]
        tasks = TaskGenerator("extraction", seed=0)
        task = tasks.next()
        router = Router("extract_company", paths, success_when=lambda text: task.check(text), store="memory:")
        for call in range(420):
            # Round-robin traffic: the adaptive router would leave atlas-large after two or three failures,
            # too few outcomes to tell a break from bad luck.
            router.completion(task.messages, force_model=models[call % len(models)])
            task = tasks.next()
        goal = router.intelligence.get_insights("extract_company")["goals"][0]

    drifts = signals_of(goal, "drift_detected")
    atlas = next(p["path_id"] for p in goal["paths"] if p["model"] == "atlas-large")
    assert [(s["data"]["path_id"], s["data"]["direction"]) for s in drifts] == [(atlas, "down")]
    assert drifts[0]["data"]["after_success_rate"] < 0.5 < 0.85 < drifts[0]["data"]["before_success_rate"]
    assert abs(drifts[0]["data"]["before_samples"] - 100) <= 5
    assert goal["status"] == "degraded"


def _report_through_engine(engine: Engine, path: Path, outcomes: Sequence[bool], start: datetime) -> None:
    for i, success in enumerate(outcomes):
        engine.report(outcome(path, success, start + timedelta(minutes=i)))


def test_a_path_the_router_saw_drop_is_judged_on_its_outcomes_since(store: MemoryStore) -> None:
    register(store, CHEAP, SMART)
    engine = Engine(store, write_behind=False)
    rng = random.Random(4)
    start = NOW - timedelta(hours=10)
    _report_through_engine(engine, CHEAP, [rng.random() < 0.8 for _ in range(150)], start)
    _report_through_engine(engine, SMART, [rng.random() < 0.95 for _ in range(200)], start)
    _report_through_engine(engine, SMART, [False] * 6, start + timedelta(hours=5))

    answer = recommend(store, TENANT, GOAL, now=NOW)
    assert answer.recommended_path_id == CHEAP.path_id, answer.reasoning
    assert "'big-model' dropped from 9" in answer.reasoning and "the router detected it at" in answer.reasoning
    smart_row = next(row for row in answer.alternatives if row["path_id"] == SMART.path_id)
    assert smart_row["drift"]["detected_by"] == "router" and smart_row["sample_count"] <= 6

    goal = insights_for(store)
    drifts = signals_of(goal, "drift_detected")
    assert [(s["data"]["path_id"], s["data"]["detected_by"]) for s in drifts] == [(SMART.path_id, "router")]
    advice = [s for s in goal["actionable_signals"] if s["type"] in ("path_underperforming", "cost_inefficiency")]
    assert [s["data"]["path_id"] for s in advice] == []
    rows = {row["path_id"]: row for row in goal["paths"]}
    assert rows[SMART.path_id]["samples"] == 206 and rows[SMART.path_id]["current_success_rate"] < 0.5
    assert rows[SMART.path_id]["status"] == "degraded"
    assert rows[CHEAP.path_id]["status"] == "healthy"
    engine.close()


def test_a_change_only_the_outcomes_show_also_moves_the_recommendation(store: MemoryStore) -> None:
    """No router arm fired (outcomes written by another policy): the insights' own scan finds the drop."""
    register(store, CHEAP, SMART)
    feed(store, CHEAP, 0.8, 150, seed=1)
    feed(store, SMART, 0.95, 200, seed=2, hours_ago=48, span_hours=20)
    feed(store, SMART, 0.1, 30, seed=3, hours_ago=27, span_hours=2)
    answer = recommend(store, TENANT, GOAL, now=NOW)
    assert answer.recommended_path_id == CHEAP.path_id, answer.reasoning
    assert "'big-model' dropped from" in answer.reasoning and "judged on its 3" in answer.reasoning


# --- the figures are what the outcomes say, on every store -------------------------------------------------------
def random_outcomes(seed: int) -> list[Outcome]:
    """Outcomes of three paths (one unregistered) with fractional scores, missing costs and latencies, provider
    failures and several categories, reported out of order with ties, one path breaking halfway."""
    rng = random.Random(seed)
    paths = [CHEAP, SMART, Path("tuned-model", params={"temperature": 0.5})]
    found = []
    for i in range(rng.randrange(200, 600)):
        path = rng.choice(paths)
        broken = path is SMART and i > 250
        score = rng.choice([0.0, 0.0, 0.3, 1.0] if broken else [0.0, 0.85, 1.0, 1.0])
        provider_failed = score == 0.0 and rng.random() < 0.3
        found.append(
            Outcome(
                trace_id=new_trace_id(),
                goal=GOAL,
                path_id=path.path_id,
                model=path.model,
                score=score,
                failure_category=rng.choice([None, "timeout", "hallucination_detected"]) if score < 0.5 else None,
                cost_usd=rng.choice([None, 0.001, 0.004]),
                latency_ms=rng.choice([None, 80.0, 150.5, 1200.0]),
                source="error" if provider_failed else "explicit",
                reported_at=NOW - timedelta(hours=40) + timedelta(seconds=30 * i + rng.randrange(-90, 90) // 30 * 30),
            )
        )
    return found


def expected_paths(records: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """Each path's window figures computed outcome by outcome, as the insights document defines them."""
    per_path: dict[str, list[Any]] = {}
    for record in records:
        per_path.setdefault(record.path_id, []).append(record)
    found = {}
    for path_id, items in per_path.items():
        costs = [r.cost_usd for r in items if r.cost_usd is not None]
        latencies = sorted(r.latency_ms for r in items if r.latency_ms is not None)
        failures: dict[str, int] = {}
        for r in items:
            if r.score < 0.5:
                failures[r.failure_category or "unknown"] = failures.get(r.failure_category or "unknown", 0) + 1
        found[path_id] = {
            "samples": len(items),
            "success_rate": round(sum(r.score for r in items) / len(items), 4),
            "mean_cost_usd": round(sum(costs) / len(costs), 8) if costs else None,
            "mean_latency_ms": round(sum(latencies) / len(latencies), 1) if latencies else None,
            "p95_latency_ms": latencies[min(len(latencies) - 1, -(-95 * len(latencies) // 100) - 1)]
            if latencies
            else None,
            "failure_modes": dict(sorted(failures.items(), key=lambda kv: (-kv[1], kv[0]))),
        }
    return found


@pytest.mark.parametrize("seed", range(4))
def test_insights_figures_are_the_outcomes_figures_on_every_store(seed: int, tmp_path: Any) -> None:
    from kalibr.stores.sqlite import SQLiteStore

    outcomes = random_outcomes(seed)
    documents = []
    for store in (MemoryStore(), SQLiteStore(f"{tmp_path}/kalibr.db")):
        register(store, CHEAP, SMART)  # type: ignore[arg-type]
        store.apply_outcomes(TENANT, [(item, _same) for item in outcomes])
        records = store.outcomes(TENANT, GOAL, NOW - timedelta(hours=168))
        goal = insights_for(store)  # type: ignore[arg-type]
        assert {
            row["path_id"]: {key: row[key] for key in expected_paths(records)[row["path_id"]]}
            for row in goal["paths"]
            if row["samples"]
        } == expected_paths(records)
        half = len(records) // 2
        assert goal["sample_count"] == len(records)
        assert goal["success_rate"] == round(sum(r.score for r in records) / len(records), 4)
        assert goal["trend"]["earlier_success_rate"] == round(sum(r.score for r in records[:half]) / half, 4)
        assert goal["trend"]["recent_success_rate"] == round(
            sum(r.score for r in records[half:]) / (len(records) - half), 4
        )
        documents.append(goal)
        store.close()
    memory, sqlite = documents
    assert memory == sqlite
    assert {row["path_id"] for row in memory["paths"] if row["drift"]} <= {SMART.path_id}
