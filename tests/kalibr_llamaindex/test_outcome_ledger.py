"""The outcome ledger: a mixed LlamaIndex workload over real HTTP, then every decision's stored outcome is checked.

Sync, async and streamed calls, structured output, a tool-call turn, a query and an agent run, with judges and
explicit reports (some twice). Every decision must end with exactly the outcome meant for it, read back from the
SQLite store, and the store must hold no other outcome.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.prompts import PromptTemplate
from llama_index.core.tools import FunctionTool
from tests.recording import stored_outcomes

import kalibr
from kalibr.sandbox import SandboxServer
from kalibr.stores.sqlite import SQLiteStore

from .conftest import AGENT_WARNINGS, Person, multiply, sandbox_paths

pytestmark = AGENT_WARNINGS

GOAL = "li_ledger"


def success_when(output: Any) -> bool:
    """One judge for every kind of output, each judged on what it is."""
    if isinstance(output, Person):
        return output.age == 36
    if isinstance(output, list):  # a tool-call turn
        return [call.name for call in output] == ["multiply"]
    return "42" in output or "Kalibr routes" in output


@pytest.fixture
def settings(sandbox: SandboxServer, tmp_path: Path) -> Iterator[kalibr.Router]:
    store = SQLiteStore(tmp_path / "ledger.db")
    router = kalibr.Router(GOAL, sandbox_paths(sandbox), store=store, success_when=success_when)
    Settings.llm = router.as_llamaindex()
    Settings.embed_model = MockEmbedding(embed_dim=8)
    yield router
    Settings.llm = None  # type: ignore[assignment]  # LlamaIndex resolves None to its MockLLM
    Settings.embed_model = None  # type: ignore[assignment]
    store.close()


def _trace_id(response: Any) -> str:
    return str(response.raw["kalibr"]["trace_id"])


async def test_every_decision_ends_with_the_outcome_meant_for_it(settings: kalibr.Router, decisions: list[str]) -> None:
    router, llm = settings, Settings.llm
    hello = [ChatMessage(role="user", content="Hello there")]
    # (source, success, failure_category, score) each decision must end with
    expected: dict[str, tuple[str, bool, str | None, float]] = {}

    chat = llm.chat(hello)  # judged on its own: a greeting, not what the judge wants
    expected[_trace_id(chat)] = ("success_when", False, None, 0.0)

    greeting = await llm.achat(hello)  # judged False (no 42), then reported twice: the second report wins whole
    router.report(success=False, failure_category="hallucination_detected")
    router.report(success=True, score=0.75)
    expected[_trace_id(greeting)] = ("explicit", True, None, 0.75)

    *_, streamed = llm.stream_chat(hello)
    expected[_trace_id(streamed)] = ("success_when", False, None, 0.0)

    responses = [response async for response in await llm.astream_chat(hello)]
    router.report(success=False, failure_category="hallucination_detected")
    expected[_trace_id(responses[-1])] = ("explicit", False, "hallucination_detected", 0.0)

    person = llm.structured_predict(Person, PromptTemplate("Extract: {text}"), text="Ada Lovelace is 36 years old.")
    assert person.age == 36
    structured = decisions[-1]
    expected[structured] = ("run", True, None, 1.0)

    tools = [FunctionTool.from_defaults(fn=multiply)]
    tool_turn = llm.chat_with_tools(tools, user_msg="6 times 7?", tool_required=True)
    expected[_trace_id(tool_turn)] = ("success_when", True, None, 1.0)

    index = VectorStoreIndex.from_documents([Document(text="Kalibr routes each call to the path that works.")])
    await index.as_query_engine().aquery("What does Kalibr do?")
    expected[decisions[-1]] = ("run", True, None, 1.0)
    router.update_outcome(decisions[-1], score=0.5)  # a late partial change: only the score moves
    expected[decisions[-1]] = ("run", True, None, 0.5)

    before_agent = len(decisions)
    agent = FunctionAgent(tools=[multiply], llm=llm)
    assert "42" in str(await agent.run("Use the multiply tool: what is 6 times 7?"))
    steps = decisions[before_agent:]
    assert len(steps) == 2
    router.report(success=False, failure_category="tool_error")  # both steps of that run, nothing else
    expected.update(dict.fromkeys(steps, ("explicit", False, "tool_error", 0.0)))

    assert sorted(expected) == sorted(decisions), "every decision the workload made is in the ledger"
    stored = stored_outcomes(router)  # read back from the SQLite file
    assert sorted(r.trace_id for r in stored) == sorted(expected), "one outcome per decision, no other"
    assert {r.trace_id: (r.source, r.success, r.failure_category, r.score) for r in stored} == expected
