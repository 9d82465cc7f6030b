"""The OpenAI chat-completions body of a routed completion: what DSPy reads from a model answer."""

from __future__ import annotations

from typing import Any

from kalibr import Completion

__all__ = ["openai_body"]


def openai_body(completion: Completion) -> dict[str, Any]:
    """A completion as an OpenAI chat-completions body; its ``id`` is the decision's trace id."""
    return {
        "id": completion.trace_id,
        "object": "chat.completion",
        "model": completion.model,
        "choices": [{"index": 0, "message": completion.message, "finish_reason": completion.finish_reason or "stop"}],
        "usage": {
            "prompt_tokens": completion.usage.input_tokens,
            "completion_tokens": completion.usage.output_tokens,
            "total_tokens": completion.usage.total_tokens,
        },
    }
