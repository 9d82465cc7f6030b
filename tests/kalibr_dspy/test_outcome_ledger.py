"""The outcome ledger: a mixed DSPy workload over real HTTP, then every decision's stored outcome is checked.

Predict, ChainOfThought, a module with several predictors (sync and async), a threaded ``dspy.Evaluate`` and
``BootstrapFewShot``, with a judge and explicit reports (one twice). Every decision must end with exactly the
outcome meant for it, read back from the SQLite store, and the store must hold no other outcome.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dspy
import pytest
from dspy.teleprompt import BootstrapFewShot
from tests.recording import stored_outcomes

import kalibr
from kalibr.sandbox import SandboxServer
from kalibr.stores.sqlite import SQLiteStore

from .conftest import DraftThenAnswer, sandbox_paths, trace_ids_by_question

GOAL = "dspy_ledger"
Expected = dict[str, tuple[str, bool, str | None, float]]  # trace id -> (source, success, category, score)


def success_when(prediction: Any) -> bool:
    """Judges a module's Prediction: right when the answer is the sum asked for."""
    return bool(prediction.answer.strip() == "5")


def weighted(example: dspy.Example, prediction: dspy.Prediction, trace: Any = None) -> float:
    return float(example.weight)


def _examples(start: int, count: int) -> list[dspy.Example]:
    return [
        dspy.Example(question=f"What is {n} + {n}?", answer=str(2 * n), weight=(n % 4 + 1) / 4).with_inputs("question")
        for n in range(start, start + count)
    ]


@pytest.fixture
def router(sandbox: SandboxServer, tmp_path: Path) -> Iterator[kalibr.Router]:
    store = SQLiteStore(tmp_path / "ledger.db")
    built = kalibr.Router(GOAL, sandbox_paths(sandbox), store=store, success_when=success_when)
    dspy.configure(lm=built.as_dspy())
    yield built
    dspy.configure(lm=None)
    store.close()


def _new_calls(lm: Any, seen: set[str]) -> list[str]:
    made = [entry["response"].id for entry in lm.history if entry["response"].id not in seen]
    seen.update(made)
    return made


async def test_every_decision_ends_with_the_outcome_meant_for_it(router: kalibr.Router) -> None:
    lm, seen, expected = dspy.settings.lm, set[str](), Expected()

    dspy.Predict("question -> answer")(question="What is 2 + 3?")  # judged on its Prediction: right
    expected.update(dict.fromkeys(_new_calls(lm, seen), ("run", True, None, 1.0)))

    dspy.ChainOfThought("question -> answer")(question="What is 2 + 2?")  # judged wrong, then reported twice
    router.report(success=False, failure_category="hallucination_detected")
    router.report(success=True, score=0.75)  # the latest report replaces the whole outcome
    expected.update(dict.fromkeys(_new_calls(lm, seen), ("explicit", True, None, 0.75)))

    DraftThenAnswer()(question="What is 2 + 3?")  # two predictors, one report for both
    router.report(success=False, failure_category="tool_error")
    steps = _new_calls(lm, seen)
    assert len(steps) == 2
    expected.update(dict.fromkeys(steps, ("explicit", False, "tool_error", 0.0)))

    await DraftThenAnswer().acall(question="What is 1 + 1?")  # judged wrong, not reported: the judge stands
    expected.update(dict.fromkeys(_new_calls(lm, seen), ("run", False, None, 0.0)))

    devset = _examples(10, 8)  # each example's metric score replaces the judge's verdict on its calls
    dspy.Evaluate(devset=devset, metric=weighted, num_threads=4)(DraftThenAnswer())
    by_question = trace_ids_by_question(lm)
    for example in devset:
        calls = [trace_id for trace_id in by_question[example.question] if trace_id not in seen]
        assert len(calls) == 2
        seen.update(calls)
        expected.update(dict.fromkeys(calls, ("explicit", example.weight >= 0.5, None, example.weight)))

    trainset = _examples(30, 4)
    BootstrapFewShot(metric=weighted, max_bootstrapped_demos=4, max_rounds=1).compile(
        dspy.Predict("question -> answer"), trainset=trainset
    )
    by_question = trace_ids_by_question(lm)
    for example in trainset:
        (call,) = by_question[example.question]
        seen.add(call)
        expected[call] = ("explicit", example.weight >= 0.5, None, example.weight)

    assert set(expected) == {entry["response"].id for entry in lm.history}, "every decision is in the ledger"
    stored = stored_outcomes(router)  # read back from the SQLite file
    assert sorted(r.trace_id for r in stored) == sorted(expected), "one outcome per decision, no other"
    assert {r.trace_id: (r.source, r.success, r.failure_category, r.score) for r in stored} == expected
