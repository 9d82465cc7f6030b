"""OpenAI-compatible chat completions: OpenAI, vLLM, Ollama, llama.cpp servers, most gateways, the sandbox.

The key comes from the path's ``api_key``, else ``OPENAI_API_KEY``; the base URL from the path's
``base_url``, else ``OPENAI_BASE_URL``, else OpenAI's. A local server that needs no key gets a placeholder.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from kalibr._domain import Usage
from kalibr.providers.base import (
    HTTPCall,
    ProviderRequest,
    ProviderResponse,
    StreamChunk,
    ToolCall,
    ToolCallDelta,
    endpoint,
)

__all__ = ["OpenAIChat"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"


def usage_from_openai(usage: Mapping[str, Any] | None) -> Usage:
    if not usage:
        return Usage()
    return Usage(
        input_tokens=int(usage.get("prompt_tokens") or usage.get("input_tokens") or 0),
        output_tokens=int(usage.get("completion_tokens") or usage.get("output_tokens") or 0),
    )


class OpenAIChat:
    """The OpenAI chat-completions wire format."""

    name = "openai"

    def build(self, request: ProviderRequest) -> HTTPCall:
        path = request.path
        base_url, api_key = endpoint(
            path, key_env="OPENAI_API_KEY", base_env="OPENAI_BASE_URL", default_base=DEFAULT_BASE_URL
        )
        body: dict[str, Any] = {"model": path.model, "messages": list(request.messages), **request.params}
        if path.tools and "tools" not in body:
            body["tools"] = list(path.tools)
        if request.stream:
            body["stream"] = True
            body.setdefault("stream_options", {"include_usage": True})
        headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        return HTTPCall(f"{base_url}/chat/completions", headers, body)

    def parse(self, body: Mapping[str, Any], request: ProviderRequest) -> ProviderResponse:
        choices = body.get("choices") or [{}]
        choice = choices[0] if isinstance(choices[0], Mapping) else {}
        message = choice.get("message") or {}
        tool_calls = tuple(
            ToolCall(
                id=str(call.get("id", "")),
                name=str((call.get("function") or {}).get("name", "")),
                arguments=str((call.get("function") or {}).get("arguments") or "{}"),
            )
            for call in message.get("tool_calls") or ()
        )
        return ProviderResponse(
            text=_text_of(message.get("content")),
            model=str(body.get("model") or request.path.model),
            usage=usage_from_openai(body.get("usage")),
            tool_calls=tool_calls,
            finish_reason=choice.get("finish_reason"),
            raw=body,
        )

    def parse_event(self, data: str, event: str | None) -> StreamChunk | None:
        if data.strip() == "[DONE]":
            return None
        payload = json.loads(data)
        usage = usage_from_openai(payload["usage"]) if payload.get("usage") else None
        choices = payload.get("choices") or []
        if not choices:
            return StreamChunk(usage=usage, model=payload.get("model")) if usage else None
        choice = choices[0]
        delta = choice.get("delta") or {}
        tool_delta = None
        for call in delta.get("tool_calls") or ():
            function = call.get("function") or {}
            tool_delta = ToolCallDelta(
                index=int(call.get("index", 0)),
                id=call.get("id"),
                name=function.get("name"),
                arguments=function.get("arguments") or "",
            )
        return StreamChunk(
            text=_text_of(delta.get("content")),
            tool_call=tool_delta,
            usage=usage,
            finish_reason=choice.get("finish_reason"),
            model=payload.get("model"),
        )

    def error_message(self, body: str) -> str:
        try:
            error = json.loads(body).get("error")
        except (json.JSONDecodeError, AttributeError):
            return body[:300]
        if isinstance(error, Mapping):
            return str(error.get("message") or error)
        return str(error or body[:300])


def _text_of(content: object) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return str(content)
