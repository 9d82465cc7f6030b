"""A query's or agent run's outcome reaches exactly the decisions it made, through LlamaIndex's spans."""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.query_engine import CustomQueryEngine
from llama_index.core.tools import FunctionTool

from kalibr.sandbox import SandboxServer

from .conftest import AGENT_WARNINGS, RecordingRouter, sandbox_paths

pytestmark = AGENT_WARNINGS


class AskTwice(CustomQueryEngine):
    """Two routed calls per query; the answer is the second one's text, or an error after both."""

    llm: Any
    fail: bool = False

    def custom_query(self, query_str: str) -> str:
        self.llm.complete(f"Hello {query_str}")
        answer = self.llm.complete(f"Say {query_str}").text
        if self.fail:
            raise RuntimeError("the retriever broke")
        return str(answer)


def _judge_into(judged: list[str], needle: str) -> Any:
    def success_when(text: str) -> bool:
        judged.append(text)
        return needle in text

    return success_when


def _router(sandbox: SandboxServer, **checks: Any) -> RecordingRouter:
    return RecordingRouter("li_runs", sandbox_paths(sandbox), store="memory:", **checks)


def _traces(response: Any) -> list[str]:
    return [r.raw["kalibr"]["trace_id"] for r in response]


def test_query_outcome_goes_to_every_decision_it_made(sandbox: SandboxServer) -> None:
    judged: list[str] = []
    router = _router(sandbox, success_when=_judge_into(judged, "banana"))
    llm = router.as_llamaindex()
    result = AskTwice(llm=llm).query("banana")
    run_reports = [r for r in router.reports if r.success is not None]
    assert len(run_reports) == 2
    assert len({r.trace_id for r in run_reports}) == 2
    assert all(r.success is ("banana" in str(result)) for r in run_reports)
    assert judged == [str(result)], "the calls inside the query are steps, not judged alone; the run once"


def test_score_when_scores_the_run(sandbox: SandboxServer) -> None:
    router = _router(sandbox, score_when=lambda text: 0.25)
    AskTwice(llm=router.as_llamaindex()).query("kiwi")
    assert [r.score for r in router.reports] == [0.25, 0.25]


def test_a_run_failing_in_the_callers_own_code_leaves_its_decisions_unjudged(sandbox: SandboxServer) -> None:
    router = _router(sandbox, success_when=lambda text: True)
    with pytest.raises(RuntimeError, match="the retriever broke"):
        AskTwice(llm=router.as_llamaindex(), fail=True).query("pear")
    assert router.reports == [], "the models answered; the caller's retriever broke"


def test_a_raising_success_check_counts_as_validation_failed(sandbox: SandboxServer) -> None:
    def broken(text: str) -> bool:
        raise KeyError(text)

    router = _router(sandbox, success_when=broken)
    AskTwice(llm=router.as_llamaindex()).query("plum")
    assert {(r.success, r.failure_category) for r in router.reports} == {(False, "validation_failed")}


def test_a_bare_llm_call_is_left_to_the_router(sandbox: SandboxServer) -> None:
    router = _router(sandbox, success_when=lambda text: True)
    router.as_llamaindex().chat([ChatMessage(role="user", content="hi")])
    assert router.reports == []


def test_without_a_success_check_nothing_is_reported(sandbox: SandboxServer) -> None:
    router = _router(sandbox)
    AskTwice(llm=router.as_llamaindex()).query("fig")
    assert router.reports == []


def test_run_outcomes_can_be_turned_off(sandbox: SandboxServer) -> None:
    router = _router(sandbox, success_when=lambda text: True)
    AskTwice(llm=router.as_llamaindex(run_outcomes=False)).query("fig")
    assert router.reports == []


async def test_an_agent_run_reports_its_final_answer_to_each_step(sandbox: SandboxServer) -> None:
    judged: list[str] = []
    router = _router(sandbox, success_when=_judge_into(judged, "42"))

    def multiply(a: int, b: int) -> int:
        """Multiply two integers."""
        return a * b

    agent = FunctionAgent(
        tools=[FunctionTool.from_defaults(fn=multiply)], llm=router.as_llamaindex(), initial_tool_choice="multiply"
    )
    output: Any = await agent.run("What is 6 times 7?")
    # Two steps, the tool call and the answer: only the run's final answer is judged, for both.
    assert [r.success for r in router.reports] == [True, True]
    assert len({r.trace_id for r in router.reports}) == 2
    assert judged
    assert all(text == str(output.response.content) for text in judged)
