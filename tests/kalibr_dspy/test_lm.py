"""router.as_dspy() as DSPy's LM: Predict, ChainOfThought, ReAct, usage, history, async, cache and retries."""

from __future__ import annotations

from typing import Any

import dspy
import pytest

import kalibr
from kalibr.sandbox import SandboxServer
from kalibr_dspy import DecisionTracker, decisions_of

from .conftest import RecordingRouter, sandbox_paths


def test_is_a_dspy_lm_without_cache_or_retries(lm: Any) -> None:
    assert isinstance(lm, dspy.BaseLM)
    assert any(isinstance(callback, DecisionTracker) for callback in dspy.settings.callbacks), "installed by as_dspy"
    assert lm.model == "kalibr/dspy_contract"
    assert lm.cache is False
    assert lm.num_retries == 0


def test_predict(lm: Any) -> None:
    with dspy.context(lm=lm):
        prediction = dspy.Predict("question -> answer: int")(question="What is 2 + 3?")
    assert prediction.answer == 5


def test_configure_and_history(lm: Any) -> None:
    dspy.configure(lm=lm)
    try:
        dspy.Predict("question -> answer")(question="What is 4 + 4?")
    finally:
        dspy.configure(lm=None)
    (entry,) = lm.history
    assert entry["model"] == "kalibr/dspy_contract"
    assert "8" in entry["outputs"][0]


def test_usage_is_tracked(lm: Any) -> None:
    with dspy.context(lm=lm, track_usage=True):
        prediction = dspy.Predict("question -> answer")(question="What is 2 + 3?")
    usage = prediction.get_lm_usage()["kalibr/dspy_contract"]
    assert usage["prompt_tokens"] > 0
    assert usage["completion_tokens"] > 0


def test_chain_of_thought(lm: Any) -> None:
    with dspy.context(lm=lm):
        prediction = dspy.ChainOfThought("question -> answer: int")(question="What is 6 * 7?")
    assert prediction.answer == 42
    assert prediction.reasoning


def test_react_agent_calls_a_tool(lm: Any) -> None:
    calls: list[str] = []

    def todays_code() -> str:
        """Today's access code."""
        calls.append("todays_code")
        return "K-4242"

    # The sandbox picks a tool but does not fill DSPy's tool arguments, so the tool takes none.
    with dspy.context(lm=lm):
        prediction = dspy.ReAct("question -> answer", tools=[todays_code], max_iters=2)(question="What is the code?")
    assert calls
    assert prediction.trajectory["tool_name_0"] == "todays_code"
    assert prediction.trajectory["observation_0"] == "K-4242"
    assert prediction.answer


async def test_async_predict(lm: Any) -> None:
    with dspy.context(lm=lm):
        prediction = await dspy.Predict("question -> answer: int").acall(question="What is 2 + 3?")
    assert prediction.answer == 5


def test_every_call_reaches_the_router_even_when_identical(configured: Any) -> None:
    predict = dspy.Predict("question -> answer")
    first, second = predict(question="What is 2 + 3?"), predict(question="What is 2 + 3?")
    (one,), (two,) = decisions_of(first), decisions_of(second)
    assert one[1] != two[1], "DSPy's cache must not answer for the router"


def test_router_fallback_is_not_hidden_by_dspy_retries(sandbox: SandboxServer) -> None:
    # The first path points at a closed port: the router falls back and DSPy sees one clean answer.
    dead = {"model": "sandbox-mini", "base_url": "http://127.0.0.1:9/v1"}
    router = RecordingRouter("dspy_fallback", [dead, *sandbox_paths(sandbox, "sandbox-base")], store="memory:")
    lm = router.as_dspy()
    with dspy.context(lm=lm):
        prediction = dspy.Predict("question -> answer: int")(question="What is 2 + 3?")
    assert prediction.answer == 5
    assert lm.history[-1]["response_model"] == "sandbox-base"


def test_a_router_without_paths_that_work_raises_through_dspy(sandbox: SandboxServer) -> None:
    dead = {"model": "sandbox-mini", "base_url": "http://127.0.0.1:9/v1"}
    lm = kalibr.Router("dspy_dead", [dead], store="memory:").as_dspy()
    with dspy.context(lm=lm), pytest.raises(Exception, match="every path"):
        dspy.Predict("question -> answer")(question="hi")


def test_legacy_lm_for_dspy_before_3_4(router: RecordingRouter) -> None:
    from kalibr_dspy._legacy import LegacyRouterLM

    lm = LegacyRouterLM(router)
    with dspy.context(lm=lm), pytest.warns(DeprecationWarning, match="forward"):
        prediction = dspy.Predict("question -> answer: int")(question="What is 2 + 3?")
    assert prediction.answer == 5
    assert len(decisions_of(prediction)) == 1
