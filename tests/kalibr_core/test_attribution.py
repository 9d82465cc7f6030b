"""Which decision an outcome lands on: runs tracked by ``kalibr.runs``, repeated reports, judges and failures.

Runs are driven the way a framework drives an adapter: the root's start callback in the caller's context, the
model call and the root's end in copies of it (``contextvars.copy_context().run``, a new asyncio task).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pydantic
import pytest
from tests.openai_tools import WEATHER_TOOL

import kalibr
from kalibr.plugins import pm
from kalibr.runs import Run, RunTracker
from kalibr.sandbox import SandboxServer
from kalibr.stores import MemoryStore
from kalibr.stores.base import OutcomeRecord

FAILING = {
    "name": "failing",
    "models": {"down": {"error_rates": {"server_error": 1.0}}, "limited": {"error_rates": {"rate_limited": 1.0}}},
    "goals": {"chat": {"task": "chat"}},
    "default_goal": "chat",
}


def _router(sandbox: SandboxServer, goal: str = "attribution", **options: Any) -> kalibr.Router:
    paths = [{"model": model, "base_url": sandbox.openai_base_url} for model in ("sandbox-mini", "sandbox-base")]
    options.setdefault("store", "memory:")
    return kalibr.Router(goal, paths, **options)


def _outcomes(router: kalibr.Router) -> dict[str, OutcomeRecord]:
    engine: Any = router.intelligence
    engine.flush()
    since = datetime.now(UTC) - timedelta(hours=1)
    return {o.trace_id: o for o in engine.store.outcomes("default", router.goal, since)}


def _framework_call(tracker: RunTracker, router: kalibr.Router, run_id: str, parent: str) -> str:
    """A model step of a run, in its own copied context as frameworks run steps: returns its trace id."""

    def step() -> str:
        tracker.start(run_id, parent)
        completion = router.completion(f"step {run_id}")
        tracker.record(run_id, router, completion.trace_id)
        tracker.end(run_id)
        return completion.trace_id

    return contextvars.copy_context().run(step)


def _run(tracker: RunTracker, router: kalibr.Router, steps: int = 2) -> tuple[str, list[str]]:
    """A root run started in the caller's context whose steps and end run in copies of it."""
    root = uuid.uuid4().hex
    tracker.start(root, None)
    traces = [_framework_call(tracker, router, f"{root}-{i}", root) for i in range(steps)]
    run = contextvars.copy_context().run(tracker.end, root)
    assert isinstance(run, Run) and run.trace_ids(router) == traces
    return root, traces


# --- report() after a run ---------------------------------------------------------------------------------
def test_a_report_after_a_run_lands_on_every_decision_of_the_run_and_not_on_an_earlier_call(
    sandbox: SandboxServer,
) -> None:
    router, tracker = _router(sandbox), RunTracker()
    earlier = router.completion("a direct call before the run")
    _, traces = _run(tracker, router, steps=3)
    router.report(success=False, failure_category="hallucination_detected")
    stored = _outcomes(router)
    assert earlier.trace_id not in stored
    assert [(stored[t].score, stored[t].failure_category, stored[t].source) for t in traces] == [
        (0.0, "hallucination_detected", "explicit")
    ] * 3


def test_a_direct_call_after_a_run_is_what_the_next_report_lands_on(sandbox: SandboxServer) -> None:
    router, tracker = _router(sandbox), RunTracker()
    _run(tracker, router)
    later = router.completion("a direct call after the run")
    router.report(success=True)
    assert set(_outcomes(router)) == {later.trace_id}
    _run(tracker, router)  # and a run after that one is newer again
    router.report(success=False)
    assert len(_outcomes(router)) == 3


def test_a_run_of_another_router_leaves_this_routers_last_call_to_report(sandbox: SandboxServer) -> None:
    router, other, tracker = _router(sandbox), _router(sandbox, "other_goal"), RunTracker()
    direct = router.completion("mine")
    _run(tracker, other)
    router.report(success=True)
    assert set(_outcomes(router)) == {direct.trace_id}
    assert _outcomes(other) == {}


def test_concurrent_runs_make_a_report_without_trace_id_ambiguous(sandbox: SandboxServer) -> None:
    router, tracker = _router(sandbox), RunTracker()
    router.completion("an earlier direct call")
    tracker.start("first", None)
    tracker.start("second", None)  # a batch: both roots start before either ends
    first = _framework_call(tracker, router, "first-step", "first")
    second = _framework_call(tracker, router, "second-step", "second")
    with pytest.raises(kalibr.UserError, match="still going") as still_going:
        router.report(success=True)
    assert "trace_id=" in str(still_going.value)
    tracker.end("first")
    tracker.end("second")
    with pytest.raises(kalibr.UserError, match="ambiguous: 2 runs") as ambiguous:
        router.report(success=True)
    assert "trace_id=" in str(ambiguous.value) and "llm.report(" in str(ambiguous.value)
    assert _outcomes(router) == {}
    router.report(success=True, trace_id=first)  # the fix the message names
    router.report(success=False, trace_id=second)
    assert {t: o.score for t, o in _outcomes(router).items()} == {first: 1.0, second: 0.0}


def test_a_batch_in_worker_threads_is_seen_by_the_caller(sandbox: SandboxServer) -> None:
    router, tracker = _router(sandbox), RunTracker()
    with tracker.shared_scope():
        workers = []
        for _ in range(3):
            context = contextvars.copy_context()  # a batch executor copies the caller's context per item
            workers.append(threading.Thread(target=context.run, args=(_run, tracker, router, 1)))
            workers[-1].start()
        for worker in workers:
            worker.join()
    with pytest.raises(kalibr.UserError, match="ambiguous: 3 runs"):
        router.report(success=True)


def test_runs_in_worker_threads_are_seen_by_a_caller_that_made_a_direct_call(sandbox: SandboxServer) -> None:
    router, tracker = _router(sandbox), RunTracker()
    earlier = router.completion("an earlier direct call")
    context = contextvars.copy_context()  # an executor's copy of the caller's context, for one item
    worker = threading.Thread(target=context.run, args=(_run, tracker, router, 2))
    worker.start()
    worker.join()
    router.report(success=False)  # the worker's run, not the earlier direct call
    stored = _outcomes(router)
    assert earlier.trace_id not in stored and len(stored) == 2


def test_one_after_another_inside_a_shared_window_still_counts_as_a_batch(sandbox: SandboxServer) -> None:
    router, tracker = _router(sandbox), RunTracker()
    with tracker.shared_scope():
        for _ in range(2):
            worker = threading.Thread(target=contextvars.copy_context().run, args=(_run, tracker, router, 1))
            worker.start()
            worker.join()  # the first item ends before the second starts
    with pytest.raises(kalibr.UserError, match="ambiguous: 2 runs"):
        router.report(success=True)
    _, traces = _run(tracker, router)  # a run after the batch is the last one, alone
    router.report(success=True)
    assert set(_outcomes(router)) == set(traces)


def test_another_thread_never_reports_this_threads_run(sandbox: SandboxServer) -> None:
    router, tracker = _router(sandbox), RunTracker()
    _run(tracker, router)
    errors: list[BaseException] = []

    def report_elsewhere() -> None:
        try:
            router.report(success=True)
        except kalibr.UserError as error:
            errors.append(error)

    # Even a thread started with a copy of this context (which holds the scope) does not own the scope.
    thread = threading.Thread(target=contextvars.copy_context().run, args=(report_elsewhere,))
    thread.start()
    thread.join()
    assert len(errors) == 1 and "no call to report" in str(errors[0])


async def test_an_async_run_ended_in_another_task_is_reported_by_the_task_that_started_it(
    sandbox: SandboxServer,
) -> None:
    router, tracker = _router(sandbox), RunTracker()
    started: list[int] = []
    all_started = asyncio.Event()  # every run is going before any ends: the gathering task sees 8 at once

    async def item(index: int) -> list[str]:
        await router.acompletion(f"direct call {index}")  # an earlier, unrelated call of this task
        root = f"root-{index}"
        tracker.start(root, None)  # the root's start: in this task, as LangChain awaits it
        started.append(index)
        if len(started) == 8:
            all_started.set()
        await all_started.wait()

        async def model_step() -> str:
            tracker.start(f"{root}-llm", root)
            completion = await router.acompletion(f"in run {index}")
            tracker.record(f"{root}-llm", router, completion.trace_id)
            tracker.end(f"{root}-llm")
            return completion.trace_id

        trace = await asyncio.create_task(model_step())  # steps run in new tasks with copied contexts

        async def end() -> None:
            tracker.end(root)

        await asyncio.create_task(end())  # and so does the root's end (LangChain's @shielded)
        router.report(score=index / 10)
        return [trace]

    gatherer = await router.acompletion("the gathering task's own call, before the gather")
    results = await asyncio.gather(*(item(i) for i in range(8)))
    stored = _outcomes(router)
    assert {t: o.score for t, o in stored.items()} == {traces[0]: i / 10 for i, traces in enumerate(results)}
    with pytest.raises(kalibr.UserError, match="ambiguous: 8 runs"):  # the gathering task saw them all...
        router.report(success=True)
    assert gatherer.trace_id not in _outcomes(router)  # ...and never reports its older call instead


def test_a_task_never_reports_the_call_its_creator_made(sandbox: SandboxServer) -> None:
    router = _router(sandbox)
    made_here = router.completion("asked before the event loop started").trace_id

    async def report_in_a_task() -> None:  # its context is a copy of this thread's, last call included
        with pytest.raises(kalibr.UserError, match="no call to report in this thread or task"):
            router.report(success=False)

    asyncio.run(report_in_a_task())
    router.report(success=True)  # here it is still this thread's last call
    assert {t: o.success for t, o in _outcomes(router).items()} == {made_here: True}


def test_unknown_runs_are_ignored_and_only_a_roots_end_returns_a_run(sandbox: SandboxServer) -> None:
    router, tracker = _router(sandbox), RunTracker()
    assert tracker.end("never started") is None
    tracker.record("never started", router, "0" * 32)  # a call outside any known run: ignored
    tracker.start("root", None)
    tracker.start("child", "root")
    assert tracker.root_of("child") == "root"
    assert tracker.end("child") is None  # a non-root end publishes nothing
    run = tracker.end("root")
    assert run is not None and run.decisions == ()
    assert tracker.root_of("child") is None


# --- repeated reports -------------------------------------------------------------------------------------
@pytest.fixture(params=["memory", "sqlite"])
def store_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    return "memory:" if request.param == "memory" else f"sqlite:///{tmp_path}/reports.db"


def test_the_latest_explicit_report_replaces_the_whole_outcome(sandbox: SandboxServer, store_url: str) -> None:
    router = _router(sandbox, store=store_url, success_when=lambda text: True)
    completion = router.completion("Who makes the iPhone?")
    router.report(success=False, failure_category="hallucination_detected", reason="invented a company")
    router.report(success=True, score=0.1)
    stored = _outcomes(router)[completion.trace_id]
    assert (stored.score, stored.success, stored.failure_category, stored.reason) == (0.1, True, None, None)
    assert stored.source == "explicit"
    engine: Any = router.intelligence
    arms = {a.path_id: a for a in engine.store.load_arms("default", router.goal, router.paths)}
    chosen = arms[completion.decision.path_id]
    assert (chosen.successes, chosen.failures, chosen.samples) == pytest.approx((0.1, 0.9, 1))  # counted once


def test_update_outcome_changes_only_what_it_is_given(sandbox: SandboxServer, store_url: str) -> None:
    router = _router(sandbox, store=store_url)
    completion = router.completion("Who makes the iPhone?")
    router.report(success=False, failure_category="hallucination_detected", reason="invented a company")
    assert router.update_outcome(completion.trace_id, score=0.2) == ["score"]
    stored = _outcomes(router)[completion.trace_id]
    assert (stored.score, stored.failure_category, stored.reason) == (
        0.2,
        "hallucination_detected",
        "invented a company",
    )
    router.report(success=True)  # an explicit report after an update replaces it too
    stored = _outcomes(router)[completion.trace_id]
    assert (stored.score, stored.failure_category, stored.reason) == (1.0, None, None)


# --- what judges see --------------------------------------------------------------------------------------
def test_a_judge_sees_the_tool_calls_of_a_tool_call_turn(sandbox: SandboxServer) -> None:
    seen: list[Any] = []
    router = _router(sandbox, success_when=lambda output: seen.append(output) is None and bool(output))
    completion = router.completion(
        "What is the weather in Paris? Use get_weather.", tools=[WEATHER_TOOL], tool_choice="required"
    )
    assert completion.tool_calls and seen == [list(completion.tool_calls)]
    assert json.loads(seen[0][0].arguments) == {"location": "Paris"}
    assert _outcomes(router)[completion.trace_id].score == 1.0
    router.completion("Say hello")
    assert isinstance(seen[1], str) and seen[1]


def test_a_judge_with_two_parameters_also_gets_the_completion(sandbox: SandboxServer) -> None:
    seen: list[tuple[Any, Any]] = []

    def judge(output: str, completion: kalibr.Completion | None) -> bool:
        seen.append((output, completion))
        return completion is not None and completion.finish_reason == "stop"

    router = _router(sandbox, success_when=judge)
    completion = router.completion("Say hello")
    assert seen == [(completion.text, completion)]
    assert _outcomes(router)[completion.trace_id].score == 1.0
    router.evaluate(completion.trace_id, {"parsed": True}, final=True)  # a run's output: no completion
    assert seen[-1] == ({"parsed": True}, None)


def test_a_judge_that_raises_is_stored_as_its_type_never_its_text(
    sandbox: SandboxServer, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "Zanzibar-judge-9c1e"

    def judge(text: str) -> bool:
        raise ValueError(f"could not parse {secret}: {text}")

    router = _router(sandbox, success_when=judge)
    with caplog.at_level(logging.WARNING, logger="kalibr"):
        completion = router.completion(f"Please repeat this exactly: {secret}")
    assert secret in completion.text  # the judge really had the secret in hand
    stored = _outcomes(router)[completion.trace_id]
    assert (stored.score, stored.failure_category, stored.reason) == (
        0.0,
        "validation_failed",
        "success_when raised ValueError",
    )
    assert "success_when raised ValueError" in caplog.text
    assert secret not in caplog.text


def test_a_store_failure_while_replacing_an_outcome_is_neither_blamed_on_the_judge_nor_lost(
    sandbox: SandboxServer, caplog: pytest.LogCaptureFixture
) -> None:
    class FlakyUpdates(MemoryStore):
        down = True
        attempts = 0

        def update_outcome(self, *args: Any, **kwargs: Any) -> Any:
            FlakyUpdates.attempts += 1
            if FlakyUpdates.down:
                raise kalibr.StoreError("the database is down")
            return super().update_outcome(*args, **kwargs)

    store = FlakyUpdates()
    router = _router(sandbox, store=store, success_when=lambda output: output == "final answer")
    completion = router.completion("Hello")  # the per-call verdict (0: not "final answer")
    engine: Any = router.intelligence
    engine.flush()
    with caplog.at_level(logging.WARNING, logger="kalibr"):
        router.evaluate(completion.trace_id, "final answer", final=True)  # replaces it: a store write, queued
        with pytest.raises(kalibr.StoreError):
            engine.flush()
    assert FlakyUpdates.attempts >= 1  # the background writer may have tried too
    assert "raised" not in caplog.text
    FlakyUpdates.down = False
    (stored,) = _outcomes(router).values()  # flushes: the queued replacement is written now
    assert (stored.score, stored.source, stored.failure_category) == (1.0, "run", None)  # no "judge failed" report


# --- failures -----------------------------------------------------------------------------------------------
def test_all_paths_failed_keeps_each_paths_own_exception(start_sandbox: Callable[..., SandboxServer]) -> None:
    server = start_sandbox(FAILING)
    paths = [{"model": model, "base_url": server.openai_base_url} for model in ("down", "limited")]
    router = kalibr.Router("chat", paths, store="memory:")
    with pytest.raises(kalibr.AllPathsFailed) as caught:
        router.completion("Hello", force_model="down")
    down, limited = caught.value.exceptions
    assert isinstance(down, kalibr.ProviderHTTPError) and isinstance(limited, kalibr.ProviderHTTPError)
    assert (down.status_code, down.failure_category, down.model) == (500, "provider_error", "down")
    assert (limited.status_code, limited.failure_category) == (429, "rate_limited")
    assert down.__traceback__ is not None  # the very exception the provider call raised
    assert kalibr.failure_category_of(caught.value) == "rate_limited"
    stored = {o.model: o for o in _outcomes(router).values()}
    assert stored["down"].reason == "ProviderHTTPError: HTTP 500"


class _TimeoutOfAProvider(TimeoutError):
    pass


class _FrameworkError(Exception):
    pass


class _Model(pydantic.BaseModel):
    count: int


def _validation_error() -> pydantic.ValidationError:
    try:
        _Model.model_validate({"count": "many"})
    except pydantic.ValidationError as error:
        return error
    raise AssertionError("expected a validation error")


@pytest.fixture
def framework_plugin() -> Iterator[None]:
    class Plugin:
        @kalibr.hookimpl
        def kalibr_failure_category(self, error: BaseException) -> str | None:
            return "tool_error" if isinstance(error, _FrameworkError) else None

    pm.register(Plugin(), name="test-framework-failures")
    try:
        yield
    finally:
        pm.unregister(name="test-framework-failures")


@pytest.mark.parametrize(
    ("make_error", "category"),
    [
        (lambda: kalibr.ProviderTimeout("slow"), "timeout"),
        (lambda: kalibr.ProviderHTTPError("busy", status_code=429), "rate_limited"),
        (lambda: _TimeoutOfAProvider(), "timeout"),
        (lambda: json.JSONDecodeError("bad", "{", 0), "malformed_output"),
        (_validation_error, "validation_failed"),
        (lambda: _FrameworkError("from a plugin"), "tool_error"),
        (lambda: RuntimeError("nobody knows"), "unknown"),
    ],
    ids=["provider-timeout", "http-429", "timeout-error", "json", "pydantic", "plugin", "unknown"],
)
def test_failure_category_of(framework_plugin: None, make_error: Callable[[], BaseException], category: str) -> None:
    assert kalibr.failure_category_of(make_error()) == category


def test_a_plugin_without_an_answer_leaves_it_unknown() -> None:
    assert kalibr.failure_category_of(_FrameworkError("no plugin registered")) == "unknown"


def test_a_run_is_judged_once_and_a_decision_that_cannot_take_the_verdict_does_not_stop_the_others(
    sandbox: SandboxServer, caplog: pytest.LogCaptureFixture
) -> None:
    judged: list[Any] = []
    router = _router(sandbox, success_when=lambda output: judged.append(output) is None)
    tracker = RunTracker()
    tracker.start("root", None)
    first = _framework_call(tracker, router, "step-1", "root")
    tracker.record("root", router, "a-trace-the-router-never-made")  # e.g. evicted from the router's memory
    second = _framework_call(tracker, router, "step-2", "root")
    run = tracker.end("root")
    assert run is not None
    judged.clear()  # the steps' own per-call verdicts, which the run's replaces
    with caplog.at_level(logging.WARNING, logger="kalibr"):
        run.judge({"answer": 42})
    assert judged == [{"answer": 42}]
    stored = _outcomes(router)
    assert [(stored[t].source, stored[t].success) for t in (first, second)] == [("run", True), ("run", True)]
    assert "could not report a run's outcome: UserError" in caplog.text


def test_a_run_is_failed_only_by_an_error_that_blames_the_output(sandbox: SandboxServer) -> None:
    router = _router(sandbox)
    tracker = RunTracker()
    runs = []
    for name in ("caller-bug", "bad-json"):
        tracker.start(name, None)
        _framework_call(tracker, router, f"{name}-step", name)
        runs.append(tracker.end(name))
    caller_bug, bad_json = runs
    assert caller_bug is not None and bad_json is not None
    caller_bug.fail(KeyError("the caller's own code"))
    bad_json.fail(json.JSONDecodeError("no JSON", "doc", 0))
    stored = _outcomes(router)
    assert caller_bug.trace_ids(router)[0] not in stored  # no judge, no error outcome: nothing reported
    failed = stored[bad_json.trace_ids(router)[0]]
    assert (failed.source, failed.success, failed.failure_category, failed.reason) == (
        "run",
        False,
        "malformed_output",
        "the run raised JSONDecodeError",
    )
    router.report(success=True, trace_id=failed.trace_id)  # the caller's word replaces a run's verdict
    replaced = _outcomes(router)[failed.trace_id]
    assert (replaced.source, replaced.success) == ("explicit", True)


def test_a_step_that_failed_on_its_answer_is_failed_once_and_left_out_of_its_run(sandbox: SandboxServer) -> None:
    from tests.recording import RecordingRouter

    router = RecordingRouter("attribution", [{"model": "sandbox-mini", "base_url": sandbox.openai_base_url}])
    tracker = RunTracker()
    not_json = json.JSONDecodeError("no JSON", "doc", 0)
    tracker.start("retry", None)
    attempts = []
    for attempt, error in (("bad-json", not_json), ("caller-bug", KeyError("the caller's own code"))):
        tracker.start(attempt, "retry")
        attempts.append(_framework_call(tracker, router, f"{attempt}-model", attempt))  # a model step inside it
        tracker.end(attempt, error)
    thrown_away, kept = attempts
    assert [(r.trace_id, r.failure_category) for r in router.reports] == [(thrown_away, "malformed_output")]
    run = tracker.end("retry", not_json)
    assert run is not None and run.trace_ids(router) == [kept]  # the caller's bug blames no answer: still a step
    run.fail(not_json)
    assert [r.trace_id for r in router.reports] == [thrown_away, kept]  # each failed once


def test_with_two_routers_in_a_run_each_is_judged_on_the_outermost_step_that_is_all_its_own(
    sandbox: SandboxServer,
) -> None:
    seen: dict[str, list[Any]] = {"mine": [], "theirs": []}
    routers = {
        goal: kalibr.Router(
            goal, [{"model": "sandbox-mini", "base_url": sandbox.openai_base_url}], success_when=seen[goal].append
        )
        for goal in seen
    }
    tracker = RunTracker()
    tracker.start("root", None)
    tracker.start("branch", "root")  # holds both of "mine"'s steps, one inside a step of its own
    tracker.start("inner", "branch")
    _framework_call(tracker, routers["mine"], "mine-1", "inner")
    tracker.end("inner", output="inner's output")
    _framework_call(tracker, routers["mine"], "mine-2", "branch")
    tracker.end("branch", output="branch's output")
    for step in ("theirs-1", "theirs-2"):  # two sibling steps, no step of its own holds both
        tracker.start(f"{step}-step", "root")
        _framework_call(tracker, routers["theirs"], step, f"{step}-step")
        tracker.end(f"{step}-step", output=f"{step}'s output")
    run = tracker.end("root")
    assert run is not None
    for answers in seen.values():
        answers.clear()  # each model step's answer was judged as the router answered
    run.judge("the run's output")
    assert seen == {"mine": ["branch's output"], "theirs": ["the run's output"]}
