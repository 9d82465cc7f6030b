"""ChatKalibr on its own: construction, plugin discovery, metadata, streaming callbacks, native async."""

from __future__ import annotations

import subprocess
import sys
import threading
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import BaseModel, Field

import kalibr
from kalibr.sandbox import SandboxServer
from kalibr_langchain import ChatKalibr

from .conftest import sandbox_paths


def test_as_langchain_wraps_the_same_router(sandbox: SandboxServer) -> None:
    router = kalibr.Router("as_langchain", sandbox_paths(sandbox, "sandbox-mini"), store="memory:")
    llm = router.as_langchain(temperature=0.2)
    assert isinstance(llm, ChatKalibr)
    assert llm.router is router
    assert llm.goal == "as_langchain"
    assert llm.temperature == 0.2
    message = llm.invoke("Hello")
    assert message.response_metadata["model_name"] == "sandbox-mini"
    assert message.response_metadata["kalibr_goal"] == "as_langchain"


def test_as_langchain_without_the_plugin_names_the_extra() -> None:
    code = (
        "import kalibr\n"
        "router = kalibr.Router('g', ['gpt-4o-mini'], store='memory:')\n"
        "try:\n"
        "    router.as_langchain()\n"
        "except kalibr.MissingExtraError as error:\n"
        "    print(error)\n"
    )
    env = {"KALIBR_LOAD_PLUGINS": "", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert 'pip install "kalibr-core[langchain]"' in result.stdout


def test_needs_goal_and_paths_or_a_router() -> None:
    # pydantic wraps the UserError (a ValueError) in its ValidationError (also a ValueError), message kept.
    with pytest.raises(ValueError, match=r"goal= and paths="):
        ChatKalibr(paths=["gpt-4o-mini"])
    router = kalibr.Router("one_goal", ["gpt-4o-mini"], store="memory:")
    with pytest.raises(ValueError, match=r"differs from the router's goal"):
        ChatKalibr(router=router, goal="another_goal")


def test_metadata_names_the_path_used_and_the_decision(sandbox: SandboxServer) -> None:
    llm = ChatKalibr(goal="metadata", paths=sandbox_paths(sandbox, "sandbox-mini", "sandbox-pro"), store="memory:")
    message = llm.invoke("Hello")
    metadata = message.response_metadata
    assert metadata["model_name"] in {"sandbox-mini", "sandbox-pro"}
    assert len(metadata["kalibr_trace_id"]) == 32
    assert metadata["kalibr_goal"] == "metadata"
    assert message.usage_metadata is not None and message.usage_metadata["output_tokens"] > 0
    forced = llm.invoke("Hello", model="sandbox-pro")
    assert forced.response_metadata["model_name"] == "sandbox-pro"
    pinned = ChatKalibr(router=llm.router, model="sandbox-mini").invoke("Hello")
    assert pinned.response_metadata["model_name"] == "sandbox-mini"


def test_ls_params_name_the_override_or_the_goal() -> None:
    llm = ChatKalibr(goal="ls_params", paths=["gpt-4o-mini"], store="memory:", temperature=0.3, stop=["END"])
    params = llm._get_ls_params()
    assert params["ls_model_name"] == "kalibr:ls_params"
    assert params["ls_temperature"] == 0.3
    assert params["ls_stop"] == ["END"]
    assert llm._get_ls_params(model="gpt-4o")["ls_model_name"] == "gpt-4o"


def test_counts_tokens_without_a_tokenizer_download() -> None:
    llm = ChatKalibr(goal="tokens", paths=["gpt-4o-mini"], store="memory:")
    short, long = llm.get_num_tokens("Hello there."), llm.get_num_tokens("Hello there. " * 50)
    assert 0 < short < long
    assert "transformers" not in sys.modules


class _TokenRecorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: str | list[str | dict[str, Any]], **kwargs: Any) -> None:
        assert isinstance(token, str)
        self.tokens.append(token)


def test_streaming_invoke_fires_token_callbacks(sandbox: SandboxServer) -> None:
    llm = ChatKalibr(goal="tokens_cb", paths=sandbox_paths(sandbox, "sandbox-mini"), store="memory:", streaming=True)
    recorder = _TokenRecorder()
    message = llm.invoke("Please repeat this: the quick brown fox", config={"callbacks": [recorder]})
    assert len(recorder.tokens) > 2
    assert "".join(recorder.tokens) == message.text == "the quick brown fox"
    assert message.response_metadata["model_name"] == "sandbox-mini"


async def test_async_streaming_fires_token_callbacks(sandbox: SandboxServer) -> None:
    llm = ChatKalibr(goal="atokens_cb", paths=sandbox_paths(sandbox, "sandbox-mini"), store="memory:", streaming=True)
    recorder = _TokenRecorder()
    message = await llm.ainvoke("Please repeat this: the lazy dog", config={"callbacks": [recorder]})
    assert "".join(recorder.tokens) == message.text == "the lazy dog"


class _ThreadRecordingModel(BaseChatModel):
    """A LangChain model that answers only asynchronously and notes the thread it ran on."""

    threads: list[int] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "thread-recorder"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any) -> Any:
        raise AssertionError("the async path must not fall back to the sync one")

    async def _agenerate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        self.threads.append(threading.get_ident())
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content="async answer"))])


async def test_ainvoke_stays_on_the_event_loop_thread() -> None:
    inner = _ThreadRecordingModel(threads=[])
    llm = ChatKalibr(goal="native_async", paths=[inner], store="memory:")
    message = await llm.ainvoke("Hello")
    assert message.text == "async answer"
    assert inner.threads == [threading.get_ident()]


class Capital(BaseModel):
    """A country's capital city."""

    city: str


@pytest.mark.parametrize("method", ["function_calling", "json_schema"])
def test_structured_output_methods(sandbox: SandboxServer, method: str) -> None:
    llm = ChatKalibr(goal="structured_methods", paths=sandbox_paths(sandbox, "sandbox-mini"), store="memory:")
    structured = llm.with_structured_output(Capital, method=method, include_raw=True)  # type: ignore[arg-type]
    result = structured.invoke('The capital is "Lisbon". Which city is it?')
    assert isinstance(result, dict)
    assert result["parsed"] == Capital(city="Lisbon")
    assert result["parsing_error"] is None
    raw = result["raw"]
    assert isinstance(raw, AIMessage)
    assert bool(raw.tool_calls) == (method == "function_calling")


def test_structured_output_refuses_unknown_methods() -> None:
    llm = ChatKalibr(goal="structured_bad", paths=["gpt-4o-mini"], store="memory:")
    with pytest.raises(kalibr.UserError, match=r"unknown method 'xml'"):
        llm.with_structured_output(Capital, method="xml")  # type: ignore[arg-type]
