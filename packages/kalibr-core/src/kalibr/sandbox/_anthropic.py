"""Anthropic Messages on the wire: parse a request body, render a message, its event stream, or an error."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

from kalibr.sandbox._request import (
    ChatRequest,
    ChatResult,
    SandboxHTTPError,
    ToolSpec,
    Turn,
    bad_request,
    chunks_of,
    message_text,
    positive_int_param,
    sampling_params,
    to_json,
)

__all__ = ["error_body", "parse_request", "render_message", "render_stream"]

_ERROR_TYPES = {
    "invalid_request": "invalid_request_error",
    "not_found": "not_found_error",
    "rate_limited": "rate_limit_error",
    "server_error": "api_error",
    "bad_gateway": "api_error",
}
_CHOICES = {"auto": "auto", "any": "required", "none": "none"}


def parse_request(body: Any, *, goal: str | None) -> tuple[ChatRequest, bool]:
    """The request and whether to stream it."""
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object with 'model', 'max_tokens' and 'messages'.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("model: Field required (the name of a sandbox model).")
    system = message_text(body.get("system"), where="system")
    turns = [Turn("system", system)] if system else []
    turns += _turns(body.get("messages"))
    stop = body.get("stop_sequences") or []
    if not isinstance(stop, list) or not all(isinstance(item, str) for item in stop):
        raise bad_request("stop_sequences must be a list of strings.")
    request = ChatRequest(
        model=model,
        turns=turns,
        params=sampling_params(body),
        max_tokens=positive_int_param(body, "max_tokens"),
        stop=list(stop),
        tools=_tools(body.get("tools")),
        goal=goal,
    )
    request.tool_choice = _tool_choice(body.get("tool_choice"), request.tools)
    return request, bool(body.get("stream"))


def _turns(messages: Any) -> list[Turn]:
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages: must be a non-empty list of {'role': 'user'|'assistant', 'content': ...}.")
    tool_names: dict[str, str] = {}
    turns: list[Turn] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            role = message.get("role") if isinstance(message, dict) else None
            raise bad_request(f"messages.{index}.role: {role!r} is not 'user' or 'assistant'.")
        content = message.get("content")
        blocks = content if isinstance(content, list) else []
        tool_turns = []
        for block in blocks:
            if isinstance(block, dict) and block.get("type") == "tool_use":
                tool_names[str(block.get("id"))] = str(block.get("name"))
            if isinstance(block, dict) and block.get("type") == "tool_result":
                text = message_text(block.get("content"), where=f"messages.{index}.content")
                tool_turns.append(Turn("tool", text, tool_names.get(str(block.get("tool_use_id")))))
        plain = [block for block in blocks if not (isinstance(block, dict) and block.get("type") == "tool_result")]
        text = message_text(plain if blocks else content, where=f"messages.{index}.content")
        if text or not tool_turns:  # text sent beside tool results goes first, so the results stay last
            turns.append(Turn(message["role"], text))
        turns.extend(tool_turns)
    return turns


def _tools(tools: Any) -> list[ToolSpec]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise bad_request("tools: must be a list of {'name', 'description', 'input_schema'} objects.")
    specs = []
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise bad_request(f"tools.{index}.name: Field required.")
        schema = tool.get("input_schema")
        specs.append(ToolSpec(tool["name"], str(tool.get("description") or ""), schema if schema else {}))
    return specs


def _tool_choice(choice: Any, tools: list[ToolSpec]) -> str:
    if choice is None:
        return "auto"
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind in _CHOICES:
        return _CHOICES[kind]
    if kind != "tool":
        raise bad_request("tool_choice.type must be 'auto', 'any', 'tool' or 'none'.")
    name = choice.get("name")
    if name not in {tool.name for tool in tools}:
        raise bad_request(f"tool_choice.name {name!r} is not among the request's tools.")
    return f"tool:{name}"


def render_message(result: ChatResult) -> dict[str, Any]:
    """The non-streaming response body."""
    return {**_message_head(result), "content": _content(result), **_stop_fields(result), "usage": _usage(result)}


def render_stream(result: ChatResult) -> Iterator[str]:
    """Anthropic's named server-sent events, from message_start to message_stop."""
    start_usage = {**_usage(result), "output_tokens": 1}
    head = {**_message_head(result), "content": [], "stop_reason": None, "stop_sequence": None, "usage": start_usage}
    yield _event("message_start", {"message": head})
    for index, block in enumerate(_content(result)):
        if block["type"] == "text":
            yield _event("content_block_start", {"index": index, "content_block": {"type": "text", "text": ""}})
            for piece in chunks_of(block["text"]):
                yield _event("content_block_delta", {"index": index, "delta": {"type": "text_delta", "text": piece}})
        else:
            yield _event("content_block_start", {"index": index, "content_block": {**block, "input": {}}})
            for piece in chunks_of(to_json(block["input"]), size=8):
                delta = {"type": "input_json_delta", "partial_json": piece}
                yield _event("content_block_delta", {"index": index, "delta": delta})
        yield _event("content_block_stop", {"index": index})
    yield _event("message_delta", {"delta": _stop_fields(result), "usage": {"output_tokens": result.output_tokens}})
    yield _event("message_stop", {})


def error_body(error: SandboxHTTPError) -> dict[str, Any]:
    return {"type": "error", "error": {"type": _ERROR_TYPES.get(error.kind, "api_error"), "message": error.message}}


def _message_head(result: ChatResult) -> dict[str, Any]:
    return {"id": f"msg_{secrets.token_hex(12)}", "type": "message", "role": "assistant", "model": result.model}


def _content(result: ChatResult) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if result.text or not result.tool_calls:
        blocks.append({"type": "text", "text": result.text or ""})
    for call in result.tool_calls:
        tool_id = f"toolu_{secrets.token_hex(12)}"
        blocks.append({"type": "tool_use", "id": tool_id, "name": call.name, "input": call.arguments})
    return blocks


def _stop_fields(result: ChatResult) -> dict[str, Any]:
    if result.finish_reason == "tool_calls":
        reason = "tool_use"
    elif result.finish_reason == "length":
        reason = "max_tokens"
    else:
        reason = "stop_sequence" if result.stop_sequence is not None else "end_turn"
    return {"stop_reason": reason, "stop_sequence": result.stop_sequence}


def _usage(result: ChatResult) -> dict[str, int]:
    return {
        "input_tokens": result.input_tokens,
        "output_tokens": result.output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def _event(name: str, payload: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {to_json({'type': name, **payload})}\n\n"
