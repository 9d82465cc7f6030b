"""Judges receive what the user thinks of as the output; failed runs are blamed with the right category."""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.output_parsers.base import OutputParserException
from llama_index.core.prompts import PromptTemplate
from llama_index.core.query_engine import CustomQueryEngine
from llama_index.core.tools import FunctionTool

import kalibr
from kalibr.sandbox import SandboxServer

from .conftest import AGENT_WARNINGS, Person, RecordingRouter, multiply, sandbox_paths

pytestmark = AGENT_WARNINGS


def _judging_router(sandbox: SandboxServer, judged: list[Any], verdict: bool = True) -> RecordingRouter:
    def success_when(output: Any) -> bool:
        judged.append(output)
        return verdict

    return RecordingRouter("li_judges", sandbox_paths(sandbox), store="memory:", success_when=success_when)


def test_structured_predict_is_judged_on_the_parsed_object(sandbox: SandboxServer) -> None:
    judged: list[Any] = []
    llm = _judging_router(sandbox, judged).as_llamaindex()
    person = llm.structured_predict(Person, PromptTemplate("Extract: {text}"), text="Ada Lovelace is 36 years old.")
    assert judged == [person]
    assert isinstance(person, Person)


async def test_astructured_predict_is_judged_on_the_parsed_object(sandbox: SandboxServer) -> None:
    judged: list[Any] = []
    llm = _judging_router(sandbox, judged).as_llamaindex()
    person = await llm.astructured_predict(Person, PromptTemplate("Extract: {text}"), text="Ada is 36 years old.")
    assert judged == [person]


def test_a_structured_llm_is_judged_on_the_parsed_object(sandbox: SandboxServer) -> None:
    judged: list[Any] = []
    router = _judging_router(sandbox, judged)
    sllm = router.as_llamaindex().as_structured_llm(Person)
    response = sllm.complete("Ada Lovelace is 36 years old.")
    assert isinstance(response.raw, Person)
    assert judged == [response.raw]
    assert [r.source for r in router.reports] == ["run"]


def test_a_tool_call_turn_is_judged_on_its_tool_calls(sandbox: SandboxServer) -> None:
    judged: list[Any] = []
    llm = _judging_router(sandbox, judged).as_llamaindex()
    llm.chat_with_tools([FunctionTool.from_defaults(fn=multiply)], user_msg="What is 6 times 7?", tool_required=True)
    ((call,),) = judged
    assert isinstance(call, kalibr.ToolCall)
    assert (call.name, call.parsed_arguments()) == ("multiply", {"a": 6, "b": 7})


async def test_an_agent_is_judged_on_its_final_answer_only(sandbox: SandboxServer) -> None:
    judged: list[Any] = []
    router = _judging_router(sandbox, judged, verdict=False)
    agent = FunctionAgent(tools=[multiply], llm=router.as_llamaindex())
    response = await agent.run("Use the multiply tool: what is 6 times 7?")
    # The tool-call turn is a step, not an answer: only the final answer is judged, once, and the verdict goes to
    # each decision of the run.
    assert judged == [str(response)]
    assert [(r.source, r.success) for r in router.reports] == [("run", False), ("run", False)]


class Ask(CustomQueryEngine):
    """A query engine that asks the model, then fails the way it is told to."""

    llm: Any
    error: Any = None

    def custom_query(self, query_str: str) -> str:
        answer = self.llm.complete(query_str).text
        if self.error is not None:
            raise self.error
        return str(answer)


def test_a_parser_failure_in_a_query_is_malformed_output(sandbox: SandboxServer) -> None:
    router = RecordingRouter("li_judges", sandbox_paths(sandbox), store="memory:")
    engine = Ask(llm=router.as_llamaindex(), error=OutputParserException("no JSON in the answer"))
    with pytest.raises(OutputParserException):
        engine.query("Hello there")
    assert [(r.success, r.failure_category) for r in router.reports] == [(False, "malformed_output")]


def test_a_provider_outage_later_in_a_query_is_not_blamed_on_the_path_that_answered(sandbox: SandboxServer) -> None:
    router = RecordingRouter("li_judges", sandbox_paths(sandbox), store="memory:")
    dead_path = {"model": "sandbox-mini", "base_url": "http://127.0.0.1:9/v1"}
    checker = RecordingRouter("li_checker", [dead_path], store="memory:")

    class AskThenCheck(Ask):
        checker: Any

        def custom_query(self, query_str: str) -> str:
            answer = super().custom_query(query_str)
            return self.checker.complete(f"Check: {answer}").text

    engine = AskThenCheck(llm=router.as_llamaindex(), checker=checker.as_llamaindex())
    with pytest.raises(kalibr.AllPathsFailed) as caught:
        engine.query("Hello there")
    assert router.reports == []
    (failed,) = caught.value.exceptions  # the path's own error, blamed on that path alone
    assert [(r.source, r.failure_category) for r in checker.reports] == [("error", failed.failure_category)]


def test_llamaindex_errors_have_their_failure_category() -> None:
    from llama_index.core.workflow import WorkflowTimeoutError

    assert kalibr.failure_category_of(OutputParserException("no JSON")) == "malformed_output"
    assert kalibr.failure_category_of(WorkflowTimeoutError("the agent took too long")) == "timeout"
    assert kalibr.failure_category_of(RuntimeError("the caller's own bug")) == "unknown"


@pytest.mark.usefixtures("closes_leftover_loop")
def test_a_streaming_query_is_judged_on_the_streamed_answer(sandbox: SandboxServer) -> None:
    judged: list[Any] = []
    router = _judging_router(sandbox, judged, verdict=False)
    Settings.llm, Settings.embed_model = router.as_llamaindex(), MockEmbedding(embed_dim=8)
    try:
        index = VectorStoreIndex.from_documents([Document(text="Kalibr routes each call to the path that works.")])
        response = index.as_query_engine(streaming=True).query("What does Kalibr do?")
        streamed = "".join(response.response_gen)
    finally:
        Settings.llm, Settings.embed_model = None, None  # type: ignore[assignment]  # back to LlamaIndex's defaults
    assert judged == [streamed]
    router.report(success=True)  # the streamed call, consumed here after the query returned
    assert [(r.source, r.success) for r in router.reports] == [("explicit", True)]
