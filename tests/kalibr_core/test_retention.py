"""Retention: `kalibr prune`, `kalibr serve --retention-days`, and a pruning job that outlives store failures."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path as FilePath

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from kalibr import Decision, Outcome, Path
from kalibr._domain import new_trace_id
from kalibr.cli import cli
from kalibr.policies.base import ArmState
from kalibr.service import create_app
from kalibr.stores import MemoryStore, open_store
from kalibr.stores.base import Store
from kalibr.stores.retention import RetentionJob

GOAL = "summarize"
PATH = Path("gpt-4o-mini")


def _count(arm: ArmState) -> ArmState:
    return ArmState(arm.path_id, arm.model, arm.successes + 1, arm.failures, arm.samples + 1, arm.total_samples + 1)


def _report(store: Store, days_ago: float) -> str:
    when = datetime.now(UTC) - timedelta(days=days_ago)
    trace_id = new_trace_id()
    decision = Decision(trace_id, GOAL, PATH, False, "best", 0.9, decided_at=when)
    outcome = Outcome(trace_id, GOAL, PATH.path_id, 1.0, model=PATH.model, reported_at=when)
    store.apply_outcomes("default", [(outcome, _count)], [decision])
    return trace_id


def _trace_ids(store: Store) -> list[str]:
    return [o.trace_id for o in store.outcomes("default", GOAL, datetime.now(UTC) - timedelta(days=365))]


def test_prune_command_deletes_what_is_older_than_the_days_given(tmp_path: FilePath) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    store = open_store(url)
    _report(store, days_ago=45)
    recent = _report(store, days_ago=2)
    store.close()

    result = CliRunner().invoke(cli, ["prune", "--older-than-days", "30", "--store", url])
    assert result.exit_code == 0, result.output
    assert "pruned 1 decisions and 1 outcomes older than 30 days" in result.output
    store = open_store(url)
    assert _trace_ids(store) == [recent]
    assert store.load_arms("default", GOAL, [PATH])[0].samples == 2
    store.close()


def test_prune_command_refuses_a_retention_that_is_not_positive(tmp_path: FilePath) -> None:
    result = CliRunner().invoke(cli, ["prune", "--older-than-days", "0", "--store", f"sqlite:///{tmp_path / 'k.db'}"])
    assert result.exit_code == 2
    assert "--older-than-days" in result.output


def test_serve_with_retention_prunes_at_start() -> None:
    store = MemoryStore()
    _report(store, days_ago=10)
    recent = _report(store, days_ago=0)
    with TestClient(create_app(store, auth=False, retention_days=7)):
        deadline = time.monotonic() + 10
        while len(_trace_ids(store)) > 1 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert _trace_ids(store) == [recent]


def test_the_job_outlives_a_failing_store(caplog: pytest.LogCaptureFixture) -> None:
    class FlakyStore(MemoryStore):
        failures = 2

        def prune(self, before: datetime) -> tuple[int, int]:
            if self.failures:
                self.failures -= 1
                raise OSError("database is down")
            return super().prune(before)

    store = FlakyStore()
    _report(store, days_ago=10)
    job = RetentionJob(store, days=7, every=0.01)
    job.start()
    deadline = time.monotonic() + 10
    while _trace_ids(store) and time.monotonic() < deadline:
        time.sleep(0.01)
    job.stop()
    assert _trace_ids(store) == []
    assert caplog.text.count("pruning failed") == 2
