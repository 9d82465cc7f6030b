"""What a routed call returns: the model's answer with the decision that produced it."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kalibr._domain import Decision, Usage
from kalibr._exceptions import AllPathsFailed, ProviderError
from kalibr.providers.base import ProviderResponse, StreamChunk, ToolCall

if TYPE_CHECKING:
    from kalibr._types import FailureCategory

__all__ = ["Attempt", "Completion", "StreamAccumulator", "all_failed"]


@dataclass(frozen=True, slots=True)
class Attempt:
    """A path tried before the one that answered, and why it failed (``exception``: the provider's own error)."""

    decision: Decision
    error: str
    failure_category: str
    exception: ProviderError | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Completion:
    """A model's answer. ``decision`` says which path produced it; ``report()`` tells Kalibr how it went."""

    text: str
    decision: Decision
    usage: Usage
    model: str
    latency_ms: float
    cost_usd: float | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None
    attempts: tuple[Attempt, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)
    _reporter: Callable[..., None] | None = field(default=None, repr=False, compare=False)

    @property
    def trace_id(self) -> str:
        return self.decision.trace_id

    @property
    def output(self) -> str | list[ToolCall]:
        """What ``success_when``/``score_when`` judge: the tool calls for a tool-call turn, else the text."""
        return list(self.tool_calls) if self.tool_calls else self.text

    @property
    def message(self) -> dict[str, Any]:
        """The answer as an OpenAI-shaped assistant message, ready to append to the conversation."""
        message: dict[str, Any] = {"role": "assistant", "content": self.text}
        if self.tool_calls:
            message["tool_calls"] = [
                {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
                for call in self.tool_calls
            ]
        return message

    def report(
        self,
        success: bool | None = None,
        *,
        score: float | None = None,
        reason: str | None = None,
        failure_category: FailureCategory | None = None,
    ) -> None:
        """Report how this call went (same as ``router.report(..., trace_id=completion.trace_id)``)."""
        if self._reporter is None:
            raise RuntimeError("this completion was not produced by a Router")
        self._reporter(success=success, score=score, reason=reason, failure_category=failure_category)


class StreamAccumulator:
    """Builds the final text, tool calls and usage out of streamed chunks."""

    def __init__(self) -> None:
        self.text_parts: list[str] = []
        self.tool_calls: dict[int, dict[str, str]] = {}
        self.input_tokens = 0
        self.output_tokens = 0
        self.finish_reason: str | None = None
        self.model: str | None = None

    def add(self, chunk: StreamChunk) -> None:
        self.text_parts.append(chunk.text)
        if chunk.tool_call is not None:
            call = self.tool_calls.setdefault(chunk.tool_call.index, {"id": "", "name": "", "arguments": ""})
            call["id"] = chunk.tool_call.id or call["id"]
            call["name"] = chunk.tool_call.name or call["name"]
            call["arguments"] += chunk.tool_call.arguments
        if chunk.usage is not None:
            # Providers send input tokens once and output tokens once (possibly in separate events).
            self.input_tokens = chunk.usage.input_tokens or self.input_tokens
            self.output_tokens = chunk.usage.output_tokens or self.output_tokens
        self.finish_reason = chunk.finish_reason or self.finish_reason
        self.model = chunk.model or self.model

    def response(self, default_model: str) -> ProviderResponse:
        calls = tuple(
            ToolCall(id=c["id"], name=c["name"], arguments=c["arguments"] or "{}")
            for _, c in sorted(self.tool_calls.items())
        )
        return ProviderResponse(
            text="".join(self.text_parts),
            model=self.model or default_model,
            usage=Usage(self.input_tokens, self.output_tokens),
            tool_calls=calls,
            finish_reason=self.finish_reason,
        )


def all_failed(goal: str, attempts: Sequence[Attempt]) -> AllPathsFailed:
    """The error raised when every path of ``goal`` failed, with each path's own error in order."""
    summary = "; ".join(f"{a.decision.path.label}: {a.failure_category}" for a in attempts)
    errors = [a.exception or ProviderError(a.error, model=a.decision.model) for a in attempts]
    return AllPathsFailed(f"every path of goal {goal!r} failed ({summary})", errors)
