"""Fixtures for the LangChain adapter's tests: sandbox paths, a two-model learning scenario, stored outcomes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

import kalibr
from kalibr.sandbox import SandboxServer
from kalibr.stores.base import OutcomeRecord

LEARNING_SCENARIO: dict[str, Any] = {
    "name": "langchain-learning",
    "models": {
        "weak-model": {"accuracy": 0.25},
        "strong-model": {"accuracy": 0.95},
    },
}
"""Two models, one of which usually gets checkable tasks (arithmetic, extraction) right."""


def sandbox_paths(server: SandboxServer, *models: str) -> list[dict[str, Any]]:
    return [{"model": model, "base_url": server.openai_base_url} for model in models]


def stored_outcomes(router: kalibr.Router) -> dict[str, OutcomeRecord]:
    """The outcomes the router's embedded engine holds for its goal, by trace id."""
    engine: Any = router.intelligence
    engine.flush()
    since = datetime(2000, 1, 1, tzinfo=UTC)
    return {record.trace_id: record for record in engine.store.outcomes(engine.tenant, router.goal, since)}


def share_of(models: list[str], model: str) -> float:
    return sum(1 for name in models if name == model) / len(models)


@pytest.fixture
def learning_sandbox(start_sandbox: Callable[..., SandboxServer]) -> SandboxServer:
    return start_sandbox(LEARNING_SCENARIO, seed=7)
