"""Outcomes of whole LlamaIndex runs (a query, an agent run) through LlamaIndex's instrumentation.

A span handler on the root dispatcher maps every span to the outermost span it runs under (the run). Each
routed call records its decision under the active span, so when the run's span ends the handler knows every
decision the run made: it runs the router's ``success_when``/``score_when`` on the run's final response, or,
if the run raised, reports each decision as failed. A bare LLM call (its own outermost span) is left to the
router, which already judged its answer.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable
from typing import Any

from llama_index_instrumentation import get_dispatcher
from llama_index_instrumentation.span import SimpleSpan, active_span_id
from llama_index_instrumentation.span_handlers import BaseSpanHandler
from pydantic import PrivateAttr

from kalibr import KalibrError, ProviderError, Router

__all__ = ["RunOutcomeHandler", "final_text", "install_run_outcomes", "record_decision"]

logger = logging.getLogger("kalibr.llamaindex")


def final_text(result: Any) -> str:
    """The text of a run's final result: a query ``Response``, an ``AgentOutput``, a chat response, ..."""
    for attribute in ("response", "message", "text", "content"):
        value = getattr(result, attribute, None)
        if isinstance(value, str):
            return value
        if value is not None and value is not result:
            return final_text(value)
    return "" if result is None else str(result)


def failure_category(error: BaseException) -> Any:
    if isinstance(error, ProviderError):
        return error.failure_category
    return "unknown"


class _RunBook:
    """Which run each open span belongs to, and the decisions each open run made. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._run_of: dict[str, str] = {}
        self._bare_runs: set[str] = set()
        self._decisions: dict[str, list[tuple[Router, str]]] = {}

    def enter(self, span_id: str, parent_id: str | None, is_bare_llm_call: bool) -> None:
        with self._lock:
            run = span_id if parent_id is None else self._run_of.get(parent_id, parent_id)
            self._run_of[span_id] = run
            if run == span_id and is_bare_llm_call:
                self._bare_runs.add(span_id)

    def record(self, router: Router, trace_id: str) -> None:
        span_id = active_span_id.get()
        if span_id is None:
            return
        with self._lock:
            run = self._run_of.get(span_id)
            if run is not None and run not in self._bare_runs:
                self._decisions.setdefault(run, []).append((router, trace_id))

    def leave(self, span_id: str) -> list[tuple[Router, str]]:
        """Forget the span; if it was a run, return the decisions it made."""
        with self._lock:
            run = self._run_of.pop(span_id, None)
            if run != span_id:
                return []
            self._bare_runs.discard(span_id)
            return self._decisions.pop(span_id, [])


_book = _RunBook()


def record_decision(router: Router, trace_id: str) -> None:
    """Attach a routed call to the run it was made in, if any."""
    _book.record(router, trace_id)


def _judge(router: Router, trace_id: str, output: str) -> None:
    # The run's verdict replaces what success_when said of the single call; an explicit report replaces both.
    router.evaluate(trace_id, output, final=True)


def _fail(router: Router, trace_id: str, error: BaseException | None) -> None:
    router.report(
        success=False,
        reason=f"the run raised {error!r}"[:300],
        failure_category=failure_category(error) if error is not None else "unknown",
        trace_id=trace_id,
    )


def _report_safely(action: Callable[..., None], *args: Any) -> None:
    try:
        action(*args)
    except KalibrError:  # a decision evicted from the router's memory, or a bad score: never break the run
        logger.warning("kalibr: could not report a run outcome", exc_info=True)


class RunOutcomeHandler(BaseSpanHandler[SimpleSpan]):
    """Reports each run's outcome to the routers whose decisions it used (installed once per process)."""

    _is_bare_llm_call: Callable[[Any], bool] = PrivateAttr()

    def __init__(self, is_bare_llm_call: Callable[[Any], bool]) -> None:
        super().__init__()
        self._is_bare_llm_call = is_bare_llm_call

    @classmethod
    def class_name(cls) -> str:
        return "KalibrRunOutcomeHandler"

    def new_span(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any | None = None,
        parent_span_id: str | None = None,
        tags: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> SimpleSpan | None:
        _book.enter(id_, parent_span_id, self._is_bare_llm_call(instance))
        return None  # no span objects kept: the run book holds all we need

    def prepare_to_exit_span(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any | None = None,
        result: Any | None = None,
        **kwargs: Any,
    ) -> SimpleSpan | None:
        decisions = _book.leave(id_)
        if decisions:
            output = final_text(result)
            for router, trace_id in decisions:
                _report_safely(_judge, router, trace_id, output)
        return None

    def prepare_to_drop_span(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any | None = None,
        err: BaseException | None = None,
        **kwargs: Any,
    ) -> SimpleSpan | None:
        for router, trace_id in _book.leave(id_):
            _report_safely(_fail, router, trace_id, err)
        return None


_install_lock = threading.Lock()
_installed: RunOutcomeHandler | None = None


def install_run_outcomes(is_bare_llm_call: Callable[[Any], bool]) -> RunOutcomeHandler:
    """Add the handler to LlamaIndex's root dispatcher, once per process; returns it."""
    global _installed
    with _install_lock:
        if _installed is None:
            _installed = RunOutcomeHandler(is_bare_llm_call)
            get_dispatcher().add_span_handler(_installed)
        return _installed
