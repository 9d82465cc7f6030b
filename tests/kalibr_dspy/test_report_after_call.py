"""``router.report()`` after a DSPy module call lands on that call's decisions; judges see the Prediction."""

from __future__ import annotations

from typing import Any

import dspy
import pytest
from dspy.utils.exceptions import AdapterParseError
from pydantic import BaseModel

from kalibr.sandbox import SandboxServer

from .conftest import DraftThenAnswer, RecordingRouter, sandbox_paths


def _explicit(router: RecordingRouter) -> dict[str, bool | None]:
    return {r.trace_id: r.success for r in router.reports if r.source == "explicit"}


def _history_ids(lm: Any) -> list[str]:
    return [entry["response"].id for entry in lm.history]


@pytest.mark.parametrize(
    "program",
    [dspy.Predict("question -> answer"), dspy.ChainOfThought("question -> answer"), DraftThenAnswer()],
    ids=["Predict", "ChainOfThought", "several predictors"],
)
def test_report_after_a_module_call_reports_that_calls_decisions(
    configured: Any, router: RecordingRouter, program: Any
) -> None:
    earlier = router.completion("Hello there").trace_id
    program(question="What is 2 + 3?")
    router.report(success=False)
    made = _history_ids(configured)
    assert earlier not in made
    assert _explicit(router) == dict.fromkeys(made, False)


async def test_report_after_an_async_module_call(lm: Any, router: RecordingRouter) -> None:
    router.completion("Hello there")
    with dspy.context(lm=lm):
        await DraftThenAnswer().acall(question="What is 2 + 3?")
    router.report(success=True)
    assert _explicit(router) == dict.fromkeys(_history_ids(lm), True)
    assert len(lm.history) == 2


def test_a_module_is_judged_on_its_prediction_not_its_lm_text(sandbox: SandboxServer) -> None:
    judged: list[Any] = []

    def success_when(output: Any) -> bool:
        judged.append(output)
        return bool(output.answer == "5")

    router = RecordingRouter("dspy_judged", sandbox_paths(sandbox), store="memory:", success_when=success_when)
    with dspy.context(lm=router.as_dspy()):
        prediction = DraftThenAnswer()(question="What is 2 + 3?")
    # The LM calls' raw text is never judged: the module's Prediction is, once, and its verdict goes to the
    # decisions of both predictors.
    assert len(judged) == 1 and judged[0] is prediction
    assert [(r.source, r.success) for r in router.reports] == [("run", True), ("run", True)]


def test_a_bare_lm_call_is_judged_on_its_text(sandbox: SandboxServer) -> None:
    judged: list[Any] = []
    router = RecordingRouter(
        "dspy_judged", sandbox_paths(sandbox), store="memory:", success_when=lambda text: judged.append(text) or True
    )
    (answer,) = router.as_dspy()("Hello there")
    assert judged == [answer]


class Person(BaseModel):
    name: str
    age: int


class Extract(dspy.Signature):  # type: ignore[misc]  # dspy ships no type information
    """Extract the person the text is about."""

    text: str = dspy.InputField()
    person: Person = dspy.OutputField()


def test_an_answer_dspy_cannot_parse_is_malformed_output(configured: Any, router: RecordingRouter) -> None:
    with pytest.raises(AdapterParseError):
        dspy.Predict(Extract)(text="Ada Lovelace is 36 years old.")
    reports = [(r.success, r.failure_category) for r in router.reports]
    assert reports == [(False, "malformed_output")] * len(configured.history), "the ChatAdapter's and JSON retry's"
