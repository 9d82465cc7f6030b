"""Chat requests and results in neither OpenAI's nor Anthropic's shape; each wire module converts to and from them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["ChatRequest", "ChatResult", "SandboxHTTPError", "ToolCall", "ToolSpec", "Turn", "bad_request"]


class SandboxHTTPError(Exception):
    """An error the sandbox answers with; each wire format renders it in its own error shape."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message


def bad_request(message: str) -> SandboxHTTPError:
    return SandboxHTTPError(400, "invalid_request", message)


@dataclass(frozen=True, slots=True)
class Turn:
    """One message, reduced to what the simulation reads."""

    role: Literal["system", "user", "assistant", "tool"]
    text: str
    tool_name: str | None = None


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(slots=True)
class ChatRequest:
    """A chat request in neither OpenAI's nor Anthropic's shape."""

    model: str
    turns: list[Turn]
    params: dict[str, Any] = field(default_factory=dict)
    max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)
    tools: list[ToolSpec] = field(default_factory=list)
    tool_choice: str = "auto"
    """``"auto"``, ``"none"``, ``"required"``, or ``"tool:<name>"`` to force one tool."""
    json_schema: dict[str, Any] | None = None
    json_mode: bool = False
    goal: str | None = None

    def last_user_text(self) -> str:
        return next((turn.text for turn in reversed(self.turns) if turn.role == "user"), "")


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ChatResult:
    model: str
    text: str | None
    tool_calls: list[ToolCall]
    finish_reason: Literal["stop", "length", "tool_calls"]
    stop_sequence: str | None
    input_tokens: int
    output_tokens: int


def message_text(content: Any, *, where: str) -> str:
    """The text of a message's content: a string, or a list of parts of which the text parts count."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad_request(f"{where} must be a string or a list of content parts.")
    texts = []
    for part in content:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict) and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif isinstance(part, dict) and part.get("type") == "tool_result":
            texts.append(message_text(part.get("content"), where=where))
    return "\n".join(texts)


def sampling_params(body: dict[str, Any]) -> dict[str, float]:
    """The numeric sampling parameters an accuracy curve may read."""
    return {key: number_param(body, key) for key in ("temperature", "top_p") if body.get(key) is not None}


def number_param(body: dict[str, Any], key: str) -> float:
    value = body[key]
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise bad_request(f"{key!r} must be a number, got {value!r}.")
    return float(value)


def positive_int_param(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise bad_request(f"{key!r} must be a positive integer, got {value!r}.")
    return value


def chunks_of(text: str, size: int = 4) -> list[str]:
    """``text`` in pieces of a few characters, as a model streams it."""
    return [text[start : start + size] for start in range(0, len(text), size)]


def to_json(value: Any) -> str:
    """JSON with non-ASCII text kept as is (CJK tool arguments stay readable on the wire)."""
    return json.dumps(value, ensure_ascii=False)
