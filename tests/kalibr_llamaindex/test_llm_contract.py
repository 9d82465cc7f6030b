"""Every public method of LlamaIndex's LLM interface, sync and async, streamed and not, against the sandbox."""

from __future__ import annotations

import json
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, MessageRole, TextBlock, ToolCallBlock
from llama_index.core.callbacks import CallbackManager, TokenCountingHandler
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.prompts import PromptTemplate
from llama_index.core.tools import FunctionTool
from pydantic import BaseModel

from kalibr import UserError
from kalibr_llamaindex import KalibrLLM

from .conftest import RecordingRouter

HELLO = [ChatMessage(role=MessageRole.USER, content="Hello there")]
GREETING = "Hello! How can I help you today?"


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


MULTIPLY = FunctionTool.from_defaults(fn=multiply)


def test_is_a_function_calling_chat_model(llm: KalibrLLM) -> None:
    assert isinstance(llm, FunctionCallingLLM)
    assert llm.metadata.is_function_calling_model
    assert llm.metadata.is_chat_model
    assert llm.metadata.model_name == "kalibr/li_contract"


def test_needs_a_router() -> None:
    with pytest.raises(UserError, match=r"needs a kalibr\.Router"):
        KalibrLLM(router="gpt-4o")  # type: ignore[arg-type]


def _assert_routed(response: Any, router: RecordingRouter) -> None:
    kalibr_info = response.raw["kalibr"]
    assert kalibr_info["goal"] == router.goal
    assert kalibr_info["path_id"] in {path.path_id for path in router.paths}
    usage = response.raw["usage"]
    assert usage["prompt_tokens"] > 0
    assert usage["completion_tokens"] > 0
    assert response.additional_kwargs == usage


def test_chat(llm: KalibrLLM, router: RecordingRouter, events: list[str]) -> None:
    response = llm.chat(HELLO)
    assert response.message.content == GREETING
    assert response.message.role == MessageRole.ASSISTANT
    _assert_routed(response, router)
    assert events[:1] == ["LLMChatStartEvent"]
    assert "LLMChatEndEvent" in events


async def test_achat(llm: KalibrLLM, router: RecordingRouter, events: list[str]) -> None:
    response = await llm.achat(HELLO)
    assert response.message.content == GREETING
    _assert_routed(response, router)
    assert {"LLMChatStartEvent", "LLMChatEndEvent"} <= set(events)


def test_stream_chat(llm: KalibrLLM, router: RecordingRouter, events: list[str]) -> None:
    responses = list(llm.stream_chat(HELLO))
    assert "".join(r.delta or "" for r in responses) == GREETING
    assert len([r for r in responses if r.delta]) > 1
    assert responses[-1].message.content == GREETING
    _assert_routed(responses[-1], router)
    assert "LLMChatInProgressEvent" in events
    assert events[-1] == "LLMChatEndEvent"


async def test_astream_chat(llm: KalibrLLM, router: RecordingRouter, events: list[str]) -> None:
    responses = [r async for r in await llm.astream_chat(HELLO)]
    assert "".join(r.delta or "" for r in responses) == GREETING
    _assert_routed(responses[-1], router)
    assert {"LLMChatInProgressEvent", "LLMChatEndEvent"} <= set(events)


def test_complete(llm: KalibrLLM, router: RecordingRouter, events: list[str]) -> None:
    response = llm.complete("Hello there")
    assert response.text == GREETING
    _assert_routed(response, router)
    assert {"LLMCompletionStartEvent", "LLMCompletionEndEvent"} <= set(events)


async def test_acomplete(llm: KalibrLLM, router: RecordingRouter) -> None:
    response = await llm.acomplete("Hello there")
    assert response.text == GREETING
    _assert_routed(response, router)


def test_stream_complete(llm: KalibrLLM, router: RecordingRouter, events: list[str]) -> None:
    responses = list(llm.stream_complete("Hello there"))
    assert "".join(r.delta or "" for r in responses) == GREETING
    assert responses[-1].text == GREETING
    _assert_routed(responses[-1], router)
    assert "LLMCompletionInProgressEvent" in events


async def test_astream_complete(llm: KalibrLLM, router: RecordingRouter) -> None:
    responses = [r async for r in await llm.astream_complete("Hello there")]
    assert responses[-1].text == GREETING
    _assert_routed(responses[-1], router)


def test_predict_and_stream(llm: KalibrLLM, events: list[str]) -> None:
    template = PromptTemplate("Hello {who}")
    assert llm.predict(template, who="there") == GREETING
    assert "".join(llm.stream(template, who="there")) == GREETING
    assert {"LLMPredictStartEvent", "LLMPredictEndEvent"} <= set(events)


async def test_apredict_and_astream(llm: KalibrLLM) -> None:
    template = PromptTemplate("Hello {who}")
    assert await llm.apredict(template, who="there") == GREETING
    assert "".join([t async for t in await llm.astream(template, who="there")]) == GREETING


def test_token_counting_callback_sees_usage(router: RecordingRouter) -> None:
    counter = TokenCountingHandler()
    llm = router.as_llamaindex(callback_manager=CallbackManager([counter]))
    llm.chat(HELLO)
    assert counter.prompt_llm_token_count > 0
    assert counter.completion_llm_token_count > 0


def test_call_params_and_per_call_params_reach_the_model(llm: KalibrLLM) -> None:
    # The sandbox honours max_tokens by truncating the reply.
    full = llm.chat(HELLO).message.content or ""
    short = llm.chat(HELLO, max_tokens=2).message.content or ""
    assert len(short) < len(full)


# --- tools ----------------------------------------------------------------------------------------------------


def _only_call(llm: KalibrLLM, response: ChatResponse) -> tuple[str, dict[str, Any]]:
    (call,) = llm.get_tool_calls_from_response(response)
    return call.tool_name, call.tool_kwargs


def test_chat_with_tools(llm: KalibrLLM) -> None:
    response = llm.chat_with_tools([MULTIPLY], user_msg="What is 6 times 7?", tool_required=True)
    assert _only_call(llm, response) == ("multiply", {"a": 6, "b": 7})


async def test_achat_with_tools(llm: KalibrLLM) -> None:
    response = await llm.achat_with_tools([MULTIPLY], user_msg="What is 6 times 7?", tool_required=True)
    assert _only_call(llm, response) == ("multiply", {"a": 6, "b": 7})


def test_stream_chat_with_tools(llm: KalibrLLM) -> None:
    *_, last = llm.stream_chat_with_tools([MULTIPLY], user_msg="What is 6 times 7?", tool_required=True)
    assert _only_call(llm, last) == ("multiply", {"a": 6, "b": 7})


async def test_astream_chat_with_tools(llm: KalibrLLM) -> None:
    stream = await llm.astream_chat_with_tools([MULTIPLY], user_msg="What is 6 times 7?", tool_required=True)
    responses = [r async for r in stream]
    assert _only_call(llm, responses[-1]) == ("multiply", {"a": 6, "b": 7})


def test_predict_and_call_runs_the_tool(llm: KalibrLLM) -> None:
    assert str(llm.predict_and_call([MULTIPLY], "What is 6 times 7?", tool_required=True)) == "42"


async def test_apredict_and_call_runs_the_tool(llm: KalibrLLM) -> None:
    response = await llm.apredict_and_call([MULTIPLY], "What is 6 times 7?", tool_required=True)
    assert str(response) == "42"


def test_tool_choice_by_name_is_sent_as_a_function_choice(llm: KalibrLLM) -> None:
    prepared = llm._prepare_chat_with_tools([MULTIPLY], user_msg="hi", tool_choice="multiply")
    assert prepared["tool_choice"] == {"type": "function", "function": {"name": "multiply"}}
    assert prepared["tools"][0]["function"]["name"] == "multiply"
    assert llm._prepare_chat_with_tools([MULTIPLY], user_msg="hi")["tool_choice"] == "auto"


def test_no_tool_call_raises_only_when_asked(llm: KalibrLLM) -> None:
    response = llm.chat(HELLO)
    assert llm.get_tool_calls_from_response(response, error_on_no_tool_call=False) == []
    with pytest.raises(ValueError, match="expected at least one tool call"):
        llm.get_tool_calls_from_response(response)


def test_parallel_tool_calls_are_cut_to_one_unless_allowed(llm: KalibrLLM) -> None:
    def two_calls() -> ChatResponse:
        blocks = [TextBlock(text="")] + [
            ToolCallBlock(tool_call_id=f"c{i}", tool_name="multiply", tool_kwargs={"a": i, "b": 1}) for i in (1, 2)
        ]
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, blocks=blocks))

    single = llm._validate_chat_with_tools_response(two_calls(), [MULTIPLY])
    assert [c.tool_id for c in llm.get_tool_calls_from_response(single)] == ["c1"]
    both = llm._validate_chat_with_tools_response(two_calls(), [MULTIPLY], allow_parallel_tool_calls=True)
    assert [c.tool_id for c in llm.get_tool_calls_from_response(both)] == ["c1", "c2"]


def test_tool_results_go_back_as_tool_messages(llm: KalibrLLM) -> None:
    first = llm.chat_with_tools([MULTIPLY], user_msg="What is 6 times 7?", tool_required=True)
    (call,) = llm.get_tool_calls_from_response(first)
    result = ChatMessage(role=MessageRole.TOOL, content="42", additional_kwargs={"tool_call_id": call.tool_id})
    history = [ChatMessage(role=MessageRole.USER, content="What is 6 times 7?"), first.message, result]
    answer = llm.chat(history)
    assert "42" in (answer.message.content or "")


class Person(BaseModel):
    name: str
    age: int


def test_structured_predict(llm: KalibrLLM) -> None:
    person = llm.structured_predict(Person, PromptTemplate("Extract: {text}"), text="Ada Lovelace is 36 years old.")
    assert isinstance(person, Person)
    assert json.loads(person.model_dump_json()).keys() == {"name", "age"}


async def test_astructured_predict(llm: KalibrLLM) -> None:
    person = await llm.astructured_predict(Person, PromptTemplate("Extract: {text}"), text="Ada is 36 years old.")
    assert isinstance(person, Person)
