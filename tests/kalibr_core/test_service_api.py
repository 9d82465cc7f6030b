"""The service's HTTP contract: routes, bad input, keys and tenant isolation."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from tests.hooked_store import HookedStore

from kalibr import Path
from kalibr._domain import new_trace_id
from kalibr._exceptions import MissingExtraError, StoreError
from kalibr.service import create_app, hash_api_key, new_api_key
from kalibr.service._server import serve_in_thread
from kalibr.stores import MemoryStore

GOAL = "extract_company"


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app(MemoryStore(), auth=False)) as test_client:
        yield test_client


def _register(client: TestClient, *models: str, goal: str = GOAL, headers: dict[str, str] | None = None) -> None:
    for model in models:
        response = client.post("/api/v1/routing/paths", json={"goal": goal, "model_id": model}, headers=headers)
        assert response.status_code == 200, response.text


def test_paths_decide_report_update_round_trip(client: TestClient) -> None:
    _register(client, "gpt-4o", "claude-sonnet-4-5")
    decision = client.post("/api/v1/routing/decide", json={"goal": GOAL, "task_risk_level": "low"}).json()
    assert len(decision["trace_id"]) == 32
    assert int(decision["trace_id"], 16) >= 0  # the official SDK parses it so
    assert decision["model_id"] in {"gpt-4o", "claude-sonnet-4-5"}
    assert decision["alternatives_considered"] == 2
    body = {"trace_id": decision["trace_id"], "goal": GOAL, "success": False, "failure_category": "timeout"}
    assert client.post("/api/v1/intelligence/report-outcome", json=body).json() == {
        "status": "accepted",
        "trace_id": decision["trace_id"],
        "goal": GOAL,
    }
    update = {"trace_id": decision["trace_id"], "goal": GOAL, "success": True}
    updated = client.post("/api/v1/intelligence/update-outcome", json=update).json()
    assert updated["status"] == "updated"
    assert set(updated["fields_updated"]) == {"success", "score"}


def _stored_outcomes(store: MemoryStore) -> dict[str, Any]:
    return {o.trace_id: o for o in store.outcomes("default", GOAL, _long_ago())}


def test_a_report_is_in_the_store_when_it_is_answered(client: TestClient) -> None:
    _register(client, "gpt-4o", "claude-sonnet-4-5")
    store = client.app.state.backend.store  # type: ignore[attr-defined]
    for _ in range(20):
        decision = client.post("/api/v1/routing/decide", json={"goal": GOAL}).json()
        body = {"trace_id": decision["trace_id"], "goal": GOAL, "success": True}
        assert client.post("/api/v1/intelligence/report-outcome", json=body).status_code == 200
        assert decision["trace_id"] in _stored_outcomes(store)  # committed, not merely queued


def test_a_second_report_of_a_trace_corrects_the_first_and_counts_once(client: TestClient) -> None:
    _register(client, "gpt-4o")
    store = client.app.state.backend.store  # type: ignore[attr-defined]
    decision = client.post("/api/v1/routing/decide", json={"goal": GOAL}).json()
    for success in (False, True):
        body = {"trace_id": decision["trace_id"], "goal": GOAL, "success": success}
        assert client.post("/api/v1/intelligence/report-outcome", json=body).status_code == 200
    assert _stored_outcomes(store)[decision["trace_id"]].score == 1.0
    (arm,) = store.load_arms("default", GOAL, [Path("gpt-4o")])
    assert (arm.successes, arm.failures) == (1.0, 0.0)


def test_a_report_the_store_refuses_is_a_503_and_its_retry_counts_once() -> None:
    broken = False

    def fail_if_broken() -> None:
        if broken:
            raise StoreError("connection refused")

    store = HookedStore(fail_if_broken)
    with TestClient(create_app(store, auth=False)) as client:
        _register(client, "gpt-4o")
        decision = client.post("/api/v1/routing/decide", json={"goal": GOAL}).json()
        body = {"trace_id": decision["trace_id"], "goal": GOAL, "success": True}
        broken = True
        refused = client.post("/api/v1/intelligence/report-outcome", json=body)
        assert refused.status_code == 503
        assert refused.json() == {"detail": "the store is unavailable; retry later", "error": "store_unavailable"}
        broken = False
        assert client.post("/api/v1/intelligence/report-outcome", json=body).status_code == 200  # a client's retry
    assert list(_stored_outcomes(store)) == [decision["trace_id"]]
    (arm,) = store.load_arms("default", GOAL, [Path("gpt-4o")])
    assert (arm.successes, arm.failures) == (1.0, 0.0)


def test_a_high_risk_task_does_not_explore_unless_the_config_allows_it(client: TestClient) -> None:
    _register(client, "gpt-4o", "claude-sonnet-4-5")
    for success in [True] * 8 + [False] * 2:
        body = {"trace_id": new_trace_id(), "goal": GOAL, "model_id": "gpt-4o", "success": success}
        assert client.post("/api/v1/intelligence/report-outcome", json=body).status_code == 200
    config = {"goal": GOAL, "exploration_rate": 1.0, "min_samples_before_exploit": 20}
    assert client.post("/api/v1/routing/config", json=config).status_code == 200

    def models(risk: str) -> set[str]:
        decide = {"goal": GOAL, "task_risk_level": risk}
        return {client.post("/api/v1/routing/decide", json=decide).json()["model_id"] for _ in range(40)}

    assert models("high") == {"gpt-4o"}
    assert models("low") == {"gpt-4o", "claude-sonnet-4-5"}  # the untried path gets the exploration floor
    assert client.post("/api/v1/routing/config", json={**config, "exploration_on_high_risk": True}).status_code == 200
    assert models("high") == {"gpt-4o", "claude-sonnet-4-5"}


def test_a_goal_takes_a_budget_per_1k_calls_and_refuses_two_cost_settings(client: TestClient) -> None:
    config = {"goal": GOAL, "budget_per_1k_calls_usd": 2.5}
    assert client.post("/api/v1/routing/config", json=config).json()["budget_per_1k_calls_usd"] == 2.5
    assert client.get("/api/v1/routing/config", params={"goal": GOAL}).json()["budget_per_1k_calls_usd"] == 2.5
    both = client.post("/api/v1/routing/config", json={**config, "quality_tolerance": 0.01})
    assert both.status_code == 422
    assert "choose one way to trade quality for cost" in both.text


async def test_a_cancelled_report_does_not_cancel_the_reports_sharing_its_commit() -> None:
    from kalibr.service import _schemas as schemas
    from kalibr.service._backend import Backend, default_engine_factory

    store = HookedStore(lambda: time.sleep(0.2))  # a commit in progress while the requests wait
    backend = Backend(store, default_engine_factory(0.2))
    backend.register_path("default", schemas.PathRequest(goal=GOAL, model_id="gpt-4o"))
    reports = []
    for _ in range(2):
        decision = backend.decide("default", schemas.DecideRequest(goal=GOAL))
        reports.append(schemas.ReportRequest(trace_id=decision.trace_id, goal=GOAL, success=True))
    cancelled, kept = (asyncio.create_task(backend.report("default", report)) for report in reports)
    await asyncio.sleep(0.05)
    cancelled.cancel()
    assert (await kept).status == "accepted"
    assert cancelled.cancelled()
    backend.close()
    assert set(_stored_outcomes(store)) == {report.trace_id for report in reports}  # both were committed


def test_decide_honours_candidate_model_ids_and_disabled_paths(client: TestClient) -> None:
    _register(client, "gpt-4o", "claude-sonnet-4-5", "gemini-2.5-pro")
    paths = client.get("/api/v1/routing/paths", params={"goal": GOAL}).json()["paths"]
    gemini = next(p for p in paths if p["model_id"] == "gemini-2.5-pro")
    assert client.delete(f"/api/v1/routing/paths/{gemini['path_id']}").json() == {
        "status": "disabled",
        "path_id": gemini["path_id"],
    }
    chosen = {
        client.post("/api/v1/routing/decide", json={"goal": GOAL, "candidate_model_ids": ["gpt-4o"]}).json()["model_id"]
        for _ in range(10)
    }
    assert chosen == {"gpt-4o"}
    listed = client.get("/api/v1/routing/paths", params={"goal": GOAL, "include_disabled": "true"}).json()["paths"]
    assert {p["model_id"]: p["enabled"] for p in listed}["gemini-2.5-pro"] is False
    refused = client.post("/api/v1/routing/decide", json={"goal": GOAL, "candidate_model_ids": ["gemini-2.5-pro"]})
    assert refused.status_code == 404
    assert "candidate_model_ids" in refused.json()["detail"]


def test_report_with_unknown_trace_counts_for_the_named_model(client: TestClient) -> None:
    _register(client, "gpt-4o", "claude-sonnet-4-5")
    trace = "ab" * 16
    body = {"trace_id": trace, "goal": GOAL, "success": True, "model_id": "claude-sonnet-4-5"}
    assert client.post("/api/v1/intelligence/report-outcome", json=body).status_code == 200
    again = client.post("/api/v1/intelligence/report-outcome", json=body)
    assert again.json()["status"] == "accepted"  # a replayed duplicate is accepted...
    store = client.app.state.backend.store  # type: ignore[attr-defined]
    outcomes = store.outcomes("default", GOAL, since=_long_ago())
    assert [(o.trace_id, o.model) for o in outcomes] == [(trace, "claude-sonnet-4-5")]  # ...and counted once


def test_decide_with_extension_paths_registers_them(client: TestClient) -> None:
    body = {"goal": GOAL, "paths": [{"model_id": "gpt-4o"}, {"model_id": "gpt-4o", "params": {"temperature": 0}}]}
    decision = client.post("/api/v1/routing/decide", json=body).json()
    assert decision["alternatives_considered"] == 2
    listed = client.get("/api/v1/routing/paths", params={"goal": GOAL}).json()["paths"]
    assert sorted(str(p["params"]) for p in listed) == ["{'temperature': 0}", "{}"]


def test_decide_with_count_returns_that_many_distinct_decisions_each_reported_once(client: TestClient) -> None:
    _register(client, "gpt-4o", "claude-sonnet-4-5")
    store = client.app.state.backend.store  # type: ignore[attr-defined]
    answer = client.post("/api/v1/routing/decide", json={"goal": GOAL, "count": 5}).json()
    draws = [answer, *answer["more"]]
    trace_ids = [draw["trace_id"] for draw in draws]
    assert len(set(trace_ids)) == 5
    assert all(draw["model_id"] in {"gpt-4o", "claude-sonnet-4-5"} and draw["goal"] == GOAL for draw in draws)
    for draw in draws:  # each is a decision of its own: its report counts for its own model
        body = {"trace_id": draw["trace_id"], "goal": GOAL, "success": True}
        assert client.post("/api/v1/intelligence/report-outcome", json=body).status_code == 200
    assert set(_stored_outcomes(store)) == set(trace_ids)
    arms = store.load_arms("default", GOAL, [Path("gpt-4o"), Path("claude-sonnet-4-5")])
    assert sum(arm.successes for arm in arms) == 5
    single = client.post("/api/v1/routing/decide", json={"goal": GOAL}).json()
    assert single["more"] == []


def test_config_round_trip(client: TestClient) -> None:
    body = {"goal": GOAL, "exploration_rate": 0.0, "min_samples_before_exploit": 5}
    assert client.post("/api/v1/routing/config", json=body).json()["exploration_rate"] == 0.0
    config = client.get("/api/v1/routing/config", params={"goal": GOAL}).json()
    assert (config["exploration_rate"], config["min_samples_before_exploit"], config["staleness_days"]) == (0.0, 5, 7.0)
    assert client.get("/api/v1/routing/config").json()["exploration_rate"] == 0.1  # "*" untouched


def test_health_readiness_and_openapi(client: TestClient) -> None:
    assert client.get("/api/v1/intelligence/health").json() == {"status": "healthy"}
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    spec = client.get("/openapi.json").json()
    assert {"/api/v1/routing/decide", "/api/v1/intelligence/report-outcome", "/api/v1/intelligence/insights"} <= set(
        spec["paths"]
    )


_TRACE = "cd" * 16
REPORT = "/api/v1/intelligence/report-outcome"
BAD_INPUT: list[tuple[str, str, Any, int, str]] = [
    ("POST", "/api/v1/routing/decide", {}, 422, "goal"),
    ("POST", "/api/v1/routing/decide", {"goal": 42}, 422, "goal"),
    ("POST", "/api/v1/routing/decide", {"goal": "has spaces"}, 422, "goal"),
    ("POST", "/api/v1/routing/decide", {"goal": GOAL, "task_risk_level": "extreme"}, 422, "task_risk_level"),
    ("POST", "/api/v1/routing/decide", {"goal": "no_paths_here"}, 404, "no_paths_here"),
    ("POST", "/api/v1/routing/decide", {"goal": GOAL, "candidate_model_ids": "gpt-4o"}, 422, "candidate_model_ids"),
    ("POST", "/api/v1/routing/paths", {"goal": GOAL}, 422, "model_id"),
    ("POST", "/api/v1/routing/paths", {"goal": GOAL, "model_id": "m", "params": [1]}, 422, "params"),
    ("POST", REPORT, {"goal": GOAL, "success": True}, 422, "trace_id"),
    ("POST", REPORT, {"goal": GOAL, "trace_id": _TRACE}, 422, "success"),
    (
        "POST",
        REPORT,
        {"goal": GOAL, "trace_id": _TRACE, "success": "yes"},
        422,
        "success",
    ),
    (
        "POST",
        REPORT,
        {"goal": GOAL, "trace_id": _TRACE, "success": False, "failure_category": "cosmic_rays"},
        422,
        "failure_category",
    ),
    (
        "POST",
        REPORT,
        {"goal": GOAL, "trace_id": _TRACE, "success": True, "score": 1.5},
        422,
        "score",
    ),
    (
        "POST",
        REPORT,
        {"goal": GOAL, "trace_id": _TRACE, "success": True},
        404,
        "trace_id",
    ),
    (
        "POST",
        REPORT,
        {"goal": GOAL, "trace_id": _TRACE, "success": True, "model_id": "unregistered-model"},
        404,
        "unregistered-model",
    ),
    ("POST", "/api/v1/intelligence/update-outcome", {"goal": GOAL, "trace_id": _TRACE, "score": 0.5}, 404, "trace_id"),
    ("POST", "/api/v1/intelligence/update-outcome", {"goal": GOAL, "trace_id": 7}, 422, "trace_id"),
    ("POST", "/api/v1/intelligence/policy", {"goal": GOAL, "window_hours": -1}, 422, "window_hours"),
    ("POST", "/api/v1/intelligence/policy", {"goal": GOAL, "constraints": {"min_quality": 2}}, 422, "min_quality"),
    ("POST", "/api/v1/routing/config", {"goal": GOAL, "exploration_rate": 3}, 422, "exploration_rate"),
    ("GET", "/api/v1/intelligence/insights?window_hours=soon", None, 422, "window_hours"),
    ("DELETE", "/api/v1/routing/paths/path_0000000000000000", None, 404, "path_0000000000000000"),
    ("POST", "/api/v1/intelligence/report-outcomes", {"outcomes": []}, 422, "outcomes"),
    ("POST", "/api/v1/routing/decide", {"goal": GOAL, "count": 65}, 422, "count"),
    ("POST", "/api/v1/routing/decide", {"goal": GOAL, "count": 0}, 422, "count"),
]


@pytest.mark.parametrize(("method", "url", "body", "status", "named"), BAD_INPUT)
def test_bad_input_gets_a_4xx_naming_the_problem(
    client: TestClient, method: str, url: str, body: Any, status: int, named: str
) -> None:
    _register(client, "gpt-4o")
    response = client.request(method, url, json=body)
    assert response.status_code == status, response.text
    assert named in response.json()["detail"]


@pytest.mark.parametrize("raw", [b"{not json", b"[]", b'"a string"', b"null"])
def test_malformed_json_is_a_422(client: TestClient, raw: bytes) -> None:
    response = client.post(
        "/api/v1/intelligence/report-outcome", content=raw, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"


def test_ten_megabyte_body_is_refused_with_413(client: TestClient) -> None:
    response = client.post("/api/v1/intelligence/report-outcome", content=b" " * 10_000_000)
    assert response.status_code == 413
    assert "larger than" in response.json()["detail"]


def test_chunked_oversized_body_is_refused_with_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b" " * 100_000

    response = client.post("/api/v1/intelligence/report-outcome", content=chunks())
    assert response.status_code == 413


def test_a_bug_is_a_logged_500_with_a_json_body(caplog: pytest.LogCaptureFixture) -> None:
    class BrokenStore(MemoryStore):
        def list_paths(self, *args: Any, **kwargs: Any) -> Any:
            raise ZeroDivisionError("boom")

    with TestClient(create_app(BrokenStore(), auth=False), raise_server_exceptions=False) as broken:
        response = broken.post("/api/v1/routing/decide", json={"goal": GOAL})
    assert response.status_code == 500
    assert response.json()["error"] == "internal"
    assert "boom" not in response.text
    assert any("unexpected error" in record.message for record in caplog.records)


# --- keys and tenants ------------------------------------------------------------------------------------


def _keyed_store() -> tuple[MemoryStore, dict[str, dict[str, str]]]:
    store = MemoryStore()
    headers = {}
    for tenant in ("acme", "globex"):
        key = new_api_key()
        store.add_api_key(tenant, hash_api_key(key))
        headers[tenant] = {"X-API-Key": key, "X-Tenant-ID": tenant}
    return store, headers


def test_keys_are_required_and_checked() -> None:
    store, headers = _keyed_store()
    with TestClient(create_app(store)) as client:
        assert client.post("/api/v1/routing/decide", json={"goal": GOAL}).status_code == 401
        wrong = {"X-API-Key": new_api_key(), "X-Tenant-ID": "acme"}
        response = client.post("/api/v1/routing/decide", json={"goal": GOAL}, headers=wrong)
        assert response.status_code == 401
        assert "API key" in response.json()["detail"]
        spoofed = {"X-API-Key": headers["acme"]["X-API-Key"], "X-Tenant-ID": "globex"}
        response = client.post("/api/v1/routing/paths", json={"goal": GOAL, "model_id": "m"}, headers=spoofed)
        assert response.status_code == 403
        assert client.get("/api/v1/intelligence/health").status_code == 200  # health needs no key


def test_tenants_never_see_or_change_each_others_data() -> None:
    store, headers = _keyed_store()
    acme, globex = headers["acme"], headers["globex"]
    with TestClient(create_app(store)) as client:
        _register(client, "gpt-4o", headers=acme)
        decision = client.post("/api/v1/routing/decide", json={"goal": GOAL}, headers=acme).json()
        report = {"trace_id": decision["trace_id"], "goal": GOAL, "success": True}
        assert client.post("/api/v1/intelligence/report-outcome", json=report, headers=acme).status_code == 200

        assert client.get("/api/v1/routing/paths", headers=globex).json() == {"paths": []}
        assert client.post("/api/v1/routing/decide", json={"goal": GOAL}, headers=globex).status_code == 404
        path_id = decision["path_id"]
        assert client.delete(f"/api/v1/routing/paths/{path_id}", headers=globex).status_code == 404
        update = {"trace_id": decision["trace_id"], "goal": GOAL, "success": False}
        assert client.post("/api/v1/intelligence/update-outcome", json=update, headers=globex).status_code == 404
        stolen = {**report, "model_id": "gpt-4o"}
        assert client.post("/api/v1/intelligence/report-outcome", json=stolen, headers=globex).status_code == 404

        mine = client.get("/api/v1/routing/paths", params={"goal": GOAL}, headers=acme).json()["paths"]
        assert [(p["path_id"], p["enabled"]) for p in mine] == [(path_id, True)]
        acme_outcomes = store.outcomes("acme", GOAL, since=_long_ago())
        assert [(o.trace_id, o.score) for o in acme_outcomes] == [(decision["trace_id"], 1.0)]
        assert store.outcomes("globex", None, since=_long_ago()) == []


def test_served_over_real_http_on_loopback() -> None:
    with serve_in_thread(create_app(MemoryStore(), auth=False)) as url:
        response = httpx.post(f"{url}/api/v1/routing/paths", json={"goal": GOAL, "model_id": "gpt-4o"})
        assert response.status_code == 200
        decision = httpx.post(f"{url}/api/v1/routing/decide", json={"goal": GOAL}).json()
        assert decision["model_id"] == "gpt-4o"


def _long_ago() -> Any:
    from datetime import UTC, datetime

    return datetime(2000, 1, 1, tzinfo=UTC)


def test_readiness_fails_when_the_store_does_not_answer() -> None:
    class DeadStore(MemoryStore):
        def tenant_for_key(self, key_hash: str) -> str | None:
            raise StoreError("connection refused")

    with TestClient(create_app(DeadStore(), auth=False)) as client:
        assert client.get("/healthz").status_code == 200
        response = client.get("/readyz")
    assert response.status_code == 503
    assert "connection refused" not in response.text  # a driver's message can hold the store URL: log only


def test_missing_server_extra_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fastapi", None)
    monkeypatch.delitem(sys.modules, "kalibr.service.app", raising=False)
    with pytest.raises(MissingExtraError, match=r"kalibr-core\[server\]"):
        create_app(MemoryStore())


def test_batch_report_accepts_and_rejects_each_item_and_counts_duplicates_once(client: TestClient) -> None:
    _register(client, "gpt-4o")
    good = {"trace_id": "ef" * 16, "goal": GOAL, "success": True, "model_id": "gpt-4o"}
    orphan = {"trace_id": "01" * 16, "goal": GOAL, "success": True}
    body = {"outcomes": [good, orphan, good]}
    results = client.post("/api/v1/intelligence/report-outcomes", json=body).json()["results"]
    assert [(r["status"], r["status_code"]) for r in results] == [
        ("accepted", 200),
        ("rejected", 404),
        ("accepted", 200),
    ]
    assert "model_id" in results[1]["message"]
    store = client.app.state.backend.store  # type: ignore[attr-defined]
    assert [o.trace_id for o in store.outcomes("default", GOAL, since=_long_ago())] == ["ef" * 16]


def test_auto_path_generation_runs_one_job_per_tenant(monkeypatch: pytest.MonkeyPatch) -> None:
    from kalibr.service._backend import Backend, default_engine_factory

    monkeypatch.setenv("KALIBR_AUTO_PATH_GENERATION", "1")
    backend = Backend(MemoryStore(), default_engine_factory(0.2))
    backend.engine("a")
    backend.engine("a")
    backend.engine("b")
    jobs = list(backend._generators)
    assert sorted(job.tenant for job in jobs) == ["a", "b"]
    assert all(job.running for job in jobs)
    backend.close()
    assert not any(job.running for job in jobs)
