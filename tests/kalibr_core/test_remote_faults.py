"""The spool and the client under the faults operators meet: refused batches, a reset store, two apps on one host,
a hung service. Each test is an outage as it happens: the service goes away, outcomes pile up, it comes back."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path as FilePath

import pytest
from tests.fault_proxy import FaultProxy, HungService

from kalibr._domain import Decision, Outcome, Path
from kalibr._exceptions import IntelligenceUnavailable
from kalibr.intelligence import _spool
from kalibr.intelligence.remote import RemoteIntelligence, Resilience
from kalibr.service import create_app, hash_api_key
from kalibr.service._server import serve_in_thread
from kalibr.stores import MemoryStore
from kalibr.stores.base import OutcomeChanges, PathRecord

GOAL = "summarize"
PATHS = (Path("gpt-4o-mini"), Path("claude-haiku-4-5", params={"temperature": 0.2}))
SINCE = datetime(2000, 1, 1, tzinfo=UTC)
OFFLINE = Resilience(breaker_after=1, cooldown=60)  # down: after one refused connection, stop trying


def _free_url() -> str:
    """A URL whose port refuses connections now and can be served later."""
    with serve_in_thread(create_app(MemoryStore(), auth=False)) as url:
        return url


@contextmanager
def _service(url: str, store: MemoryStore, *, auth: bool = False) -> Iterator[str]:
    with serve_in_thread(create_app(store, auth=auth), port=int(url.rsplit(":", 1)[1])) as served:
        yield served


def _report_offline(url: str, spool: FilePath, n: int, *, api_key: str = "", **fields: object) -> list[Decision]:
    """An app that ran through an outage: ``n`` fallback decisions reported, all spooled."""
    offline = RemoteIntelligence(url, api_key=api_key, spool=spool, resilience=OFFLINE)
    decisions = [offline.decide(GOAL, PATHS) for _ in range(n)]
    assert all(d.fallback for d in decisions)
    for i, decision in enumerate(decisions):
        offline.report(Outcome.build(decision, success=i % 2 == 0, **fields))  # type: ignore[arg-type]
    assert offline.pending_outcomes() == n
    offline.close()
    return decisions


def test_a_backlog_of_long_reasons_is_sent_in_batches_the_service_accepts(tmp_path: FilePath) -> None:
    """Seen: 500 outcomes with 2,000-character reasons made one 1.3 MB batch, refused with 413 every second."""
    url, store = _free_url(), MemoryStore()
    store.register_path("default", _record(PATHS[0]))
    decisions = _report_offline(url, tmp_path / "spool.db", 500, reason="r" * 2000, failure_category="unknown")
    with _service(url, store):
        online = RemoteIntelligence(url, spool=tmp_path / "spool.db")
        online.flush()
        assert (online.pending_outcomes(), online.dead_outcomes()) == (0, 0)
        online.close()
    assert {o.trace_id for o in store.outcomes("default", GOAL, SINCE)} == {d.trace_id for d in decisions}


def test_an_outcome_the_service_can_never_take_is_dead_lettered_and_the_rest_delivered(tmp_path: FilePath) -> None:
    """Seen: one outcome with a 300-character model id (the service caps ids at 256) stalled every later one."""
    store = MemoryStore()
    long_model = Path("m" * 300)
    with serve_in_thread(create_app(store, auth=False)) as url:
        remote = RemoteIntelligence(url, spool=tmp_path / "spool.db", resilience=Resilience(timeout=2.0))
        decisions = [remote.decide(GOAL, PATHS) for _ in range(20)]
        forced = Decision(trace_id="ab" * 16, goal=GOAL, path=long_model, exploration=False, reason="", confidence=0)
        remote.record_forced(forced)
        for decision in [*decisions[:10], forced, *decisions[10:]]:
            remote.report(Outcome.build(decision, success=True))
        remote.flush()
        assert (remote.pending_outcomes(), remote.dead_outcomes()) == (0, 1)
        [dead] = _spool.OutcomeSpool(tmp_path / "spool.db").dead_letters(remote.endpoint)
        remote.close()
    assert (dead.trace_id, dead.status_code) == (forced.trace_id, 422)
    assert "model_id" in dead.reason
    assert {o.trace_id for o in store.outcomes("default", GOAL, SINCE)} == {d.trace_id for d in decisions}


def test_a_batch_refused_as_a_whole_is_split_until_the_refused_outcome_is_alone(tmp_path: FilePath) -> None:
    """A proxy (or a stricter service) refuses whole requests: big ones with 413, any holding one outcome with 422."""
    url, store = _free_url(), MemoryStore()
    poison: list[str] = []

    def fault(path: str, body: bytes) -> int | None:
        if poison and poison[0].encode() in body:
            return 422
        if path.endswith("/report-outcomes") and len(json.loads(body)["outcomes"]) > 40:
            return 413
        return None

    with FaultProxy(url, fault) as proxy:
        decisions = _report_offline(proxy.url, tmp_path / "spool.db", 300)  # the proxy answers 502 meanwhile
        poison.append(decisions[137].trace_id)
        with _service(url, store):
            online = RemoteIntelligence(proxy.url, spool=tmp_path / "spool.db")
            online.flush()
            assert (online.pending_outcomes(), online.dead_outcomes()) == (0, 1)
            online.close()
    assert proxy.injected[413] > 0
    delivered = {o.trace_id for o in store.outcomes("default", GOAL, SINCE)}
    assert delivered == {d.trace_id for d in decisions} - set(poison)


def test_a_service_restarted_on_a_fresh_store_accepts_every_spooled_outcome(tmp_path: FilePath) -> None:
    """Seen: after the outage, a fresh store had no paths; the service answered 404 and the client deleted all 200."""
    url, fresh = _free_url(), MemoryStore()
    decisions = _report_offline(url, tmp_path / "spool.db", 200)
    with _service(url, fresh):
        online = RemoteIntelligence(url, spool=tmp_path / "spool.db")
        online.flush()
        assert (online.pending_outcomes(), online.dead_outcomes()) == (0, 0)
        online.close()
    stored = fresh.outcomes("default", GOAL, SINCE)
    assert sorted(o.trace_id for o in stored) == sorted(d.trace_id for d in decisions)
    assert {o.path_id for o in stored} == {PATHS[0].path_id}  # the fallback path, registered from the outcome
    assert {r.path.path_id for r in fresh.list_paths("default", GOAL)} == {PATHS[0].path_id}


def test_two_apps_with_different_keys_on_one_host_never_send_each_others_outcomes(tmp_path: FilePath) -> None:
    """Seen: the default spool was keyed by URL and tenant; whichever app ran first sent the other's outcomes."""
    url, store = _free_url(), MemoryStore()
    keys = {"acme": "kal_acme_secret", "globex": "kal_globex_secret"}
    for tenant, key in keys.items():
        store.add_api_key(tenant, hash_api_key(key))
    spool = tmp_path / "spool.db"  # the default spool of the host, shared by both apps
    reported = {tenant: _report_offline(url, spool, 30, api_key=key) for tenant, key in keys.items()}
    with _service(url, store, auth=True):
        globex = RemoteIntelligence(url, api_key=keys["globex"], spool=spool)
        globex.flush()  # globex runs first after the outage
        assert globex.pending_outcomes() == 0
        assert store.outcomes("acme", GOAL, SINCE) == []
        acme = RemoteIntelligence(url, api_key=keys["acme"], spool=spool)
        acme.flush()
        assert acme.pending_outcomes() == 0
        acme.close()
        globex.close()
    for tenant, decisions in reported.items():
        assert {o.trace_id for o in store.outcomes(tenant, GOAL, SINCE)} == {d.trace_id for d in decisions}
    assert "secret" not in spool.read_bytes().decode("latin-1")  # a fingerprint of the key, never the key


def test_the_spool_is_opened_by_the_delivery_thread_not_the_caller(
    tmp_path: FilePath, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen: the first report after a timed-out decide created the spool on the caller's thread (18-32 ms)."""
    openers: list[str] = []
    original = _spool.OutcomeSpool.__init__

    def recording(self: _spool.OutcomeSpool, path: str) -> None:
        openers.append(threading.current_thread().name)
        original(self, path)

    monkeypatch.setattr(_spool.OutcomeSpool, "__init__", recording)
    hung = HungService()
    remote = RemoteIntelligence(hung.url, spool=tmp_path / "s.db", resilience=Resilience(timeout=0.05, cooldown=60))
    try:
        decision = remote.decide(GOAL, PATHS)
        remote.report(Outcome.build(decision, success=True))
        assert remote.pending_outcomes() == 1
    finally:
        remote.close()
        hung.close()
    assert openers == ["kalibr-spool"]


def test_every_call_honours_the_breaker_and_an_update_is_spooled(tmp_path: FilePath) -> None:
    """Seen: against a hung service update_outcome, get_policy, get_insights and close each blocked 5 s, and the
    update was lost."""
    hung = HungService()
    remote = RemoteIntelligence(hung.url, spool=tmp_path / "s.db", resilience=Resilience(timeout=0.05, cooldown=60))
    try:
        decision = remote.decide(GOAL, PATHS)
        assert decision.fallback
        assert hung.requests == 1  # the decide; the breaker is open now
        remote.report(Outcome.build(decision, success=True))
        changed = remote.update_outcome(decision.trace_id, GOAL, OutcomeChanges(score=0.2, success=False))
        assert set(changed) == {"score", "success"}
        with pytest.raises(IntelligenceUnavailable, match="breaker"):
            remote.get_policy(GOAL)
        with pytest.raises(IntelligenceUnavailable, match="breaker"):
            remote.get_insights(GOAL)
        assert remote.pending_outcomes() == 2  # the report and its update, in order
    finally:
        remote.close()
        hung.close()
    assert hung.requests == 1  # nothing else went out


def test_a_read_against_a_hung_service_costs_one_short_probe(tmp_path: FilePath) -> None:
    hung = HungService()
    remote = RemoteIntelligence(hung.url, spool=tmp_path / "s.db", resilience=Resilience(timeout=0.05, cooldown=60))
    try:
        with pytest.raises(IntelligenceUnavailable):
            remote.get_policy(GOAL)  # the probe (decide timeout) fails: no 5 s call is attempted
        assert remote.breaker.state == "open"
        with pytest.raises(IntelligenceUnavailable):
            remote.get_insights()
    finally:
        remote.close()
        hung.close()
    assert hung.requests == 1


def test_an_update_spooled_during_an_outage_is_applied_after_its_report(tmp_path: FilePath) -> None:
    url, store = _free_url(), MemoryStore()
    offline = RemoteIntelligence(url, spool=tmp_path / "spool.db", resilience=OFFLINE)
    decision = offline.decide(GOAL, PATHS)
    offline.report(Outcome.build(decision, success=True))
    offline.update_outcome(decision.trace_id, GOAL, OutcomeChanges(score=0.25, success=False))
    offline.close()
    with _service(url, store):
        online = RemoteIntelligence(url, spool=tmp_path / "spool.db")
        online.flush()
        assert (online.pending_outcomes(), online.dead_outcomes()) == (0, 0)
        online.close()
    [stored] = store.outcomes("default", GOAL, SINCE)
    assert (stored.trace_id, stored.score) == (decision.trace_id, 0.25)


def _record(path: Path) -> PathRecord:
    return PathRecord(goal=GOAL, path=path, enabled=True, created_at=datetime.now(UTC))


def test_a_path_the_wire_cannot_carry_falls_back_instead_of_raising(tmp_path: FilePath) -> None:
    store = MemoryStore()
    with serve_in_thread(create_app(store, auth=False)) as url:
        remote = RemoteIntelligence(url, spool=tmp_path / "spool.db", resilience=Resilience(timeout=2.0))
        decision = remote.decide(GOAL, [Path("m" * 300), *PATHS])
        remote.close()
    assert decision.fallback
    assert "model_id" in decision.reason


_REPORT_AND_EXIT = """
import sys
from kalibr import Outcome, Path
from kalibr.intelligence.remote import RemoteIntelligence, Resilience
from kalibr.stores.base import OutcomeChanges

remote = RemoteIntelligence(sys.argv[1], spool=sys.argv[2], resilience=Resilience(breaker_after=1, cooldown=60))
decision = remote.decide("extract_company", [Path("gpt-4o-mini")])  # refused at once: a fallback
remote.report(Outcome.build(decision, success=True))
remote.update_outcome(decision.trace_id, "extract_company", OutcomeChanges(score=0.5))
print(decision.trace_id)
"""  # and exits at once, without close(), maybe before the spool's thread has opened the file


def test_outcomes_reported_just_before_a_clean_exit_reach_the_spool(tmp_path: FilePath) -> None:
    spool = tmp_path / "spool.db"
    for _ in range(3):
        ran = subprocess.run(
            [sys.executable, "-c", _REPORT_AND_EXIT, _free_url(), str(spool)],
            capture_output=True,
            text=True,
            check=True,
        )
        trace_id = ran.stdout.strip()
        with sqlite3.connect(spool) as db:
            kinds = db.execute("SELECT kind FROM outbox WHERE trace_id = ? ORDER BY seq", (trace_id,)).fetchall()
        assert kinds == [("report",), ("update",)]
