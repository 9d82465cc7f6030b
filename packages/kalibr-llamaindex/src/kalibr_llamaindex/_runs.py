"""Outcomes of whole LlamaIndex runs (a query, ``structured_predict``, an agent run) through its instrumentation.

A span handler on the root dispatcher tells the core's ``kalibr.runs.RunTracker`` when each span starts and ends;
each routed call records its decision under the active span. When a root span ends, the run's final output (the
query's answer, the parsed object, the agent's final message) is judged by ``success_when``/``score_when`` for
every decision the run made, replacing the per-call verdicts; a run that raised reports them as failed. Inside a
run the router does not judge each call (an agent's tool-call turns are steps, not answers); a bare LLM call, the
root of its own run, is judged by the router as it answers.

An agent (a workflow) runs in an asyncio task of its own, where the run's root span starts: LlamaIndex hands span
handlers the caller's context when it starts that task (``capture_propagation_context``), so the run is opened
there, in the caller's context, and ``router.report()`` after ``await agent.run(...)`` finds it.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any

from llama_index.core.base.llms.types import ChatResponse, CompletionResponse
from llama_index_instrumentation import get_dispatcher
from llama_index_instrumentation.span import SimpleSpan, active_span_id
from llama_index_instrumentation.span_handlers import BaseSpanHandler
from pydantic import BaseModel

from kalibr import KalibrError, Router, failure_category_of
from kalibr.runs import Run, RunTracker

__all__ = ["RunOutcomeHandler", "evaluates_each_call", "final_output", "install_run_outcomes", "record_decision"]

logger = logging.getLogger("kalibr.llamaindex")

_PROPAGATION_KEY = "kalibr_run"
_tracker = RunTracker()
_lock = threading.Lock()
_judged_by_router: set[str] = set()  # root spans of bare LLM calls, which the router judged per call
# workflow root span -> the run the caller's context opened for it (ended with that span), and those runs
_claims: dict[str, str] = {}
_claimed: set[str] = set()
# In a workflow's task: the run opened in the caller's context, which the workflow's root span belongs to.
_opened_by_caller: contextvars.ContextVar[str | None] = contextvars.ContextVar("kalibr_llamaindex_run", default=None)


def final_output(result: Any) -> Any:
    """What the user thinks of as a run's output: the parsed object of structured output, else the answer's text.

    Handles a query ``Response``, an agent's ``AgentOutput`` (or the ``StopEvent`` carrying it), a chat or
    completion response (``as_structured_llm`` puts the parsed object in ``raw``) and plain values.
    """
    if isinstance(result, BaseModel) and type(result).__module__.split(".")[0] not in ("llama_index", "workflows"):
        return result  # the user's own model: structured_predict's answer
    structured = getattr(result, "structured_response", None)
    if structured is not None:
        return structured
    if isinstance(result, ChatResponse | CompletionResponse) and isinstance(result.raw, BaseModel):
        return result.raw
    for attribute in ("result", "response", "message", "text", "content"):
        value = getattr(result, attribute, None)
        if isinstance(value, str):
            return value
        if value is not None and value is not result:
            return final_output(value)
    return "" if result is None else str(result)


def record_decision(router: Router, trace_id: str) -> None:
    """Attach a routed call to the LlamaIndex span it was made in (and so to that span's run)."""
    _tracker.record(active_span_id.get(), router, trace_id)


def evaluates_each_call() -> bool:
    """Whether the router should judge the call about to be made: yes unless it is one step of a larger run."""
    span = active_span_id.get()
    if span is None:
        return True
    root = _tracker.root_of(span)
    if root is None:
        return True
    if root != span:
        return False
    with _lock:
        _judged_by_router.add(span)  # a bare LLM call: its run needs no verdict of its own
    return True


def _report_safely(action: Callable[..., None], *args: Any, **kwargs: Any) -> None:
    try:
        action(*args, **kwargs)
    except KalibrError:  # a decision evicted from the router's memory, a store failure: never break the run
        logger.warning("kalibr: could not report a LlamaIndex run's outcome", exc_info=True)


def _judge(run: Run, output: Any) -> None:
    for router, trace_id in run.decisions:
        _report_safely(router.evaluate, trace_id, output, final=True)


def _fail(run: Run, error: BaseException | None) -> None:
    category = failure_category_of(error) if error is not None else "unknown"
    reason = f"the LlamaIndex run raised {type(error).__name__}" if error is not None else "the run was dropped"
    for router, trace_id in run.decisions:
        _report_safely(
            router.report, success=False, reason=reason, failure_category=category, trace_id=trace_id
        )


class RunOutcomeHandler(BaseSpanHandler[SimpleSpan]):
    """Reports each run's outcome to the routers whose decisions it used (installed once per process)."""

    @classmethod
    def class_name(cls) -> str:
        return "KalibrRunOutcomeHandler"

    def capture_propagation_context(self) -> dict[str, Any]:
        # Called in the caller's context just before a workflow starts its task: open the run here.
        span = active_span_id.get()
        if span is not None and _tracker.root_of(span) is not None:
            return {}  # inside a run already: the workflow's spans descend from it
        opened = f"kalibr-workflow-{uuid.uuid4().hex}"
        _tracker.start(opened, None)
        return {_PROPAGATION_KEY: opened}

    def restore_propagation_context(self, context: dict[str, Any]) -> None:
        opened = context.get(_PROPAGATION_KEY)
        if isinstance(opened, str):
            _opened_by_caller.set(opened)

    def new_span(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any | None = None,
        parent_span_id: str | None = None,
        tags: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> SimpleSpan | None:
        parent = parent_span_id
        if parent is None and (opened := _opened_by_caller.get()) is not None:
            parent = opened
            with _lock:
                if opened not in _claimed:
                    _claimed.add(opened)
                    _claims[id_] = opened
        _tracker.start(id_, parent)
        return None  # no span objects kept: the tracker holds what we need

    def _end(self, id_: str) -> tuple[Run | None, bool]:
        """The span's run if it was a root (or a workflow's root span), and whether the router judged it."""
        run = _tracker.end(id_)
        with _lock:
            opened = _claims.pop(id_, None)
            _claimed.discard(opened or "")
            judged = id_ in _judged_by_router
            _judged_by_router.discard(id_)
        if opened is not None:
            run = _tracker.end(opened)
        return run, judged

    def prepare_to_exit_span(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any | None = None,
        result: Any | None = None,
        **kwargs: Any,
    ) -> SimpleSpan | None:
        run, judged = self._end(id_)
        if run is not None and not judged:
            _judge(run, final_output(result))
        return None

    def prepare_to_drop_span(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any | None = None,
        err: BaseException | None = None,
        **kwargs: Any,
    ) -> SimpleSpan | None:
        run, _ = self._end(id_)
        if run is not None:
            _fail(run, err)
        return None


_install_lock = threading.Lock()
_installed: RunOutcomeHandler | None = None


def install_run_outcomes() -> RunOutcomeHandler:
    """Add the handler to LlamaIndex's root dispatcher, once per process; returns it."""
    global _installed
    with _install_lock:
        if _installed is None:
            _installed = RunOutcomeHandler()
            get_dispatcher().add_span_handler(_installed)
        return _installed
