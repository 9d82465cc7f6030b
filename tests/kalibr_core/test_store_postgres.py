"""What only the PostgreSQL store promises: safe starts of many replicas, a refused future schema, and no lost
update when many processes report at once. Needs KALIBR_TEST_POSTGRES_URL."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from kalibr._domain import Outcome, Path, new_trace_id
from kalibr._exceptions import StoreError, UserError
from kalibr.policies.base import ArmState
from kalibr.stores import PathRecord, _postgres_schema
from kalibr.stores._postgres_schema import LATEST_VERSION

PG_URL = os.environ.get("KALIBR_TEST_POSTGRES_URL")
pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        PG_URL is None, reason="set KALIBR_TEST_POSTGRES_URL (postgresql://postgres@127.0.0.1:5432/test)"
    ),
]
FAST, SMART = Path("gpt-4o-mini"), Path("gpt-4o")


@pytest.fixture
def schema() -> Iterator[str]:
    import psycopg

    assert PG_URL is not None
    name = f"kalibr_test_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def test_replicas_starting_together_migrate_once(schema: str) -> None:
    from kalibr.stores.postgres import PostgresStore

    assert PG_URL is not None
    stores: list[PostgresStore] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            stores.append(PostgresStore(PG_URL, schema=schema, max_connections=2))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(stores) == 6
    for store in stores:
        store.close()


def test_a_schema_from_the_first_version_upgrades_and_keeps_its_data(
    schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    from kalibr.stores.postgres import PostgresStore

    assert PG_URL is not None

    def one_more(arm: ArmState) -> ArmState:
        return ArmState(arm.path_id, arm.model, successes=arm.successes + 1, samples=arm.samples + 1)

    with monkeypatch.context() as patch:
        patch.setattr(_postgres_schema, "MIGRATIONS", _postgres_schema.MIGRATIONS[:1])
        patch.setattr(_postgres_schema, "LATEST_VERSION", 1)
        old = PostgresStore(PG_URL, schema=schema)
        old.apply_outcomes("default", [(Outcome(new_trace_id(), "summarize", FAST.path_id, 1.0), one_more)])
        old.register_path("default", PathRecord("summarize", FAST, True, datetime.now(UTC)))
        old.close()
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        assert conn.execute(f'SELECT version FROM "{schema}".schema_version').fetchall() == [(1,)]
        assert conn.execute("SELECT to_regclass(%s)", (f"{schema}.events",)).fetchone() == (None,)
    upgraded = PostgresStore(PG_URL, schema=schema)
    try:
        assert upgraded.load_arms("default", "summarize", [FAST])[0].samples == 1
        assert [record.path for record in upgraded.list_paths("default", "summarize")] == [FAST]
        assert len(upgraded.outcomes("default", None, datetime.now(UTC) - timedelta(hours=1))) == 1
        upgraded.record_event("default", "summarize", "path_generated", {"path_id": FAST.path_id})
        entries = upgraded.events("default", None, datetime(2000, 1, 1, tzinfo=UTC))
        assert [e["data"] for e in entries] == [{"path_id": FAST.path_id}]
    finally:
        upgraded.close()
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        assert conn.execute(f'SELECT version FROM "{schema}".schema_version').fetchall() == [(LATEST_VERSION,)]


def test_a_schema_from_a_newer_kalibr_is_refused(schema: str) -> None:
    import psycopg

    from kalibr.stores.postgres import PostgresStore

    assert PG_URL is not None
    PostgresStore(PG_URL, schema=schema).close()
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'UPDATE "{schema}".schema_version SET version = %s', (LATEST_VERSION + 1,))
    with pytest.raises(StoreError, match=rf"schema version {LATEST_VERSION + 1}, newer .* upgrade kalibr-core"):
        PostgresStore(PG_URL, schema=schema)


def test_the_repr_hides_the_password_and_bad_schemas_are_refused() -> None:
    from kalibr.stores.postgres import PostgresStore

    with pytest.raises(UserError, match="invalid schema"):
        PostgresStore("postgresql://u:secret@127.0.0.1/test", schema="drop table;")
    store = PostgresStore.__new__(PostgresStore)
    store.url, store.schema = "postgresql://kalibr:hunter2@db:5432/kalibr", None
    assert "hunter2" not in repr(store)
    assert "kalibr:***@db" in repr(store)


_WORKER = textwrap.dedent(
    """
    import dataclasses, sys, threading
    from kalibr._domain import Outcome, Path, new_trace_id
    from kalibr.stores.postgres import PostgresStore

    def add(score):
        def step(arm):
            return dataclasses.replace(
                arm, successes=arm.successes + score, failures=arm.failures + 1 - score,
                samples=arm.samples + 1, total_samples=arm.total_samples + 1,
            )
        return step

    url, schema, threads, reports = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    store = PostgresStore(url, schema=schema, max_connections=threads)
    fast, smart = Path("gpt-4o-mini"), Path("gpt-4o")

    def report(index):
        # Batches of ten reports over both arms, in an order that differs between threads: a lock-order test.
        pair = (fast, smart) if index % 2 else (smart, fast)
        previous = []
        for _ in range(reports // 10):
            batch = [
                (Outcome(new_trace_id(), "summarize", p.path_id, 1.0, model=p.model), add(1.0))
                for _ in range(5)
                for p in pair
            ]
            store.apply_outcomes("default", batch + previous)  # re-sent outcomes must count once
            previous = batch[:2]

    sys.stdin.readline()  # start together
    workers = [threading.Thread(target=report, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    store.close()
    """
)


@pytest.mark.slow
def test_four_processes_of_eight_threads_lose_no_update(schema: str) -> None:
    from kalibr.stores.postgres import PostgresStore

    assert PG_URL is not None
    processes, threads, reports = 4, 8, 500
    PostgresStore(PG_URL, schema=schema).close()
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, PG_URL, schema, str(threads), str(reports)],
            stdin=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.close()
    assert [worker.wait(timeout=600) for worker in workers] == [0] * processes
    store = PostgresStore(PG_URL, schema=schema)
    fast, smart = store.load_arms("default", "summarize", [FAST, SMART])
    store.close()
    expected_per_arm = processes * threads * reports // 2
    assert (fast.samples, smart.samples) == (expected_per_arm, expected_per_arm)
    assert fast.successes + smart.successes == processes * threads * reports
