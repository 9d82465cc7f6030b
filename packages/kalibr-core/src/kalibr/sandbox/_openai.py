"""OpenAI chat-completions on the wire: parse a request body, render a completion, its stream, or an error."""

from __future__ import annotations

import secrets
import time
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

__all__ = ["error_body", "parse_request", "render_completion", "render_stream"]

_ROLES = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
    "function": "tool",
}
_ERROR_TYPES = {
    "invalid_request": ("invalid_request_error", None),
    "not_found": ("invalid_request_error", "model_not_found"),
    "rate_limited": ("requests", "rate_limit_exceeded"),
    "server_error": ("server_error", None),
    "bad_gateway": ("server_error", "bad_gateway"),
}


def parse_request(body: Any, *, goal: str | None) -> tuple[ChatRequest, bool, bool]:
    """The request, whether to stream, and whether the stream ends with a usage chunk."""
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object with 'model' and 'messages'.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required: pass the name of a sandbox model.")
    if body.get("n", 1) not in (1, None):
        raise bad_request("'n' must be 1: the sandbox returns one choice per request.")
    request = ChatRequest(
        model=model,
        turns=_turns(body.get("messages")),
        params=sampling_params(body),
        max_tokens=positive_int_param(body, "max_completion_tokens") or positive_int_param(body, "max_tokens"),
        stop=_stop(body.get("stop")),
        tools=_tools(body.get("tools")),
        goal=goal,
    )
    request.tool_choice = _tool_choice(body.get("tool_choice"), request.tools)
    _response_format(body.get("response_format"), request)
    stream_options = body.get("stream_options") or {}
    include_usage = isinstance(stream_options, dict) and bool(stream_options.get("include_usage"))
    return request, bool(body.get("stream")), include_usage


def _turns(messages: Any) -> list[Turn]:
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty list of {'role': ..., 'content': ...} objects.")
    tool_names: dict[str, str] = {}
    turns = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise bad_request(f"messages[{index}] must be an object with 'role' and 'content'.")
        role = _ROLES.get(str(message.get("role")))
        if role is None:
            raise bad_request(f"messages[{index}].role {message.get('role')!r} must be one of {sorted(_ROLES)}.")
        for call in message.get("tool_calls") or []:
            if isinstance(call, dict) and isinstance(call.get("function"), dict):
                tool_names[str(call.get("id"))] = str(call["function"].get("name"))
        text = message_text(message.get("content"), where=f"messages[{index}].content")
        tool_name = tool_names.get(str(message.get("tool_call_id"))) or message.get("name")
        turns.append(Turn(role, text, str(tool_name) if role == "tool" and tool_name else None))  # type: ignore[arg-type]
    return turns


def _stop(stop: Any) -> list[str]:
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list) and all(isinstance(item, str) for item in stop):
        return list(stop)
    raise bad_request("'stop' must be a string or a list of strings.")


def _tools(tools: Any) -> list[ToolSpec]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise bad_request("'tools' must be a list of {'type': 'function', 'function': {...}} objects.")
    specs = []
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise bad_request(f"tools[{index}] must be {{'type': 'function', 'function': {{'name': ...}}}}.")
        parameters = function.get("parameters")
        specs.append(
            ToolSpec(function["name"], str(function.get("description") or ""), parameters if parameters else {})
        )
    return specs


def _tool_choice(choice: Any, tools: list[ToolSpec]) -> str:
    if choice is None or choice in ("auto", "none", "required"):
        return str(choice or "auto")
    name = None
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
    if not isinstance(name, str):
        raise bad_request("'tool_choice' must be 'auto', 'none', 'required' or {'type': 'function', ...}.")
    if name not in {tool.name for tool in tools}:
        raise bad_request(f"tool_choice names {name!r}, which is not among the request's tools.")
    return f"tool:{name}"


def _response_format(response_format: Any, request: ChatRequest) -> None:
    if not isinstance(response_format, dict):
        return
    kind = response_format.get("type")
    if kind == "json_object":
        request.json_mode = True
    elif kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise bad_request("response_format.json_schema.schema must be a JSON schema object.")
        request.json_schema = schema


def render_completion(result: ChatResult) -> dict[str, Any]:
    """The non-streaming response body."""
    message: dict[str, Any] = {"role": "assistant", "content": result.text, "refusal": None}
    if result.tool_calls:
        message["tool_calls"] = [
            {
                "id": _call_id(),
                "type": "function",
                "function": {"name": call.name, "arguments": to_json(call.arguments)},
            }
            for call in result.tool_calls
        ]
    return {
        "id": f"chatcmpl-{secrets.token_hex(12)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": result.model,
        "system_fingerprint": "kalibr-sandbox",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": result.finish_reason}],
        "usage": _usage(result),
    }


def render_stream(result: ChatResult, *, include_usage: bool) -> Iterator[str]:
    """Server-sent events, one ``data:`` line per chunk, ending with ``data: [DONE]``."""
    base = {
        "id": f"chatcmpl-{secrets.token_hex(12)}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": result.model,
        "system_fingerprint": "kalibr-sandbox",
    }

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        extra = {"usage": None} if include_usage else {}
        return _event({**base, "choices": [choice], **extra})

    yield chunk({"role": "assistant", "content": "", "refusal": None})
    for piece in chunks_of(result.text or ""):
        yield chunk({"content": piece})
    for index, call in enumerate(result.tool_calls):
        header = {"index": index, "id": _call_id(), "type": "function", "function": {"name": call.name}}
        yield chunk({"tool_calls": [{**header, "function": {"name": call.name, "arguments": ""}}]})
        for piece in chunks_of(to_json(call.arguments), size=8):
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    yield chunk({}, result.finish_reason)
    if include_usage:
        yield _event({**base, "choices": [], "usage": _usage(result)})
    yield "data: [DONE]\n\n"


def error_body(error: SandboxHTTPError) -> dict[str, Any]:
    kind, code = _ERROR_TYPES.get(error.kind, ("server_error", None))
    return {"error": {"message": error.message, "type": kind, "param": None, "code": code}}


def _usage(result: ChatResult) -> dict[str, int]:
    total = result.input_tokens + result.output_tokens
    return {"prompt_tokens": result.input_tokens, "completion_tokens": result.output_tokens, "total_tokens": total}


def _event(payload: dict[str, Any]) -> str:
    return f"data: {to_json(payload)}\n\n"


def _call_id() -> str:
    return f"call_{secrets.token_hex(12)}"
