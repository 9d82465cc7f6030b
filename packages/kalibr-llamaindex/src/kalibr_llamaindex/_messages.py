"""Conversions between LlamaIndex chat values and the OpenAI-shaped dicts the router speaks.

Both directions live here: the router's LLM turns ``ChatMessage``s into dicts and completions into
``ChatResponse``s; the provider for LlamaIndex-object paths does the reverse.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ImageBlock,
    MessageRole,
    TextBlock,
    ToolCallBlock,
)
from llama_index.core.llms.llm import ToolSelection
from llama_index.core.tools.types import BaseTool, ToolMetadata, ToolOutput

from kalibr import Completion, ToolCall, Usage

__all__ = [
    "chat_response",
    "message_to_dict",
    "messages_from_dicts",
    "tool_calls_of",
    "tools_from_dicts",
    "usage_dict",
]

# Roles some integrations use for the assistant; the OpenAI shape knows only "assistant".
_ASSISTANT_ALIASES = frozenset({MessageRole.CHATBOT, MessageRole.MODEL})


def _arguments_json(arguments: Mapping[str, Any] | str) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments)


def _content(message: ChatMessage) -> str | list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for block in message.blocks:
        if isinstance(block, TextBlock):
            parts.append({"type": "text", "text": block.text})
        elif isinstance(block, ImageBlock) and block.url is not None:
            parts.append({"type": "image_url", "image_url": {"url": str(block.url)}})
    if all(part["type"] == "text" for part in parts):
        return "".join(part["text"] for part in parts)
    return parts


def _tool_calls(message: ChatMessage) -> list[dict[str, Any]]:
    calls = [
        {
            "id": block.tool_call_id or f"call_{index}",
            "type": "function",
            "function": {"name": block.tool_name, "arguments": _arguments_json(block.tool_kwargs)},
        }
        for index, block in enumerate(message.blocks)
        if isinstance(block, ToolCallBlock)
    ]
    # Other integrations keep OpenAI-shaped tool calls in additional_kwargs.
    legacy = message.additional_kwargs.get("tool_calls")
    if not calls and isinstance(legacy, list):
        calls = [call if isinstance(call, dict) else dict(call.model_dump()) for call in legacy]
    return calls


def message_to_dict(message: ChatMessage) -> dict[str, Any]:
    """One ``ChatMessage`` as an OpenAI chat-completions message."""
    role = MessageRole.ASSISTANT if message.role in _ASSISTANT_ALIASES else message.role
    converted: dict[str, Any] = {"role": role.value, "content": _content(message)}
    if role == MessageRole.TOOL:
        converted["tool_call_id"] = message.additional_kwargs.get("tool_call_id", "")
    if role == MessageRole.ASSISTANT and (calls := _tool_calls(message)):
        converted["tool_calls"] = calls
    return converted


def usage_dict(usage: Usage) -> dict[str, int]:
    """Usage in the OpenAI shape, which LlamaIndex's ``TokenCountingHandler`` reads."""
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
    }


def _assistant_message(text: str, tool_calls: Sequence[ToolCall]) -> ChatMessage:
    blocks: list[Any] = [TextBlock(text=text)] if text or not tool_calls else []
    blocks += [
        ToolCallBlock(tool_call_id=call.id, tool_name=call.name, tool_kwargs=call.parsed_arguments())
        for call in tool_calls
    ]
    return ChatMessage(role=MessageRole.ASSISTANT, blocks=blocks)


def chat_response(completion: Completion, *, delta: str | None = None) -> ChatResponse:
    """A routed completion as a ``ChatResponse``: usage in ``raw`` and ``additional_kwargs``, decision in ``raw``."""
    usage = usage_dict(completion.usage)
    raw = {
        "model": completion.model,
        "usage": usage,
        "finish_reason": completion.finish_reason,
        "kalibr": {
            "trace_id": completion.trace_id,
            "goal": completion.decision.goal,
            "path_id": completion.decision.path_id,
            "exploration": completion.decision.exploration,
            "cost_usd": completion.cost_usd,
        },
    }
    return ChatResponse(
        message=_assistant_message(completion.text, completion.tool_calls),
        raw=raw,
        delta=delta,
        additional_kwargs=usage,
    )


def tool_calls_of(response: ChatResponse) -> list[ToolSelection]:
    """The tool calls in an assistant message, as LlamaIndex ``ToolSelection``s."""
    selections = []
    for call in _tool_calls(response.message):
        function = call.get("function", {})
        arguments = function.get("arguments") or "{}"
        try:
            parsed = json.loads(arguments) if isinstance(arguments, str) else dict(arguments)
        except json.JSONDecodeError:
            parsed = {}
        selections.append(
            ToolSelection(
                tool_id=call.get("id", ""),
                tool_name=function.get("name", ""),
                tool_kwargs=parsed if isinstance(parsed, dict) else {},
            )
        )
    return selections


# --- the reverse direction, for paths that wrap a LlamaIndex LLM ------------------------------------------------


def _message_from_dict(message: Mapping[str, Any]) -> ChatMessage:
    content = message.get("content") or ""
    if isinstance(content, list):
        content = "".join(part.get("text", "") for part in content if isinstance(part, Mapping))
    role = MessageRole(message.get("role", "user"))
    kwargs: dict[str, Any] = {}
    if role == MessageRole.TOOL:
        kwargs["tool_call_id"] = message.get("tool_call_id", "")
    blocks: list[Any] = [TextBlock(text=content)] if content else []
    for call in message.get("tool_calls") or []:
        function = call.get("function", {})
        blocks.append(
            ToolCallBlock(
                tool_call_id=call.get("id"),
                tool_name=function.get("name", ""),
                tool_kwargs=function.get("arguments") or "{}",
            )
        )
    return ChatMessage(role=role, blocks=blocks, additional_kwargs=kwargs)


def messages_from_dicts(messages: Sequence[Mapping[str, Any]]) -> list[ChatMessage]:
    """OpenAI-shaped messages as ``ChatMessage``s."""
    return [_message_from_dict(message) for message in messages]


@dataclass
class _SchemaToolMetadata(ToolMetadata):
    """Tool metadata whose parameters are a JSON schema given as a dict (not a pydantic model)."""

    parameters: dict[str, Any] | None = None

    def get_parameters_dict(self) -> dict[str, Any]:
        return self.parameters or {"type": "object", "properties": {}}


class _DescribedTool(BaseTool):
    """A tool known only by its description: enough for an LLM to choose it; never called here."""

    def __init__(self, metadata: ToolMetadata) -> None:
        self._metadata = metadata

    @property
    def metadata(self) -> ToolMetadata:
        return self._metadata

    def __call__(self, input: Any) -> ToolOutput:
        raise NotImplementedError(f"tool {self._metadata.name!r} is only described to the model, not run by Kalibr")


def tools_from_dicts(tools: Sequence[Mapping[str, Any]]) -> list[BaseTool]:
    """OpenAI-shaped tool definitions as LlamaIndex tools a function-calling LLM can be offered."""
    described: list[BaseTool] = []
    for tool in tools:
        function = tool.get("function", tool)
        metadata = _SchemaToolMetadata(
            name=function["name"], description=function.get("description", ""), parameters=function.get("parameters")
        )
        described.append(_DescribedTool(metadata))
    return described
