"""The store reads the dashboard renders from (buckets, latency percentiles, failure counts, recent decisions),
run against every built-in store; each answer is checked against the outcomes the test reported."""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path as FilePath

import pytest

from kalibr._domain import Decision, Outcome, Path
from kalibr._exceptions import UserError
from kalibr.policies.base import ArmState
from kalibr.stores import MemoryStore, OutcomeChanges, Store

GOAL, OTHER = "summarize", "classify"
FAST, SMART = Path("fast-model"), Path("smart-model", params={"temperature": 0.2})
START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: FilePath) -> Iterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
        return
    if request.param == "sqlite":
        from kalibr.stores.sqlite import SQLiteStore

        opened: Store = SQLiteStore(tmp_path / "kalibr.db")
        yield opened
        opened.close()
        return
    url = os.environ.get("KALIBR_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("set KALIBR_TEST_POSTGRES_URL (e.g. postgresql://postgres@127.0.0.1:5432/test) to run")
    import psycopg

    from kalibr.stores.postgres import PostgresStore

    schema = "dash_" + uuid.uuid4().hex[:12]
    opened = PostgresStore(url, schema=schema)
    yield opened
    opened.close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def counted(arm: ArmState) -> ArmState:
    return dataclasses.replace(arm, samples=arm.samples + 1)


def adjusted(arm: ArmState, old: float, new: float) -> ArmState:
    return arm


def report(store: Store, tenant: str, outcomes: list[Outcome]) -> None:
    decisions = [
        Decision(
            trace_id=o.trace_id,
            goal=o.goal,
            path=SMART if o.path_id == SMART.path_id else FAST,
            exploration=i % 3 == 0,
            reason="test",
            confidence=0.5,
            decided_at=o.reported_at - timedelta(milliseconds=5),
        )
        for i, o in enumerate(outcomes)
    ]
    store.apply_outcomes(tenant, [(o, counted) for o in outcomes], decisions)


_issued = itertools.count(0x0198_0000_0000 << 80)


def ordered_trace_id() -> str:
    """Trace ids in the order made (``new_trace_id`` orders only to the millisecond)."""
    return f"{next(_issued):032x}"


def outcome(path: Path, at: datetime, score: float, **fields: object) -> Outcome:
    return Outcome(
        goal=str(fields.pop("goal", GOAL)),
        path_id=path.path_id,
        model=path.model,
        score=score,
        trace_id=ordered_trace_id(),
        reported_at=at,
        **fields,  # type: ignore[arg-type]
    )


def sample() -> list[Outcome]:
    """Two paths over 10 minutes; the smart one fails with a category now and then; costs and latencies vary."""
    found = []
    for i in range(120):
        path = SMART if i % 3 else FAST
        failed = i % 7 == 0
        found.append(
            outcome(
                path,
                START + timedelta(seconds=5 * i),
                0.0 if failed else (1.0 if path is SMART else 0.5),
                success=not failed,
                failure_category="timeout" if failed and path is SMART else None,
                cost_usd=None if i % 10 == 0 else 0.001 * (1 + i % 4),
                latency_ms=float(10 + (i * 37) % 200),
            )
        )
    return found


def expected_buckets(outcomes: list[Outcome], since: datetime, width: float) -> dict[tuple[int, str], list[Outcome]]:
    found: dict[tuple[int, str], list[Outcome]] = {}
    for o in outcomes:
        if o.reported_at >= since:
            found.setdefault((int((o.reported_at - since).total_seconds() // width), o.path_id), []).append(o)
    return found


@pytest.mark.parametrize("width", [60.0, 120.0, 20.0, 7.5])
def test_buckets_sum_each_paths_outcomes_per_interval(store: Store, width: float) -> None:
    outcomes = sample()
    report(store, "acme", outcomes)
    report(store, "acme", [outcome(FAST, START + timedelta(minutes=1), 1.0, goal=OTHER)])
    report(store, "globex", [outcome(FAST, START, 1.0)])
    since = START + timedelta(minutes=2)
    buckets = store.outcome_buckets("acme", GOAL, since, width)
    expected = expected_buckets(outcomes, since, width)
    assert [(b.start, b.path_id) for b in buckets] == [
        (since + timedelta(seconds=index * width), path_id) for index, path_id in sorted(expected)
    ]
    for bucket in buckets:
        mine = expected[(round((bucket.start - since).total_seconds() / width), bucket.path_id)]
        costs = [o.cost_usd for o in mine if o.cost_usd is not None]
        assert bucket.goal == GOAL
        assert bucket.outcomes == len(mine)
        assert bucket.score_sum == pytest.approx(sum(o.score for o in mine))
        assert (bucket.cost_count, bucket.cost_sum) == (len(costs), pytest.approx(sum(costs)))
        assert bucket.latency_sum == pytest.approx(sum(o.latency_ms or 0 for o in mine))
    every_goal = store.outcome_buckets("acme", None, START, width)
    assert sum(b.outcomes for b in every_goal) == len(outcomes) + 1
    assert {b.goal for b in every_goal} == {GOAL, OTHER}
    assert store.outcome_buckets("acme", GOAL, START + timedelta(hours=1), width) == []


def test_buckets_of_minutes_must_be_whole_minutes_from_a_whole_minute(store: Store) -> None:
    with pytest.raises(UserError, match="whole minutes"):
        store.outcome_buckets("acme", GOAL, START, 90.0)
    with pytest.raises(UserError, match="start on a whole minute"):
        store.outcome_buckets("acme", GOAL, START + timedelta(seconds=30), 60.0)


def test_latency_percentiles_per_path_within_five_percent(store: Store) -> None:
    outcomes = sample()
    report(store, "acme", outcomes)
    found = store.latency_percentiles("acme", GOAL, START)
    assert set(found) == {FAST.path_id, SMART.path_id}
    for path in (FAST, SMART):
        values = sorted(o.latency_ms for o in outcomes if o.path_id == path.path_id and o.latency_ms is not None)
        for shown, fraction in zip(found[path.path_id], (0.5, 0.95), strict=True):
            assert shown == pytest.approx(values[math.ceil(fraction * len(values)) - 1], rel=0.05)
    assert store.latency_percentiles("globex", GOAL, START) == {}
    assert store.latency_percentiles("acme", GOAL, START + timedelta(hours=1)) == {}


def test_the_rollups_follow_late_updates_and_pruning(store: Store) -> None:
    outcomes = sample()
    report(store, "acme", outcomes)
    fast = [o for o in outcomes if o.path_id == FAST.path_id]
    changed = fast[1]
    store.update_outcome("acme", changed.trace_id, OutcomeChanges(score=0.0, failure_category="timeout"), adjusted)
    (bucket,) = [b for b in store.outcome_buckets("acme", GOAL, START, 600.0) if b.path_id == FAST.path_id]
    assert bucket.score_sum == pytest.approx(sum(o.score for o in fast) - changed.score)
    assert (FAST.path_id, "timeout", 1) in store.failure_counts("acme", GOAL, START)
    store.prune(START + timedelta(minutes=5))
    kept = [o for o in outcomes if o.reported_at >= START + timedelta(minutes=5)]
    assert sum(b.outcomes for b in store.outcome_buckets("acme", GOAL, START, 60.0)) == len(kept)
    assert store.outcome_buckets("acme", GOAL, START, 60.0)[0].start == START + timedelta(minutes=5)


def test_failure_counts_per_path_and_category(store: Store) -> None:
    outcomes = sample()
    report(store, "acme", outcomes)
    timeouts = sum(1 for o in outcomes if o.failure_category == "timeout")
    assert timeouts > 0
    assert store.failure_counts("acme", GOAL, START) == [(SMART.path_id, "timeout", timeouts)]
    assert store.failure_counts("acme", OTHER, START) == []


def test_recent_decisions_newest_first_with_their_outcomes(store: Store) -> None:
    outcomes = sample()
    report(store, "acme", outcomes)
    pending = Decision(trace_id=ordered_trace_id(), goal=GOAL, path=FAST, exploration=True, reason="test", confidence=1)
    store.record_decisions("acme", [pending])
    recent = store.recent_decisions("acme", GOAL, limit=5)
    assert [d.decision.trace_id for d in recent] == [pending.trace_id] + [o.trace_id for o in reversed(outcomes[-4:])]
    assert (recent[0].outcome, recent[0].decision.exploration) == (None, True)
    last, shown = outcomes[-1], recent[1].outcome
    assert shown is not None
    assert (shown.score, shown.path_id, shown.latency_ms, shown.reported_at) == (
        last.score,
        last.path_id,
        last.latency_ms,
        last.reported_at,
    )
    smart = store.recent_decisions("acme", path_id=SMART.path_id, limit=1000)
    assert len(smart) == sum(1 for o in outcomes if o.path_id == SMART.path_id)
    failed = next(o for o in outcomes if o.failure_category)
    (one,) = store.recent_decisions("acme", trace_id=failed.trace_id)
    assert one.outcome is not None and one.decision.model == SMART.model
    assert (one.outcome.failure_category, one.outcome.success) == ("timeout", False)
    assert store.recent_decisions("globex", GOAL) == []


def test_opening_an_older_sqlite_file_fills_the_rollups_from_its_outcomes(tmp_path: FilePath) -> None:
    import sqlite3

    from kalibr.stores._sqlite_schema import MIGRATIONS, migrate
    from kalibr.stores.sqlite import SQLiteStore

    location = tmp_path / "old.db"
    conn = sqlite3.connect(location, isolation_level=None)
    migrate(conn, str(location), MIGRATIONS[:2])  # a file written before the roll-ups existed
    conn.close()
    old = SQLiteStore(location)
    outcomes = sample()
    report(old, "acme", outcomes)
    old.close()
    conn = sqlite3.connect(location, isolation_level=None)
    conn.execute("DROP TRIGGER outcomes_rollup_insert")
    conn.execute("DELETE FROM outcome_minutes")
    conn.execute("DELETE FROM outcome_details")
    conn.execute("DELETE FROM schema_version")
    conn.execute("INSERT INTO schema_version VALUES (2)")
    for table in ("outcome_minutes", "outcome_details"):
        conn.execute(f"DROP TABLE {table}")
    for trigger in ("outcomes_rollup_update", "outcomes_rollup_delete"):
        conn.execute(f"DROP TRIGGER {trigger}")
    conn.close()

    reopened = SQLiteStore(location)
    assert sum(b.outcomes for b in reopened.outcome_buckets("acme", GOAL, START, 60.0)) == len(outcomes)
    timeouts = sum(1 for o in outcomes if o.failure_category == "timeout")
    assert reopened.failure_counts("acme", GOAL, START) == [(SMART.path_id, "timeout", timeouts)]
    reopened.close()
