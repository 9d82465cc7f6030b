"""The service refuses cheaply and says little: wrong keys, hostile input, store outages, replicas, its contract."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path as FilePath
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from tests.hooked_store import HookedStore

from kalibr._domain import new_trace_id
from kalibr._exceptions import StoreError
from kalibr.service import create_app, hash_api_key
from kalibr.service._server import serve_in_thread
from kalibr.stores import MemoryStore, open_store
from kalibr.stores.base import Store

GOAL = "extract_company"
SINCE = datetime(2000, 1, 1, tzinfo=UTC)
POSTGRES_URL = os.environ.get("KALIBR_TEST_POSTGRES_URL")


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.key_reads = 0

    def tenant_for_key(self, key_hash: str) -> str | None:
        self.key_reads += 1
        return super().tenant_for_key(key_hash)

    def list_api_keys(self, tenant: str | None) -> list[tuple[str, str, datetime]]:
        self.key_reads += 1
        return super().list_api_keys(tenant)


@pytest.mark.parametrize("fresh_keys", [False, True], ids=["one wrong key", "a fresh wrong key each time"])
def test_a_flood_of_wrong_keys_costs_no_store_query_per_request(fresh_keys: bool) -> None:
    """Seen: every wrong key cost a synchronous store query; a flood cut a replica's valid throughput by 4x. Keys are
    answered from a snapshot of the key table, read again at most twice a second for a key it lacks."""
    store = CountingStore()
    store.add_api_key("acme", hash_api_key("kal_right"))
    with TestClient(create_app(store)) as client:
        started = time.monotonic()
        for number in range(300):
            key = f"kal_wrong_{number if fresh_keys else 0}"
            response = client.post("/api/v1/routing/decide", json={"goal": GOAL}, headers={"X-API-Key": key})
            assert response.status_code == 401
        elapsed = time.monotonic() - started
        assert client.get("/api/v1/routing/paths", headers={"X-API-Key": "kal_right"}).status_code == 200
    assert store.key_reads <= 2 + 2 * elapsed


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_store(request: pytest.FixtureRequest, tmp_path: FilePath) -> Iterator[Store]:
    if request.param == "sqlite":
        store = open_store(f"sqlite:///{tmp_path / 'kalibr.db'}")
    else:
        if not POSTGRES_URL:
            pytest.skip("PostgreSQL tests need KALIBR_TEST_POSTGRES_URL (CI sets it to the machine's server)")
        store = open_store(POSTGRES_URL)
    yield store
    store.close()


HOSTILE: list[tuple[str, str, str]] = [
    ("/api/v1/routing/paths", '{"goal": "g1", "model_id": "m", "params": {"t": NaN}}', "params"),
    ("/api/v1/routing/paths", '{"goal": "g1", "model_id": "m", "params": {"t": [Infinity]}}', "params"),
    ("/api/v1/routing/paths", '{"goal": "g1", "model_id": "m", "tool_id": "a\\u0000b"}', "tool_id"),
    ("/api/v1/routing/paths", '{"goal": "g1", "model_id": "m\\u0000"}', "model_id"),
    ("/api/v1/routing/paths", '{"goal": "g1", "model_id": "m", "params": {"k": "v\\u0000"}}', "params"),
    ("/api/v1/routing/decide", '{"goal": "g1", "paths": [{"model_id": "m", "params": {"t": NaN}}]}', "paths.0.params"),
    ("/api/v1/intelligence/report-outcome", '{"goal": "g1", "trace_id": "ab", "success": true, "score": NaN}', "score"),
    (
        "/api/v1/intelligence/report-outcome",
        '{"goal": "g1", "trace_id": "ab", "success": false, "failure_reason": "x\\u0000"}',
        "failure_reason",
    ),
]


@pytest.mark.parametrize(("route", "raw", "field"), HOSTILE)
def test_nan_infinity_and_nul_get_the_same_422_on_every_store(
    any_store: Store, route: str, raw: str, field: str
) -> None:
    """Seen: on PostgreSQL these gave 503 (a store "outage", counted by clients' breakers); SQLite answered 200."""
    with TestClient(create_app(any_store, auth=False)) as client:
        response = client.post(route, content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == field


BIG = "x" * 900_000
OVERSIZED: list[tuple[str, dict[str, Any], str]] = [
    ("/api/v1/routing/paths", {"goal": GOAL, "model_id": "m", "tool_id": BIG}, "tool_id"),
    ("/api/v1/routing/decide", {"goal": GOAL, "pipeline_id": "p" * 257}, "pipeline_id"),
    ("/api/v1/routing/paths", {"goal": GOAL, "model_id": "m", "params": {"prompt": "p" * 5000}}, "params"),
    ("/api/v1/routing/decide", {"goal": GOAL, "paths": [{"model_id": "m" * 257}]}, "paths.0.model_id"),
    ("/api/v1/intelligence/policy", {"goal": GOAL, "task_type": "t" * 257}, "task_type"),
    (
        "/api/v1/intelligence/report-outcome",
        {"goal": GOAL, "trace_id": "ab", "success": True, "execution_params": {"a": "b" * 5000}},
        "execution_params",
    ),
]


@pytest.mark.parametrize(("route", "body", "field"), OVERSIZED)
def test_every_stored_field_is_bounded_and_the_422_names_it(route: str, body: dict[str, Any], field: str) -> None:
    """Seen: a 900 KB tool_id was stored and returned on every later decide of the goal."""
    store = MemoryStore()
    with TestClient(create_app(store, auth=False)) as client:
        response = client.post(route, json=body)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == field
    assert field.split(".")[0] in response.json()["detail"]
    assert store.list_paths("default", GOAL) == []


def test_store_errors_never_reach_a_response_body() -> None:
    """Seen: 503 bodies, on /readyz and wrong-key requests too, held the store URL."""
    secret = "postgresql://kalibr:hunter2@db.internal/kalibr"

    def down() -> None:
        raise StoreError(f"connection to {secret} failed: connection refused")

    class DownStore(HookedStore):
        def tenant_for_key(self, key_hash: str) -> str | None:
            down()
            return None

        def list_api_keys(self, tenant: str | None) -> list[tuple[str, str, datetime]]:
            down()
            return []

    with TestClient(create_app(DownStore(down))) as client:
        answers = [
            client.get("/readyz"),
            client.post("/api/v1/routing/decide", json={"goal": GOAL}, headers={"X-API-Key": "kal_whatever"}),
        ]
    for response in answers:
        assert response.status_code == 503
        assert response.json() == {"detail": "the store is unavailable; retry later", "error": "store_unavailable"}


def test_a_rejected_request_is_one_log_line_without_traceback(caplog: pytest.LogCaptureFixture) -> None:
    """Seen: a 422 for a bad goal logged a 92-line traceback per request."""
    with serve_in_thread(create_app(MemoryStore(), auth=False)) as url, caplog.at_level(logging.INFO):
        for body in ({"goal": "has spaces"}, {"goal": "no_paths_here"}):
            assert httpx.post(f"{url}/api/v1/routing/decide", json=body).status_code in (404, 422)
        assert httpx.get(f"{url}/api/v1/intelligence/insights", params={"goal": "bad goal"}).status_code == 422
    refusals = [r for r in caplog.records if r.name.startswith(("kalibr", "uvicorn")) and r.levelno >= logging.INFO]
    assert len(refusals) == 3, [r.getMessage() for r in refusals]
    assert not any(r.exc_info for r in caplog.records)


def test_a_report_right_after_a_decide_on_another_replica_finds_its_decision() -> None:
    """Seen: a report without model_id sent to one replica right after a decide on another got 404 in 86% of cases."""
    store = MemoryStore()  # one shared store, two replicas, each with its own engines and caches
    with (
        serve_in_thread(create_app(store, auth=False)) as a,
        serve_in_thread(create_app(store, auth=False)) as b,
        httpx.Client() as client,
    ):
        assert client.post(f"{a}/api/v1/routing/paths", json={"goal": GOAL, "model_id": "gpt-4o"}).status_code == 200
        answers = []
        for _ in range(30):
            decision = client.post(f"{a}/api/v1/routing/decide", json={"goal": GOAL}).json()
            body = {"trace_id": decision["trace_id"], "goal": GOAL, "success": True}
            answers.append(client.post(f"{b}/api/v1/intelligence/report-outcome", json=body).status_code)
    assert answers == [200] * 30
    assert len(store.outcomes("default", GOAL, SINCE)) == 30


def test_an_outcome_for_an_unregistered_path_registers_it() -> None:
    """A client that fell back during an outage reports paths a fresh store never saw: they are registered."""
    store = MemoryStore()
    body = {
        "trace_id": new_trace_id(),
        "goal": GOAL,
        "success": True,
        "model_id": "gpt-4o-mini",
        "execution_params": {"temperature": 0.2},
    }
    with TestClient(create_app(store, auth=False)) as client:
        assert client.post("/api/v1/intelligence/report-outcome", json=body).status_code == 200
        bare = {"trace_id": new_trace_id(), "goal": GOAL, "success": True, "model_id": "claude-haiku-4-5"}
        refused = client.post("/api/v1/intelligence/report-outcome", json=bare)  # the official SDK's shape
    [record] = store.list_paths("default", GOAL)
    assert (record.path.model, dict(record.path.params)) == ("gpt-4o-mini", {"temperature": 0.2})
    assert refused.status_code == 404
    assert "execution_params" in refused.json()["detail"]
