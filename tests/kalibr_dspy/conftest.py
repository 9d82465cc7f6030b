"""Fixtures for the DSPy adapter. DSPy's disk cache goes to a temporary folder, never the user's."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

# Before dspy is imported: it opens its cache folder at import time, and would fetch a price list online.
os.environ.setdefault("DSPY_CACHEDIR", tempfile.mkdtemp(prefix="kalibr-dspy-cache-"))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "true")

import dspy
import pytest

import kalibr
from kalibr_dspy import DecisionTracker

if TYPE_CHECKING:
    from kalibr.sandbox import SandboxServer


@dataclass(frozen=True)
class Report:
    trace_id: str
    success: bool | None
    score: float | None
    failure_category: str | None


class RecordingRouter(kalibr.Router):
    """A router that also keeps every explicit report, so tests can see what the adapter reported."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reports: list[Report] = []

    def report(self, *args: Any, **kwargs: Any) -> None:
        assert not args, "the adapter reports with keywords"
        fields = (kwargs.get("trace_id") or "", kwargs.get("success"), kwargs.get("score"))
        self.reports.append(Report(*fields, kwargs.get("failure_category")))
        super().report(**kwargs)


def sandbox_paths(sandbox: SandboxServer, *models: str) -> list[dict[str, Any]]:
    return [{"model": name, "base_url": sandbox.openai_base_url} for name in models or ("sandbox-mini",)]


@pytest.fixture
def router(sandbox: SandboxServer) -> RecordingRouter:
    return RecordingRouter("dspy_contract", sandbox_paths(sandbox), store="memory:")


@pytest.fixture
def lm(router: RecordingRouter) -> Any:
    return router.as_dspy()


@pytest.fixture
def tracked(lm: Any) -> Any:
    """DSPy configured (for this thread and its workers) with the router's LM and a DecisionTracker."""
    with dspy.context(lm=lm, callbacks=[DecisionTracker()]):
        yield lm
