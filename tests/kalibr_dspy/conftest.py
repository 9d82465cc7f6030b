"""Fixtures for the DSPy adapter. DSPy's disk cache goes to a temporary folder, never the user's."""

from __future__ import annotations

import os
import tempfile
from typing import TYPE_CHECKING, Any

# Before dspy is imported: it opens its cache folder at import time, and would fetch a price list online.
os.environ.setdefault("DSPY_CACHEDIR", tempfile.mkdtemp(prefix="kalibr-dspy-cache-"))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "true")

import dspy
import pytest
from tests.recording import RecordingRouter

from kalibr_dspy import DecisionTracker

if TYPE_CHECKING:
    from kalibr.sandbox import SandboxServer


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
