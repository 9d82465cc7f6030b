"""Turns the router's stream chunks into LlamaIndex's cumulative streaming responses."""

from __future__ import annotations

from typing import Any

from llama_index.core.base.llms.types import ChatMessage, ChatResponse, MessageRole, TextBlock, ToolCallBlock

from kalibr import StreamAccumulator, StreamChunk

__all__ = ["StreamedMessage"]


class StreamedMessage:
    """The message so far. ``add(chunk)`` returns a ``ChatResponse`` holding all of it plus the chunk's delta."""

    def __init__(self) -> None:
        self._so_far = StreamAccumulator()

    def add(self, chunk: StreamChunk) -> ChatResponse:
        self._so_far.add(chunk)
        raw: dict[str, Any] = {"model": chunk.model, "finish_reason": chunk.finish_reason}
        return ChatResponse(message=self._message(), delta=chunk.text, raw=raw)

    def _message(self) -> ChatMessage:
        text = "".join(self._so_far.text_parts)
        calls = self._so_far.tool_calls
        blocks: list[Any] = [TextBlock(text=text)] if text or not calls else []
        blocks += [
            # Arguments stay a (possibly partial) JSON string until the stream ends.
            ToolCallBlock(tool_call_id=call["id"] or None, tool_name=call["name"], tool_kwargs=call["arguments"])
            for _, call in sorted(calls.items())
        ]
        return ChatMessage(role=MessageRole.ASSISTANT, blocks=blocks)
