"""KalibrCallbackHandler: chain outputs judged by success_when, chain errors reported, later reports."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.exceptions import OutputParserException
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnablePassthrough
from langchain_core.tools import ToolException

import kalibr
from kalibr.sandbox import SandboxServer
from kalibr_langchain import ChatKalibr, KalibrCallbackHandler, failure_category_of

from .conftest import sandbox_paths, stored_outcomes

PROMPT = ChatPromptTemplate.from_template("What is {a} + {b}? Answer with the number only.")


def _answer_chain(llm: ChatKalibr) -> Any:
    """A chain whose output carries the expected answer next to the model's: only the chain can judge it."""
    return RunnablePassthrough.assign(answer=PROMPT | llm | StrOutputParser())


def _is_right(output: dict[str, Any]) -> bool:
    return bool(output["answer"].strip() == str(output["a"] + output["b"]))


def test_success_when_judges_the_chain_output(sandbox: SandboxServer) -> None:
    llm = ChatKalibr(goal="chain_judged", paths=sandbox_paths(sandbox, "sandbox-mini"), store="memory:")
    handler = KalibrCallbackHandler(llm, success_when=_is_right)
    right = _answer_chain(llm).invoke({"a": 2, "b": 3}, config={"callbacks": [handler]})
    [right_trace] = handler.trace_ids_for(right)
    outcome = stored_outcomes(llm._router)[right_trace]
    assert outcome.success is True
    assert outcome.reason == "success_when on the chain output"


def test_chain_verdict_replaces_the_verdict_on_the_model_text(sandbox: SandboxServer) -> None:
    # The router alone would call every non-empty answer a success; the chain knows 2 + 3 is not 6.
    router = kalibr.Router(
        "chain_overrides", sandbox_paths(sandbox, "sandbox-mini"), lambda text: bool(text), store="memory:"
    )
    llm = router.as_langchain()
    handler = KalibrCallbackHandler(llm, success_when=lambda output: output["answer"].strip() == "6")
    output = _answer_chain(llm).invoke({"a": 2, "b": 3}, config={"callbacks": [handler]})
    [trace_id] = handler.trace_ids_for(output)
    assert stored_outcomes(router)[trace_id].success is False


def test_a_chain_with_two_model_steps_is_judged_once_for_both(sandbox: SandboxServer) -> None:
    llm = ChatKalibr(goal="chain_judged_once", paths=sandbox_paths(sandbox, "sandbox-mini"), store="memory:")
    judged: list[Any] = []
    handler = KalibrCallbackHandler(llm, success_when=lambda output: judged.append(output) is None)
    check = ChatPromptTemplate.from_template("Is {answer} right? Answer yes or no.")
    chain = _answer_chain(llm) | check | llm | StrOutputParser()
    verdict = chain.invoke({"a": 2, "b": 3}, config={"callbacks": [handler]})
    assert judged == [verdict]
    traces = handler.trace_ids_for(verdict)
    assert len(traces) == 2
    assert all(stored_outcomes(llm._router)[trace].success for trace in traces)


def _refuse(text: str) -> str:
    raise OutputParserException(f"no JSON in {text!r}")


def test_a_chain_error_is_reported_as_a_failure_with_a_category(sandbox: SandboxServer) -> None:
    llm = ChatKalibr(goal="chain_error", paths=sandbox_paths(sandbox, "sandbox-mini"), store="memory:")
    handler = KalibrCallbackHandler(llm, success_when=lambda output: True)
    chain = PROMPT | llm | StrOutputParser() | RunnableLambda(_refuse)
    with pytest.raises(OutputParserException):
        chain.invoke({"a": 1, "b": 1}, config={"callbacks": [handler]})
    [outcome] = stored_outcomes(llm._router).values()
    assert outcome.success is False
    assert outcome.failure_category == "malformed_output"
    assert "OutputParserException" in (outcome.reason or "")


def test_a_raising_success_when_counts_as_validation_failed(sandbox: SandboxServer) -> None:
    llm = ChatKalibr(goal="judge_raises", paths=sandbox_paths(sandbox, "sandbox-mini"), store="memory:")
    handler = KalibrCallbackHandler(llm, success_when=lambda output: output["missing"])
    output = _answer_chain(llm).invoke({"a": 1, "b": 2}, config={"callbacks": [handler]})
    [trace_id] = handler.trace_ids_for(output)
    assert stored_outcomes(llm._router)[trace_id].failure_category == "validation_failed"


def test_report_later_from_the_chain_output_or_the_message(sandbox: SandboxServer) -> None:
    llm = ChatKalibr(goal="late_report", paths=sandbox_paths(sandbox, "sandbox-mini"), store="memory:")
    handler = KalibrCallbackHandler(llm, success_when=_is_right)
    output = _answer_chain(llm).invoke({"a": 4, "b": 4}, config={"callbacks": [handler]})
    [trace_id] = handler.report(output, success=False, failure_category="user_unsatisfied")
    assert stored_outcomes(llm._router)[trace_id].success is False
    assert stored_outcomes(llm._router)[trace_id].failure_category == "user_unsatisfied"

    message = llm.invoke("Hello")  # no success_when anywhere: nothing reported yet
    assert llm.report(message, score=0.75) == [message.response_metadata["kalibr_trace_id"]]
    assert stored_outcomes(llm._router)[message.response_metadata["kalibr_trace_id"]].score == 0.75
    llm.report(message.response_metadata["kalibr_trace_id"], success=True)  # or by the trace id in the metadata
    assert stored_outcomes(llm._router)[message.response_metadata["kalibr_trace_id"]].score == 1.0


def test_report_on_something_without_a_decision_says_what_to_pass(sandbox: SandboxServer) -> None:
    llm = ChatKalibr(goal="nothing_to_report", paths=sandbox_paths(sandbox, "sandbox-mini"), store="memory:")
    with pytest.raises(kalibr.UserError, match=r"kalibr_trace_id"):
        llm.report("just a string", success=True)


def test_decisions_of_other_goals_are_left_alone(sandbox: SandboxServer) -> None:
    mine = ChatKalibr(goal="mine", paths=sandbox_paths(sandbox, "sandbox-mini"), store="memory:")
    theirs = ChatKalibr(goal="theirs", paths=sandbox_paths(sandbox, "sandbox-pro"), store="memory:")
    handler = KalibrCallbackHandler(mine, success_when=lambda output: False)
    chain = RunnablePassthrough.assign(a=PROMPT | mine | StrOutputParser(), b=PROMPT | theirs | StrOutputParser())
    output = chain.invoke({"a": 1, "b": 1}, config={"callbacks": [handler]})
    assert len(handler.trace_ids_for(output)) == 1
    assert stored_outcomes(theirs._router) == {}


@pytest.mark.parametrize(
    ("error", "category"),
    [
        (kalibr.ProviderTimeout("slow", model="m"), "timeout"),
        (OutputParserException("bad"), "malformed_output"),
        (ToolException("the tool broke"), "tool_error"),
        (TimeoutError(), "timeout"),
        (RuntimeError("?"), "unknown"),
    ],
)
def test_failure_categories(error: BaseException, category: str) -> None:
    assert failure_category_of(error) == category
