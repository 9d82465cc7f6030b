"""Paths whose model is a LlamaIndex LLM object: the router decides, falls back and learns; the LLM answers."""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core.base.llms.types import CompletionResponse, CompletionResponseGen, LLMMetadata
from llama_index.core.llms import CustomLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.llms.mock import MockFunctionCallingLLM, MockLLM

import kalibr
from kalibr.sandbox import SandboxServer

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look a word up.",
            "parameters": {"type": "object", "properties": {"word": {"type": "string", "default": "kalibr"}}},
        },
    }
]


class BrokenLLM(CustomLLM):
    """An LLM whose backend is down."""

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata()

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        raise ConnectionError("backend down")

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        raise ConnectionError("backend down")


def _path(name: str, llm: Any) -> kalibr.Path:
    return kalibr.Path(model=name, provider="llamaindex", client=llm)


def test_an_llm_object_answers_a_routed_call() -> None:
    router = kalibr.Router("li_paths", [_path("echo", MockLLM())], store="memory:")
    completion = router.completion([{"role": "user", "content": "ping"}])
    assert "ping" in completion.text
    assert completion.decision.model == "echo"


async def test_async_and_streamed_calls_reach_the_llm_object() -> None:
    router = kalibr.Router("li_paths", [_path("echo", MockLLM())], store="memory:")
    assert "ping" in (await router.acompletion("ping")).text
    stream = router.stream("ping")
    assert "ping" in "".join(chunk.text for chunk in stream)
    astream = router.astream("pong")
    assert "pong" in "".join([chunk.text async for chunk in astream])
    assert astream.completion is not None
    assert "pong" in astream.completion.text


def test_a_failing_llm_object_falls_back_to_the_next_path(sandbox: SandboxServer) -> None:
    router = kalibr.Router(
        "li_paths",
        [_path("broken", BrokenLLM()), {"model": "sandbox-mini", "base_url": sandbox.openai_base_url}],
        store="memory:",
    )
    completion = router.completion("Hello there", force_model="broken")
    assert completion.decision.model == "sandbox-mini"
    (attempt,) = completion.attempts
    assert attempt.decision.model == "broken"
    assert "backend down" in attempt.error
    assert attempt.failure_category == "provider_error"


def test_a_function_calling_llm_object_gets_the_tools() -> None:
    router = kalibr.Router("li_paths", [_path("tools", MockFunctionCallingLLM())], store="memory:")
    completion = router.completion("look it up", tools=TOOLS, tool_choice="required")
    (call,) = completion.tool_calls
    assert call.name == "lookup"
    assert completion.finish_reason == "tool_calls"


def test_tools_for_an_llm_that_cannot_call_them_is_a_usage_error() -> None:
    router = kalibr.Router("li_paths", [_path("echo", MockLLM())], store="memory:")
    with pytest.raises(kalibr.UserError, match="cannot call functions"):
        router.completion("look it up", tools=TOOLS)


def test_a_client_that_is_not_an_llm_is_a_usage_error() -> None:
    router = kalibr.Router("li_paths", [_path("odd", object())], store="memory:")
    with pytest.raises(kalibr.UserError, match="pass a LlamaIndex LLM as client="):
        router.completion("hi")


def test_the_router_llm_can_route_between_llm_objects() -> None:
    router = kalibr.Router("li_paths", [_path("echo", MockLLM())], store="memory:")
    response = router.as_llamaindex().complete("ping")
    assert "ping" in response.text
    assert response.raw["kalibr"]["path_id"] == router.paths[0].path_id
