"""``router.report()`` after a DSPy module call lands on that call's decisions; judges see the Prediction."""

from __future__ import annotations

import asyncio
from typing import Any

import dspy
import pytest
from dspy.utils.exceptions import AdapterParseError
from pydantic import BaseModel
from tests.recording import recording_judge, stored_outcomes

import kalibr_dspy
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


def test_an_answer_from_dspys_cache_makes_no_outcome_and_a_report_after_it_touches_no_earlier_run(
    sandbox: SandboxServer,
) -> None:
    import uuid

    from tests.recording import stored_outcomes

    import kalibr
    from kalibr_dspy import decisions_of

    router = RecordingRouter("dspy_cache", sandbox_paths(sandbox), store="memory:", score_when=lambda _: 0.5)
    lm = router.as_dspy(cache=True)  # the user turned DSPy's cache back on
    question = f"What is 2 + 3? ({uuid.uuid4().hex})"  # never asked before, in this or another test's cache
    predict = dspy.Predict("question -> answer")
    with dspy.context(lm=lm):
        first = predict(question=question)
        router.report(score=0.9)
        second = predict(question=question)  # the same call again: DSPy answers it from its cache
    ((_, made),) = decisions_of(first)
    assert decisions_of(second) == [] and lm.history[-1]["response"].id == made  # no phantom decision
    with pytest.raises(kalibr.UserError, match="answered from the framework's cache"):
        router.report(score=0.1)  # meant for the cached answer: it must not replace the first run's outcome
    assert [(o.trace_id, o.score, o.source) for o in stored_outcomes(router)] == [(made, 0.9, "explicit")]


def test_after_asyncify_report_never_lands_on_an_earlier_call(lm: Any, router: RecordingRouter) -> None:
    import kalibr
    from kalibr_dspy import report

    earlier = router.completion("asked before the event loop started")

    async def main() -> Any:  # DSPy's docs' asyncify, in a task whose context holds the earlier call
        with dspy.context(lm=lm):
            prediction = await dspy.asyncify(dspy.Predict("question -> answer"))(question="What is 2 + 3?")
        with pytest.raises(kalibr.UserError, match="no call to report"):
            router.report(success=False)  # the program ran in a worker thread: only the prediction names its run
        return prediction

    prediction = asyncio.run(main())
    assert report(prediction, success=False) == _history_ids(lm)
    assert earlier.trace_id not in _explicit(router)


@pytest.mark.parametrize("chooser", [dspy.BestOfN, dspy.Refine], ids=["BestOfN", "Refine"])
def test_best_of_n_keeps_one_attempt_the_others_are_judged_by_their_reward(
    sandbox: SandboxServer, chooser: Any
) -> None:
    router = RecordingRouter("dspy_best_of", sandbox_paths(sandbox), store="memory:", success_when=lambda p: True)
    rewards = iter([0.2, 0.9, 0.4])  # none reaches the threshold: three attempts, the second kept

    def reward(inputs: dict[str, Any], prediction: dspy.Prediction) -> float:
        return next(rewards)

    lm = router.as_dspy()
    with dspy.context(lm=lm):
        program = chooser(dspy.Predict("question -> answer"), N=3, reward_fn=reward, threshold=1.0)
        prediction = program(question="What is 2 + 3?")
    rewarded = {r.trace_id: r.score for r in router.reports if r.source == "explicit"}
    judged = {r.trace_id for r in router.reports if r.source == "run"}
    assert sorted(rewarded.values()) == [0.2, 0.4]  # the attempts thrown away: their reward, once each
    kept = {trace_id for _, trace_id in kalibr_dspy.decisions_of(prediction)}
    assert kept == judged and not kept & rewarded.keys()
    # Refine's advice after the first attempt is a step of the kept answer; its advice after the kept one is not
    assert len(kept) == (1 if chooser is dspy.BestOfN else 2)
    unjudged = set(_history_ids(lm)) - kept - rewarded.keys()
    assert len(unjudged) == (0 if chooser is dspy.BestOfN else 1)
    before = len(router.reports)
    router.report(success=False)
    assert {(r.trace_id, r.success) for r in router.reports[before:]} == {(t, False) for t in kept}


def test_an_attempt_whose_reward_raised_is_left_out_of_the_run_unjudged(sandbox: SandboxServer) -> None:
    router = RecordingRouter("dspy_best_of", sandbox_paths(sandbox), store="memory:", success_when=lambda p: True)
    attempts: list[dspy.Prediction] = []

    def reward(inputs: dict[str, Any], prediction: dspy.Prediction) -> float:
        attempts.append(prediction)
        if len(attempts) == 1:
            raise ValueError("the reward could not read this answer")  # BestOfN drops the attempt and goes on
        return 1.0

    with dspy.context(lm=router.as_dspy()):
        program = dspy.BestOfN(dspy.Predict("question -> answer"), N=2, reward_fn=reward, threshold=1.0)
        prediction = program(question="What is 2 + 3?")
    assert prediction is attempts[1]
    (kept,) = kalibr_dspy.decisions_of(prediction)
    assert [(r.trace_id, r.source) for r in router.reports] == [(kept[1], "run")]  # nothing for the dropped one


class AnswerAndTitle(dspy.Module):  # type: ignore[misc]  # dspy ships no type information
    """Two predictors, each with an LM of its own (a different router)."""

    def __init__(self, answer_lm: Any, title_lm: Any) -> None:
        super().__init__()
        self.answer = dspy.Predict("question -> answer")
        self.answer.set_lm(answer_lm)
        self.title = dspy.Predict("question -> title")
        self.title.set_lm(title_lm)

    def forward(self, question: str) -> dspy.Prediction:
        return dspy.Prediction(answer=self.answer(question=question).answer, title=self.title(question=question).title)


def test_with_two_routers_in_a_module_each_is_judged_on_its_own_predictors_prediction(
    sandbox: SandboxServer,
) -> None:
    judged: dict[str, list[Any]] = {"answers": [], "titles": []}
    answers = RecordingRouter(
        "dspy_answers", sandbox_paths(sandbox), store="memory:", success_when=recording_judge(judged["answers"], True)
    )
    titles = RecordingRouter(
        "dspy_titles", sandbox_paths(sandbox), store="memory:", success_when=recording_judge(judged["titles"], False)
    )
    answers_lm, titles_lm = answers.as_dspy(), titles.as_dspy()
    result = AnswerAndTitle(answers_lm, titles_lm)(question="What is 2 + 3?")

    (answer,), (title,) = judged["answers"], judged["titles"]  # each judge once, on its own predictor's Prediction
    assert isinstance(answer, dspy.Prediction) and dict(answer) == {"answer": result.answer}
    assert isinstance(title, dspy.Prediction) and dict(title) == {"title": result.title}
    for router, lm, verdict in ((answers, answers_lm, True), (titles, titles_lm, False)):
        (made,) = _history_ids(lm)
        assert [(r.trace_id, r.source, r.success) for r in stored_outcomes(router)] == [(made, "run", verdict)]


def test_with_two_routers_called_as_lms_in_a_module_each_is_judged_on_its_own_answers_text(
    sandbox: SandboxServer,
) -> None:
    judged: dict[str, list[Any]] = {"answers": [], "titles": []}
    answers = RecordingRouter(
        "dspy_answers", sandbox_paths(sandbox), store="memory:", success_when=judged["answers"].append
    )
    titles = RecordingRouter(
        "dspy_titles", sandbox_paths(sandbox), store="memory:", success_when=judged["titles"].append
    )

    class AskBoth(dspy.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.answers_lm, self.titles_lm = answers.as_dspy(), titles.as_dspy()

        def forward(self, question: str) -> dspy.Prediction:
            (answer,) = self.answers_lm(question)
            (title,) = self.titles_lm(f"A title for: {question}")
            return dspy.Prediction(answer=answer, title=title)

    result = AskBoth()(question="What is 2 + 3?")
    assert judged == {"answers": [result.answer], "titles": [result.title]}
    assert [r.source for r in answers.reports + titles.reports] == ["run", "run"]
