"""A query's or agent run's outcome reaches exactly the decisions it made, through LlamaIndex's spans."""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.query_engine import CustomQueryEngine
from llama_index.core.tools import FunctionTool
from llama_index.core.workflow import Event, StartEvent, StopEvent, Workflow, step
from tests.recording import recording_judge, stored_outcomes

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


class AnswerThenTitle(Workflow):
    """A workflow whose steps each call an LLM of its own (a different router), as LlamaIndex's docs write them."""

    def __init__(self, answer_llm: Any, title_llm: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.answer_llm, self.title_llm = answer_llm, title_llm

    @step
    async def answer(self, ev: StartEvent) -> StopEvent:
        answer = await self.answer_llm.acomplete(f"Answer: {ev.question}")
        title = await self.title_llm.acomplete(f"A title for: {answer.text}")
        return StopEvent(result=f"{title.text}: {answer.text}")


async def test_with_two_routers_in_a_workflow_each_is_judged_on_its_own_llms_answer(sandbox: SandboxServer) -> None:
    judged: dict[str, list[str]] = {"answers": [], "titles": []}
    answers = RecordingRouter(
        "li_answers", sandbox_paths(sandbox), store="memory:", success_when=recording_judge(judged["answers"], True)
    )
    titles = RecordingRouter(
        "li_titles", sandbox_paths(sandbox), store="memory:", success_when=recording_judge(judged["titles"], False)
    )
    result = await AnswerThenTitle(answers.as_llamaindex(), titles.as_llamaindex(), timeout=10).run(question="2 + 3?")

    (answer,), (title,) = judged["answers"], judged["titles"]  # each judge once, on its own LLM's text
    assert result == f"{title}: {answer}"
    for router, verdict in ((answers, True), (titles, False)):
        (decision,) = {r.trace_id for r in router.reports}
        assert [(r.trace_id, r.source, r.success) for r in stored_outcomes(router)] == [(decision, "run", verdict)]


class Drafted(Event):
    draft: str


class DraftThenTitle(Workflow):
    """Two steps, each with an LLM of its own, passing an event of the user's own from the first to the second."""

    def __init__(self, draft_llm: Any, title_llm: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.draft_llm, self.title_llm = draft_llm, title_llm

    @step
    async def draft(self, ev: StartEvent) -> Drafted:
        return Drafted(draft=(await self.draft_llm.acomplete(f"Answer: {ev.question}")).text)

    @step
    async def title(self, ev: Drafted) -> StopEvent:
        return StopEvent(result=(await self.title_llm.acomplete(f"A title for: {ev.draft}")).text)


async def test_with_two_routers_in_workflow_steps_each_is_judged_on_its_own_llms_answer(
    sandbox: SandboxServer,
) -> None:
    judged: dict[str, list[Any]] = {"drafts": [], "titles": []}
    drafts = _router(sandbox, success_when=judged["drafts"].append)
    titles = RecordingRouter("li_titles", sandbox_paths(sandbox), store="memory:", success_when=judged["titles"].append)
    title = await DraftThenTitle(drafts.as_llamaindex(), titles.as_llamaindex(), timeout=10).run(question="2 + 3?")

    (drafted,) = judged["drafts"]  # its LLM's answer, not the event the step passed on: that is plumbing
    assert isinstance(drafted, str) and drafted and f"A title for: {drafted}" in title
    assert judged["titles"] == [title]
    assert [len(router.reports) for router in (drafts, titles)] == [1, 1]
