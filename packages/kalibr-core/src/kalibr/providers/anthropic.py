"""The Anthropic Messages API. Chat messages arrive in the OpenAI shape and are converted here.

Key from the path's ``api_key`` or ``ANTHROPIC_API_KEY``; base URL from the path or ``ANTHROPIC_BASE_URL``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from kalibr._domain import Usage
from kalibr._exceptions import UserError
from kalibr._types import Message
from kalibr.providers.base import (
    HTTPCall,
    ProviderRequest,
    ProviderResponse,
    StreamChunk,
    ToolCall,
    ToolCallDelta,
    endpoint,
)

__all__ = ["AnthropicMessages"]

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 1024


class AnthropicMessages:
    """The Anthropic Messages wire format."""

    name = "anthropic"

    def build(self, request: ProviderRequest) -> HTTPCall:
        path = request.path
        base_url, api_key = endpoint(
            path, key_env="ANTHROPIC_API_KEY", base_env="ANTHROPIC_BASE_URL", default_base=DEFAULT_BASE_URL
        )
        params = dict(request.params)
        system, messages = to_anthropic_messages(request.messages)
        body: dict[str, Any] = {"model": path.model, "messages": messages}
        if system:
            body["system"] = system
        body["max_tokens"] = params.pop("max_tokens", None) or params.pop("max_completion_tokens", DEFAULT_MAX_TOKENS)
        if "stop" in params:
            stop = params.pop("stop")
            body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop or [])
        tools = params.pop("tools", None) or (list(path.tools) if path.tools else None)
        if tools:
            body["tools"] = [_to_anthropic_tool(tool) for tool in tools]
        if "tool_choice" in params:
            body["tool_choice"] = _to_anthropic_tool_choice(params.pop("tool_choice"))
        params.pop("response_format", None)  # Anthropic has no JSON mode; structured output goes through tools
        params.pop("stream_options", None)
        body.update(params)
        if request.stream:
            body["stream"] = True
        headers = {"x-api-key": api_key, "anthropic-version": API_VERSION, "content-type": "application/json"}
        return HTTPCall(f"{base_url}/v1/messages", headers, body)

    def parse(self, body: Mapping[str, Any], request: ProviderRequest) -> ProviderResponse:
        texts: list[str] = []
        calls: list[ToolCall] = []
        for block in body.get("content") or ():
            if block.get("type") == "text":
                texts.append(str(block.get("text", "")))
            elif block.get("type") == "tool_use":
                arguments = json.dumps(block.get("input") or {})
                calls.append(
                    ToolCall(id=str(block.get("id", "")), name=str(block.get("name", "")), arguments=arguments)
                )
        return ProviderResponse(
            text="".join(texts),
            model=str(body.get("model") or request.path.model),
            usage=_usage(body.get("usage")),
            tool_calls=tuple(calls),
            finish_reason=_FINISH_REASONS.get(str(body.get("stop_reason")), body.get("stop_reason")),
            raw=body,
        )

    def parse_event(self, data: str, event: str | None) -> StreamChunk | None:
        payload = json.loads(data)
        kind = payload.get("type", event)
        if kind == "message_start":
            message = payload.get("message") or {}
            return StreamChunk(usage=_usage(message.get("usage")), model=message.get("model"))
        if kind == "content_block_start":
            block = payload.get("content_block") or {}
            if block.get("type") == "tool_use":
                start = ToolCallDelta(index=int(payload.get("index", 0)), id=block.get("id"), name=block.get("name"))
                return StreamChunk(tool_call=start)
            return None
        if kind == "content_block_delta":
            part = payload.get("delta") or {}
            if part.get("type") == "text_delta":
                return StreamChunk(text=str(part.get("text", "")))
            if part.get("type") == "input_json_delta":
                index = int(payload.get("index", 0))
                return StreamChunk(tool_call=ToolCallDelta(index=index, arguments=str(part.get("partial_json", ""))))
            return None
        if kind == "message_delta":
            reason = (payload.get("delta") or {}).get("stop_reason")
            output = int((payload.get("usage") or {}).get("output_tokens") or 0)
            return StreamChunk(usage=Usage(0, output), finish_reason=_FINISH_REASONS.get(str(reason), reason))
        if kind == "error":
            from kalibr._exceptions import ProviderError

            raise ProviderError(f"stream error: {(payload.get('error') or {}).get('message', payload)}")
        return None

    def error_message(self, body: str) -> str:
        try:
            error = json.loads(body).get("error")
        except (json.JSONDecodeError, AttributeError):
            return body[:300]
        return str(error.get("message") if isinstance(error, Mapping) else error or body[:300])


_FINISH_REASONS = {"end_turn": "stop", "max_tokens": "length", "stop_sequence": "stop", "tool_use": "tool_calls"}


def _usage(usage: Mapping[str, Any] | None) -> Usage:
    if not usage:
        return Usage()
    return Usage(int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0))


def _to_anthropic_tool(tool: Mapping[str, Any]) -> dict[str, Any]:
    if "input_schema" in tool:
        return dict(tool)
    function = tool.get("function", tool)
    return {
        "name": function["name"],
        "description": function.get("description", ""),
        "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
    }


def _to_anthropic_tool_choice(choice: object) -> dict[str, Any]:
    if choice in ("required", "any"):
        return {"type": "any"}
    if choice in ("auto", None):
        return {"type": "auto"}
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, Mapping):
        name = (choice.get("function") or {}).get("name") or choice.get("name")
        if name:
            return {"type": "tool", "name": name}
    if isinstance(choice, str):
        return {"type": "tool", "name": choice}
    raise UserError(f"unsupported tool_choice {choice!r}: use 'auto', 'required', 'none' or a tool name")


def to_anthropic_messages(messages: Sequence[Message]) -> tuple[str, list[dict[str, Any]]]:
    """Split OpenAI-shaped messages into Anthropic's system string and message list."""
    system: list[str] = []
    converted: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(_plain_text(message.get("content")))
        elif role == "tool":
            block = {
                "type": "tool_result",
                "tool_use_id": message.get("tool_call_id", ""),
                "content": _plain_text(message.get("content")),
            }
            _append(converted, "user", [block])
        elif role == "assistant":
            blocks: list[dict[str, Any]] = []
            if text := _plain_text(message.get("content")):
                blocks.append({"type": "text", "text": text})
            for call in message.get("tool_calls") or ():
                function = call.get("function") or {}
                arguments = function.get("arguments") or "{}"
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": call.get("id", ""),
                        "name": function.get("name", ""),
                        "input": json.loads(arguments) if isinstance(arguments, str) else arguments,
                    }
                )
            _append(converted, "assistant", blocks or [{"type": "text", "text": ""}])
        else:
            content = message.get("content")
            _append(
                converted,
                "user",
                content if isinstance(content, list) else [{"type": "text", "text": _plain_text(content)}],
            )
    return "\n\n".join(part for part in system if part), converted


def _append(messages: list[dict[str, Any]], role: str, blocks: list[Any]) -> None:
    # Anthropic requires alternating roles: merge consecutive same-role messages.
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": list(blocks)})


def _plain_text(content: object) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return str(content)
