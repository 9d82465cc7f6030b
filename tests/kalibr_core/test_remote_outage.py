"""A service outage end to end: kill `kalibr serve`, report 1,000 outcomes, restart it, count them all once."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path as FilePath

import pytest

from kalibr._domain import Outcome, Path
from kalibr.intelligence._spool import OutcomeSpool
from kalibr.intelligence.remote import RemoteIntelligence, Resilience
from kalibr.service._server import ServiceProcess
from kalibr.stores.sqlite import SQLiteStore

pytestmark = pytest.mark.slow

GOAL = "triage_ticket"
PATHS = (Path("gpt-4o-mini"), Path("claude-haiku-4-5"))
SINCE = datetime(2000, 1, 1, tzinfo=UTC)


def _wait_until_delivered(remote: RemoteIntelligence, deadline_seconds: float) -> int:
    deadline = time.monotonic() + deadline_seconds
    while (pending := remote.pending_outcomes()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return pending


def test_outcomes_reported_while_the_service_is_down_arrive_once_after_restart(tmp_path: FilePath) -> None:
    db = tmp_path / "kalibr.db"
    service = ServiceProcess(["--store", f"sqlite:///{db}", "--no-auth"], log_path=str(tmp_path / "serve.log"))
    remote = RemoteIntelligence(
        service.start().url,
        spool=tmp_path / "spool.db",
        resilience=Resilience(timeout=1.0, breaker_after=3, cooldown=0.2),
    )
    try:
        assert not remote.decide(GOAL, PATHS).fallback  # up, and the paths are registered
        service.kill()

        reported = []
        for i in range(1000):
            decision = remote.decide(GOAL, PATHS)
            assert decision.fallback
            remote.report(Outcome.build(decision, success=i % 4 != 0))
            reported.append(decision.trace_id)
        assert remote.pending_outcomes() == 1000

        service.start()  # same port; the client's background thread notices and replays
        assert _wait_until_delivered(remote, 60.0) == 0

        # Replay some again exactly as sent, as a client that crashed between sending and deleting would.
        spool = OutcomeSpool(tmp_path / "spool.db")
        endpoint = remote.endpoint
        for i, trace_id in enumerate(reported[:100]):
            payload = {
                "trace_id": trace_id,
                "goal": GOAL,
                "success": i % 4 != 0,
                "score": 1.0 if i % 4 else 0.0,
                "model_id": "gpt-4o-mini",
                "metadata": {"source": "explicit"},
            }
            spool.add(endpoint, trace_id, payload)
        spool.close()
        remote.flush()
        assert remote.pending_outcomes() == 0
    finally:
        remote.close()
        service.kill()

    store = SQLiteStore(str(db))
    try:
        stored = store.outcomes("default", GOAL, SINCE)
        assert len(stored) == 1000
        assert {o.trace_id for o in stored} == set(reported)
        assert sum(o.score for o in stored) == 750  # the replays changed nothing
        arms = store.load_arms("default", GOAL, PATHS)
        assert sum(arm.total_samples for arm in arms) == 1000  # counted once each
        assert arms[0].total_samples == 1000  # fallback outcomes count for the first path's model
    finally:
        store.close()


def test_three_apps_through_an_outage_a_fresh_store_and_a_faulty_proxy_lose_double_and_cross_nothing(
    tmp_path: FilePath,
) -> None:
    """Three processes with their own keys share the host's spool; the service dies and comes back on a fresh store
    while a proxy refuses or fails batches. Every outcome ends in exactly one place: its own tenant, or a dead
    letter with the service's reason (the benchmark runs this with 1,000 outcomes per app). A batch the lost store
    committed as the service was killed, before it answered, is resent to the fresh one (at least once): counted
    apart, since the lost store is gone."""
    from tests.outage_replay import run_outage_replay

    result = run_outage_replay(tmp_path, apps=3, outcomes=120)
    assert result.reported == 360
    assert (result.lost, result.doubled, result.crossed, result.dead_without_reason) == (0, 0, 0, 0)
    assert result.delivered + result.dead_lettered == 360
    assert result.dead_lettered > 0  # the poison outcomes, isolated
    assert set(result.injected) >= {413, 422, 404, 503}


def test_a_just_started_service_is_not_mistaken_for_a_hung_one(tmp_path: FilePath) -> None:
    """Seen: the first decide on a fresh service took ~100 ms, over the 50 ms timeout; the breaker opened for 5 s
    and 247 of 374 decides fell back. The service warms up before it accepts connections, and the client probes it
    and gives its first decides the warm-up timeout: none of the first 100 decides falls back."""
    service = ServiceProcess(["--store", f"sqlite:///{tmp_path / 'k.db'}", "--no-auth"])
    try:
        remote = RemoteIntelligence(service.start().url, spool=tmp_path / "spool.db")  # the default 50 ms timeout
        decisions = [remote.decide(GOAL, PATHS) for _ in range(100)]
        remote.close()
    finally:
        service.kill()
    assert [(i, d.reason) for i, d in enumerate(decisions) if d.fallback] == []
