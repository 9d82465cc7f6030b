"""What only the SQLite store promises: a file that persists, migrates, refuses the future and shares well."""

from __future__ import annotations

import dataclasses
import functools
import gc
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path as FilePath

import pytest

from kalibr._domain import Outcome, Path, new_trace_id
from kalibr._exceptions import StoreError, UserError
from kalibr.policies.base import ArmState, PolicyConfig
from kalibr.stores import PathRecord, _sqlite_schema
from kalibr.stores._sqlite_schema import LATEST_VERSION
from kalibr.stores.sqlite import SQLiteStore, sqlite_path_from_url

TENANT, GOAL = "default", "summarize"
FAST = Path("gpt-4o-mini")


def add_one(arm: ArmState) -> ArmState:
    return dataclasses.replace(
        arm, successes=arm.successes + 1, samples=arm.samples + 1, total_samples=arm.total_samples + 1
    )


def report(store: SQLiteStore) -> None:
    store.apply_outcomes(TENANT, [(Outcome(new_trace_id(), GOAL, FAST.path_id, 1.0, model=FAST.model), add_one)])


def test_everything_survives_reopening(tmp_path: FilePath) -> None:
    location = tmp_path / "nested" / "kalibr.db"
    store = SQLiteStore(location)
    report(store)
    store.register_path(TENANT, PathRecord(GOAL, FAST, True, datetime.now(UTC)))
    store.set_config(TENANT, "*", PolicyConfig(exploration_rate=0.2))
    store.close()
    reopened = SQLiteStore(location)
    assert reopened.load_arms(TENANT, GOAL, [FAST])[0].samples == 1
    assert [record.path for record in reopened.list_paths(TENANT, GOAL)] == [FAST]
    assert reopened.get_config(TENANT, GOAL).exploration_rate == 0.2
    reopened.close()


def test_the_file_uses_wal_and_records_its_schema_version(tmp_path: FilePath) -> None:
    SQLiteStore(tmp_path / "kalibr.db").close()
    with sqlite3.connect(tmp_path / "kalibr.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(LATEST_VERSION,)]
    conn.close()


def test_a_file_from_the_first_schema_upgrades_and_keeps_its_data(
    tmp_path: FilePath, monkeypatch: pytest.MonkeyPatch
) -> None:
    location = tmp_path / "kalibr.db"
    first_only = functools.partial(_sqlite_schema.migrate, migrations=_sqlite_schema.MIGRATIONS[:1])
    with monkeypatch.context() as patch:
        patch.setattr("kalibr.stores.sqlite.migrate", first_only)
        old = SQLiteStore(location)
        report(old)
        old.register_path(TENANT, PathRecord(GOAL, FAST, True, datetime.now(UTC)))
        old.close()
    with sqlite3.connect(location) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'events'").fetchall() == []
    conn.close()
    upgraded = SQLiteStore(location)
    assert upgraded.load_arms(TENANT, GOAL, [FAST])[0].samples == 1
    assert [record.path for record in upgraded.list_paths(TENANT, GOAL)] == [FAST]
    assert len(upgraded.outcomes(TENANT, GOAL, datetime.now(UTC) - timedelta(hours=1))) == 1
    upgraded.record_event(TENANT, GOAL, "path_generated", {"path_id": FAST.path_id})
    upgraded.close()
    reopened = SQLiteStore(location)
    assert [e["data"] for e in reopened.events(TENANT, GOAL, datetime(2000, 1, 1, tzinfo=UTC))] == [
        {"path_id": FAST.path_id}
    ]
    reopened.close()
    with sqlite3.connect(location) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(LATEST_VERSION,)]
    conn.close()


def test_a_file_from_before_the_covering_index_gets_it_and_reads_the_same_columns(
    tmp_path: FilePath, monkeypatch: pytest.MonkeyPatch
) -> None:
    location = tmp_path / "kalibr.db"
    before = functools.partial(_sqlite_schema.migrate, migrations=_sqlite_schema.MIGRATIONS[:3])
    since = datetime.now(UTC) - timedelta(hours=1)
    with monkeypatch.context() as patch:
        patch.setattr("kalibr.stores.sqlite.migrate", before)
        old = SQLiteStore(location)
        for _ in range(3):
            report(old)
        written = old.outcomes(TENANT, GOAL, since)
        old.close()
    upgraded = SQLiteStore(location)
    read = upgraded.outcome_columns(TENANT, GOAL, since)
    report(upgraded)
    assert len(upgraded.outcome_columns(TENANT, GOAL, since)) == 4
    upgraded.close()
    assert (read.path_ids, read.models, read.score.tolist()) == ((FAST.path_id,), (FAST.model,), [1.0, 1.0, 1.0])
    assert read.reported_at.tolist() == [round(r.reported_at.timestamp() * 1e6) for r in written]
    with sqlite3.connect(location) as conn:
        indexes = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE tbl_name = 'outcomes'")}
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT path_id, model, score, cost_usd, latency_ms, failure_category, source "
            "FROM outcomes WHERE tenant = ? AND goal = ? AND reported_at >= ? ORDER BY reported_at, id",
            (TENANT, GOAL, 0),
        ).fetchall()
    conn.close()
    assert "outcomes_by_goal_time_covering" in indexes
    assert "outcomes_by_goal_time" not in indexes  # the wider index serves its reads
    assert "USING COVERING INDEX outcomes_by_goal_time_covering" in " ".join(str(step) for step in plan)
    assert "TEMP B-TREE" not in " ".join(str(step) for step in plan)  # time order without a sort


def test_a_file_from_a_newer_kalibr_is_refused_clearly(tmp_path: FilePath) -> None:
    SQLiteStore(tmp_path / "kalibr.db").close()
    with sqlite3.connect(tmp_path / "kalibr.db") as conn:
        conn.execute("UPDATE schema_version SET version = ?", (LATEST_VERSION + 1,))
    conn.close()
    with pytest.raises(StoreError, match=rf"schema version {LATEST_VERSION + 1}, newer .* upgrade kalibr-core"):
        SQLiteStore(tmp_path / "kalibr.db")


def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path: FilePath) -> None:
    (tmp_path / "notes.db").write_text("not a database, just notes " * 100)
    with pytest.raises(StoreError, match=r"notes\.db"):
        SQLiteStore(tmp_path / "notes.db")


def test_a_closed_store_says_so(tmp_path: FilePath) -> None:
    store = SQLiteStore(tmp_path / "kalibr.db")
    store.close()
    with pytest.raises(StoreError):
        store.load_arms(TENANT, GOAL, [FAST])


def test_reads_see_writes_from_another_connection(tmp_path: FilePath) -> None:
    reader, writer = SQLiteStore(tmp_path / "kalibr.db"), SQLiteStore(tmp_path / "kalibr.db")
    assert reader.load_arms(TENANT, GOAL, [FAST])[0].samples == 0
    report(writer)
    assert reader.load_arms(TENANT, GOAL, [FAST])[0].samples == 1
    report(reader)
    assert reader.load_arms(TENANT, GOAL, [FAST])[0].samples == 2
    seen: list[int] = []
    other_thread = threading.Thread(target=lambda: seen.append(reader.load_arms(TENANT, GOAL, [FAST])[0].samples))
    other_thread.start()
    other_thread.join()
    assert seen == [2]
    reader.close()
    writer.close()


@pytest.mark.skipif(not FilePath("/proc/self/fd").is_dir(), reason="counts open files through /proc (Linux)")
def test_a_finished_thread_releases_its_connection(tmp_path: FilePath) -> None:
    location = tmp_path / "kalibr.db"
    store = SQLiteStore(location)

    def open_handles() -> int:
        links = (FilePath("/proc/self/fd") / name for name in os.listdir("/proc/self/fd"))
        return sum(1 for link in links if str(location) in os.path.realpath(link))

    def read_in_threads(count: int) -> int:
        for _ in range(count):
            worker = threading.Thread(target=lambda: store.load_arms(TENANT, GOAL, [FAST]))
            worker.start()
            worker.join()
        gc.collect()
        return open_handles()

    # SQLite may keep one closed handle per file for reuse; what matters is that handles do not grow with threads.
    assert read_in_threads(3) == read_in_threads(30)
    store.close()
    assert open_handles() == 0


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///abs/kalibr.db", "/abs/kalibr.db"),
        ("sqlite:relative.db", "relative.db"),
        ("sqlite://relative.db", "relative.db"),
        ("data/kalibr.db", "data/kalibr.db"),
    ],
)
def test_sqlite_urls_name_files(url: str, expected: str) -> None:
    assert sqlite_path_from_url(url) == expected


@pytest.mark.parametrize("url", ["sqlite:", "sqlite::memory:", "sqlite:file:x?mode=memory"])
def test_sqlite_urls_without_a_file_are_refused(url: str) -> None:
    with pytest.raises(UserError, match="name a file"):
        sqlite_path_from_url(url)


_WORKER = textwrap.dedent(
    """
    import dataclasses, sys
    from kalibr._domain import Outcome, Path, new_trace_id
    from kalibr.stores.sqlite import SQLiteStore

    def add_one(arm):
        return dataclasses.replace(arm, successes=arm.successes + 1, samples=arm.samples + 1)

    store = SQLiteStore(sys.argv[1])
    path = Path("gpt-4o-mini")
    sys.stdin.readline()  # start together
    for _ in range(int(sys.argv[2])):
        outcome = Outcome(new_trace_id(), "summarize", path.path_id, 1.0, model=path.model)
        store.apply_outcomes("default", [(outcome, add_one)])
    store.close()
    """
)


def test_four_processes_on_one_file_lose_no_update(tmp_path: FilePath) -> None:
    location = str(tmp_path / "shared.db")
    workers = [
        subprocess.Popen([sys.executable, "-c", _WORKER, location, "50"], stdin=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.close()
    assert [worker.wait(timeout=120) for worker in workers] == [0, 0, 0, 0]
    store = SQLiteStore(location)
    (arm,) = store.load_arms(TENANT, GOAL, [FAST])
    assert (arm.samples, arm.successes) == (200, 200.0)
    store.close()
