"""Translations between LangChain's message objects and the OpenAI-shaped values the Kalibr core speaks.

Both directions live here: ``ChatKalibr`` sends LangChain messages into the router (``to_openai_messages``) and
turns its answers into ``AIMessage``s; the ``langchain`` provider does the reverse for paths that are LangChain
chat model objects.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    InvalidToolCall,
    ToolCall,
    ToolCallChunk,
    UsageMetadata,
    convert_to_messages,
    convert_to_openai_messages,
)
from langchain_core.messages.tool import invalid_tool_call
from langchain_core.utils.function_calling import convert_to_openai_tool

import kalibr
from kalibr.providers.base import ProviderResponse, ToolCallDelta

__all__ = [
    "completion_metadata",
    "completion_to_message",
    "from_openai_messages",
    "last_chunk",
    "message_to_response",
    "message_to_stream_chunks",
    "stream_chunk_to_message",
    "to_openai_messages",
    "to_openai_tool_choice",
    "to_openai_tools",
    "usage_metadata",
]

PROVIDER_NAME = "kalibr"


# --- LangChain -> OpenAI shapes ---------------------------------------------------------------------------
def to_openai_messages(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    converted = convert_to_openai_messages(list(messages))
    return converted if isinstance(converted, list) else [converted]


def to_openai_tools(tools: Sequence[Any], *, strict: bool | None = None) -> list[dict[str, Any]]:
    """Pydantic models, functions, ``BaseTool``s, TypedDicts and JSON schemas as OpenAI tool definitions."""
    return [convert_to_openai_tool(tool, strict=strict) for tool in tools]


def to_openai_tool_choice(tool_choice: Any, tools: Sequence[Mapping[str, Any]]) -> Any:
    """LangChain's tool choices (``"any"``, ``True``, a tool's name) in OpenAI's vocabulary."""
    if tool_choice is None or isinstance(tool_choice, dict):
        return tool_choice
    if tool_choice is True:
        tool_choice = tools[0]["function"]["name"] if len(tools) == 1 else "required"
    if tool_choice is False:
        return "none"
    if tool_choice == "any":
        return "required"
    if tool_choice in ("auto", "none", "required"):
        return tool_choice
    if isinstance(tool_choice, str):
        return {"type": "function", "function": {"name": tool_choice}}
    raise kalibr.UserError(
        f"unsupported tool_choice {tool_choice!r}: use 'auto', 'any', 'none', a tool's name, True or an OpenAI dict"
    )


# --- router answers -> LangChain --------------------------------------------------------------------------
def usage_metadata(usage: kalibr.Usage) -> UsageMetadata:
    return UsageMetadata(
        input_tokens=usage.input_tokens, output_tokens=usage.output_tokens, total_tokens=usage.total_tokens
    )


def completion_metadata(completion: kalibr.Completion) -> dict[str, Any]:
    """The response metadata of an answer: the path actually used and the decision behind it."""
    decision = completion.decision
    return {
        "model_name": decision.model,
        "finish_reason": completion.finish_reason,
        "kalibr_trace_id": decision.trace_id,
        "kalibr_goal": decision.goal,
        "kalibr_path_id": decision.path_id,
        "kalibr_exploration": decision.exploration,
        "kalibr_cost_usd": completion.cost_usd,
    }


def _split_tool_calls(completion: kalibr.Completion) -> tuple[list[ToolCall], list[InvalidToolCall]]:
    valid: list[ToolCall] = []
    invalid: list[InvalidToolCall] = []
    for call in completion.tool_calls:
        try:
            args = json.loads(call.arguments or "{}")
        except json.JSONDecodeError as error:
            invalid.append(invalid_tool_call(name=call.name, args=call.arguments, id=call.id, error=str(error)))
            continue
        if not isinstance(args, dict):
            invalid.append(invalid_tool_call(name=call.name, args=call.arguments, id=call.id, error="not an object"))
            continue
        valid.append(ToolCall(name=call.name, args=args, id=call.id or None))
    return valid, invalid


def completion_to_message(completion: kalibr.Completion) -> AIMessage:
    tool_calls, invalid_tool_calls = _split_tool_calls(completion)
    return AIMessage(
        content=completion.text,
        tool_calls=tool_calls,
        invalid_tool_calls=invalid_tool_calls,
        usage_metadata=usage_metadata(completion.usage),
        response_metadata=completion_metadata(completion),
    )


def stream_chunk_to_message(chunk: kalibr.StreamChunk) -> AIMessageChunk:
    """One streamed increment; usage and metadata are left to ``last_chunk`` so they are counted once."""
    tool_call_chunks: list[ToolCallChunk] = []
    if chunk.tool_call is not None:
        delta = chunk.tool_call
        tool_call_chunks.append(ToolCallChunk(name=delta.name, args=delta.arguments, id=delta.id, index=delta.index))
    return AIMessageChunk(content=chunk.text, tool_call_chunks=tool_call_chunks)


def last_chunk(completion: kalibr.Completion | None) -> AIMessageChunk:
    """The closing chunk: the only one carrying usage, model name and trace id."""
    if completion is None:
        return AIMessageChunk(content="", chunk_position="last")
    return AIMessageChunk(
        content="",
        usage_metadata=usage_metadata(completion.usage),
        response_metadata=completion_metadata(completion),
        chunk_position="last",
    )


# --- OpenAI shapes -> LangChain, for paths that are LangChain models --------------------------------------
def from_openai_messages(messages: Sequence[Mapping[str, Any]]) -> list[BaseMessage]:
    return convert_to_messages([dict(message) for message in messages])


def _usage_of(message: AIMessage) -> kalibr.Usage:
    usage = message.usage_metadata
    if not usage:
        return kalibr.Usage()
    return kalibr.Usage(input_tokens=usage.get("input_tokens", 0), output_tokens=usage.get("output_tokens", 0))


def _model_of(message: BaseMessage, default: str) -> str:
    metadata = message.response_metadata
    name = metadata.get("model_name") or metadata.get("model")
    return name if isinstance(name, str) and name else default


def _finish_reason_of(message: BaseMessage) -> str | None:
    metadata = message.response_metadata
    reason = metadata.get("finish_reason") or metadata.get("stop_reason")
    return reason if isinstance(reason, str) else None


def message_to_response(message: BaseMessage, default_model: str) -> ProviderResponse:
    calls: tuple[kalibr.ToolCall, ...] = ()
    if isinstance(message, AIMessage):
        calls = tuple(
            kalibr.ToolCall(id=call.get("id") or "", name=call["name"], arguments=json.dumps(call["args"]))
            for call in message.tool_calls
        )
    return ProviderResponse(
        text=message.text,
        model=_model_of(message, default_model),
        usage=_usage_of(message) if isinstance(message, AIMessage) else kalibr.Usage(),
        tool_calls=calls,
        finish_reason=_finish_reason_of(message),
    )


def message_to_stream_chunks(chunk: BaseMessage) -> Iterator[kalibr.StreamChunk]:
    """A LangChain chunk as Kalibr stream chunks (one per tool-call piece, since a Kalibr chunk holds one)."""
    usage = _usage_of(chunk) if isinstance(chunk, AIMessage | AIMessageChunk) else None
    pieces = chunk.tool_call_chunks if isinstance(chunk, AIMessageChunk) else []
    deltas = [
        ToolCallDelta(
            index=piece.get("index") or 0, id=piece.get("id"), name=piece.get("name"), arguments=piece.get("args") or ""
        )
        for piece in pieces
    ]
    yield kalibr.StreamChunk(
        text=chunk.text,
        tool_call=deltas[0] if deltas else None,
        usage=usage if usage and usage.total_tokens else None,
        finish_reason=_finish_reason_of(chunk),
        model=_model_of(chunk, "") or None,
    )
    for delta in deltas[1:]:
        yield kalibr.StreamChunk(tool_call=delta)
