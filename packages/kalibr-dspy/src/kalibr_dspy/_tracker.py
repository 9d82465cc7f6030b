"""Which routed decisions each DSPy prediction was made from, and the outcomes DSPy's metrics give them.

DSPy gives every module, LM and tool call an id and, while the call runs, keeps it in
``callback_context.ACTIVE_CALL_ID`` (only when at least one callback is configured). ``DecisionTracker`` tells the
core's ``kalibr.runs.RunTracker`` when each call starts and ends; each routed call is recorded under the active
LM call. The outermost module call is the run: when it ends, its ``Prediction`` carries the run's
decisions, the router's ``success_when``/``score_when`` judge that prediction for each of them (a module's LM
calls are steps, not answers), and ``router.report()`` afterwards reports all of them. When several routers made
decisions in one run, each is judged on its own part: the ``Prediction`` of the outermost module call (or the answer
of the LM call) holding all its decisions and none of another router's. A module that raised because of what a
model answered (an ``AdapterParseError``) reports its decisions as failed.

Metric scores become outcomes without any wiring: the metric of a ``dspy.Evaluate`` or an optimizer
(``BootstrapFewShot(metric=...)``) is wrapped for the length of its call, so each score is reported as it is
computed and the router learns during the evaluation; ``Evaluate`` also hands its callbacks every
``(example, prediction, score)``, which covers a metric passed to the call itself. Each score goes to exactly the
decisions behind the prediction it scored, once, even with ``Evaluate``'s threads. ``as_dspy()`` adds the tracker
to DSPy's callbacks; where it cannot, it warns once.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import math
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dspy
from dspy.primitives.prediction import Prediction
from dspy.utils.callback import BaseCallback
from dspy.utils.callback_context import ACTIVE_CALL_ID

from kalibr import Completion, FailureCategory, KalibrError, Router, UserError
from kalibr.runs import RunTracker

__all__ = [
    "DecisionTracker",
    "arouted_completion",
    "decisions_of",
    "install_tracker",
    "report",
    "routed_completion",
    "score_of",
]

logger = logging.getLogger("kalibr.dspy")

Decisions = list[tuple[Router, str]]
_DECISIONS = "_kalibr_decisions"  # on a Prediction: the decisions of the run that returned it
_SCORED = "_kalibr_scored"  # on a Prediction: a metric's score has already been reported for it
_ADD_IT = "dspy.configure(callbacks=[*your_callbacks, kalibr_dspy.DecisionTracker()])"

_tracker = RunTracker()

_lock = threading.Lock()
# Evaluate and compile calls in progress: the module calls they make are runs of their own, one per example,
# started in (a copy of) the caller's context and inside one shared window, so report() afterwards sees a batch.
_containers: dict[str, tuple[contextvars.Context, contextlib.AbstractContextManager[None]]] = {}
_wrapped_metrics: dict[str, tuple[Any, Any]] = {}  # Evaluate or compile call id -> (its object, its own metric)
_unrouted: dict[str, Router] = {}  # LM calls of a Kalibr LM that have not reached the router yet
_answers: dict[str, Any] = {}  # LM calls of a Kalibr LM that reached it -> its answer, as its judge sees it
# BestOfN and Refine calls in progress: the module calls they made, by the prediction each returned.
_choosers: dict[str, dict[int, _Attempt]] = {}
_CHOOSERS = (dspy.BestOfN, dspy.Refine)  # modules that try several attempts and keep one, by a reward
_warned = False


@dataclass(eq=False, slots=True)
class _Attempt:
    """A module call made by a BestOfN or Refine call: its prediction, its decisions, whether a reward judged it."""

    prediction: Prediction
    decisions: Decisions
    rewarded: bool = False
    score: float | None = None  # the reward, when it is a score


def _is_step() -> bool:
    """Whether the LM call being made is one step of a larger run (a module call), not a run of its own."""
    if not _tracker_active():
        _warn_once(
            "kalibr_dspy: DSPy's callbacks do not include kalibr_dspy.DecisionTracker (dspy.configure or "
            "dspy.context replaced them), so metric scores and report() after a module call cannot reach the "
            f"router; add it: {_ADD_IT}"
        )
    call_id = ACTIVE_CALL_ID.get()
    return call_id is not None and _tracker.root_of(call_id) not in (None, call_id)


def routed_completion(router: Router, messages: list[dict[str, Any]], params: dict[str, Any]) -> Completion:
    """The routed call behind one DSPy LM call, recorded under it.

    A step of a module run is not judged on its raw text (the module's Prediction is judged instead), and is
    made in a copy of the caller's context, so it does not count as the caller's own last call: ``report()``
    after the run finds the run, also when earlier runs (an evaluation's examples) ran in the same thread.
    """
    completion: Completion
    if _is_step():
        completion = contextvars.copy_context().run(lambda: router.completion(messages, evaluate=False, **params))
    else:
        completion = router.completion(messages, **params)
    _routed(router, completion)
    return completion


async def arouted_completion(router: Router, messages: list[dict[str, Any]], params: dict[str, Any]) -> Completion:
    """The async form of ``routed_completion``; a step runs in a task of its own (a copy of the context)."""
    if _is_step():
        completion = await asyncio.create_task(router.acompletion(messages, evaluate=False, **params))
    else:
        completion = await router.acompletion(messages, **params)
    _routed(router, completion)
    return completion


def _routed(router: Router, completion: Completion) -> None:
    call_id = ACTIVE_CALL_ID.get()
    if call_id is not None:
        with _lock:
            if _unrouted.pop(call_id, None) is not None:  # the first routed call of the LM call
                _answers[call_id] = completion.output
            elif call_id in _answers:  # several (DSPy's n > 1): no one answer is the router's part
                _answers[call_id] = None
    _tracker.record(call_id, router, completion.trace_id)


def _router_of(lm: Any) -> Router | None:
    """The router behind a Kalibr LM (the engine's on DSPy 3.4+, the legacy LM's own), else None."""
    for holder in (lm, getattr(lm, "engine", None)):
        router = getattr(holder, "router", None)
        if isinstance(router, Router):
            return router
    return None


def decisions_of(prediction: Any) -> Decisions:
    """The decisions a prediction was made from (empty if it was not tracked)."""
    found = getattr(prediction, _DECISIONS, None) if isinstance(prediction, Prediction) else None
    return list(found or [])


def report(
    prediction: Any,
    success: bool | None = None,
    *,
    score: float | None = None,
    failure_category: FailureCategory | None = None,
    reason: str | None = None,
) -> list[str]:
    """Report the decisions behind a module call's ``prediction``; returns their trace ids.

    Use it where ``router.report()`` alone would be ambiguous, e.g. for one example after an evaluation:
    ``kalibr_dspy.report(result.results[0][1], success=False)``.
    """
    decisions = decisions_of(prediction)
    if not decisions:
        raise UserError(
            f"found no Kalibr call behind this {type(prediction).__name__}: pass the Prediction a module call "
            f"returned, with kalibr_dspy.DecisionTracker in DSPy's callbacks ({_ADD_IT})"
        )
    for router, trace_id in decisions:
        router.report(success=success, score=score, failure_category=failure_category, reason=reason, trace_id=trace_id)
    return [trace_id for _, trace_id in decisions]


def score_of(value: Any) -> float:
    """A metric's value as a score in [0, 1]: a bool, a number in [0, 1], or anything with a ``score``."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and math.isfinite(value) and 0.0 <= value <= 1.0:
        return float(value)
    inner = value.get("score") if isinstance(value, dict) else getattr(value, "score", None)
    if inner is not None and inner is not value:
        return score_of(inner)
    raise UserError(
        f"the metric returned {value!r}: Kalibr needs a bool or a score in [0, 1]; "
        "return one from the metric (for a 0-10 grade, return grade / 10)"
    )


def _warn_once(message: str) -> None:
    global _warned
    with _lock:
        if _warned:
            return
        _warned = True
    warnings.warn(message, UserWarning, stacklevel=3)


def _safely(report: Callable[..., None], *args: Any, **kwargs: Any) -> None:
    # A callback must never break the user's program; an outcome that cannot be reported is logged.
    try:
        report(*args, **kwargs)
    except KalibrError as error:  # a decision too old for the router's memory, a store failure
        logger.warning("kalibr: could not report a DSPy outcome: %s", type(error).__name__)


def _report_score(prediction: Any, value: Any) -> None:
    """Report a metric's value for the decisions behind ``prediction``, once per prediction."""
    decisions = decisions_of(prediction)
    if not decisions or getattr(prediction, _SCORED, False):
        return
    try:
        score = score_of(value)
    except UserError:
        _warn_once(
            f"kalibr_dspy: a metric returned a {type(value).__name__} that is not a bool or a score in [0, 1], so "
            "its scores are not reported: return one from the metric (for a 0-10 grade, return grade / 10)"
        )
        return
    setattr(prediction, _SCORED, True)
    for router, trace_id in decisions:
        _safely(router.report, score=score, reason="DSPy metric", trace_id=trace_id)


def _rewarding(chooser: Any) -> None:
    """Wrap a BestOfN or Refine module's reward function (once), to learn which attempts it judged and how."""
    reward_fn = getattr(chooser, "reward_fn", None)
    if not callable(reward_fn) or getattr(reward_fn, "_kalibr_reports", False):
        return

    def reporting_reward(inputs: Any, prediction: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            value = reward_fn(inputs, prediction, *args, **kwargs)
        except Exception:  # the module drops that attempt: out of the run, unjudged
            _report_reward(ACTIVE_CALL_ID.get(), prediction, None)
            raise
        _report_reward(ACTIVE_CALL_ID.get(), prediction, value)  # the chooser's call is active while it rewards
        return value

    reporting_reward._kalibr_reports = True  # type: ignore[attr-defined]
    chooser.reward_fn = reporting_reward


def _report_reward(chooser_id: str | None, prediction: Any, value: Any) -> None:
    with _lock:
        attempt = _choosers.get(chooser_id or "", {}).get(id(prediction))
        if attempt is None or attempt.prediction is not prediction:
            return
        attempt.rewarded = True
    if value is None:
        return
    try:
        attempt.score = score_of(value)
    except UserError:
        _warn_once(
            f"kalibr_dspy: a reward function returned a {type(value).__name__} that is not a bool or a score in "
            "[0, 1], so the attempts it threw away are not reported: return one from it (for 0-10, grade / 10)"
        )


def _set_aside_thrown_away(chooser_id: str, attempts: dict[int, _Attempt], kept: Any) -> None:
    """At a BestOfN or Refine call's end: the attempts its reward judged and it did not return leave the run,
    each with its reward as its outcome (when the reward is a score); so do Refine's advice calls (the module
    calls no reward judged) made after the kept attempt, unjudged: the answer kept did not use their advice."""
    in_order = list(attempts.values())  # as the module calls ended
    kept_at = next((i for i, a in enumerate(in_order) if a.prediction is kept), len(in_order))
    thrown_away = [a for a in in_order if a.rewarded and a.prediction is not kept]
    unused_advice = [a for a in in_order[kept_at + 1 :] if not a.rewarded]
    _tracker.set_aside(
        chooser_id, {trace_id for attempt in thrown_away + unused_advice for _, trace_id in attempt.decisions}
    )
    for attempt in thrown_away:
        if attempt.score is not None:
            for router, trace_id in attempt.decisions:
                _safely(router.report, score=attempt.score, reason="DSPy reward", trace_id=trace_id)


def _reporting(metric: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(metric)
    def reporting_metric(example: Any, prediction: Any, *args: Any, **kwargs: Any) -> Any:
        value = metric(example, prediction, *args, **kwargs)
        _report_score(prediction, value)
        return value

    reporting_metric._kalibr_reports = True  # type: ignore[attr-defined]
    return reporting_metric


class DecisionTracker(BaseCallback):  # type: ignore[misc]  # dspy ships no type information
    """Links DSPy predictions to the router decisions behind them and reports metric scores to them.

    ``router.as_dspy()`` adds one to DSPy's callbacks. When you set DSPy's callbacks yourself, include it:
    ``dspy.configure(lm=router.as_dspy(), callbacks=[MyCallback(), kalibr_dspy.DecisionTracker()])``.
    Several instances share one state, so adding it twice does no harm.
    """

    # --- calls that make decisions: modules, their LM calls, tools -----------------------------------------
    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._start(call_id)
        if isinstance(instance, _CHOOSERS):
            _rewarding(instance)
            with _lock:
                _choosers[call_id] = {}

    def on_module_end(self, call_id: str, outputs: Any | None, exception: Exception | None = None) -> None:
        # BestOfN and Refine keep one attempt: the others' rewards judged them, the run's verdict is not theirs.
        parent = ACTIVE_CALL_ID.get()  # DSPy restores the caller's call id before the end callbacks
        with _lock:
            siblings = _choosers.get(parent) if parent is not None else None
            attempts = _choosers.pop(call_id, None)
        if siblings is not None and isinstance(outputs, Prediction):
            made = _tracker.decisions_in(call_id)
            if made:
                with _lock:
                    siblings[id(outputs)] = _Attempt(outputs, list(made))
        if attempts is not None:
            _set_aside_thrown_away(call_id, attempts, outputs)
        self._end(call_id, outputs, exception)

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._start(call_id)
        router = _router_of(instance)
        if router is not None:
            with _lock:
                _unrouted[call_id] = router

    def on_lm_end(self, call_id: str, outputs: Any | None, exception: Exception | None = None) -> None:
        with _lock:
            cached = _unrouted.pop(call_id, None)
            answer = _answers.pop(call_id, None)
        if cached is not None and exception is None:  # answered without reaching the router: DSPy's cache
            _tracker.record_cached(call_id, cached)
        self._end(call_id, outputs, exception, answer)

    def on_tool_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._start(call_id)

    def on_tool_end(self, call_id: str, outputs: Any | None, exception: Exception | None = None) -> None:
        self._end(call_id, outputs, exception)

    def _start(self, call_id: str) -> None:
        parent = ACTIVE_CALL_ID.get()
        with _lock:
            container = _containers.get(parent) if parent is not None else None
        if container is None:
            _tracker.start(call_id, parent)
        else:  # one example of an evaluation (maybe in a worker thread): a run of its own, published to the caller
            container[0].copy().run(_tracker.start, call_id, None)

    def _end(self, call_id: str, outputs: Any, exception: BaseException | None, answer: Any = None) -> None:
        # What a judge sees of a call: a module's Prediction; an LM call's answer as the router judges it
        # (its text). As a step, it is the part of the run a router is judged on when other routers share the run.
        prediction = outputs if isinstance(outputs, Prediction) else None
        run = _tracker.end(call_id, exception, output=answer if prediction is None else prediction)
        if run is None or not run.decisions:
            return
        if exception is not None:
            run.fail(exception)
        elif prediction is not None:
            setattr(prediction, _DECISIONS, decisions_of(prediction) + list(run.decisions))
            run.judge(prediction)
        # A bare LM call's run (outputs: a list of strings) was judged by the router as it answered.

    # --- calls that score predictions: Evaluate and optimizers ---------------------------------------------
    # Each score is reported as the metric returns it, so the router learns during the evaluation: the metric
    # is wrapped for the call's length. Evaluate's results catch the scores of a metric passed to the call itself.
    def on_evaluate_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._start_container(call_id)
        if inputs.get("metric") is None:
            self._wrap_metric(call_id, instance)

    def on_evaluate_end(self, call_id: str, outputs: Any | None, exception: Exception | None = None) -> None:
        self._end_container(call_id)
        for _example, prediction, score in getattr(outputs, "results", None) or []:
            _report_score(prediction, score)

    def on_compile_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._start_container(call_id)
        self._wrap_metric(call_id, instance)

    def on_compile_end(self, call_id: str, outputs: Any | None, exception: Exception | None = None) -> None:
        self._end_container(call_id)

    def _wrap_metric(self, call_id: str, scorer: Any) -> None:
        metric = getattr(scorer, "metric", None)
        if callable(metric) and not getattr(metric, "_kalibr_reports", False):
            with _lock:
                _wrapped_metrics[call_id] = (scorer, metric)
            scorer.metric = _reporting(metric)

    def _start_container(self, call_id: str) -> None:
        # Every example's run counts as one batch, so report() after an evaluation is ambiguous (an error naming
        # the fix) rather than landing on the last example, or on a call made before the evaluation.
        window = _tracker.shared_scope()
        with _lock:
            if call_id in _containers:
                return  # a second tracker in DSPy's callbacks: the window is open already
            _containers[call_id] = (contextvars.copy_context(), window)
        window.__enter__()

    def _end_container(self, call_id: str) -> None:
        with _lock:
            container = _containers.pop(call_id, None)
            wrapped = _wrapped_metrics.pop(call_id, None)
        if container is not None:
            container[1].__exit__(None, None, None)
        if wrapped is not None:
            scorer, metric = wrapped
            scorer.metric = metric  # the user's own metric is back


def _tracker_active() -> bool:
    return any(isinstance(callback, DecisionTracker) for callback in dspy.settings.get("callbacks") or [])


def install_tracker() -> None:
    """Add a ``DecisionTracker`` to DSPy's global callbacks unless one is there; warn once when DSPy refuses."""
    if _tracker_active():
        return
    try:
        dspy.configure(callbacks=[*(dspy.settings.get("callbacks") or []), DecisionTracker()])
    except RuntimeError as error:  # only the thread (or task) that first configured DSPy may configure it
        _warn_once(
            f"kalibr_dspy: could not add its callback to DSPy's settings here ({error}), so metric scores and "
            f"report() after a module call cannot reach the router; add it where you configure DSPy: {_ADD_IT}"
        )
