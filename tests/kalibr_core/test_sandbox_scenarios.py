"""Scenario behaviour over real HTTP: accuracy, degradation, parameter curves, errors, goals and determinism."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from kalibr._exceptions import UserError
from kalibr.sandbox import Scenario, builtin_scenario, load_scenario, serve
from kalibr.sandbox.tasks import TaskGenerator


def _scenario(**overrides: Any) -> Scenario:
    data: dict[str, Any] = {
        "models": {"a": {}, "b": {}},
        "goals": {"math": {"task": "arithmetic", "accuracy": {"a": 1.0, "b": 0.5}}},
        "default_goal": "math",
        **overrides,
    }
    return Scenario.model_validate(data)


def _run_tasks(scenario: Scenario, models: list[str], *, seed: int = 0, **body: Any) -> list[tuple[str, bool]]:
    """Send one arithmetic task per model in ``models`` order; return (answer, correct) pairs."""
    generator = TaskGenerator(kind="arithmetic", seed=11)
    results = []
    with serve(scenario, seed=seed) as server, httpx.Client(base_url=server.openai_base_url) as client:
        for model in models:
            task = generator.next()
            response = client.post("/chat/completions", json={"model": model, "messages": task.messages, **body})
            answer = response.json()["choices"][0]["message"]["content"]
            results.append((answer, task.check(answer)))
    return results


def test_wrong_answers_are_plausible_numbers() -> None:
    results = _run_tasks(_scenario(), ["b"] * 40)
    wrong = [answer for answer, correct in results if not correct]
    assert 5 < len(wrong) < 35
    assert all(answer.lstrip("-").isdigit() for answer in wrong)


def test_degradation_switches_accuracy_at_from_request() -> None:
    scenario = _scenario(degradations=[{"goal": "math", "model": "a", "from_request": 11, "accuracy": 0.0}])
    correct = [ok for _, ok in _run_tasks(scenario, ["a"] * 20)]
    assert correct == [True] * 10 + [False] * 10


def test_degradation_counts_every_request_to_the_goal_whatever_the_model() -> None:
    scenario = _scenario(degradations=[{"goal": "*", "model": "a", "from_request": 6, "accuracy": 0.0}])
    results = _run_tasks(scenario, ["b"] * 5 + ["a"] * 3)
    assert [ok for _, ok in results[5:]] == [False, False, False]


def test_degradation_can_switch_on_errors() -> None:
    scenario = _scenario(degradations=[{"model": "a", "from_request": 3, "error_rates": {"server_error": 1.0}}])
    with serve(scenario) as server, httpx.Client(base_url=server.openai_base_url) as client:
        body = {"model": "a", "messages": [{"role": "user", "content": "What is 1 + 1?"}]}
        statuses = [client.post("/chat/completions", json=body).status_code for _ in range(4)]
    assert statuses == [200, 200, 500, 500]


def test_accuracy_follows_the_temperature_curve() -> None:
    curve = {"param": "temperature", "points": [[0.0, 0.0], [0.5, 1.0], [1.0, 0.0]]}
    scenario = _scenario(goals={"math": {"task": "arithmetic", "accuracy": {"a": curve}}})
    assert all(ok for _, ok in _run_tasks(scenario, ["a"] * 15, temperature=0.5))
    assert not any(ok for _, ok in _run_tasks(scenario, ["a"] * 15, temperature=0.0))
    assert not any(ok for _, ok in _run_tasks(scenario, ["a"] * 15))  # temperature defaults to 1.0
    halfway = sum(ok for _, ok in _run_tasks(scenario, ["a"] * 60, temperature=0.25))
    assert 15 < halfway < 45


def test_param_curve_builtin_peaks_between_its_declared_points() -> None:
    goal = builtin_scenario("param-curve").goals["solve_arithmetic"]
    curve: Any = goal.accuracy["tuned-model"]
    peak = max((curve.at({"temperature": t / 10}), t / 10) for t in range(16))
    assert peak[1] == 0.5
    assert curve.at({"temperature": 0.2}) < peak[0] > curve.at({"temperature": 0.9})


def test_error_rates_inject_429_and_500_at_their_rates() -> None:
    scenario = _scenario(models={"a": {"error_rates": {"rate_limited": 0.3, "server_error": 0.2}}, "b": {}})
    with serve(scenario, seed=5) as server, httpx.Client(base_url=server.openai_base_url) as client:
        body = {"model": "a", "messages": [{"role": "user", "content": "Hello"}]}
        responses = [client.post("/chat/completions", json=body) for _ in range(300)]
    statuses = Counter(response.status_code for response in responses)
    assert 60 < statuses[429] < 120
    assert 35 < statuses[500] < 85
    assert statuses[200] == 300 - statuses[429] - statuses[500]
    limited = next(response for response in responses if response.status_code == 429)
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert server.request_count(model="a") == 300


def test_timeout_sleeps_past_the_callers_timeout() -> None:
    scenario = _scenario(models={"a": {"error_rates": {"timeout": 1.0}, "timeout_sleep_s": 1.0}, "b": {}})
    with serve(scenario) as server, httpx.Client(base_url=server.openai_base_url, timeout=0.2) as client:
        body = {"model": "a", "messages": [{"role": "user", "content": "Hello"}]}
        with pytest.raises(httpx.ReadTimeout):
            client.post("/chat/completions", json=body)
        assert client.post("/chat/completions", json={**body, "model": "b"}).status_code == 200


def test_same_seed_same_answers_and_models_do_not_perturb_each_other() -> None:
    first = _run_tasks(_scenario(), ["b"] * 30, seed=7)
    interleaved = _run_tasks(_scenario(), ["a", "b"] * 30, seed=7)
    assert first == _run_tasks(_scenario(), ["b"] * 30, seed=7)
    assert [correct for _, correct in first] == [correct for _, correct in interleaved[1::2]]
    assert [correct for _, correct in first] != [correct for _, correct in _run_tasks(_scenario(), ["b"] * 30, seed=8)]


def test_goal_comes_from_the_header_then_match_then_task_kind() -> None:
    scenario = _scenario(
        goals={
            "math": {"task": "arithmetic"},
            "billing": {"task": "chat", "match": "(?i)invoice"},
            "other": {"task": "chat"},
        },
        default_goal="other",
    )
    with serve(scenario) as server, httpx.Client(base_url=server.openai_base_url) as client:

        def send(content: str, **headers: str) -> int:
            body = {"model": "a", "messages": [{"role": "user", "content": content}]}
            return client.post("/chat/completions", json=body, headers=headers).status_code

        assert send("What is 2 + 2?") == 200
        assert send("Where is my invoice?") == 200
        assert send("Hello") == 200
        assert send("Hello", **{"X-Sandbox-Goal": "math"}) == 200
        assert send("Hello", **{"X-Sandbox-Goal": "nope"}) == 400
        counts = {goal: server.request_count(goal=goal) for goal in ("math", "billing", "other")}
    assert counts == {"math": 2, "billing": 1, "other": 1}


def test_default_model_serves_unknown_names_under_their_own_name() -> None:
    with serve(_scenario(default_model="a")) as server, httpx.Client(base_url=server.openai_base_url) as client:
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "What is 5 + 5?"}]}
        answer = client.post("/chat/completions", json=body).json()
        assert answer["model"] == "gpt-4o"
        assert answer["choices"][0]["message"]["content"] == "10"
        assert server.request_count(model="gpt-4o") == 1


def test_demo_scenario_degrades_atlas_on_company_extraction() -> None:
    demo = builtin_scenario("demo")
    assert set(demo.models) == {"swift-mini", "nova-medium", "atlas-large"}
    [degradation] = demo.degradations
    assert (degradation.goal, degradation.model, degradation.from_request) == ("extract_company", "atlas-large", 300)
    assert demo.goals["extract_company"].accuracy["atlas-large"] == 0.95


def test_load_scenario_reads_json_and_toml(tmp_path: Path) -> None:
    json_file = tmp_path / "s.json"
    json_file.write_text('{"models": {"m": {"latency_ms": 1}}, "goals": {"g": {"accuracy": {"m": 0.5}}}}')
    toml_file = tmp_path / "s.toml"
    toml_file.write_text("[models.m]\nlatency_ms = 1\n[goals.g.accuracy]\nm = 0.5\n")
    assert load_scenario(json_file) == load_scenario(toml_file)
    assert load_scenario(json_file).goals["g"].accuracy["m"] == 0.5


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ('{"models": {"m": {"price": {"input_per_mtok": "cheap"}}}}', "models.m.price.input_per_mtok"),
        ('{"models": {"m": {}}, "goals": {"g": {"accuracy": {"x": 0.5}}}}', "unknown model 'x'"),
        ('{"models": {"m": {"error_rates": {"rate_limited": 0.8, "server_error": 0.5}}}}', "add up to 1.300"),
        ('{"models": {"m": {}}, "goals": {"g": {"task": "poetry"}}}', "goals.g.task"),
        ('{"models": {"m": {}}, "degradations": [{"model": "m", "from_request": 0}]}', "from_request"),
        ('{"models": {}}', "models"),
        ("{not json", "not valid JSON"),
    ],
)
def test_bad_scenarios_name_the_bad_field(tmp_path: Path, content: str, fragment: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(UserError, match=r"bad\.json") as caught:
        load_scenario(path)
    assert fragment in str(caught.value)


def test_unknown_builtin_and_bad_suffix_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown builtin scenario 'nope'"):
        builtin_scenario("nope")
    with pytest.raises(UserError, match=r"must end in \.json or \.toml"):
        load_scenario(tmp_path / "scenario.yaml")


def test_usage_reports_the_scenarios_output_tokens_capped_by_max_tokens() -> None:
    scenario = _scenario(models={"a": {"output_tokens": 40}, "b": {}})
    with serve(scenario) as server, httpx.Client(base_url=server.openai_base_url) as client:
        body = {"model": "a", "messages": [{"role": "user", "content": "What is 5 + 5?"}]}
        assert client.post("/chat/completions", json=body).json()["usage"]["completion_tokens"] == 40
        capped = client.post("/chat/completions", json={**body, "max_tokens": 3}).json()
    assert capped["usage"]["completion_tokens"] == 3


def test_concurrent_traffic_to_another_model_leaves_answers_unchanged() -> None:
    from concurrent.futures import ThreadPoolExecutor

    def answers(base_url: str, model: str) -> list[str]:
        generator = TaskGenerator(kind="arithmetic", seed=11)
        with httpx.Client(base_url=base_url) as client:
            return [
                client.post("/chat/completions", json={"model": model, "messages": generator.next().messages}).text
                for _ in range(20)
            ]

    with serve(_scenario(), seed=3) as server:
        alone = [json.loads(text)["choices"][0]["message"]["content"] for text in answers(server.url + "/v1", "b")]
    with serve(_scenario(), seed=3) as server, ThreadPoolExecutor(2) as pool:
        busy = pool.submit(answers, server.openai_base_url, "a")
        mixed = pool.submit(answers, server.openai_base_url, "b")
        assert len(busy.result()) == 20
        assert [json.loads(text)["choices"][0]["message"]["content"] for text in mixed.result()] == alone
