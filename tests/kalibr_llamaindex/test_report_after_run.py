"""``router.report()`` after a LlamaIndex call or run lands on that call's or run's decisions, and never elsewhere.

Each test first makes an unrelated direct ``router.completion`` in the same task: a report that lands on it (or is
lost) fails the test. ``decisions`` lists the LLM's answers (not that direct call), from LlamaIndex's own events.
The idioms are written as LlamaIndex's documentation writes them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pydantic
import pytest
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.prompts import PromptTemplate
from llama_index.core.tools import FunctionTool
from llama_index.core.workflow import StartEvent, StopEvent, Workflow, step

from kalibr import UserError
from kalibr.sandbox import SandboxServer
from kalibr_llamaindex import KalibrLLM

from .conftest import AGENT_WARNINGS, Person, RecordingRouter, multiply, sandbox_paths

pytestmark = AGENT_WARNINGS


@pytest.fixture
def router(sandbox: SandboxServer) -> RecordingRouter:
    return RecordingRouter("li_report", sandbox_paths(sandbox), store="memory:")


@pytest.fixture
def llm(router: RecordingRouter) -> KalibrLLM:
    built: KalibrLLM = router.as_llamaindex()
    return built


def _earlier_direct_call(router: RecordingRouter) -> str:
    return router.completion("Hello there").trace_id


def _explicit(router: RecordingRouter) -> dict[str, tuple[bool | None, str | None]]:
    return {r.trace_id: (r.success, r.failure_category) for r in router.reports if r.source == "explicit"}


async def test_report_after_an_agent_run_reports_every_step_of_that_run(
    router: RecordingRouter, llm: KalibrLLM, decisions: list[str]
) -> None:
    earlier = _earlier_direct_call(router)
    agent = FunctionAgent(
        tools=[multiply], llm=llm, system_prompt="You are a helpful assistant that can multiply two numbers."
    )
    response = await agent.run("Use the multiply tool: what is 6 times 7?")
    assert "42" in str(response)
    router.report(success=False, failure_category="hallucination_detected")

    assert len(decisions) == 2, "a tool-call turn and the final answer"
    assert earlier not in decisions
    assert _explicit(router) == dict.fromkeys(decisions, (False, "hallucination_detected"))


async def test_report_after_a_streamed_agent_run(router: RecordingRouter, llm: KalibrLLM, decisions: list[str]) -> None:
    _earlier_direct_call(router)
    agent = FunctionAgent(tools=[multiply], llm=llm)
    handler = agent.run(user_msg="Use the multiply tool: what is 6 times 7?")
    async for _event in handler.stream_events():
        pass
    await handler
    router.report(score=0.3)
    assert len(decisions) == 2
    assert set(_explicit(router)) == set(decisions)


async def test_two_agent_runs_at_once_make_a_report_without_trace_id_ambiguous(
    router: RecordingRouter, llm: KalibrLLM
) -> None:
    agent = FunctionAgent(tools=[multiply], llm=llm)
    await asyncio.gather(agent.run("Use the multiply tool: 2 times 3"), agent.run("Use the multiply tool: 4 times 5"))
    with pytest.raises(UserError, match="ambiguous") as caught:
        router.report(success=True)
    assert "trace_id=" in str(caught.value)
    assert _explicit(router) == {}


async def test_llm_report_names_the_run_by_its_output(router: RecordingRouter, llm: KalibrLLM) -> None:
    agent = FunctionAgent(tools=[multiply], llm=llm)
    first, second = await asyncio.gather(
        agent.run("Use the multiply tool: 2 times 3"), agent.run("Use the multiply tool: 4 times 5")
    )
    right = llm.report(first, success=True)
    wrong = llm.report(second, success=False, failure_category="hallucination_detected")
    assert len(right) == len(wrong) == 2
    assert _explicit(router) == {
        **dict.fromkeys(right, (True, None)),
        **dict.fromkeys(wrong, (False, "hallucination_detected")),
    }


def test_llm_report_takes_a_response_or_a_structured_answer(router: RecordingRouter, llm: KalibrLLM) -> None:
    response = llm.chat(HELLO)
    assert llm.report(response, success=False) == [response.raw["kalibr"]["trace_id"]]
    person = llm.structured_predict(Person, PromptTemplate("Extract: {text}"), text="Ada Lovelace is 36 years old.")
    (structured,) = llm.report(person, score=0.5)
    assert _explicit(router) == {response.raw["kalibr"]["trace_id"]: (False, None), structured: (True, None)}
    with pytest.raises(UserError, match="found no Kalibr call"):
        llm.report(Person(name="Ada", age=36), success=True)


async def test_each_agent_run_in_its_own_task_reports_its_own_steps(router: RecordingRouter, llm: KalibrLLM) -> None:
    agent = FunctionAgent(tools=[multiply], llm=llm)

    async def ask(question: str, success: bool) -> None:
        await agent.run(question)
        router.report(success=success)

    await asyncio.gather(ask("Use the multiply tool: 2 times 3", True), ask("Use the multiply tool: 4 times 5", False))
    outcomes = _explicit(router)
    assert len(outcomes) == 4
    assert sorted(success for success, _ in outcomes.values()) == [False, False, True, True]


@pytest.fixture
def query_engine(llm: KalibrLLM) -> Iterator[Any]:
    Settings.llm = llm
    Settings.embed_model = MockEmbedding(embed_dim=8)
    index = VectorStoreIndex.from_documents([Document(text="Kalibr routes each call to the path that works.")])
    yield index.as_query_engine()
    Settings.llm = None  # type: ignore[assignment]  # LlamaIndex resolves None to its MockLLM
    Settings.embed_model = None  # type: ignore[assignment]


@pytest.mark.usefixtures("closes_leftover_loop")
def test_report_after_a_query_lands_on_the_query(
    router: RecordingRouter, query_engine: Any, decisions: list[str]
) -> None:
    _earlier_direct_call(router)
    response = query_engine.query("What does Kalibr do?")
    assert "Kalibr routes" in str(response)
    router.report(success=False)
    (answer,) = decisions
    assert _explicit(router) == {answer: (False, None)}


async def test_report_after_an_async_query(router: RecordingRouter, query_engine: Any, decisions: list[str]) -> None:
    _earlier_direct_call(router)
    await query_engine.aquery("What does Kalibr do?")
    router.report(success=True)
    (answer,) = decisions
    assert _explicit(router) == {answer: (True, None)}


HELLO = [ChatMessage(role="user", content="Hello there")]


def _sync_calls(llm: KalibrLLM) -> dict[str, Any]:
    return {
        "chat": lambda: llm.chat(HELLO),
        "complete": lambda: llm.complete("Hello there"),
        "stream_chat": lambda: list(llm.stream_chat(HELLO)),
        "stream_complete": lambda: list(llm.stream_complete("Hello there")),
        "predict": lambda: llm.predict_and_call([FunctionTool.from_defaults(fn=multiply)], "Multiply 6 by 7"),
    }


@pytest.mark.parametrize("method", ["chat", "complete", "stream_chat", "stream_complete", "predict"])
def test_report_after_an_llm_call_lands_on_that_call(
    router: RecordingRouter, llm: KalibrLLM, decisions: list[str], method: str
) -> None:
    _earlier_direct_call(router)
    _sync_calls(llm)[method]()
    router.report(success=False)
    (call,) = decisions
    assert _explicit(router) == {call: (False, None)}


async def _drain(stream: Any) -> list[Any]:
    return [item async for item in await stream]


@pytest.mark.parametrize("method", ["achat", "acomplete", "astream_chat", "astream_complete"])
async def test_report_after_an_async_llm_call_lands_on_that_call(
    router: RecordingRouter, llm: KalibrLLM, decisions: list[str], method: str
) -> None:
    _earlier_direct_call(router)
    if method == "achat":
        await llm.achat(HELLO)
    elif method == "acomplete":
        await llm.acomplete("Hello there")
    elif method == "astream_chat":
        await _drain(llm.astream_chat(HELLO))
    else:
        await _drain(llm.astream_complete("Hello there"))
    router.report(success=False)
    (call,) = decisions
    assert _explicit(router) == {call: (False, None)}


@pytest.mark.usefixtures("closes_leftover_loop")
def test_a_direct_call_after_a_run_is_what_report_reports(
    router: RecordingRouter, query_engine: Any, decisions: list[str]
) -> None:
    query_engine.query("What does Kalibr do?")
    later = _earlier_direct_call(router)
    router.report(success=True)
    assert _explicit(router) == {later: (True, None)}
    assert len(decisions) == 1, "the query made its own call, left alone"


class Youngster(Person):
    """A person under 30: the sandbox's answer for a 36-year-old does not validate."""

    @pydantic.field_validator("age")
    @classmethod
    def _under_thirty(cls, age: int) -> int:
        if age >= 30:
            raise ValueError("not under 30")
        return age


class ExtractWithRetry(Workflow):
    """A workflow whose step calls ``Settings.llm``, as LlamaIndex's docs write steps, trying each text in turn."""

    @step
    async def extract(self, ev: StartEvent) -> StopEvent:
        for text in ev.texts:
            try:
                extract = PromptTemplate("Extract the person: {text}")
                return StopEvent(result=await Settings.llm.astructured_predict(Youngster, extract, text=text))
            except ValueError:  # LlamaIndex's own error when the tool call does not validate
                continue
        return StopEvent(result=None)


async def test_a_workflow_step_that_retries_fails_the_attempt_it_threw_away(
    router: RecordingRouter, llm: KalibrLLM, decisions: list[str]
) -> None:
    earlier = _earlier_direct_call(router)
    Settings.llm = llm
    try:
        person = await ExtractWithRetry(timeout=10).run(texts=["Ada is 36 years old.", "Ada is 26 years old."])
    finally:
        Settings.llm = None  # type: ignore[assignment]  # LlamaIndex resolves None to its MockLLM
    assert person == Youngster(name=person.name, age=26)
    thrown_away, kept = decisions
    assert [(r.trace_id, r.source, r.failure_category) for r in router.reports] == [
        (thrown_away, "run", "validation_failed")
    ]
    router.report(success=True)  # about the person the workflow returned
    assert earlier not in {r.trace_id for r in router.reports}
    assert _explicit(router) == {kept: (True, None)}
