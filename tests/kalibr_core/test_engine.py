"""The embedded engine: write-behind without loss, explicit reports win, other processes' outcomes are seen."""

from __future__ import annotations

import pickle
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from types import SimpleNamespace
from typing import Any

import pytest
from tests.hooked_store import HookedStore

from kalibr import Outcome, Path
from kalibr.intelligence import engine as engine_module
from kalibr.intelligence.engine import Engine
from kalibr.policies.base import ArmState
from kalibr.stores import open_store
from kalibr.stores.base import PathRecord
from kalibr.stores.memory import MemoryStore

PATHS = (Path("a"), Path("b"))


class FlakyStore(HookedStore):
    """A memory store whose writes fail while ``broken`` is set."""

    def __init__(self) -> None:
        super().__init__(self._fail_if_broken)
        self.broken = False

    def _fail_if_broken(self) -> None:
        if self.broken:
            raise OSError("disk full")


def _outcome(engine: Engine, score: float, source: Any = "explicit") -> Outcome:
    decision = engine.decide("g", PATHS)
    return Outcome(decision.trace_id, "g", decision.path_id, score, model=decision.model, source=source)


def _step(engine: Engine, score: float) -> Callable[[ArmState], ArmState]:
    return partial(engine.policy.update, score=score, cost_usd=None, latency_ms=None, now=time.time())


def _stored(store: Any) -> list[Any]:
    return list(store.outcomes("default", "g", datetime.now(UTC) - timedelta(hours=1)))


def test_a_failing_store_loses_no_outcome(caplog: pytest.LogCaptureFixture) -> None:
    store = FlakyStore()
    engine = Engine(store, seed=1, flush_interval=0.01)
    store.broken = True
    for _ in range(50):
        engine.report(_outcome(engine, 1.0))
    time.sleep(0.1)  # the flusher tries, fails, keeps the batch
    assert _stored(store) == []
    assert "stay queued" in caplog.text
    store.broken = False
    engine.close()
    assert len(_stored(store)) == 50


def test_close_flushes_everything_queued() -> None:
    store = MemoryStore()
    engine = Engine(store, seed=1, flush_interval=60)  # the flusher would not run for a minute
    for _ in range(20):
        engine.report(_outcome(engine, 0.5))
    engine.close()
    assert len(_stored(store)) == 20
    assert sum(a.total_samples for a in store.load_arms("default", "g", PATHS)) == 20


def test_flushed_wakes_the_writer_and_completes_once_everything_queued_is_written() -> None:
    store = MemoryStore()
    engine = Engine(store, seed=1, flush_interval=60)  # the writer would not run for a minute unless woken
    for _ in range(10):
        engine.report(_outcome(engine, 1.0))
    engine.flushed().result(timeout=5)
    assert len(_stored(store)) == 10
    engine.close()


def test_flushed_waits_for_a_write_another_thread_has_in_flight() -> None:
    """A report's outcome taken by someone else's flush is not durable until that flush ends: neither is flushed()."""

    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        entered.set()
        assert release.wait(timeout=10)

    store = HookedStore(hold)
    engine = Engine(store, seed=1, flush_interval=60)
    engine.report(_outcome(engine, 1.0))
    other = threading.Thread(target=engine.flush)
    other.start()
    assert entered.wait(timeout=5)  # the other thread holds our outcome, mid-write
    waiting = engine.flushed()
    time.sleep(0.1)
    assert not waiting.done()
    release.set()
    waiting.result(timeout=5)
    assert len(_stored(store)) == 1
    other.join()
    engine.close()


def test_flushed_fails_with_the_store_error_and_the_outcome_stays_queued() -> None:
    store = FlakyStore()
    engine = Engine(store, seed=1, flush_interval=60)
    store.broken = True
    engine.report(_outcome(engine, 1.0))
    with pytest.raises(OSError, match="disk full"):
        engine.flushed().result(timeout=5)
    store.broken = False
    engine.flushed().result(timeout=5)
    assert len(_stored(store)) == 1
    engine.close()
    with pytest.raises(RuntimeError, match="closed"):
        engine.flushed().result(timeout=5)


def test_callers_share_the_next_commit_and_a_cancelled_one_stops_nothing() -> None:
    store = MemoryStore()
    engine = Engine(store, seed=1, flush_interval=60)
    engine.report(_outcome(engine, 1.0))
    first, second = engine.flushed(), engine.flushed()
    assert first is second  # one future per commit, however many wait for it
    first.cancel()
    engine.report(_outcome(engine, 1.0))
    engine.flushed().result(timeout=5)  # the writer survived the cancelled future
    assert len(_stored(store)) == 2
    engine.close()


def test_an_explicit_report_replaces_an_automatic_one_and_not_the_reverse() -> None:
    store = MemoryStore()
    engine = Engine(store, seed=1, write_behind=False)
    auto = _outcome(engine, 0.0, source="success_when")
    engine.report(auto)
    engine.report(Outcome(auto.trace_id, "g", auto.path_id, 1.0, source="explicit"))
    engine.report(Outcome(auto.trace_id, "g", auto.path_id, 0.0, source="success_when"))  # ignored
    (stored,) = _stored(store)
    assert stored.score == 1.0
    arm = next(a for a in store.load_arms("default", "g", PATHS) if a.path_id == auto.path_id)
    assert (arm.successes, arm.failures) == (1.0, 0.0)


def test_outcomes_written_by_another_process_change_decisions(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    reader = Engine(open_store(url), seed=1, refresh_interval=0.0)
    writer = Engine(open_store(url), seed=2, write_behind=False)
    for _ in range(60):
        decision = writer.decide("g", PATHS)
        score = 1.0 if decision.model == "b" else 0.0
        writer.report(Outcome(decision.trace_id, "g", decision.path_id, score, model=decision.model))
    chosen = [reader.decide("g", PATHS).model for _ in range(50)]
    assert chosen.count("b") > 40
    reader.close()
    writer.close()


def test_a_busy_engine_still_sees_other_processes_outcomes() -> None:
    """Reports keep this engine's queue from ever being empty; its arms are still re-read every refresh."""

    store = HookedStore(lambda: time.sleep(0.01))  # a commit: reports keep arriving meanwhile
    engine = Engine(store, seed=1, refresh_interval=0.1, flush_interval=0.005)
    stop = threading.Event()

    def busy() -> None:  # neutral outcomes, back to back
        while not stop.is_set():
            decision = engine.decide("g", PATHS)
            engine.report(Outcome(decision.trace_id, "g", decision.path_id, 0.5, model=decision.model))
            time.sleep(0.0005)

    worker = threading.Thread(target=busy)
    worker.start()
    try:
        time.sleep(0.3)
        # Another process: path b succeeds 300 times and path a fails 300 times.
        other = [
            (Outcome(f"other-{path.model}-{i}", "g", path.path_id, score, model=path.model), _step(engine, score))
            for path, score in ((PATHS[0], 0.0), (PATHS[1], 1.0))
            for i in range(300)
        ]
        MemoryStore.apply_outcomes(store, "default", other)
        time.sleep(1.0)
        chosen = [engine.decide("g", PATHS).model for _ in range(50)]
    finally:
        stop.set()
        worker.join()
        engine.close()
    assert chosen.count("b") > 40


def test_when_every_declared_path_is_disabled_the_engine_still_routes_over_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryStore()
    engine = Engine(store, write_behind=False, refresh_interval=0)
    paths = (Path("model-a"), Path("model-b"))
    engine.register_paths("all_off", paths)
    engine.decide("all_off", paths)
    for path in paths:
        store.set_path_enabled("default", path.path_id, False)
    with caplog.at_level("WARNING", logger="kalibr.engine"):
        chosen = {engine.decide("all_off", paths).path.model for _ in range(40)}
    assert chosen == {"model-a", "model-b"}
    assert "every declared path of goal 'all_off' is disabled" in caplog.text
    store.set_path_enabled("default", paths[0].path_id, True)
    assert {engine.decide("all_off", paths).path.model for _ in range(20)} == {"model-a"}


class PathReadCountingStore(MemoryStore):
    """A memory store that counts the reads of a goal's paths (where the disabled ones come from); they fail while
    ``broken`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.path_reads = 0
        self.broken = False

    def list_paths(self, tenant: str, goal: str | None, *, include_disabled: bool = False) -> list[PathRecord]:
        self.path_reads += 1
        if self.broken:
            raise OSError("connection refused")
        return super().list_paths(tenant, goal, include_disabled=include_disabled)


def test_a_burst_of_fallbacks_reads_the_disabled_paths_once_per_refresh_interval(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    now = [1_000.0]
    monkeypatch.setattr(engine_module, "time", SimpleNamespace(time=lambda: now[0]))
    store = PathReadCountingStore()
    engine = Engine(store, write_behind=False, refresh_interval=1.0)
    engine.register_paths("g", PATHS)
    engine.decide("g", PATHS)  # the goal's first decision reads its arms and disabled paths
    assert store.path_reads == 1
    store.set_path_enabled("default", PATHS[0].path_id, False)  # the operator disables path a
    assert {engine.disabled_paths("g") for _ in range(50)} == {frozenset()}  # as the decision's read saw them
    assert store.path_reads == 1

    now[0] += 1.5  # no decision since: the fallbacks of forced calls, say
    assert {engine.disabled_paths("g") for _ in range(50)} == {frozenset({PATHS[0].path_id})}
    assert store.path_reads == 2

    now[0] += 1.5
    assert {engine.decide("g", PATHS).model for _ in range(20)} == {"b"}  # due: the arms' re-read, with them ...
    assert store.path_reads == 3
    assert engine.disabled_paths("g") == {PATHS[0].path_id}  # ... which the fallbacks share
    assert store.path_reads == 3

    now[0] += 1.5
    store.broken = True
    with caplog.at_level("WARNING", logger="kalibr.engine"):
        assert {engine.disabled_paths("g") for _ in range(50)} == {frozenset({PATHS[0].path_id})}  # the last known
    assert store.path_reads == 4, "a failing store is asked once per interval too"
    assert caplog.text.count("could not read the disabled paths of goal 'g'") == 1


def test_a_decision_is_a_frozen_decision_like_any_other() -> None:
    import dataclasses

    from kalibr import Decision

    engine = Engine(MemoryStore(), seed=1, write_behind=False)
    before = datetime.now(UTC)
    decision = engine.decide("g", PATHS)
    assert before - timedelta(milliseconds=1) <= decision.decided_at <= datetime.now(UTC)
    assert decision.decided_at is decision.decided_at
    assert pickle.loads(pickle.dumps(decision)) == decision
    assert type(decision) is Decision
    fields = {field.name: getattr(decision, field.name) for field in dataclasses.fields(Decision)}
    assert decision == Decision(**fields)
    assert len(decision.trace_id) == 32 and int(decision.trace_id, 16) >= 0
    assert decision.decided_at.tzinfo is UTC and not decision.forced and not decision.fallback
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.goal = "other"  # type: ignore[misc]
    assert dataclasses.replace(decision, reason="why not").reason == "why not"
    engine.close()
