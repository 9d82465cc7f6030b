"""Every LangChain run that calls a Kalibr model, followed without the user passing any callback.

A handler is added to every run through LangChain's configure hook (``register_configure_hook``), once the
first ``ChatKalibr`` exists. It tells the core's ``RunTracker`` where each run starts and ends; ``ChatKalibr``
records each decision under its own LLM run. So ``router.report()`` after ``chain.invoke`` (or ``batch``,
``stream``, ``ainvoke``, ``astream``, a LangGraph agent) lands on that run's decisions, and at the root's end the
router's ``success_when``/``score_when`` judges the run's final output (the parsed object of structured output,
an agent's final answer) for every decision of the run. For runs without a Kalibr model the handler only adds
and removes the step's entries in the tracker.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import LLMResult
from langchain_core.tracers.context import register_configure_hook

import kalibr
from kalibr.runs import RunOutputs, RunTracker

__all__ = [
    "RunFollower",
    "current_llm_run",
    "install",
    "judged_output",
    "run_handler",
    "tracker",
]

tracker = RunTracker()

# The chat model run that started last in this context: LangChain's stream() calls _stream without its run manager.
_llm_run: ContextVar[UUID | None] = ContextVar("kalibr_langchain_llm_run", default=None)


def current_llm_run() -> UUID | None:
    """The chat model run whose call is being made here, when LangChain did not pass its run manager."""
    run_id = _llm_run.get()
    return run_id if run_id is not None and tracker.root_of(run_id) is not None else None


_RAW_KEYS = frozenset({"raw", "parsed", "parsing_error"})


def _with_raw(output: Any) -> bool:
    """Is ``output`` what ``with_structured_output(..., include_raw=True)`` returns (raw, parsed, parsing_error)?"""
    return isinstance(output, Mapping) and output.keys() == _RAW_KEYS and isinstance(output["raw"], BaseMessage)


def _parsing_error(output: Any) -> BaseException | None:
    """The parsing error ``with_structured_output(..., include_raw=True)`` caught and returned, else None."""
    error = output["parsing_error"] if _with_raw(output) else None
    return error if isinstance(error, BaseException) else None


def judged_output(output: Any) -> Any:
    """What a judge sees of a run's output: a message's tool calls (a tool-call turn) or text, an agent's final
    message (the last of a graph state's ``messages``), the parsed object of ``with_structured_output(...,
    include_raw=True)``, else the output itself (a parsed object, a string)."""
    if _with_raw(output):
        return output["parsed"]
    if isinstance(output, Mapping) and isinstance(messages := output.get("messages"), Sequence) and messages:
        last = messages[-1]
        if isinstance(last, BaseMessage):  # a graph node's update too: a tool node's ToolMessage
            return judged_output(last)
    if isinstance(output, AIMessage):
        return list(output.tool_calls) if output.tool_calls else output.text
    if isinstance(output, BaseMessage):
        return output.text
    return output


class RunFollower(BaseCallbackHandler):
    """Calls ``started(run_id, parent_run_id)`` for the start of every kind of LangChain run."""

    def started(self, run_id: UUID, parent_run_id: UUID | None) -> None:
        raise NotImplementedError

    def on_chain_start(
        self, serialized: Any, inputs: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kw: Any
    ) -> None:
        self.started(run_id, parent_run_id)

    def on_chat_model_start(
        self, serialized: Any, messages: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kw: Any
    ) -> None:
        self.started(run_id, parent_run_id)

    def on_llm_start(
        self, serialized: Any, prompts: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kw: Any
    ) -> None:
        self.started(run_id, parent_run_id)

    def on_tool_start(
        self, serialized: Any, input_str: str, *, run_id: UUID, parent_run_id: UUID | None = None, **kw: Any
    ) -> None:
        self.started(run_id, parent_run_id)

    def on_retriever_start(
        self, serialized: Any, query: str, *, run_id: UUID, parent_run_id: UUID | None = None, **kw: Any
    ) -> None:
        self.started(run_id, parent_run_id)


class _RunHandler(RunFollower):
    """Follows run starts and ends for the tracker; judges or fails each finished root run's decisions."""

    run_inline = True  # root starts then run in the caller's own context, which the tracker needs
    raise_error = False
    ignore_retry = True
    ignore_custom_event = True

    def __init__(self) -> None:
        super().__init__()
        self._outputs = RunOutputs(
            "report each with trace_id= (the kalibr_trace_id of its AIMessage), or return the message from the chain"
        )

    def started(self, run_id: UUID, parent_run_id: UUID | None) -> None:
        tracker.start(run_id, parent_run_id)

    def on_chat_model_start(
        self, serialized: Any, messages: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kw: Any
    ) -> None:
        tracker.start(run_id, parent_run_id)
        _llm_run.set(run_id)  # called in the context the model's _stream then runs in

    # --- ends -------------------------------------------------------------------------------------------
    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kw: Any) -> None:
        self._ended(run_id, outputs)

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kw: Any) -> None:
        # A model called on its own: ChatKalibr judged its answer. As a step, its answer is one router's part.
        message = None
        if tracker.decisions_in(run_id):  # most runs hold none: no output to work out
            generations = response.generations[0] if response.generations else []
            message = getattr(generations[0], "message", None) if len(generations) == 1 else None
        tracker.end(run_id, output=None if message is None else judged_output(message))

    def on_tool_end(self, output: Any, *, run_id: UUID, **kw: Any) -> None:
        self._ended(run_id, output)

    def on_retriever_end(self, documents: Any, *, run_id: UUID, **kw: Any) -> None:
        self._ended(run_id, documents)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kw: Any) -> None:
        self._failed(run_id, error)

    on_llm_error = on_tool_error = on_retriever_error = on_chain_error

    def _ended(self, run_id: UUID, output: Any) -> None:
        # A step's output is one router's part of the run, if only that router was there; most runs hold no
        # decision, and their output is not worked out.
        judged = judged_output(output) if tracker.decisions_in(run_id) else None
        run = tracker.end(run_id, output=judged)
        if run is None or not run.decisions:
            return
        self._outputs.remember(output, run)
        error = _parsing_error(output)
        if error is None:
            run.judge(judged)
        else:  # include_raw=True returned the parser's error instead of raising it: the run failed on its answer
            run.fail(error)

    def _failed(self, run_id: UUID, error: BaseException) -> None:
        run = tracker.end(run_id, error)  # a step's error blaming its answer fails that step's decisions
        if run is not None:
            run.fail(error)

    # --- outputs, for llm.report(output) ------------------------------------------------------------------
    def trace_ids_for(self, output: Any, router: kalibr.Router) -> list[str]:
        """``router``'s decisions in the recent run that returned ``output`` (that very object), else none."""
        return self._outputs.trace_ids(output, router) or []


run_handler = _RunHandler()
_handler_var: ContextVar[_RunHandler | None] = ContextVar("kalibr_langchain_runs", default=run_handler)
_installed = False
_install_lock = threading.Lock()


def install() -> None:
    """Add the handler to every LangChain run from now on (idempotent)."""
    global _installed
    with _install_lock:
        if not _installed:
            register_configure_hook(_handler_var, inheritable=True)
            _installed = True
