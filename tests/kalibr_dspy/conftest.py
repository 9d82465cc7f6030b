"""Fixtures for the DSPy adapter. DSPy's disk cache goes to a temporary folder, never the user's."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

# Before dspy is imported: it opens its cache folder at import time, and would fetch a price list online.
os.environ.setdefault("DSPY_CACHEDIR", tempfile.mkdtemp(prefix="kalibr-dspy-cache-"))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "true")

import dspy
import pytest
from tests.recording import RecordingRouter

if TYPE_CHECKING:
    from kalibr.sandbox import SandboxServer


def sandbox_paths(sandbox: SandboxServer, *models: str) -> list[dict[str, Any]]:
    return [{"model": name, "base_url": sandbox.openai_base_url} for name in models or ("sandbox-mini",)]


class DraftThenAnswer(dspy.Module):  # type: ignore[misc]  # dspy ships no type information
    """A module with several predictors, as DSPy's tutorials write them: two routed calls per question."""

    def __init__(self) -> None:
        super().__init__()
        self.draft = dspy.Predict("question -> answer")
        self.answer = dspy.ChainOfThought("question, draft -> answer")

    def forward(self, question: str) -> dspy.Prediction:
        return self.answer(question=question, draft=self.draft(question=question).answer)

    async def aforward(self, question: str) -> dspy.Prediction:
        draft = await self.draft.acall(question=question)
        return await self.answer.acall(question=question, draft=draft.answer)


@pytest.fixture
def router(sandbox: SandboxServer) -> RecordingRouter:
    return RecordingRouter("dspy_contract", sandbox_paths(sandbox), store="memory:")


@pytest.fixture
def lm(router: RecordingRouter) -> Any:
    return router.as_dspy()


@pytest.fixture
def configured(lm: Any) -> Iterator[Any]:
    """DSPy configured as its documentation writes it: ``dspy.configure(lm=router.as_dspy())``."""
    dspy.configure(lm=lm)
    yield lm
    dspy.configure(lm=None)


@pytest.fixture
def warns_afresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """The adapter warns once per process; let this test see that one warning."""
    monkeypatch.setattr("kalibr_dspy._tracker._warned", False)


def trace_ids_by_question(lm: Any) -> dict[str, list[str]]:
    """From the LM's own history: the trace ids (DSPy's response ids) of the calls made for each question."""
    found: dict[str, list[str]] = {}
    for entry in lm.history:
        prompt = entry["messages"][-1]["content"]
        question = prompt.split("[[ ## question ## ]]\n", 1)[1].split("\n", 1)[0]
        found.setdefault(question, []).append(entry["response"].id)
    return found
