"""The remote client: decisions from the service, fallback, the circuit breaker, the spool."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path as FilePath

import httpx
import pytest
from tests.fault_proxy import HungService

from kalibr._domain import Outcome, Path
from kalibr._exceptions import UserError
from kalibr.intelligence._breaker import CircuitBreaker
from kalibr.intelligence.remote import RemoteIntelligence, Resilience
from kalibr.service import _schemas as wire
from kalibr.service import create_app
from kalibr.service._server import serve_in_thread
from kalibr.stores import MemoryStore
from kalibr.stores.base import PathRecord

GOAL = "summarize"
PATHS = (Path("gpt-4o-mini"), Path("claude-haiku-4-5"), Path("gpt-4o-mini", params={"temperature": 0.0}))
SINCE = datetime(2000, 1, 1, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _state(breaker: CircuitBreaker) -> str:
    return breaker.state


def test_breaker_opens_after_consecutive_failures_and_probes_after_cooldown() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(3, 5.0, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    breaker.record_success()  # a success resets the count
    for _ in range(3):
        assert breaker.allow()
        breaker.record_failure()
    assert _state(breaker) == "open"
    assert not breaker.allow()
    clock.now += 4.9
    assert not breaker.allow()
    clock.now += 0.2
    assert breaker.allow()  # the probe
    assert _state(breaker) == "half-open"
    assert not breaker.allow()  # only one probe at a time
    breaker.record_failure()
    assert _state(breaker) == "open"
    clock.now += 5.1
    assert breaker.allow()
    breaker.record_success()
    assert _state(breaker) == "closed"
    assert breaker.allow()


def test_one_timeout_opens_the_breaker_at_once() -> None:
    breaker = CircuitBreaker(3, 5.0, clock=FakeClock())
    breaker.record_failure()  # a fast failure (refused, 5xx): counted
    assert _state(breaker) == "closed"
    breaker.record_failure(timed_out=True)
    assert _state(breaker) == "open"


def test_a_probe_that_never_reports_is_replaced_after_a_cooldown() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(1, 5.0, clock=clock)
    breaker.record_failure()
    clock.now += 6
    assert breaker.allow()
    clock.now += 6
    assert breaker.allow()


@pytest.mark.parametrize(
    ("field", "value"), [("timeout", 0), ("timeout", -1.0), ("cooldown", "5"), ("breaker_after", 0)]
)
def test_resilience_rejects_nonsense(field: str, value: object) -> None:
    with pytest.raises(UserError, match=field):
        Resilience(**{field: value})  # type: ignore[arg-type]


def test_construction_does_no_io(tmp_path: FilePath) -> None:
    calls: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(500)

    transport = httpx.MockTransport(record)
    remote = RemoteIntelligence("http://127.0.0.1:9", spool=tmp_path / "spool.db", transport=transport)
    assert not (tmp_path / "spool.db").exists()
    # Registering sends nothing; it opens the spool in the background (it may exist by now, or not yet).
    remote.register_paths(GOAL, PATHS)
    remote.close()
    assert calls == []


def test_bad_url_is_a_user_error() -> None:
    with pytest.raises(UserError, match="base URL"):
        RemoteIntelligence("127.0.0.1:8400")


@pytest.fixture
def service() -> Iterator[tuple[str, MemoryStore]]:
    store = MemoryStore()
    with serve_in_thread(create_app(store, auth=False)) as url:
        yield url, store


@pytest.fixture
def remote(service: tuple[str, MemoryStore], tmp_path: FilePath) -> Iterator[RemoteIntelligence]:
    client = RemoteIntelligence(service[0], spool=tmp_path / "spool.db", resilience=Resilience(timeout=2.0))
    yield client
    client.close()


def test_decide_and_report_through_the_service(remote: RemoteIntelligence, service: tuple[str, MemoryStore]) -> None:
    store = service[1]
    decisions = [remote.decide(GOAL, PATHS) for _ in range(10)]
    assert not any(d.fallback for d in decisions)
    assert {d.path for d in decisions} <= set(PATHS)
    assert {record.path.path_id for record in store.list_paths("default", GOAL)} == {p.path_id for p in PATHS}
    for decision in decisions:
        remote.report(Outcome.build(decision, success=True, cost_usd=0.001, latency_ms=120.0))
    remote.flush()
    assert remote.pending_outcomes() == 0
    stored = store.outcomes("default", GOAL, SINCE)
    assert sorted(o.trace_id for o in stored) == sorted(d.trace_id for d in decisions)
    assert {o.path_id for o in stored} == {d.path_id for d in decisions}  # attributed to the decided paths
    assert all(o.cost_usd == 0.001 and o.latency_ms == 120.0 for o in stored)


async def test_async_decide_matches_sync(remote: RemoteIntelligence) -> None:
    decision = await remote.adecide(GOAL, PATHS)
    assert not decision.fallback
    assert decision.path in PATHS
    await remote.areport(Outcome.build(decision, score=0.75))
    await remote.aclose()
    remote.flush()
    assert remote.pending_outcomes() == 0


def test_update_outcome_after_report(remote: RemoteIntelligence, service: tuple[str, MemoryStore]) -> None:
    from kalibr.stores.base import OutcomeChanges

    decision = remote.decide(GOAL, PATHS)
    remote.report(Outcome.build(decision, success=True))
    changed = remote.update_outcome(decision.trace_id, GOAL, OutcomeChanges(score=0.0, success=False))
    assert set(changed) == {"success", "score"}
    [stored] = service[1].outcomes("default", GOAL, SINCE)
    assert stored.score == 0.0


def test_a_refused_decide_falls_back_without_opening_the_breaker(tmp_path: FilePath) -> None:
    store = MemoryStore()
    with serve_in_thread(create_app(store)) as url:  # keys required; we send a wrong one
        remote = RemoteIntelligence(url, api_key="kal_wrong", spool=tmp_path / "s.db")
        for _ in range(5):
            decision = remote.decide(GOAL, PATHS)
            assert decision.fallback
            assert "401" in decision.reason
        assert remote.breaker.state == "closed"
        remote.close()


def test_hung_service_costs_the_timeout_once_then_nothing(tmp_path: FilePath) -> None:
    hung = HungService()
    remote = RemoteIntelligence(
        hung.url, spool=tmp_path / "s.db", resilience=Resilience(timeout=0.05, breaker_after=3, cooldown=60)
    )
    try:
        timed_out = remote.decide(GOAL, PATHS)
        assert timed_out.fallback
        assert timed_out.path == PATHS[0]
        assert "in time" in timed_out.reason
        assert remote.breaker.state == "open"  # one timeout is enough: a hung service must not cost it thrice
        asked = hung.requests
        assert asked == 1
        for _ in range(50):
            decision = remote.decide(GOAL, PATHS)
            assert decision.fallback
            assert "breaker open" in decision.reason
        assert hung.requests == asked  # the open breaker sent nothing
        remote.report(Outcome.build(decision, success=True))
        remote.flush()
        assert remote.pending_outcomes() == 1  # spooled, not lost, not sent while open
    finally:
        remote.close()
        hung.close()


def test_outcomes_survive_an_outage_and_a_restart_of_the_client(tmp_path: FilePath) -> None:
    spool = tmp_path / "spool.db"
    store = MemoryStore()
    with serve_in_thread(create_app(store, auth=False)) as url:
        port = int(url.rsplit(":", 1)[1])
    # The service is gone: its port refuses connections.
    offline = RemoteIntelligence(url, spool=spool, resilience=Resilience(breaker_after=1, cooldown=60))
    decisions = [offline.decide(GOAL, PATHS) for _ in range(20)]
    assert all(d.fallback for d in decisions)
    for decision in decisions:
        offline.report(Outcome.build(decision, success=False, failure_category="timeout"))
    offline.flush()
    assert offline.pending_outcomes() == 20
    offline.close()  # the client process "restarts": only the spool file remains
    with serve_in_thread(create_app(store, auth=False), port=port) as same_url:
        assert same_url == url
        store.register_path("default", _record(PATHS[0]))
        online = RemoteIntelligence(url, spool=spool)
        online.flush()
        assert online.pending_outcomes() == 0
        online.flush()  # nothing left, nothing sent twice
        online.close()
    stored = store.outcomes("default", GOAL, SINCE)
    assert sorted(o.trace_id for o in stored) == sorted(d.trace_id for d in decisions)
    assert {o.path_id for o in stored} == {PATHS[0].path_id}


def _record(path: Path) -> PathRecord:
    return PathRecord(goal=GOAL, path=path, enabled=True, created_at=datetime.now(UTC))


def test_an_explicit_report_overrides_an_automatic_one_already_delivered(
    remote: RemoteIntelligence, service: tuple[str, MemoryStore]
) -> None:
    decision = remote.decide(GOAL, PATHS)
    remote.report(Outcome.build(decision, success=True, source="success_when"))
    remote.flush()
    remote.report(Outcome.build(decision, success=False, failure_category="user_unsatisfied"))
    remote.flush()
    [stored] = service[1].outcomes("default", GOAL, SINCE)
    assert (stored.score, stored.failure_category) == (0.0, "user_unsatisfied")
    arm = next(a for a in service[1].load_arms("default", GOAL, PATHS) if a.path_id == decision.path_id)
    assert (arm.successes, arm.failures) == (0.0, 1.0)  # corrected, not counted twice


def _paths_answer(disabled: Path) -> httpx.Response:
    listed = [
        wire.PathResponse(
            path_id=path.path_id,
            goal=GOAL,
            model_id=path.model,
            tool_id=None,
            params=dict(path.params),
            risk_level="low",
            created_at=SINCE,
            enabled=path != disabled,
        )
        for path in PATHS
    ]
    return httpx.Response(200, content=wire.PathsResponse(paths=listed).model_dump_json())


def test_disabled_paths_are_asked_once_per_interval_and_kept_through_an_outage(tmp_path: FilePath) -> None:
    asked: list[httpx.Request] = []
    down = False

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(request)
        return httpx.Response(503) if down else _paths_answer(disabled=PATHS[1])

    remote = RemoteIntelligence(
        "http://127.0.0.1:9", spool=tmp_path / "s.db", transport=httpx.MockTransport(answer), refresh_interval=60
    )
    remote.register_paths(GOAL, PATHS)
    for _ in range(20):  # a burst of fallbacks
        assert remote.disabled_paths(GOAL) == {PATHS[1].path_id}
    assert len(asked) == 1
    assert asked[0].url.params["include_disabled"] == "true"
    assert asked[0].extensions["timeout"]["read"] == remote.resilience.timeout  # the decide timeout, not longer
    remote.close()

    down = True
    remote = RemoteIntelligence(
        "http://127.0.0.1:9", spool=tmp_path / "s.db", transport=httpx.MockTransport(answer), refresh_interval=0
    )
    remote.register_paths(GOAL, PATHS)
    assert remote.disabled_paths(GOAL) == frozenset()  # never read: nothing known, nothing skipped
    down = False
    assert remote.disabled_paths(GOAL) == {PATHS[1].path_id}
    down = True
    assert remote.disabled_paths(GOAL) == {PATHS[1].path_id}  # the service fails: the last known set
    remote.close()


def test_a_bad_refresh_interval_names_itself() -> None:
    with pytest.raises(UserError, match="refresh_interval"):
        RemoteIntelligence("http://127.0.0.1:9", refresh_interval=-1)
