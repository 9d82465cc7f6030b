"""Finding the decisions behind a LangChain result, and reporting how they went."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatResult, LLMResult

import kalibr

__all__ = ["TRACE_ID_KEY", "report_result", "report_trace", "trace_ids_in"]

TRACE_ID_KEY = "kalibr_trace_id"
_MAX_DEPTH = 6


def trace_ids_in(result: Any, goal: str | None = None) -> list[str]:
    """Trace ids in a message, a ``ChatResult``/``LLMResult``, or lists and dicts of them (a graph's state).

    With ``goal``, only the decisions of that goal.
    """
    found: dict[str, None] = {}
    for message in _messages(result, 0):
        metadata = message.response_metadata
        trace_id = metadata.get(TRACE_ID_KEY)
        if isinstance(trace_id, str) and (goal is None or metadata.get("kalibr_goal") == goal):
            found[trace_id] = None
    return list(found)


def _messages(value: Any, depth: int) -> Iterator[BaseMessage]:
    if depth > _MAX_DEPTH:
        return
    if isinstance(value, BaseMessage):
        yield value
    elif isinstance(value, ChatResult):
        yield from (generation.message for generation in value.generations)
    elif isinstance(value, LLMResult):
        for generations in value.generations:
            for generation in generations:
                message = getattr(generation, "message", None)
                if isinstance(message, BaseMessage):
                    yield message
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _messages(item, depth + 1)
    elif isinstance(value, Sequence) and not isinstance(value, str | bytes):
        for item in value:
            yield from _messages(item, depth + 1)


def report_trace(router: kalibr.Router, trace_id: str, **outcome: Any) -> None:
    """Report one call explicitly: the whole outcome replaces whatever was reported before (an automatic check,
    an earlier report)."""
    router.report(trace_id=trace_id, **outcome)


def report_result(router: kalibr.Router, result: Any, **outcome: Any) -> list[str]:
    """Report every call of ``router``'s goal behind ``result`` (a message, a recent run's output, a trace id);
    returns their trace ids."""
    from kalibr_langchain._runs import run_handler

    is_trace_id = isinstance(result, str) and len(result) == 32
    trace_ids = [result] if is_trace_id else run_handler.trace_ids_for(result, router)
    trace_ids = trace_ids or trace_ids_in(result, router.goal)
    if not trace_ids:
        raise kalibr.UserError(
            f"found no Kalibr call of goal {router.goal!r} in {type(result).__name__!r}: pass the AIMessage the "
            "model returned (its response_metadata holds 'kalibr_trace_id'), a recent run's very output object, "
            "or trace_id"
        )
    for trace_id in trace_ids:
        report_trace(router, trace_id, **outcome)
    return trace_ids
