"""Fixtures shared by every package's tests.

Every test runs with its own default database and spool (``KALIBR_DB``, ``KALIBR_SPOOL`` in a temporary folder),
no intelligence URL and no provider keys from the developer's environment, and the process-wide shared engines are
reset afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from kalibr.sandbox import SandboxServer

_ENV_TO_CLEAR = (
    "KALIBR_INTELLIGENCE_URL",
    "KALIBR_API_KEY",
    "KALIBR_TENANT_ID",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
)


@pytest.fixture(autouse=True)
def _isolated_kalibr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("KALIBR_DB", str(tmp_path / "kalibr.db"))
    monkeypatch.setenv("KALIBR_SPOOL", str(tmp_path / "spool.db"))
    for name in _ENV_TO_CLEAR:
        monkeypatch.delenv(name, raising=False)
    yield
    from kalibr._intelligence_registry import reset_shared

    reset_shared()


@pytest.fixture(scope="session")
def sandbox() -> Iterator[SandboxServer]:
    """The sandbox with the "standard" scenario (accurate, fast models), shared by the session."""
    from kalibr.sandbox import builtin_scenario, serve

    with serve(builtin_scenario("standard"), seed=0) as server:
        yield server


@pytest.fixture
def start_sandbox() -> Iterator[Callable[..., SandboxServer]]:
    """Start a sandbox for one test: ``start_sandbox(scenario_or_name, seed=0)``; stopped after the test."""
    from contextlib import ExitStack

    from kalibr.sandbox import Scenario, builtin_scenario, serve

    with ExitStack() as stack:

        def start(scenario: Scenario | str | dict[str, Any], seed: int = 0) -> SandboxServer:
            if isinstance(scenario, str):
                scenario = builtin_scenario(scenario)
            elif isinstance(scenario, dict):
                scenario = Scenario.model_validate(scenario)
            return stack.enter_context(serve(scenario, seed=seed))

        yield start


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The PostgreSQL URL for tests that need one; skips with the reason when none is configured."""
    url = os.environ.get("KALIBR_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("PostgreSQL tests need KALIBR_TEST_POSTGRES_URL (CI sets it to the machine's server)")
    return url
