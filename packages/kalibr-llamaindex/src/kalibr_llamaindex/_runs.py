"""Outcomes of whole LlamaIndex runs (a query, ``structured_predict``, an agent run) through its instrumentation.

A span handler on the root dispatcher tells the core's ``kalibr.runs.RunTracker`` when each span starts and ends;
each routed call records its decision under the active span. When a root span ends, the run's final output (the
query's answer, the parsed object, the agent's final message) is judged by ``success_when``/``score_when`` for
every decision the run made, replacing the per-call verdicts (with several routers in a run, each router's on its
own part: the output of the outermost span holding all its decisions and none of another router's, converted the
same way); a run that raised because of what a model answered (an output parser's error) reports them as failed.
Inside a run the router does not judge each call (an agent's tool-call turns are steps, not answers); a bare LLM
call, the root of its own run, is judged by the router as it answers.

An agent (a workflow) runs in an asyncio task of its own, where the run's root span starts. LlamaIndex asks span
handlers for what to propagate (``capture_propagation_context``) in the caller's context just before it starts
that task: the handler opens the caller's run scope there, so the run is published to the caller as well and
``router.report()`` after ``await agent.run(...)`` finds it.
"""

from __future__ import annotations

import inspect
import threading
from typing import Any

from llama_index.core.base.llms.types import ChatResponse, CompletionResponse
from llama_index.core.workflow import Event, StopEvent
from llama_index_instrumentation import get_dispatcher
from llama_index_instrumentation.span import SimpleSpan, active_span_id
from llama_index_instrumentation.span_handlers import BaseSpanHandler
from pydantic import BaseModel

from kalibr import Router
from kalibr.runs import Run, RunOutputs, RunTracker, ensure_scope

__all__ = [
    "RunOutcomeHandler",
    "evaluates_each_call",
    "final_output",
    "install_run_outcomes",
    "record_decision",
    "trace_ids_of",
]

_tracker = RunTracker()

_lock = threading.Lock()
_judged_by_router: set[str] = set()  # root spans of bare LLM calls, which the router judged per call
_outputs = RunOutputs("report each with trace_id= (its response's raw['kalibr']['trace_id'])")


def final_output(result: Any) -> Any:
    """What the user thinks of as a run's output: the parsed object of structured output, else the answer's text.

    Handles a query ``Response``, an agent's ``AgentOutput`` (or the ``StopEvent`` carrying it), a chat or
    completion response (``as_structured_llm`` puts the parsed object in ``raw``) and plain values.
    """
    if isinstance(result, BaseModel) and not _from_llamaindex(result):
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


def _from_llamaindex(value: Any) -> bool:
    return type(value).__module__.split(".")[0] in ("llama_index", "workflows")


def _passes_to_a_step(result: Any) -> bool:
    """Whether a workflow step's ``result`` is the user's own event for another step (an agent's ``AgentOutput``
    is LlamaIndex's, and carries the answer)."""
    return isinstance(result, Event) and not isinstance(result, StopEvent) and not _from_llamaindex(result)


def _remember(result: Any, run: Run) -> None:
    """Keep which run returned ``result`` (and the value a workflow's ``StopEvent`` carries), for ``llm.report``."""
    _outputs.remember(result, run)
    _outputs.remember(getattr(result, "result", None), run)


def trace_ids_of(output: Any, router: Router) -> list[str]:
    """The decisions of ``router`` behind ``output``: a response of a Kalibr LLM (its ``raw["kalibr"]``), or the
    result of a recent run that used one (a query's response, an agent's output, a parsed object)."""
    from_run = _outputs.trace_ids(output, router)
    if from_run is not None:
        return from_run
    raw = getattr(output, "raw", None)
    if isinstance(raw, dict) and isinstance(info := raw.get("kalibr"), dict) and info.get("goal") == router.goal:
        return [info["trace_id"]]
    return []


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


class RunOutcomeHandler(BaseSpanHandler[SimpleSpan]):
    """Reports each run's outcome to the routers whose decisions it used (installed once per process)."""

    @classmethod
    def class_name(cls) -> str:
        return "KalibrRunOutcomeHandler"

    def capture_propagation_context(self) -> dict[str, Any]:
        # Called in the caller's context just before a workflow (an agent) starts its own task, which copies this
        # context: open the caller's scope here, so the run the task starts is published to the caller too.
        ensure_scope()
        return {}

    def new_span(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any | None = None,
        parent_span_id: str | None = None,
        tags: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> SimpleSpan | None:
        _tracker.start(id_, parent_span_id)
        return None  # no span objects kept: the tracker holds what we need

    def _end(self, id_: str, err: BaseException | None = None, output: Any = None) -> tuple[Run | None, bool]:
        """The span's run if it was a root, and whether the router already judged it (a bare LLM call)."""
        run = _tracker.end(id_, err, output=output)
        with _lock:
            judged = id_ in _judged_by_router
            _judged_by_router.discard(id_)
        return run, judged

    def prepare_to_exit_span(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any | None = None,
        result: Any | None = None,
        **kwargs: Any,
    ) -> SimpleSpan | None:
        # A step's output is one router's part of the run when only that router's calls were in it (a step that
        # returned None leaves it to the run's output, one that returned the user's own event to its LLM calls'
        # answers: that event is plumbing between steps, not an answer). Converted only for a span holding
        # decisions: most spans (retrieval, embedding, parsing) hold none.
        holds_answer = result is not None and _tracker.decisions_in(id_) and not _passes_to_a_step(result)
        output = final_output(result) if holds_answer else None
        run, judged = self._end(id_, output=output)
        if run is not None and run.decisions:
            _remember(result, run)
            if not judged:
                run.judge(final_output(result) if output is None else output)
        return None

    def prepare_to_drop_span(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any | None = None,
        err: BaseException | None = None,
        **kwargs: Any,
    ) -> SimpleSpan | None:
        run, _ = self._end(id_, err)
        if run is not None and err is not None:
            run.fail(err)
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
