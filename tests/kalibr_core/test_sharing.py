"""Who shares an engine: explicit objects, store URLs, store objects; nothing outlives the Routers holding it."""

from __future__ import annotations

import gc
import threading
from datetime import UTC, datetime

import pytest

import kalibr
from kalibr.intelligence.engine import Engine
from kalibr.path_generation import PathGenerationConfig
from kalibr.stores.memory import MemoryStore

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _engines() -> int:
    gc.collect()
    return sum(1 for item in gc.get_objects() if isinstance(item, Engine))


def _flush_threads() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.name == "kalibr-flush"}


def test_routers_with_their_own_store_leave_no_engine_or_thread_behind() -> None:
    engines, threads = _engines(), _flush_threads()
    routers = [kalibr.Router("leak_check", ["m1", "m2"], store=MemoryStore()) for _ in range(20)]
    started = _flush_threads() - threads
    assert _engines() == engines + 20 and len(started) == 20
    for router in routers:
        router.decide()
    del routers, router
    assert _engines() == engines
    for thread in started:  # closed engines' writers finish their last flush and stop
        thread.join(timeout=10)
    assert not any(thread.is_alive() for thread in started)


def test_routers_given_one_store_object_share_one_engine_until_the_last_is_gone() -> None:
    store = MemoryStore()
    first = kalibr.Router("shared_store", ["m1", "m2"], store=store)
    second = kalibr.Router("shared_store", ["m1", "m2"], store=store)
    assert first.intelligence is second.intelligence
    engine = first.intelligence
    del first
    gc.collect()
    decision = second.decide()  # the engine is still open for the second Router
    second.report(success=True, trace_id=decision.trace_id)
    del second, engine
    gc.collect()
    assert not any(isinstance(item, Engine) and item.store is store for item in gc.get_objects())
    # Closed by the last Router's collection, which flushed the queued outcome.
    assert [record.trace_id for record in store.outcomes("default", "shared_store", EPOCH)] == [decision.trace_id]


def test_an_engine_passed_explicitly_is_the_callers_and_stays_open() -> None:
    engine = Engine(MemoryStore())
    try:
        router = kalibr.Router("explicit", ["m1"], intelligence=engine)
        assert router.intelligence is engine
        del router
        gc.collect()
        assert engine.decide("explicit", kalibr.Router("explicit", ["m1"], intelligence=engine).paths).model == "m1"
    finally:
        engine.close()


def test_path_generation_settings_that_cannot_apply_are_refused() -> None:
    store = MemoryStore()
    fast = PathGenerationConfig(interval_s=60.0)
    first = kalibr.Router("gen", ["m1"], store=store, auto_path_generation=True, path_generation=fast)
    same = kalibr.Router("gen", ["m1"], store=store, auto_path_generation=True, path_generation=fast)
    assert same.intelligence is first.intelligence
    with pytest.raises(kalibr.UserError, match=r"path_generation=.*cannot apply.*interval_s=60"):
        kalibr.Router("gen", ["m1"], store=store, auto_path_generation=True, path_generation=PathGenerationConfig())
    url = kalibr.Router("gen", ["m1"], store="memory:", auto_path_generation=True, path_generation=fast)
    other = PathGenerationConfig(interval_s=5.0)
    with pytest.raises(kalibr.UserError, match="cannot apply"):
        kalibr.Router("gen", ["m1"], store="memory:", auto_path_generation=True, path_generation=other)
    assert url.intelligence is not first.intelligence
