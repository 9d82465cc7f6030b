"""The router's LLM inside LlamaIndex: Settings.llm, a query engine over an in-memory index, an agent."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.agent.workflow import FunctionAgent, ToolCallResult
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.tools import FunctionTool

from kalibr_llamaindex import KalibrLLM

from .conftest import AGENT_WARNINGS

pytestmark = AGENT_WARNINGS


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


@pytest.fixture
def settings_llm(llm: KalibrLLM) -> Iterator[KalibrLLM]:
    Settings.llm = llm
    Settings.embed_model = MockEmbedding(embed_dim=8)
    yield llm
    Settings.llm = None  # type: ignore[assignment]  # LlamaIndex resolves None to its MockLLM
    Settings.embed_model = None  # type: ignore[assignment]


@pytest.mark.usefixtures("closes_leftover_loop")
def test_settings_llm_drives_a_query_engine(settings_llm: KalibrLLM) -> None:
    assert Settings.llm is settings_llm
    index = VectorStoreIndex.from_documents([Document(text="Kalibr routes each call to the path that works.")])
    response = index.as_query_engine().query("What does Kalibr do?")
    # The sandbox echoes the start of the prompt: the retrieved context reached the routed model.
    assert "Kalibr routes each call" in str(response)
    assert response.metadata is not None


async def test_async_query_engine(settings_llm: KalibrLLM) -> None:
    index = VectorStoreIndex.from_documents([Document(text="Kalibr routes each call to the path that works.")])
    response = await index.as_query_engine().aquery("What does Kalibr do?")
    assert "Kalibr routes each call" in str(response)


async def test_function_agent_calls_a_tool(llm: KalibrLLM) -> None:
    agent = FunctionAgent(tools=[FunctionTool.from_defaults(fn=multiply)], llm=llm, initial_tool_choice="multiply")
    handler = agent.run("What is 6 times 7?")
    tool_results = [event async for event in handler.stream_events() if isinstance(event, ToolCallResult)]
    output = await handler
    assert [(r.tool_name, r.tool_kwargs, r.tool_output.content) for r in tool_results] == [
        ("multiply", {"a": 6, "b": 7}, "42")
    ]
    assert "42" in str(output)


async def test_function_agent_without_streaming(llm: KalibrLLM) -> None:
    agent = FunctionAgent(
        tools=[FunctionTool.from_defaults(fn=multiply)], llm=llm, initial_tool_choice="multiply", streaming=False
    )
    assert "42" in str(await agent.run("What is 6 times 7?"))
