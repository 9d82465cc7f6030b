"""The Router end to end: real HTTP to the sandbox, the embedded engine, a real store."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import kalibr
import kalibr.policies
from kalibr.intelligence.engine import Engine
from kalibr.sandbox import SandboxServer
from kalibr.sandbox.tasks import TaskGenerator
from kalibr.stores.memory import MemoryStore

LEARNING = {
    "name": "learning",
    "models": {"weak": {}, "strong": {}, "middling": {}},
    "goals": {"extract": {"task": "extraction", "accuracy": {"weak": 0.3, "strong": 0.95, "middling": 0.6}}},
    "default_goal": "extract",
}

FAILING = {
    "name": "failing",
    "models": {
        "down": {"error_rates": {"server_error": 1.0}},
        "limited": {"error_rates": {"rate_limited": 1.0}},
        "hung": {"error_rates": {"timeout": 1.0}, "timeout_sleep_s": 2.0},
        "ok": {},
    },
    "goals": {"chat": {"task": "chat"}},
    "default_goal": "chat",
}


def _paths(server: SandboxServer, *models: str) -> list[dict[str, Any]]:
    return [{"model": model, "base_url": server.openai_base_url} for model in models]


def _outcomes(router: kalibr.Router) -> list[Any]:
    engine: Any = router.intelligence
    engine.flush()
    return list(engine.store.outcomes("default", router.goal, datetime.now(UTC) - timedelta(hours=1)))


def test_traffic_moves_to_the_path_that_works(start_sandbox: Callable[..., SandboxServer]) -> None:
    server = start_sandbox(LEARNING)
    router = kalibr.Router("extract", _paths(server, "weak", "middling", "strong"), store="memory:")
    tasks = TaskGenerator(kind="extraction", seed=3)
    chosen: list[str] = []
    for _ in range(300):
        task = tasks.next()
        completion = router.completion(task.messages)
        router.report(success=task.check(completion.text))
        chosen.append(completion.model)
    late = Counter(chosen[-100:])
    assert late["strong"] > 70, late
    assert server.request_count(model="strong") >= late["strong"]


def test_success_when_reports_automatically_and_an_explicit_report_wins(sandbox: SandboxServer) -> None:
    router = kalibr.Router("greet", _paths(sandbox, "sandbox-mini"), success_when=lambda text: False, store="memory:")
    first = router.completion("Hello there")
    second = router.completion("Hello again")
    router.report(success=True)  # the last call in this thread: `second`
    scores = {o.trace_id: (o.score, o.source) for o in _outcomes(router)}
    assert scores[first.trace_id] == (0.0, "success_when")
    assert scores[second.trace_id][0] == 1.0


def test_score_when_counts_fractionally(sandbox: SandboxServer) -> None:
    router = kalibr.Router("grade", _paths(sandbox, "sandbox-mini"), score_when=lambda text: 0.25, store="memory:")
    router.completion("Hello")
    (outcome,) = _outcomes(router)
    assert outcome.score == pytest.approx(0.25)
    engine: Any = router.intelligence
    (arm,) = engine.store.load_arms("default", "grade", router.paths)
    assert (arm.successes, arm.failures) == pytest.approx((0.25, 0.75))


def test_provider_failures_fall_back_and_are_blamed_on_their_own_path(
    start_sandbox: Callable[..., SandboxServer],
) -> None:
    server = start_sandbox(FAILING)
    router = kalibr.Router("chat", _paths(server, "down", "limited", "hung", "ok"), store="memory:", timeout=0.3)
    completion = router.completion("Hello", force_model="down")
    assert completion.model == "ok"
    assert [a.failure_category for a in completion.attempts] == ["provider_error", "rate_limited", "timeout"]
    by_model = {o.model: o for o in _outcomes(router)}
    assert by_model["down"].failure_category == "provider_error"
    assert by_model["limited"].failure_category == "rate_limited"
    assert by_model["hung"].failure_category == "timeout"
    assert all(by_model[m].score == 0.0 for m in ("down", "limited", "hung"))
    assert "ok" not in by_model  # no success_when: nobody has judged the answer yet


def test_every_path_failing_raises_all_paths_failed(start_sandbox: Callable[..., SandboxServer]) -> None:
    server = start_sandbox(FAILING)
    router = kalibr.Router("chat", _paths(server, "down", "limited"), store="memory:")
    with pytest.raises(kalibr.AllPathsFailed) as caught:
        router.completion("Hello")
    assert len(caught.value.exceptions) == 2
    assert "down" in str(caught.value) and "limited" in str(caught.value)


def test_a_bad_request_is_the_callers_error_not_the_paths(sandbox: SandboxServer) -> None:
    router = kalibr.Router("chat", _paths(sandbox, "sandbox-mini", "sandbox-base"), store="memory:")
    with pytest.raises(kalibr.RequestRejected) as caught:
        router.completion([{"role": "wizard", "content": "Hello"}])
    assert caught.value.status_code == 400
    assert _outcomes(router) == []


def test_sixteen_threads_share_a_router_and_each_report_lands_on_its_own_decision(sandbox: SandboxServer) -> None:
    router = kalibr.Router("threads", _paths(sandbox, "sandbox-mini", "sandbox-base", "sandbox-pro"), store="memory:")
    expected: dict[str, tuple[str, float]] = {}
    lock = threading.Lock()
    barrier = threading.Barrier(16)

    def worker(index: int) -> None:
        barrier.wait()
        for call in range(10):
            completion = router.completion(f"Hello from thread {index} call {call}")
            assert not completion.attempts, completion.attempts
            score = ((index * 10 + call) % 5) / 4
            router.report(score=score)  # no trace id: must resolve to this thread's last call
            with lock:
                expected[completion.trace_id] = (completion.decision.path_id, score)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stored = {o.trace_id: (o.path_id, o.score) for o in _outcomes(router)}
    assert len(expected) == 160
    assert stored == expected


async def test_asyncio_tasks_report_their_own_calls(sandbox: SandboxServer) -> None:
    router = kalibr.Router("tasks", _paths(sandbox, "sandbox-mini", "sandbox-base"), store="memory:")

    async def one(index: int) -> tuple[str, float]:
        completion = await router.acompletion(f"Hello {index}")
        await asyncio.sleep(0)  # let other tasks make their calls in between
        score = (index % 3) / 2
        router.report(score=score)
        return completion.trace_id, score

    results = await asyncio.gather(*(one(i) for i in range(40)))
    stored = {o.trace_id: o.score for o in _outcomes(router)}
    assert stored == dict(results)


def test_streaming_yields_the_answer_and_learns_from_it(sandbox: SandboxServer) -> None:
    seen: list[str] = []
    router = kalibr.Router(
        "stream", _paths(sandbox, "sandbox-mini"), success_when=lambda t: seen.append(t) is None, store="memory:"
    )
    stream = router.completion("Hello, stream please", stream=True)
    text = "".join(chunk.text for chunk in stream)
    assert stream.completion is not None
    assert text == stream.completion.text == seen[0]
    assert stream.completion.usage.input_tokens > 0
    (outcome,) = _outcomes(router)
    assert outcome.trace_id == stream.decision.trace_id and outcome.score == 1.0


async def test_async_streaming_matches_sync(sandbox: SandboxServer) -> None:
    router = kalibr.Router("astream", _paths(sandbox, "sandbox-mini"), store="memory:")
    stream = router.astream("Hello, stream please")
    text = "".join([chunk.text async for chunk in stream])
    assert stream.completion is not None and text == stream.completion.text
    assert text == router.completion("Hello, stream please").text


def test_stream_falls_back_before_the_first_chunk(start_sandbox: Callable[..., SandboxServer]) -> None:
    server = start_sandbox(FAILING)
    router = kalibr.Router("chat", _paths(server, "down", "ok"), store="memory:")
    stream = router.stream("Hello", force_model="down")
    assert "".join(chunk.text for chunk in stream)
    assert stream.completion is not None and stream.completion.model == "ok"
    assert [o.model for o in _outcomes(router)] == ["down"]


def test_force_model_keeps_the_conversation_on_one_model(sandbox: SandboxServer) -> None:
    router = kalibr.Router("pinned", _paths(sandbox, "sandbox-mini", "sandbox-base", "sandbox-pro"), store="memory:")
    models = {router.completion(f"turn {i}", force_model="sandbox-base").model for i in range(5)}
    assert models == {"sandbox-base"}
    assert router.decide(force_model="sandbox-pro").forced


def test_anthropic_messages_path(sandbox: SandboxServer) -> None:
    router = kalibr.Router(
        "claude",
        [{"model": "sandbox-mini", "provider": "anthropic", "base_url": sandbox.anthropic_base_url}],
        store="memory:",
    )
    completion = router.completion([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}])
    assert completion.text and completion.usage.output_tokens > 0
    streamed = router.stream("Hello")
    assert "".join(c.text for c in streamed) == completion.text


def test_update_outcome_changes_only_the_fields_passed(sandbox: SandboxServer) -> None:
    router = kalibr.Router("late", _paths(sandbox, "sandbox-mini"), store=None)
    completion = router.completion("Hello")
    router.report(success=True, reason="looked fine", failure_category=None)
    changed = kalibr.update_outcome(completion.trace_id, "late", success=False, failure_category="user_unsatisfied")
    assert sorted(changed) == ["failure_category", "score", "success"]
    (outcome,) = _outcomes(router)
    assert (outcome.success, outcome.score, outcome.failure_category, outcome.reason) == (
        False,
        0.0,
        "user_unsatisfied",
        "looked fine",
    )
    engine: Any = router.intelligence
    (arm,) = engine.store.load_arms("default", "late", router.paths)
    assert (arm.successes, arm.failures) == (0.0, 1.0)


def test_learning_persists_across_restarts(sandbox: SandboxServer, tmp_path: Any) -> None:
    from kalibr._intelligence_registry import reset_shared

    db = f"sqlite:///{tmp_path / 'persist.db'}"
    router = kalibr.Router("persist", _paths(sandbox, "sandbox-mini", "sandbox-base"), store=db)
    for _ in range(10):
        router.completion("Hello")
        router.report(success=True)
    reset_shared()  # closes the engine: flushes and drops every cache
    again = kalibr.Router("persist", _paths(sandbox, "sandbox-mini", "sandbox-base"), store=db)
    engine: Any = again.intelligence
    arms = engine.store.load_arms("default", "persist", again.paths)
    assert sum(arm.total_samples for arm in arms) == 10


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: kalibr.Router("bad goal", ["m"]), "invalid goal"),
        (lambda: kalibr.Router("g", []), "non-empty list"),
        (lambda: kalibr.Router("g", ["m", "m"]), "listed twice"),
        (lambda: kalibr.Router("g", [{"params": {}}]), "has no 'model'"),
        (lambda: kalibr.Router("g", [{"model": "m", "temprature": 1}]), "unknown path field"),
        (lambda: kalibr.Router("g", ["m"], success_when=lambda t: True, score_when=lambda t: 1.0), "not both"),
    ],
)
def test_bad_router_arguments_say_what_to_fix(call: Callable[[], object], message: str) -> None:
    with pytest.raises(kalibr.UserError, match=message):
        call()


def test_bad_reports_say_what_to_fix(sandbox: SandboxServer) -> None:
    router = kalibr.Router("reports", _paths(sandbox, "sandbox-mini"), store="memory:")
    with pytest.raises(kalibr.UserError, match="no call to report"):
        router.report(success=True)
    router.completion("Hello")
    with pytest.raises(ValueError, match="timeout, context_exceeded") as caught:
        router.report(success=False, failure_category="gremlins")  # type: ignore[arg-type]
    assert "gremlins" in str(caught.value)
    with pytest.raises(kalibr.UserError, match=r"in \[0, 1\]"):
        router.report(score=1.5)
    with pytest.raises(kalibr.UserError, match="success=True/False or a score"):
        router.report()
    with pytest.raises(kalibr.UserError, match="not a call of this router"):
        router.report(success=True, trace_id="0" * 32)
    with pytest.raises(kalibr.UserError, match="invalid cost_usd nan: give a finite number >= 0"):
        router.report(success=True, cost_usd=float("nan"))
    with pytest.raises(kalibr.UserError, match="invalid latency_ms -5"):
        router.report(success=True, latency_ms=-5)
    with pytest.raises(kalibr.UserError, match="without NUL characters"):
        kalibr.Router("reports", ["gpt\x00-4o"], store="memory:")


def test_an_adapter_can_judge_a_larger_output_than_the_text(sandbox: SandboxServer) -> None:
    judged: list[object] = []
    router = kalibr.Router(
        "chain", _paths(sandbox, "sandbox-mini"), success_when=lambda out: judged.append(out) or True, store="memory:"
    )
    completion = router.completion("Hello", evaluate=False)
    assert judged == []
    router.evaluate(completion.trace_id, {"parsed": completion.text})
    assert judged == [{"parsed": completion.text}]
    (outcome,) = _outcomes(router)
    assert (outcome.score, outcome.source) == (1.0, "success_when")


def test_update_outcome_of_an_unknown_trace_is_a_lookup_error(sandbox: SandboxServer) -> None:
    kalibr.Router("late", _paths(sandbox, "sandbox-mini"))
    with pytest.raises(kalibr.OutcomeNotFound) as caught:
        kalibr.update_outcome("f" * 32, "late", success=True)
    assert isinstance(caught.value, LookupError)


def test_auto_path_generation_wraps_the_engine_with_one_job_per_store(monkeypatch: pytest.MonkeyPatch) -> None:
    from kalibr._intelligence_registry import reset_shared
    from kalibr.path_generation import GeneratedPathsIntelligence, PathGenerationConfig

    config = PathGenerationConfig(interval_s=3600)
    first = kalibr.Router("gen", ["m"], store="memory:", auto_path_generation=True, path_generation=config)
    second = kalibr.Router("gen2", ["m"], store="memory:", auto_path_generation=True)
    assert isinstance(first.intelligence, GeneratedPathsIntelligence)
    assert first.intelligence is second.intelligence
    job = first.intelligence.job
    assert job is not None
    assert job.running
    monkeypatch.setenv("KALIBR_AUTO_PATH_GENERATION", "0")
    assert not isinstance(kalibr.Router("plain", ["m"], store="memory:").intelligence, GeneratedPathsIntelligence)
    reset_shared()
    assert not job.running


def test_a_run_verdict_replaces_the_call_verdict_and_an_explicit_report_replaces_both(sandbox: SandboxServer) -> None:
    router = kalibr.Router(
        "runs", _paths(sandbox, "sandbox-mini"), success_when=lambda out: out == "good", store="memory:"
    )

    def score_of(trace_id: str) -> tuple[float, str]:
        (outcome,) = [o for o in _outcomes(router) if o.trace_id == trace_id]
        return outcome.score, outcome.source

    first = router.completion("Hello")  # the text is not "good": success_when says 0
    assert score_of(first.trace_id) == (0.0, "success_when")
    router.evaluate(first.trace_id, "good", final=True)
    assert score_of(first.trace_id)[0] == 1.0
    router.evaluate(first.trace_id, "bad")  # a per-call verdict never replaces a run's
    assert score_of(first.trace_id)[0] == 1.0
    router.report(success=False, trace_id=first.trace_id)
    router.evaluate(first.trace_id, "good", final=True)  # nor does a run's replace the caller's
    assert score_of(first.trace_id)[0] == 0.0
    router.report(score=0.5, trace_id=first.trace_id)  # the caller may change their mind
    assert score_of(first.trace_id)[0] == 0.5


def test_correcting_judged_failures_after_a_healthy_record_keeps_routing(sandbox: SandboxServer) -> None:
    # A judge turns strict after 30 good answers; each failure it finds (which starts the change detector's run)
    # is corrected by an explicit report. The policy once kept the corrected failure in the run and the next
    # completion raised ZeroDivisionError.
    verdict = [True]
    router = kalibr.Router(
        "greet", _paths(sandbox, "sandbox-mini"), store="memory:", success_when=lambda text: verdict[0]
    )
    for _ in range(30):
        router.completion("Hello there")
    verdict[0] = False
    for _ in range(5):
        router.completion("Hello there")
        router.report(success=True)
    engine: Any = router.intelligence
    engine.flush()
    (arm,) = engine.store.load_arms("default", "greet", router.paths)
    assert (arm.successes, arm.failures) == (35.0, 0.0)
    assert arm.extra.get("run_failures", 0.0) == 0.0
    assert {o.score for o in _outcomes(router)} == {1.0}


class _BrokenPolicy(kalibr.policies.ThompsonPolicy):
    def update(self, arm: Any, **outcome: Any) -> Any:
        raise ZeroDivisionError("a policy bug")

    def adjust(self, arm: Any, **scores: Any) -> Any:
        raise ValueError("math domain error")


def test_a_policy_that_raises_never_breaks_a_completion_or_report_and_the_outcome_is_kept(
    sandbox: SandboxServer, caplog: pytest.LogCaptureFixture
) -> None:
    engine = Engine(MemoryStore(), policy=_BrokenPolicy())
    router = kalibr.Router("greet", _paths(sandbox, "sandbox-mini"), intelligence=engine, success_when=bool)
    completion = router.completion("Hello there")
    router.report(success=False, failure_category="hallucination_detected")
    assert completion.text
    (outcome,) = _outcomes(router)
    assert (outcome.trace_id, outcome.score, outcome.failure_category) == (
        completion.trace_id,
        0.0,
        "hallucination_detected",
    )
    logged = [r.getMessage() for r in caplog.records if "policy raised" in r.getMessage()]
    assert logged and all("a policy bug" not in line and "math domain" not in line for line in logged)
    assert any("ZeroDivisionError" in line for line in logged) and any("ValueError" in line for line in logged)


def test_a_path_disabled_in_the_store_gets_no_traffic_until_enabled_again(
    sandbox: SandboxServer, tmp_path: Any
) -> None:
    from kalibr.intelligence.engine import Engine
    from kalibr.stores.sqlite import SQLiteStore

    db = tmp_path / "shared.db"
    # refresh_interval=0: every decide asks for a re-read, and flush() performs it (no waiting on a clock).
    engine = Engine(SQLiteStore(db), refresh_interval=0)
    router = kalibr.Router("disable", _paths(sandbox, "sandbox-mini", "sandbox-base"), intelligence=engine)
    mini = router.paths[0]

    def routed(calls: int) -> Counter[str]:
        models = Counter(router.completion("hello").model for _ in range(calls))
        engine.flush()
        return models

    assert routed(20)["sandbox-mini"] > 0
    operator = SQLiteStore(db)  # another process's view of the store, as `kalibr dashboard` or the service has
    assert operator.set_path_enabled("default", mini.path_id, False)
    routed(1)  # the decide that finds the arms stale; flush() re-reads them with the disabled paths
    assert routed(40) == Counter({"sandbox-base": 40})

    assert operator.set_path_enabled("default", mini.path_id, True)
    routed(1)
    assert routed(60)["sandbox-mini"] > 0
    engine.close()
    operator.close()


def test_a_decision_stays_reportable_for_fifty_thousand_newer_calls_and_memory_stays_bounded() -> None:
    router = kalibr.Router("history", ["model-a", "model-b"], intelligence=Engine(MemoryStore(), seed=1))
    first = router.decide()
    newer = [router.decide().trace_id for _ in range(49_999)]
    router.report(success=True, trace_id=first.trace_id)
    router.report(success=False, trace_id=newer[-1])
    for _ in range(50_000):
        router.decide()
    with pytest.raises(kalibr.UserError, match="too old"):
        router.report(success=True, trace_id=first.trace_id)
    assert {o.trace_id: o.success for o in _outcomes(router)} == {first.trace_id: True, newer[-1]: False}
    router.intelligence.close()


def test_threads_deciding_and_reporting_while_the_config_changes_lose_no_outcome() -> None:
    engine = Engine(MemoryStore(), seed=3)
    router = kalibr.Router("busy", ["model-a", "model-b", "model-c"], intelligence=engine)
    score_of = {"model-a": 0.0, "model-b": 0.25, "model-c": 1.0}
    reported: dict[str, tuple[str, float]] = {}
    lock = threading.Lock()
    done = threading.Event()
    barrier = threading.Barrier(9)

    def worker() -> None:
        barrier.wait()
        for _ in range(250):
            decision = router.decide()
            router.report(score=score_of[decision.model], trace_id=decision.trace_id)
            with lock:
                reported[decision.trace_id] = (decision.path_id, score_of[decision.model])

    def reconfigure() -> None:
        barrier.wait()
        rates = (0.0, 1.0, 0.1)
        index = 0
        while not done.is_set():
            engine.set_config("busy", kalibr.PolicyConfig(exploration_rate=rates[index % 3]))
            index += 1

    workers = [threading.Thread(target=worker) for _ in range(8)]
    configurer = threading.Thread(target=reconfigure)
    for thread in (*workers, configurer):
        thread.start()
    for thread in workers:
        thread.join()
    done.set()
    configurer.join()

    stored = {o.trace_id: (o.path_id, o.score) for o in _outcomes(router)}
    assert len(reported) == 2_000
    assert stored == reported
    per_path = Counter(path_id for path_id, _ in reported.values())
    arms = engine.store.load_arms("default", "busy", router.paths)
    assert {arm.path_id: arm.total_samples for arm in arms} == {p.path_id: per_path[p.path_id] for p in router.paths}
    # Decisions see each outcome as it lands: the path that looks best changes with the next report.
    assert engine.decide("busy", router.paths, high_risk=True).model == "model-c"
    for _ in range(100):
        router.report(success=False, trace_id=router.decide(force_model="model-c").trace_id)
    assert engine.decide("busy", router.paths, high_risk=True).model == "model-b"
    engine.close()
