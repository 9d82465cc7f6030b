"""Paths that are LangChain chat model objects, mixed with model strings: routed, called with what is bound."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from pydantic import BaseModel

import kalibr
from kalibr.sandbox import SandboxServer
from kalibr_langchain import ChatKalibr

from .conftest import sandbox_paths, stored_outcomes


def _fake(*answers: str) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=iter([AIMessage(content=answer) for answer in answers]))


class _BrokenModel(BaseChatModel):
    """Fails like a provider whose servers are down."""

    @property
    def _llm_type(self) -> str:
        return "broken"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any) -> Any:
        raise ConnectionError("upstream is down")

    async def _agenerate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> Any:
        raise ConnectionError("upstream is down")


def test_object_paths_mix_with_model_strings(sandbox: SandboxServer) -> None:
    fake = _fake("from the object path")
    llm = ChatKalibr(goal="mixed_paths", paths=[fake, *sandbox_paths(sandbox, "sandbox-mini")], store="memory:")
    labels = [path.label for path in llm._router.paths]
    assert labels == ["generic-fake-chat-model", "sandbox-mini"]
    from_object = llm.invoke("Hello", model="generic-fake-chat-model")
    assert from_object.text == "from the object path"
    assert from_object.response_metadata["model_name"] == "generic-fake-chat-model"
    from_string = llm.invoke("Hello", model="sandbox-mini")
    assert from_string.response_metadata["model_name"] == "sandbox-mini"


async def test_a_failing_object_path_falls_back_and_is_reported_failed(sandbox: SandboxServer) -> None:
    llm = ChatKalibr(
        goal="object_fallback", paths=[_BrokenModel(), *sandbox_paths(sandbox, "sandbox-mini")], store="memory:"
    )
    message = await llm.ainvoke("Hello", model="broken")
    assert message.response_metadata["model_name"] == "sandbox-mini"
    failed = [record for record in stored_outcomes(llm._router).values() if record.model == "broken"]
    assert len(failed) == 1
    assert failed[0].success is False
    assert failed[0].failure_category == "provider_error"
    assert (
        failed[0].reason == "ProviderError from ConnectionError"
    )  # the kind, never the text (it may quote the prompt)


class Weather(BaseModel):
    """The weather in a city."""

    city: str


def test_tools_bound_to_the_router_reach_the_chosen_object(sandbox: SandboxServer) -> None:
    # The object on the path is itself a LangChain model talking to the sandbox over HTTP.
    inner = ChatKalibr(goal="inner_model", paths=sandbox_paths(sandbox, "sandbox-pro"), store="memory:")
    outer = ChatKalibr(goal="outer_model", paths=[{"model": "inner", "client": inner}], store="memory:")
    message = outer.bind_tools([Weather], tool_choice="any").invoke('What is the weather in "Lisbon"?')
    assert isinstance(message, AIMessage)
    assert [call["name"] for call in message.tool_calls] == ["Weather"]
    assert message.tool_calls[0]["args"] == {"city": "Lisbon"}
    assert message.response_metadata["model_name"] == "inner"


def test_streaming_through_an_object_path(sandbox: SandboxServer) -> None:
    inner = ChatKalibr(goal="inner_stream", paths=sandbox_paths(sandbox, "sandbox-mini"), store="memory:")
    outer = ChatKalibr(goal="outer_stream", paths=[{"model": "inner", "client": inner}], store="memory:")
    chunks = list(outer.stream("Please repeat this: one two three"))
    assert "".join(chunk.text for chunk in chunks) == "one two three"
    assert chunks[-1].chunk_position == "last"
    assert chunks[-1].usage_metadata is not None and chunks[-1].usage_metadata["output_tokens"] > 0


def test_a_path_client_that_is_not_a_chat_model_is_refused() -> None:
    router = kalibr.Router("bad_client", [kalibr.Path("thing", provider="langchain", client=object())], store="memory:")
    with pytest.raises(kalibr.UserError, match=r"give it a LangChain chat model"):
        ChatKalibr(router=router).invoke("Hello")
