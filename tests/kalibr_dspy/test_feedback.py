"""Metric scores reach exactly the decisions behind each example, with nothing but ``dspy.configure(lm=...)``.

Written as DSPy's documentation writes evaluation and optimization; the decisions behind each example are read
from the LM's own history (each entry's response id is the decision's trace id).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

import dspy
import pytest
from dspy.teleprompt import BootstrapFewShot, BootstrapFewShotWithRandomSearch

import kalibr_dspy
from kalibr import UserError
from kalibr_dspy import decisions_of, score_of

from .conftest import DraftThenAnswer, RecordingRouter, trace_ids_by_question


def _examples(count: int) -> list[dspy.Example]:
    return [
        dspy.Example(question=f"What is {n} + {n}?", answer=str(2 * n), weight=(n % 5) / 4).with_inputs("question")
        for n in range(count)
    ]


def weighted(example: dspy.Example, prediction: dspy.Prediction, trace: Any = None) -> float:
    """A metric whose score differs per example, so a score reported to the wrong decision shows."""
    return float(example.weight)


def _expected(lm: Any, devset: list[dspy.Example]) -> dict[str, float]:
    """Each call's expected score: the weight of the example it was made for."""
    by_question = trace_ids_by_question(lm)
    return {trace_id: example.weight for example in devset for trace_id in by_question.get(example.question, [])}


def _metric_reports(router: RecordingRouter) -> dict[str, float | None]:
    return {r.trace_id: r.score for r in router.reports if r.source == "explicit"}


@pytest.mark.parametrize("num_threads", [4, 1])
def test_evaluate_reports_each_score_to_its_own_decisions(
    configured: Any, router: RecordingRouter, num_threads: int
) -> None:
    devset = _examples(12)
    evaluate = dspy.Evaluate(devset=devset, metric=weighted, num_threads=num_threads, display_progress=True)
    evaluate(DraftThenAnswer())
    expected = _expected(configured, devset)
    assert len(expected) == 24, "each example made a draft and a final call"
    assert _metric_reports(router) == expected


def test_a_metric_passed_to_the_evaluate_call_is_reported_too(configured: Any, router: RecordingRouter) -> None:
    devset = _examples(4)
    evaluate = dspy.Evaluate(devset=devset, metric=lambda example, prediction: 0.0, num_threads=2)
    evaluate(DraftThenAnswer(), metric=weighted)
    assert _metric_reports(router) == _expected(configured, devset)


def test_evaluate_gets_its_own_metric_back(configured: Any) -> None:
    evaluate = dspy.Evaluate(devset=_examples(2), metric=weighted, num_threads=1)
    evaluate(dspy.Predict("question -> answer"))
    assert evaluate.metric is weighted


@pytest.mark.parametrize("num_threads", [4, 1])
def test_report_after_an_evaluation_is_ambiguous_and_kalibr_dspy_report_names_one(
    configured: Any, router: RecordingRouter, num_threads: int
) -> None:
    router.completion("Hello there")  # a direct call before the evaluation must not take the report
    evaluate = dspy.Evaluate(devset=_examples(3), metric=weighted, num_threads=num_threads)
    result = evaluate(dspy.Predict("question -> answer"))
    with pytest.raises(UserError, match="ambiguous"):
        router.report(success=False)
    _example, prediction, _score = result.results[1]
    (trace_id,) = kalibr_dspy.report(prediction, success=False, failure_category="hallucination_detected")
    assert trace_id == decisions_of(prediction)[0][1]
    assert [(r.trace_id, r.score) for r in router.reports][-1] == (trace_id, 0.0)


def test_bootstrap_few_shot_reports_each_bootstrapped_example(configured: Any, router: RecordingRouter) -> None:
    trainset = _examples(6)
    optimizer = BootstrapFewShot(metric=weighted, max_bootstrapped_demos=3, max_rounds=1)
    compiled = optimizer.compile(dspy.Predict("question -> answer"), trainset=trainset)
    assert compiled.demos, "examples with a positive score became demos"
    expected = _expected(configured, trainset)
    assert len(expected) >= 4, "bootstrapping stops once it has its demos"
    assert _metric_reports(router) == expected
    assert optimizer.metric is weighted, "the optimizer's own metric is back after compile"


def test_an_optimizer_that_evaluates_with_its_metric_reports_each_prediction_once(
    configured: Any, router: RecordingRouter
) -> None:
    trainset = _examples(4)
    optimizer = BootstrapFewShotWithRandomSearch(metric=weighted, max_bootstrapped_demos=1, num_candidate_programs=1)
    optimizer.compile(dspy.Predict("question -> answer"), trainset=trainset)
    reported = [r.trace_id for r in router.reports]
    assert len(reported) == len(set(reported)), "each prediction's score is reported once"
    assert _metric_reports(router) == _expected(configured, trainset)


def test_a_metric_that_is_not_a_score_warns_once(configured: Any, router: RecordingRouter, warns_afresh: None) -> None:
    with pytest.warns(UserWarning, match=r"score in \[0, 1\]"):
        dspy.Evaluate(devset=_examples(3), metric=lambda example, prediction: 7, num_threads=1)(DraftThenAnswer())
    assert router.reports == []


def test_replaced_callbacks_warn_once_naming_what_to_add(lm: Any, router: RecordingRouter, warns_afresh: None) -> None:
    predict = dspy.Predict("question -> answer")
    with dspy.context(lm=lm, callbacks=[]), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predict(question="What is 1 + 1?")
        predict(question="What is 2 + 2?")
    (warning,) = caught
    assert "dspy.configure(callbacks=[*your_callbacks, kalibr_dspy.DecisionTracker()])" in str(warning.message)


def test_the_tracker_added_twice_reports_each_score_once(lm: Any, router: RecordingRouter) -> None:
    devset, predict = _examples(3), dspy.Predict("question -> answer")
    with dspy.context(lm=lm, callbacks=[*dspy.settings.callbacks, kalibr_dspy.DecisionTracker()]):
        dspy.Evaluate(devset=devset, metric=weighted, num_threads=1)(predict)
        assert [r.score for r in router.reports] == [example.weight for example in devset]
        predict(question="What is 9 + 9?")
        router.report(success=False)  # that call alone: the evaluation left no batch window open
    assert [r.score for r in router.reports] == [example.weight for example in devset] + [0.0]


class Breaks(dspy.Module):  # type: ignore[misc]  # dspy ships no type information
    """Makes a routed call, then fails."""

    def __init__(self) -> None:
        super().__init__()
        self.ask = dspy.Predict("question -> answer")

    def forward(self, question: str) -> dspy.Prediction:
        self.ask(question=question)
        raise RuntimeError("post-processing failed")


def test_an_error_in_the_programs_own_code_leaves_its_decisions_unjudged(
    configured: Any, router: RecordingRouter
) -> None:
    with pytest.raises(RuntimeError, match="post-processing failed"):
        Breaks()(question="What is 1 + 1?")
    assert router.reports == [], "the model answered; the program's own code broke"


def test_an_error_caught_inside_the_program_is_not_a_failure(configured: Any, router: RecordingRouter) -> None:
    class Recovers(dspy.Module):  # type: ignore[misc]  # dspy ships no type information
        def __init__(self) -> None:
            super().__init__()
            self.fragile = Breaks()
            self.ask = dspy.Predict("question -> answer")

        def forward(self, question: str) -> dspy.Prediction:
            with contextlib.suppress(RuntimeError):
                self.fragile(question=question)
            return self.ask(question=question)

    prediction = Recovers()(question="What is 1 + 1?")
    assert router.reports == []
    assert len(decisions_of(prediction)) == 2, "the recovered call still counts toward the final answer"


@pytest.mark.parametrize(
    ("value", "score"),
    [(True, 1.0), (False, 0.0), (0.25, 0.25), (1, 1.0), ({"score": 0.5}, 0.5), (dspy.Prediction(score=0.75), 0.75)],
)
def test_score_of_accepts_what_dspy_metrics_return(value: Any, score: float) -> None:
    assert score_of(value) == score


@pytest.mark.parametrize("value", [3.0, -0.1, float("nan"), "good", None])
def test_score_of_refuses_what_is_not_a_score(value: Any) -> None:
    with pytest.raises(UserError, match=r"score in \[0, 1\]"):
        score_of(value)
