"""``router.report()`` after each LangChain idiom, written as LangChain's docs write it, over HTTP to the sandbox.

The chain is the FAQ's ``prompt | router.as_langchain() | parser``; no callback is passed anywhere. Each test first
makes an unrelated direct ``router.completion`` call, which a report after the framework call must never touch.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pydantic
import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.exceptions import OutputParserException
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnableParallel
from langchain_core.tools import tool
from pydantic import BaseModel

import kalibr
from kalibr.sandbox import SandboxServer
from kalibr.stores.base import OutcomeRecord
from kalibr_langchain import trace_ids_in

from .conftest import sandbox_paths, stored_outcomes

PROMPT = ChatPromptTemplate.from_template("Tell me a short fact about {topic}.")
FAILING = {
    "name": "failing",
    "models": {"down": {"error_rates": {"server_error": 1.0}}, "limited": {"error_rates": {"rate_limited": 1.0}}},
    "goals": {"chat": {"task": "chat"}},
    "default_goal": "chat",
}


class Company(BaseModel):
    """The company a text is about."""

    company: str


@tool
def get_weather(location: str) -> str:
    """The weather in a city."""
    return f"sunny in {location}"


class Decisions(BaseCallbackHandler):
    """What a user would attach to see which Kalibr decisions a call made (only to check the test's answer)."""

    def __init__(self) -> None:
        self.trace_ids: list[str] = []

    def on_llm_end(self, response: Any, **kwargs: Any) -> None:
        self.trace_ids.extend(trace_ids_in(response))


def _router(sandbox: SandboxServer, **options: Any) -> kalibr.Router:
    options.setdefault("store", "memory:")
    return kalibr.Router("langchain_reports", sandbox_paths(sandbox, "sandbox-mini", "sandbox-base"), **options)


def _explicit(router: kalibr.Router) -> dict[str, OutcomeRecord]:
    return {t: o for t, o in stored_outcomes(router).items() if o.source == "explicit"}


def _react_agent(llm: Any) -> Any:
    import warnings

    from langgraph.prebuilt import create_react_agent

    with warnings.catch_warnings():  # it moved to `langchain.agents`, not a dependency here
        warnings.simplefilter("ignore")
        return create_react_agent(llm, [get_weather])


WEATHER = {"messages": [("user", "What is the weather in Paris? Use get_weather.")]}


# --- one idiom at a time ------------------------------------------------------------------------------------
def _chain_invoke(router: kalibr.Router, seen: Decisions) -> None:
    chain = PROMPT | router.as_langchain() | StrOutputParser()
    chain.invoke({"topic": "otters"}, config={"callbacks": [seen]})


def _chain_stream(router: kalibr.Router, seen: Decisions) -> None:
    chain = PROMPT | router.as_langchain() | StrOutputParser()
    assert "".join(chain.stream({"topic": "otters"}, config={"callbacks": [seen]}))


def _chain_batch_of_one(router: kalibr.Router, seen: Decisions) -> None:
    chain = PROMPT | router.as_langchain() | StrOutputParser()
    chain.batch([{"topic": "otters"}], config={"callbacks": [seen]})


def _llm_invoke(router: kalibr.Router, seen: Decisions) -> None:
    router.as_langchain().invoke("Tell me a short fact about otters.", config={"callbacks": [seen]})


def _llm_stream(router: kalibr.Router, seen: Decisions) -> None:
    for _ in router.as_langchain().stream("Tell me a short fact about otters.", config={"callbacks": [seen]}):
        pass


def _structured(router: kalibr.Router, seen: Decisions) -> None:
    structured = router.as_langchain().with_structured_output(Company)
    structured.invoke("Apple makes the iPhone. Which company is this about?", config={"callbacks": [seen]})


def _agent(router: kalibr.Router, seen: Decisions) -> None:
    state = _react_agent(router.as_langchain()).invoke(WEATHER, config={"callbacks": [seen]})
    assert [m.type for m in state["messages"]] == ["human", "ai", "tool", "ai"]  # a tool turn, then the answer


@pytest.mark.parametrize(
    "idiom",
    [_chain_invoke, _chain_stream, _chain_batch_of_one, _llm_invoke, _llm_stream, _structured, _agent],
    ids=["chain.invoke", "chain.stream", "chain.batch-of-one", "llm.invoke", "llm.stream", "structured", "agent"],
)
def test_report_after_a_sync_idiom_lands_on_its_decisions(
    sandbox: SandboxServer, idiom: Callable[[kalibr.Router, Decisions], None]
) -> None:
    router = _router(sandbox)
    earlier = router.completion("An unrelated question asked directly.")
    seen = Decisions()
    idiom(router, seen)
    router.report(success=False, failure_category="user_unsatisfied")
    reported = _explicit(router)
    assert seen.trace_ids and set(reported) == set(seen.trace_ids)
    assert earlier.trace_id not in stored_outcomes(router)
    assert {(o.score, o.failure_category) for o in reported.values()} == {(0.0, "user_unsatisfied")}


async def _chain_ainvoke(router: kalibr.Router, seen: Decisions) -> None:
    chain = PROMPT | router.as_langchain() | StrOutputParser()
    await chain.ainvoke({"topic": "otters"}, config={"callbacks": [seen]})


async def _chain_astream(router: kalibr.Router, seen: Decisions) -> None:
    chain = PROMPT | router.as_langchain() | StrOutputParser()
    pieces: AsyncIterator[str] = chain.astream({"topic": "otters"}, config={"callbacks": [seen]})
    assert "".join([piece async for piece in pieces])


async def _llm_ainvoke(router: kalibr.Router, seen: Decisions) -> None:
    await router.as_langchain().ainvoke("Tell me a short fact about otters.", config={"callbacks": [seen]})


async def _agent_ainvoke(router: kalibr.Router, seen: Decisions) -> None:
    state = await _react_agent(router.as_langchain()).ainvoke(WEATHER, config={"callbacks": [seen]})
    assert len(state["messages"]) == 4


@pytest.mark.parametrize(
    "idiom",
    [_chain_ainvoke, _chain_astream, _llm_ainvoke, _agent_ainvoke],
    ids=["chain.ainvoke", "chain.astream", "llm.ainvoke", "agent.ainvoke"],
)
async def test_report_after_an_async_idiom_lands_on_its_decisions(
    sandbox: SandboxServer, idiom: Callable[[kalibr.Router, Decisions], Awaitable[None]]
) -> None:
    router = _router(sandbox)
    earlier = await router.acompletion("An unrelated question asked directly.")
    seen = Decisions()
    await idiom(router, seen)
    router.report(score=0.25)
    reported = _explicit(router)
    assert seen.trace_ids and set(reported) == set(seen.trace_ids)
    assert earlier.trace_id not in stored_outcomes(router)
    assert {o.score for o in reported.values()} == {0.25}


def test_an_agent_run_is_reported_on_every_step_it_took(sandbox: SandboxServer) -> None:
    router = _router(sandbox)
    state = _react_agent(router.as_langchain()).invoke(WEATHER)
    steps = [m.response_metadata["kalibr_trace_id"] for m in state["messages"] if isinstance(m, AIMessage)]
    router.report(success=False, failure_category="tool_error")  # the tool step and the answer share the blame
    assert sorted(_explicit(router)) == sorted(steps) and len(steps) == 2


# --- batches --------------------------------------------------------------------------------------------------
def test_a_report_after_a_batch_of_many_names_the_fixes_and_each_fix_works(sandbox: SandboxServer) -> None:
    router = _router(sandbox)
    router.completion("An unrelated question asked directly.")
    chain = PROMPT | router.as_langchain() | StrOutputParser()
    topics = ["otters", "glaciers", "violins"]
    recorders = [Decisions() for _ in topics]
    facts = chain.batch([{"topic": t} for t in topics], config=[{"callbacks": [r]} for r in recorders])
    with pytest.raises(kalibr.UserError, match="ambiguous") as caught:
        router.report(success=True)
    message = str(caught.value)
    assert "trace_id=" in message and "llm.report(" in message and "inside each item" in message
    assert _explicit(router) == {}
    llm = router.as_langchain()
    for fact, score in zip(facts, (0.1, 0.2, 0.3), strict=True):
        llm.report(fact, score=score)  # the output object of each item
    scores = {t: o.score for t, o in _explicit(router).items()}
    assert scores == {r.trace_ids[0]: s for r, s in zip(recorders, (0.1, 0.2, 0.3), strict=True)}


def test_a_report_after_llm_batch_and_abatch_is_ambiguous(sandbox: SandboxServer) -> None:
    router = _router(sandbox)
    llm = router.as_langchain()
    messages = llm.batch(["Tell me about otters.", "Tell me about glaciers."])
    with pytest.raises(kalibr.UserError, match="ambiguous: 2 runs"):
        router.report(success=True)
    for message in messages:  # the messages carry their trace id: the fix the error names
        router.report(success=True, trace_id=message.response_metadata["kalibr_trace_id"])
    assert len(_explicit(router)) == 2


async def test_abatch_then_a_report_inside_each_item(sandbox: SandboxServer) -> None:
    import asyncio

    router = _router(sandbox)
    chain = PROMPT | router.as_langchain() | StrOutputParser()

    async def one(topic: str, score: float) -> list[str]:
        seen = Decisions()
        await chain.ainvoke({"topic": topic}, config={"callbacks": [seen]})
        router.report(score=score)  # inside the item: its own run
        return seen.trace_ids

    traces = await asyncio.gather(one("otters", 0.1), one("glaciers", 0.9))
    assert {t: o.score for t, o in _explicit(router).items()} == {traces[0][0]: 0.1, traces[1][0]: 0.9}
    await chain.abatch([{"topic": "a"}, {"topic": "b"}])
    with pytest.raises(kalibr.UserError, match="ambiguous"):
        router.report(success=True)


def test_a_report_while_a_stream_is_still_going_says_so(sandbox: SandboxServer) -> None:
    router = _router(sandbox)
    chain = PROMPT | router.as_langchain() | StrOutputParser()
    pieces = chain.stream({"topic": "otters"})
    next(pieces)
    with pytest.raises(kalibr.UserError, match="still going"):
        router.report(success=True)
    rest = list(pieces)
    assert rest is not None
    router.report(success=True)
    assert len(_explicit(router)) == 1


# --- what judges see ------------------------------------------------------------------------------------------
def test_the_readme_judge_passes_a_good_structured_answer(sandbox: SandboxServer) -> None:
    seen: list[Any] = []

    def readme_judge(answer: Any) -> bool:  # the README's: an answer, whatever its shape, that is not empty
        seen.append(answer)
        return bool(answer)

    router = _router(sandbox, success_when=readme_judge)
    chain = router.as_langchain().with_structured_output(Company)
    company = chain.invoke("Apple makes the iPhone. Which company is this about?")
    assert company == Company(company="Apple") and seen == [company]  # the parsed object, judged once
    (outcome,) = stored_outcomes(router).values()
    assert (outcome.success, outcome.source) == (True, "run")


class UpperCaseCompany(BaseModel):
    """The company a text is about, in capitals (which the sandbox's answer is not)."""

    company: str

    @pydantic.field_validator("company")
    @classmethod
    def _upper_case(cls, name: str) -> str:
        if name != name.upper():
            raise ValueError("not in capitals")
        return name


def test_structured_output_with_include_raw_is_judged_on_the_parsed_object(sandbox: SandboxServer) -> None:
    seen: list[Any] = []
    router = _router(sandbox, success_when=lambda company: seen.append(company) is None and company.company != "")
    question = "Apple makes the iPhone. Which company is this about?"
    result = router.as_langchain().with_structured_output(Company, include_raw=True).invoke(question)
    assert seen == [result["parsed"]]  # not the dict with the raw message
    unparsed = router.as_langchain().with_structured_output(UpperCaseCompany, include_raw=True).invoke(question)
    assert unparsed["parsed"] is None and len(seen) == 1  # the error LangChain returned: no judge, a failure
    judged, failed = stored_outcomes(router).values()
    assert (judged.success, judged.source) == (True, "run")
    assert (failed.success, failed.failure_category) == (False, "validation_failed")
    router.report(success=True, reason="the raw answer was fine")  # the user's word on the last run replaces it
    assert stored_outcomes(router)[failed.trace_id].source == "explicit"


def test_a_tool_call_turn_is_judged_on_its_tool_calls(sandbox: SandboxServer) -> None:
    seen: list[Any] = []
    router = _router(sandbox, success_when=lambda answer: seen.append(answer) is None and bool(answer))
    message = router.as_langchain().bind_tools([get_weather]).invoke("What is the weather in Paris? Use get_weather.")
    weather = ChatPromptTemplate.from_template("What is the weather in {city}? Use get_weather.")
    chained = (weather | router.as_langchain().bind_tools([get_weather])).invoke({"city": "Oslo"})
    assert message.tool_calls and seen[0] == message.tool_calls
    assert chained.tool_calls and seen[1] == chained.tool_calls  # a chain's final message: the same rule
    assert len(seen) == 2
    assert all(o.success for o in stored_outcomes(router).values())


def test_an_agents_tool_turn_is_not_judged_as_a_final_answer(sandbox: SandboxServer) -> None:
    seen: list[Any] = []
    router = _router(sandbox, score_when=lambda answer: seen.append(answer) or (0.8 if isinstance(answer, str) else 0))
    state = _react_agent(router.as_langchain()).invoke(WEATHER)
    final = state["messages"][-1]
    assert seen == [final.text]  # the final answer, judged once; its verdict goes to each step of the run
    assert [o.score for o in stored_outcomes(router).values()] == [0.8, 0.8]


def test_a_chain_with_two_model_steps_is_judged_once_for_both(sandbox: SandboxServer) -> None:
    judged: list[Any] = []
    router = _router(sandbox, success_when=lambda answer: judged.append(answer) is None)
    llm = router.as_langchain()
    shorten = ChatPromptTemplate.from_template("Say this in five words: {fact}")
    chain = PROMPT | llm | StrOutputParser() | (lambda fact: {"fact": fact}) | shorten | llm | StrOutputParser()
    answer = chain.invoke({"topic": "otters"})
    assert judged == [answer]
    outcomes = stored_outcomes(router).values()
    assert [(o.source, o.success) for o in outcomes] == [("run", True), ("run", True)]


def test_a_parser_failure_fails_the_run_with_its_category(sandbox: SandboxServer) -> None:
    router = _router(sandbox, success_when=lambda answer: True)

    def strict_parse(text: str) -> str:
        raise OutputParserException("not the format asked for")

    chain = PROMPT | router.as_langchain() | StrOutputParser() | RunnableLambda(strict_parse)
    with pytest.raises(OutputParserException):
        chain.invoke({"topic": "otters"})
    (outcome,) = stored_outcomes(router).values()
    assert (outcome.source, outcome.success, outcome.failure_category, outcome.reason) == (
        "run",
        False,
        "malformed_output",
        "the run raised OutputParserException",
    )


# --- two routers in one run: each judged on its own part -----------------------------------------------------
def _judged_router(sandbox: SandboxServer, goal: str, seen: list[Any]) -> kalibr.Router:
    return kalibr.Router(
        goal, sandbox_paths(sandbox, "sandbox-mini"), store="memory:", success_when=lambda o: not seen.append(o)
    )


def test_each_branch_of_a_parallel_step_is_judged_on_its_own_output(sandbox: SandboxServer) -> None:
    seen_fact: list[Any] = []
    seen_title: list[Any] = []
    facts = _judged_router(sandbox, "parallel_facts", seen_fact)
    titles = _judged_router(sandbox, "parallel_titles", seen_title)
    title = ChatPromptTemplate.from_template("Give a title for an article about {topic}.")
    both = RunnableParallel(
        fact=PROMPT | facts.as_langchain() | StrOutputParser(),
        title=title | titles.as_langchain() | StrOutputParser(),
    )
    answer = both.invoke({"topic": "otters"})
    assert (seen_fact, seen_title) == ([answer["fact"]], [answer["title"]])  # not the whole dict: its own branch
    for router in (facts, titles):
        (outcome,) = stored_outcomes(router).values()
        assert (outcome.source, outcome.success) == ("run", True)
    facts.report(success=False)  # lands on its own branch's decision only
    assert [o.success for o in stored_outcomes(facts).values()] == [False]
    assert [o.success for o in stored_outcomes(titles).values()] == [True]


def test_a_parallel_branchs_answer_reports_its_own_routers_decision(sandbox: SandboxServer) -> None:
    facts = _judged_router(sandbox, "parallel_facts", [])
    titles = _judged_router(sandbox, "parallel_titles", [])
    facts_llm, titles_llm = facts.as_langchain(), titles.as_langchain()
    title = ChatPromptTemplate.from_template("Give a title for an article about {topic}.")
    both = RunnableParallel(fact=PROMPT | facts_llm | StrOutputParser(), title=title | titles_llm | StrOutputParser())
    answer = both.invoke({"topic": "otters"})
    (fact_trace,) = facts_llm.report(answer["fact"], success=False)
    assert [(o.trace_id, o.source, o.success) for o in stored_outcomes(facts).values()] == [
        (fact_trace, "explicit", False)
    ]
    with pytest.raises(kalibr.UserError, match="found no Kalibr call of goal 'parallel_titles'"):
        titles_llm.report(answer["fact"], success=False)  # the other branch's answer is none of its calls
    assert [(o.source, o.success) for o in stored_outcomes(titles).values()] == [("run", True)]


def test_a_router_inside_an_agents_tool_is_judged_on_the_tools_result(sandbox: SandboxServer) -> None:
    seen_agent: list[Any] = []
    seen_tool: list[Any] = []
    agent_router = _judged_router(sandbox, "agent_outer", seen_agent)
    tool_router = _judged_router(sandbox, "agent_inner_tool", seen_tool)
    tool_llm = tool_router.as_langchain()

    @tool
    def get_weather(location: str) -> str:
        """The weather in a city."""
        return "forecast: " + str(tool_llm.invoke(f"Make up the weather in {location}.").text)

    import warnings

    from langgraph.prebuilt import create_react_agent

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        agent = create_react_agent(agent_router.as_langchain(), [get_weather])
    state = agent.invoke(WEATHER)
    tool_message = state["messages"][2]
    assert tool_message.type == "tool" and seen_tool == [tool_message.text]  # the tool's result
    assert seen_agent == [state["messages"][-1].text]  # the agent's final answer, for both of its turns
    assert [o.source for o in stored_outcomes(agent_router).values()] == ["run", "run"]
    assert [o.source for o in stored_outcomes(tool_router).values()] == ["run"]


# --- retries and fallbacks: a step whose answer was thrown away -----------------------------------------------
def _parses_on_second_try() -> RunnableLambda[str, str]:
    attempts: list[str] = []

    def strict_parse(text: str) -> str:
        attempts.append(text)
        if len(attempts) == 1:
            raise OutputParserException("not the format asked for")
        return text

    return RunnableLambda(strict_parse)


def test_a_retried_attempt_keeps_its_failure_and_the_answer_kept_gets_the_verdict(sandbox: SandboxServer) -> None:
    router = _router(sandbox, success_when=lambda answer: True)
    attempt = PROMPT | router.as_langchain() | StrOutputParser() | _parses_on_second_try()
    chain = attempt.with_retry(retry_if_exception_type=(OutputParserException,), stop_after_attempt=2)
    seen = Decisions()
    chain.invoke({"topic": "otters"}, config={"callbacks": [seen]})
    thrown_away, kept = seen.trace_ids
    router.report(success=False, failure_category="user_unsatisfied")  # about the answer the user got
    outcomes = {t: (o.success, o.failure_category) for t, o in stored_outcomes(router).items()}
    assert outcomes == {thrown_away: (False, "malformed_output"), kept: (False, "user_unsatisfied")}


def test_a_failed_kalibr_step_under_fallbacks_is_not_judged_on_the_fallbacks_answer(sandbox: SandboxServer) -> None:
    from langchain_core.language_models import FakeListChatModel

    router = _router(sandbox, success_when=lambda answer: True)

    def strict_parse(text: str) -> str:
        raise OutputParserException("not the format asked for")

    primary = PROMPT | router.as_langchain() | StrOutputParser() | RunnableLambda(strict_parse)
    backup = PROMPT | FakeListChatModel(responses=["a fact from the backup model"]) | StrOutputParser()
    assert primary.with_fallbacks([backup]).invoke({"topic": "otters"}) == "a fact from the backup model"
    (outcome,) = stored_outcomes(router).values()
    assert (outcome.success, outcome.failure_category) == (False, "malformed_output")
    with pytest.raises(kalibr.UserError, match="no call to report"):
        router.report(success=True)  # the run's answer is the backup model's: nothing of this router's to report


# --- repeated reports, failures, errors while reporting ------------------------------------------------------
def test_a_second_report_after_a_chain_replaces_the_first_entirely(sandbox: SandboxServer) -> None:
    router = _router(sandbox)
    chain = PROMPT | router.as_langchain() | StrOutputParser()
    chain.invoke({"topic": "otters"})
    router.report(success=False, failure_category="hallucination_detected", reason="invented otters")
    router.report(success=True, score=0.1)
    (outcome,) = stored_outcomes(router).values()
    assert (outcome.score, outcome.success, outcome.failure_category, outcome.reason) == (0.1, True, None, None)


def test_every_path_failing_keeps_each_paths_own_error(start_sandbox: Callable[..., SandboxServer]) -> None:
    server = start_sandbox(FAILING)
    router = kalibr.Router("chat", sandbox_paths(server, "down", "limited"), store="memory:")
    chain = PROMPT | router.as_langchain(model="down") | StrOutputParser()  # "down" first, then "limited"
    with pytest.raises(kalibr.AllPathsFailed) as caught:
        chain.invoke({"topic": "otters"})
    down, limited = caught.value.exceptions
    assert isinstance(down, kalibr.ProviderHTTPError) and isinstance(limited, kalibr.ProviderHTTPError)
    assert [(e.status_code, e.failure_category) for e in (down, limited)] == [
        (500, "provider_error"),
        (429, "rate_limited"),
    ]
    assert kalibr.failure_category_of(caught.value) == "rate_limited"
    assert {o.model: o.failure_category for o in stored_outcomes(router).values()} == {
        "down": "provider_error",
        "limited": "rate_limited",
    }


def test_a_second_report_survives_a_store_outage_and_no_judge_is_blamed(
    sandbox: SandboxServer, caplog: pytest.LogCaptureFixture
) -> None:
    from kalibr.stores import MemoryStore

    class FlakyUpdates(MemoryStore):
        down = True

        def update_outcome(self, *args: Any, **kwargs: Any) -> Any:
            if FlakyUpdates.down:
                raise kalibr.StoreError("the database is down")
            return super().update_outcome(*args, **kwargs)

    router = _router(sandbox, store=FlakyUpdates(), success_when=lambda answer: True)
    chain = PROMPT | router.as_langchain() | StrOutputParser()
    with caplog.at_level(logging.WARNING, logger="kalibr"):
        chain.invoke({"topic": "otters"})  # the run's verdict: success
        engine: Any = router.intelligence
        engine.flush()
        router.report(success=False, failure_category="hallucination_detected")  # replaces it: the store is down
        with pytest.raises(kalibr.StoreError):
            engine.flush()
    assert "raised" not in caplog.text  # neither the judge nor the report is blamed
    FlakyUpdates.down = False
    (outcome,) = stored_outcomes(router).values()
    assert (outcome.success, outcome.failure_category, outcome.source) == (False, "hallucination_detected", "explicit")


def test_a_judge_raising_on_a_chain_output_stores_only_its_type(sandbox: SandboxServer, tmp_path: Any) -> None:
    from kalibr._intelligence_registry import reset_shared

    secret = "Quokka-51b2-private"
    raised: list[str] = []

    def judge(answer: str) -> bool:
        raised.append(f"unexpected answer {answer!r}")
        raise ValueError(raised[-1])

    router = _router(sandbox, success_when=judge, store=f"sqlite:///{tmp_path}/chain.db")
    chain = ChatPromptTemplate.from_template("Please repeat this exactly: {text}") | router.as_langchain()
    answer = (chain | StrOutputParser()).invoke({"text": secret})
    (outcome,) = stored_outcomes(router).values()
    assert (outcome.failure_category, outcome.reason) == ("validation_failed", "success_when raised ValueError")
    reset_shared()
    stored = b"".join(path.read_bytes() for path in tmp_path.iterdir() if path.name.startswith("chain.db"))
    assert secret in answer and raised and secret in raised[0] and b"langchain_reports" in stored  # the guards
    assert secret.encode() not in stored


def test_reporting_an_object_several_runs_returned_asks_for_the_trace_id(sandbox: SandboxServer) -> None:
    router = _router(sandbox)
    verdict = "ok"  # an interned string: every run returns this very object
    chain = PROMPT | router.as_langchain() | StrOutputParser() | RunnableLambda(lambda _: verdict)
    first, second = chain.invoke({"topic": "owls"}), chain.invoke({"topic": "tides"})
    assert first is second
    with pytest.raises(kalibr.UserError, match="several runs returned the very same str object"):
        router.as_langchain().report(first, success=True)
    assert _explicit(router) == {}
