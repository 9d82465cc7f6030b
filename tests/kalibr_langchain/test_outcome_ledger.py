"""The outcome ledger: a mixed LangChain workload, then every decision's stored outcome is exactly the one meant.

Sync and async chains, a stream, a batch, structured output, tool calls and LangGraph agent runs, written as
LangChain's docs write them, against the sandbox; some judged by ``score_when``, some reported explicitly, some
reported twice. The judge scores by what it is given (a parsed object 0.7, tool calls 0.6, text 0.5), so the
ledger also shows that each verdict was drawn from the right output.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tools import tool
from pydantic import BaseModel

import kalibr
from kalibr.sandbox import SandboxServer
from kalibr_langchain import trace_ids_in

from .conftest import sandbox_paths, stored_outcomes

PROMPT = ChatPromptTemplate.from_template("Tell me a short fact about {topic}.")
WEATHER_PROMPT = ChatPromptTemplate.from_template("What is the weather in {city}? Use get_weather.")
WEATHER = {"messages": [("user", "What is the weather in Paris? Use get_weather.")]}


class Company(BaseModel):
    """The company a text is about."""

    company: str


@tool
def get_weather(location: str) -> str:
    """The weather in a city."""
    return f"sunny in {location}"


def judge(answer: Any) -> float:
    if isinstance(answer, Company):
        return 0.7
    if isinstance(answer, list):  # a tool-call turn
        return 0.6
    return 0.5 if isinstance(answer, str) and answer else 0.0


class Decisions(BaseCallbackHandler):
    def __init__(self) -> None:
        self.trace_ids: list[str] = []

    def on_llm_end(self, response: Any, **kwargs: Any) -> None:
        self.trace_ids.extend(trace_ids_in(response))


Expected = tuple[float, str, str | None]  # score, source, failure category


async def test_every_decision_ends_with_exactly_the_outcome_meant_for_it(sandbox: SandboxServer) -> None:
    from langgraph.prebuilt import create_react_agent

    router = kalibr.Router(
        "ledger", sandbox_paths(sandbox, "sandbox-mini", "sandbox-base"), score_when=judge, store="memory:"
    )
    llm = router.as_langchain()
    chain = PROMPT | llm | StrOutputParser()
    with warnings.catch_warnings():  # create_react_agent moved to `langchain.agents`, not a dependency here
        warnings.simplefilter("ignore")
        agent = create_react_agent(llm, [get_weather])
    expected: dict[str, Expected] = {}

    def expect(trace_ids: list[str], outcome: Expected) -> None:
        assert trace_ids, "every step of the workload made a decision"
        for trace_id in trace_ids:
            expected[trace_id] = outcome

    def seen() -> tuple[Decisions, dict[str, Any]]:
        decisions = Decisions()
        return decisions, {"callbacks": [decisions]}

    # A direct call, judged on its text; nothing later may touch it.
    direct = router.completion("An unrelated question asked directly.")
    expect([direct.trace_id], (0.5, "score_when", None))

    # chain.invoke judged on the parsed text; another reported explicitly.
    decisions, config = seen()
    chain.invoke({"topic": "otters"}, config=config)
    expect(decisions.trace_ids, (0.5, "run", None))
    decisions, config = seen()
    chain.invoke({"topic": "glaciers"}, config=config)
    router.report(score=0.9)
    expect(decisions.trace_ids, (0.9, "explicit", None))

    # await chain.ainvoke reported twice: the second report is the whole outcome.
    decisions, config = seen()
    await chain.ainvoke({"topic": "violins"}, config=config)
    router.report(success=False, failure_category="hallucination_detected")
    router.report(success=True, score=0.1)
    expect(decisions.trace_ids, (0.1, "explicit", None))

    # chain.stream judged at the end of the stream; llm.astream reported.
    decisions, config = seen()
    assert "".join(chain.stream({"topic": "comets"}, config=config))
    expect(decisions.trace_ids, (0.5, "run", None))
    decisions, config = seen()
    async for _ in llm.astream("Tell me a short fact about moss.", config=config):
        pass
    router.report(score=0.2)
    expect(decisions.trace_ids, (0.2, "explicit", None))

    # Structured output judged on the parsed object; tool calls on the tool calls, in a chain or on their own.
    decisions, config = seen()
    company = llm.with_structured_output(Company).invoke("Apple makes the iPhone. Which company?", config=config)
    assert company == Company(company="Apple")
    expect(decisions.trace_ids, (0.7, "run", None))
    decisions, config = seen()
    (WEATHER_PROMPT | llm.bind_tools([get_weather])).invoke({"city": "Oslo"}, config=config)
    expect(decisions.trace_ids, (0.6, "run", None))
    message = llm.bind_tools([get_weather]).invoke("What is the weather in Rome? Use get_weather.")
    expect([message.response_metadata["kalibr_trace_id"]], (0.6, "score_when", None))

    # A batch: one report is ambiguous; each item is reported through its own output.
    recorders = [Decisions() for _ in range(3)]
    facts = chain.batch(
        [{"topic": t} for t in ("owls", "tides", "opals")], config=[{"callbacks": [r]} for r in recorders]
    )
    with pytest.raises(kalibr.UserError, match="ambiguous"):
        router.report(success=True)
    for fact, recorder, score in zip(facts, recorders, (0.31, 0.32, 0.33), strict=True):
        llm.report(fact, score=score)
        expect(recorder.trace_ids, (score, "explicit", None))

    # Agent runs: the final answer judges every step (the tool-call turn is not judged as an answer)...
    state = agent.invoke(WEATHER)
    steps = [m.response_metadata["kalibr_trace_id"] for m in state["messages"] if m.type == "ai"]
    assert len(steps) == 2
    expect(steps, (0.5, "run", None))
    # ...or the caller's report does.
    state = await agent.ainvoke(WEATHER)
    steps = [m.response_metadata["kalibr_trace_id"] for m in state["messages"] if m.type == "ai"]
    router.report(success=False, failure_category="tool_error")
    expect(steps, (0.0, "explicit", "tool_error"))

    # A message reported through llm.report, then a direct call reported without a trace id.
    message = llm.invoke("Tell me a short fact about ferns.")
    llm.report(message, success=True)
    expect([message.response_metadata["kalibr_trace_id"]], (1.0, "explicit", None))
    later = await router.acompletion("Another direct question.")
    router.report(score=0.4)
    expect([later.trace_id], (0.4, "explicit", None))

    ledger = {t: (o.score, o.source, o.failure_category) for t, o in stored_outcomes(router).items()}
    assert ledger == expected
    assert len(ledger) == 18  # every decision the workload made, and no other
