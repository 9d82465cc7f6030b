"""Metric scores reach exactly the decisions behind each example; module errors are reported as failures."""

from __future__ import annotations

import contextlib
from typing import Any

import dspy
import pytest
from dspy.teleprompt import BootstrapFewShot

from kalibr import UserError
from kalibr_dspy import DecisionTracker, decisions_of, report_metric, score_of

from .conftest import RecordingRouter


class TwoSteps(dspy.Module):  # type: ignore[misc]  # dspy ships no type information
    """Two routed calls per example: a draft and a final answer."""

    def __init__(self) -> None:
        super().__init__()
        self.draft = dspy.Predict("question -> answer")
        self.final = dspy.ChainOfThought("question, draft -> answer")

    def forward(self, question: str) -> dspy.Prediction:
        draft = self.draft(question=question).answer
        return self.final(question=question, draft=draft)


def _examples(count: int) -> list[dspy.Example]:
    return [
        dspy.Example(question=f"What is {n} + {n}?", answer=str(2 * n), weight=(n % 5) / 4).with_inputs("question")
        for n in range(count)
    ]


def weighted(example: dspy.Example, prediction: dspy.Prediction, trace: Any = None) -> float:
    """A metric whose score differs per example, so a score reported to the wrong decision shows."""
    return float(example.weight)


def test_threaded_evaluate_reports_each_score_to_its_own_decisions(tracked: Any, router: RecordingRouter) -> None:
    evaluate = dspy.Evaluate(devset=_examples(12), metric=report_metric(weighted), num_threads=4)
    result = evaluate(TwoSteps())
    reported = {r.trace_id: r.score for r in router.reports}
    expected: dict[str, float] = {}
    for _example, prediction, score in result.results:
        decisions = decisions_of(prediction)
        assert len(decisions) == 2, "each example made a draft and a final call"
        expected.update({trace_id: score for _, trace_id in decisions})
    assert reported == expected
    assert len(expected) == 24


def test_bootstrap_few_shot_reports_while_bootstrapping(tracked: Any, router: RecordingRouter) -> None:
    def exact(example: dspy.Example, prediction: dspy.Prediction, trace: Any = None) -> bool:
        return bool(str(prediction.answer).strip() == example.answer)

    optimizer = BootstrapFewShot(metric=report_metric(exact), max_bootstrapped_demos=2, max_rounds=1)
    compiled = optimizer.compile(dspy.Predict("question -> answer"), trainset=_examples(4))
    assert compiled.demos, "the sandbox answers right, so demos were bootstrapped"
    assert router.reports
    assert all(r.score == 1.0 for r in router.reports)


class Breaks(dspy.Module):  # type: ignore[misc]  # dspy ships no type information
    """Makes a routed call, then fails."""

    def __init__(self) -> None:
        super().__init__()
        self.ask = dspy.Predict("question -> answer")

    def forward(self, question: str) -> dspy.Prediction:
        self.ask(question=question)
        raise RuntimeError("post-processing failed")


def test_a_module_error_reports_its_decisions_as_failed(tracked: Any, router: RecordingRouter) -> None:
    with pytest.raises(RuntimeError, match="post-processing failed"):
        Breaks()(question="What is 1 + 1?")
    assert [(r.success, r.failure_category) for r in router.reports] == [(False, "unknown")]


def test_an_error_caught_inside_the_program_is_not_a_failure(tracked: Any, router: RecordingRouter) -> None:
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


def test_a_raising_metric_reports_validation_failed_and_reraises(tracked: Any, router: RecordingRouter) -> None:
    def broken(example: Any, prediction: Any, trace: Any = None) -> float:
        raise KeyError("missing label")

    prediction = dspy.Predict("question -> answer")(question="What is 1 + 1?")
    with pytest.raises(KeyError):
        report_metric(broken)(dspy.Example(question="x"), prediction)
    assert [(r.success, r.failure_category) for r in router.reports] == [(False, "validation_failed")]


def test_report_metric_needs_the_tracker(lm: Any) -> None:
    with dspy.context(lm=lm, callbacks=[]), pytest.raises(UserError, match=r"DecisionTracker\(\)"):
        report_metric(weighted)(dspy.Example(weight=1.0), dspy.Prediction(answer="2"))


def test_without_the_tracker_predictions_carry_no_decisions(lm: Any) -> None:
    with dspy.context(lm=lm, callbacks=[]):
        assert decisions_of(dspy.Predict("question -> answer")(question="hi")) == []
    with dspy.context(lm=lm, callbacks=[DecisionTracker()]):
        assert len(decisions_of(dspy.Predict("question -> answer")(question="hi"))) == 1


@pytest.mark.parametrize(
    ("value", "score"),
    [(True, 1.0), (False, 0.0), (0.25, 0.25), (1, 1.0), ({"score": 0.5}, 0.5), (dspy.Prediction(score=0.75), 0.75)],
)
def test_score_of_accepts_what_dspy_metrics_return(value: Any, score: float) -> None:
    assert score_of(value) == score


@pytest.mark.parametrize("value", [3.0, -0.1, float("nan"), "good", None])
def test_score_of_refuses_what_is_not_a_score(value: Any) -> None:
    with pytest.raises(UserError, match="to_score="):
        score_of(value)


def test_to_score_maps_other_scales(tracked: Any, router: RecordingRouter) -> None:
    prediction = dspy.Predict("question -> answer")(question="What is 1 + 1?")
    metric = report_metric(lambda example, prediction: 7, to_score=lambda value: value / 10)
    assert metric(dspy.Example(), prediction) == 7
    assert [r.score for r in router.reports] == [0.7]
