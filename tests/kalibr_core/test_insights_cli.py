"""``kalibr insights`` and ``kalibr policy`` over the default SQLite store (``$KALIBR_DB``)."""

from __future__ import annotations

import json
import random

import pytest
from click.testing import CliRunner

from kalibr._domain import Decision, Outcome, Path, new_trace_id
from kalibr.cli import cli
from kalibr.intelligence.engine import Engine
from kalibr.stores import open_store

GOAL = "summarize"
GOOD = Path("good-model", params={"temperature": 0.2})
FLAKY = Path("flaky-model")


@pytest.fixture
def learned() -> None:
    """300 calls in the default store, alternating paths: the flaky model times out 70% of the time."""
    engine = Engine(open_store(None), write_behind=False, seed=1)
    engine.register_paths(GOAL, [GOOD, FLAKY])
    rng = random.Random(0)
    for i in range(300):
        path = (GOOD, FLAKY)[i % 2]
        decision = Decision(new_trace_id(), GOAL, path, exploration=False, reason="test", confidence=1.0, forced=True)
        engine.record_forced(decision)
        ok = rng.random() < (0.95 if path == GOOD else 0.3)
        engine.report(
            Outcome.build(
                decision,
                success=ok,
                failure_category=None if ok else "timeout",
                cost_usd=0.002 if path == GOOD else 0.001,
                latency_ms=400.0,
            )
        )
    engine.close()


@pytest.mark.usefixtures("learned")
def test_insights_prints_tables() -> None:
    result = CliRunner().invoke(cli, ["insights"])

    assert result.exit_code == 0, result.output
    assert "Goals, last 168 h" in result.output
    assert GOAL in result.output
    assert "good-model[temperature=0.2]" in result.output
    assert "failure_mode_dominant" in result.output
    assert "timeout" in result.output


@pytest.mark.usefixtures("learned")
def test_insights_json_is_the_api_document() -> None:
    result = CliRunner().invoke(cli, ["insights", GOAL, "--json"])

    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["schema_version"] == 1
    [goal] = document["goals"]
    assert goal["goal"] == GOAL
    assert goal["recommendation"]["path_id"] == GOOD.path_id
    assert "failure_mode_dominant" in {s["type"] for s in goal["actionable_signals"]}


@pytest.mark.usefixtures("learned")
def test_policy_prints_the_recommendation_and_alternatives() -> None:
    result = CliRunner().invoke(cli, ["policy", GOAL])

    assert result.exit_code == 0, result.output
    assert "use good-model (temperature=0.2)" in result.output
    assert "Alternatives" in result.output
    assert "flaky-model" in result.output


@pytest.mark.usefixtures("learned")
def test_policy_json_honours_constraints() -> None:
    result = CliRunner().invoke(cli, ["policy", GOAL, "--json", "--min-quality", "0.99"])

    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert (answer["goal"], answer["recommended_path_id"], answer["enough_data"]) == (GOAL, None, True)
    assert "no path meets the constraints" in answer["reasoning"]
    assert {alt["path_id"] for alt in answer["alternatives"]} == {GOOD.path_id, FLAKY.path_id}


def test_policy_without_data_says_so() -> None:
    result = CliRunner().invoke(cli, ["policy", "unknown_goal"])

    assert result.exit_code == 0, result.output
    assert "no recommendation" in result.output
    assert "not enough data" in result.output


def test_bad_input_is_a_clear_error() -> None:
    result = CliRunner().invoke(cli, ["policy", GOAL, "--min-quality", "2"])

    assert result.exit_code == 1
    assert "min_quality" in result.output


def test_insights_and_policy_from_a_service_over_http() -> None:
    import httpx

    from kalibr.service import create_app
    from kalibr.service._server import serve_in_thread
    from kalibr.stores import MemoryStore

    with serve_in_thread(create_app(MemoryStore(), auth=False)) as url:
        for model in ("good-model", "flaky-model"):
            httpx.post(f"{url}/api/v1/routing/paths", json={"goal": GOAL, "model_id": model}).raise_for_status()
        rng = random.Random(1)
        for _ in range(60):
            decision = httpx.post(f"{url}/api/v1/routing/decide", json={"goal": GOAL}).json()
            ok = rng.random() < (0.95 if decision["model_id"] == "good-model" else 0.2)
            report = {"trace_id": decision["trace_id"], "goal": GOAL, "success": ok, "model_id": decision["model_id"]}
            httpx.post(f"{url}/api/v1/intelligence/report-outcome", json=report).raise_for_status()

        insights_run = CliRunner().invoke(cli, ["insights", GOAL, "--url", url, "--json"])
        policy_run = CliRunner().invoke(cli, ["policy", GOAL, "--url", url])

    assert insights_run.exit_code == 0, insights_run.output
    [goal] = json.loads(insights_run.output)["goals"]
    assert goal["sample_count"] == 60
    assert {p["model"] for p in goal["paths"]} == {"good-model", "flaky-model"}
    assert policy_run.exit_code == 0, policy_run.output
    assert "use good-model" in policy_run.output
