"""`kalibr serve` logs each refused request as one line at INFO, and sums a flood of them up instead of
printing a line per request."""

from __future__ import annotations

import logging
import math
import re
import time
from pathlib import Path as FilePath

import httpx
import pytest
from fastapi.testclient import TestClient

from kalibr.service import create_app, hash_api_key
from kalibr.service._errors import RefusalLog
from kalibr.service._server import ServiceProcess
from kalibr.stores import MemoryStore, open_store

DECIDE = "/api/v1/routing/decide"
WRONG_KEY = "kal_wrong_0123456789abcdef"
SUMMARY = re.compile(r"(\d+) more refused requests like this \(401 POST /api/v1/routing/decide\)")


def _serve(tmp_path: FilePath, *log_level: str) -> ServiceProcess:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    store = open_store(url)
    store.add_api_key("acme", hash_api_key("kal_right"))
    store.close()
    return ServiceProcess(["--store", url, *log_level], log_path=str(tmp_path / "serve.log"))


def _kalibr_lines(tmp_path: FilePath) -> list[str]:
    return [line for line in (tmp_path / "serve.log").read_text().splitlines() if " kalibr." in line]


def test_a_refused_request_is_one_info_line_naming_status_and_route(tmp_path: FilePath) -> None:
    """Seen: `kalibr serve` configured only uvicorn's loggers, so the refusal lines never showed."""
    with _serve(tmp_path, "--log-level", "info") as service:
        answer = httpx.post(service.url + DECIDE, json={"goal": "g"}, headers={"X-API-Key": WRONG_KEY})
        assert answer.status_code == 401
        service.stop()
    [line] = _kalibr_lines(tmp_path)
    assert re.match(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ INFO kalibr.service: refused POST /api/v1/routing/decide: 401 ", line
    )
    assert WRONG_KEY not in (tmp_path / "serve.log").read_text()
    assert "k.db" not in line


def test_a_flood_of_wrong_keys_is_a_few_lines_and_a_summary_with_the_count(tmp_path: FilePath) -> None:
    with _serve(tmp_path, "--log-level", "info") as service, httpx.Client(base_url=service.url) as client:
        started = time.monotonic()
        for _ in range(500):
            assert client.post(DECIDE, json={"goal": "g"}, headers={"X-API-Key": WRONG_KEY}).status_code == 401
        seconds = time.monotonic() - started
        service.stop()  # the last summary is written at shutdown
    lines = _kalibr_lines(tmp_path)
    logged = [line for line in lines if "refused POST /api/v1/routing/decide: 401" in line]
    summed = [int(found.group(1)) for line in lines if (found := SUMMARY.search(line))]
    assert len(logged) + sum(summed) == 500  # every refusal is a line or counted in a summary
    assert len(logged) <= 5 * (math.ceil(seconds) + 1)  # at most 5 lines a second of each kind
    assert all(" INFO " in line for line in lines)


def test_refusals_stay_quiet_at_warning(tmp_path: FilePath) -> None:
    with _serve(tmp_path, "--log-level", "warning") as service:
        assert httpx.post(service.url + DECIDE, json={"goal": "g"}).status_code == 401
        service.stop()
    assert _kalibr_lines(tmp_path) == []


def test_the_library_configures_no_logging(caplog: pytest.LogCaptureFixture) -> None:
    """Used as a library, the service adds no handler and logs refusals below WARNING."""
    store = MemoryStore()
    with caplog.at_level(logging.INFO), TestClient(create_app(store)) as client:
        for _ in range(20):
            assert client.post(DECIDE, json={"goal": "g"}, headers={"X-API-Key": WRONG_KEY}).status_code == 401
    assert logging.getLogger("kalibr").handlers == []
    refusals = [r for r in caplog.records if r.name.startswith("kalibr")]
    assert refusals and all(r.levelno == logging.INFO and not r.exc_info for r in refusals)


def test_held_back_refusals_are_summed_up_by_the_next_window_and_at_shutdown(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    refusals = RefusalLog(logging.getLogger("kalibr.test"), burst=3, window=1.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO):
        for _ in range(100):
            refusals.refused(401, "POST /decide", "POST /decide", "invalid API key")
        refusals.refused(404, "POST /decide", "POST /decide", "unknown goal")  # another kind: its own lines
        now[0] = 1.5
        refusals.refused(401, "POST /decide", "POST /decide", "invalid API key")
        refusals.refused(401, "POST /decide", "POST /decide", "invalid API key")
        refusals.refused(401, "POST /decide", "POST /decide", "invalid API key")
        refusals.refused(401, "POST /decide", "POST /decide", "invalid API key")
        refusals.flush()
    assert [r.getMessage() for r in caplog.records] == [
        *["refused POST /decide: 401 invalid API key"] * 3,
        "refused POST /decide: 404 unknown goal",
        "97 more refused requests like this (401 POST /decide) in the last 1.0s",
        *["refused POST /decide: 401 invalid API key"] * 3,
        "1 more refused requests like this (401 POST /decide) in the last 0.0s",
    ]
