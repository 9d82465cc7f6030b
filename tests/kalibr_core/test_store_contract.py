"""The Store contract, run against every built-in store: memory, SQLite and (when configured) PostgreSQL."""

from __future__ import annotations

import dataclasses
import math
import os
import random
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Protocol, runtime_checkable

import pytest

from kalibr._domain import Decision, Outcome, Path, Usage, new_trace_id
from kalibr._exceptions import UserError
from kalibr.policies import ThompsonPolicy
from kalibr.policies.base import ArmState, PolicyConfig
from kalibr.stores import MemoryStore, OutcomeChanges, PathRecord, Store
from kalibr.stores._records import MAX_REASON_CHARS

PG_URL = os.environ.get("KALIBR_TEST_POSTGRES_URL")
A, B = "tenant-a", "tenant-b"
GOAL = "summarize"
FAST = Path("gpt-4o-mini")
SMART = Path("gpt-4o", params={"temperature": 0.2})


@runtime_checkable
class KeyAdmin(Store, Protocol):
    """The key-management methods every built-in store has beyond the protocol (for `kalibr keys`)."""

    def list_api_keys(self, tenant: str | None) -> list[tuple[str, str, datetime]]: ...

    def revoke_api_key(self, key_hash: str) -> bool: ...


def count(score: float) -> Callable[[ArmState], ArmState]:
    def step(arm: ArmState) -> ArmState:
        return dataclasses.replace(
            arm,
            successes=arm.successes + score,
            failures=arm.failures + 1 - score,
            samples=arm.samples + 1,
            total_samples=arm.total_samples + 1,
        )

    return step


def replace_score(arm: ArmState, old: float, new: float) -> ArmState:
    return dataclasses.replace(arm, successes=arm.successes - old + new, failures=arm.failures + old - new)


def outcome(path: Path = FAST, score: float = 1.0, goal: str = GOAL, **fields: object) -> Outcome:
    fields.setdefault("trace_id", new_trace_id())
    return Outcome(goal=goal, path_id=path.path_id, model=path.model, score=score, **fields)  # type: ignore[arg-type]


def open_postgres(schema: str) -> Store:
    from kalibr.stores.postgres import PostgresStore

    assert PG_URL is not None
    return PostgresStore(PG_URL, schema=schema)


def drop_postgres_schema(schema: str) -> None:
    import psycopg

    assert PG_URL is not None
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
    elif request.param == "sqlite":
        from kalibr.stores.sqlite import SQLiteStore

        opened = SQLiteStore(f"{tmp_path}/kalibr.db")
        yield opened
        opened.close()
    else:
        if PG_URL is None:
            pytest.skip("set KALIBR_TEST_POSTGRES_URL (e.g. postgresql://postgres@127.0.0.1:5432/test) to run")
        schema = f"kalibr_test_{uuid.uuid4().hex[:12]}"
        pg_store = open_postgres(schema)
        yield pg_store
        pg_store.close()
        drop_postgres_schema(schema)


def test_load_arms_gives_fresh_arms_in_the_order_asked(store: Store) -> None:
    arms = store.load_arms(A, GOAL, [SMART, FAST])
    assert arms == [ArmState(SMART.path_id, "gpt-4o"), ArmState(FAST.path_id, "gpt-4o-mini")]


def test_update_arm_persists_every_field(store: Store) -> None:
    def warm(arm: ArmState) -> ArmState:
        return dataclasses.replace(
            arm, successes=3.5, failures=1.5, samples=5, total_samples=9, cost_sum=0.25, cost_count=5,
            latency_sum=1200.0, latency_count=4, last_outcome_at=1_700_000_000.5, extra={"drift": 0.75},
        )  # fmt: skip

    returned = store.update_arm(A, GOAL, SMART, warm)
    assert store.load_arms(A, GOAL, [FAST, SMART]) == [ArmState(FAST.path_id, "gpt-4o-mini"), returned]
    assert returned.extra == {"drift": 0.75}
    assert store.update_arm(A, GOAL, SMART, count(1.0)).samples == 6


def test_apply_outcomes_counts_each_trace_once(store: Store) -> None:
    first, second = outcome(score=1.0), outcome(score=0.25)
    applied = store.apply_outcomes(A, [(first, count(1.0)), (second, count(0.25)), (first, count(1.0))])
    assert applied == [True, True, False]
    assert store.apply_outcomes(A, [(second, count(0.25))]) == [False]
    (arm,) = store.load_arms(A, GOAL, [FAST])
    assert (arm.successes, arm.failures, arm.samples, arm.total_samples) == (1.25, 0.75, 2, 2)


def test_apply_outcomes_steps_see_the_arm_left_by_earlier_items(store: Store) -> None:
    seen: list[int] = []

    def spy(arm: ArmState) -> ArmState:
        seen.append(arm.samples)
        return count(1.0)(arm)

    store.apply_outcomes(A, [(outcome(), spy) for _ in range(5)])
    assert seen == [0, 1, 2, 3, 4]


def test_apply_outcomes_stores_metadata(store: Store) -> None:
    store.register_path(A, PathRecord(GOAL, SMART, True, datetime.now(UTC)))
    long_reason = "x" * (MAX_REASON_CHARS + 50)
    reported = outcome(
        SMART, score=0.0, success=False, failure_category="timeout", reason=long_reason, cost_usd=0.002,
        latency_ms=812.5, usage=Usage(120, 30), source="error",
    )  # fmt: skip
    store.apply_outcomes(A, [(reported, count(0.0))])
    (record,) = store.outcomes(A, GOAL, datetime.now(UTC) - timedelta(minutes=1))
    assert (record.trace_id, record.path_id, record.model, record.score) == (
        reported.trace_id,
        SMART.path_id,
        "gpt-4o",
        0,
    )
    assert (record.success, record.failure_category, record.source) == (False, "timeout", "error")
    assert (record.cost_usd, record.latency_ms, record.input_tokens, record.output_tokens) == (0.002, 812.5, 120, 30)
    assert record.reason == "x" * MAX_REASON_CHARS
    assert record.reported_at == reported.reported_at
    assert record.reported_at.tzinfo is not None
    assert record.params == {"temperature": 0.2}


def test_a_reason_with_a_nul_character_is_stored_without_it(store: Store) -> None:
    reported = outcome(reason="bad\x00byte")
    assert store.apply_outcomes(A, [(reported, count(0.0))]) == [True]
    (stored,) = store.outcomes(A, GOAL, datetime.now(UTC) - timedelta(hours=1))
    assert stored.reason == "badbyte"


def test_update_outcome_changes_only_given_fields_and_adjusts_on_score(store: Store) -> None:
    reported = outcome(score=0.0, success=False, failure_category="timeout", reason="slow")
    store.apply_outcomes(A, [(reported, count(0.0))])
    calls: list[tuple[float, float]] = []

    def adjust(arm: ArmState, old: float, new: float) -> ArmState:
        calls.append((old, new))
        return replace_score(arm, old, new)

    record = store.update_outcome(A, reported.trace_id, OutcomeChanges(reason="late"), adjust)
    assert record is not None
    assert (record.score, record.success, record.failure_category, record.reason) == (0.0, False, "timeout", "late")
    assert calls == []
    record = store.update_outcome(A, reported.trace_id, OutcomeChanges(score=1.0, success=True), adjust)
    assert record is not None
    assert (record.score, record.success, record.failure_category, record.reason) == (1.0, True, "timeout", "late")
    assert calls == [(0.0, 1.0)]
    (arm,) = store.load_arms(A, GOAL, [FAST])
    assert (arm.successes, arm.failures) == (1.0, 0.0)
    assert store.outcomes(A, GOAL, reported.reported_at)[0].score == 1.0


def test_a_replacing_change_clears_what_it_does_not_give_and_stores_its_source(store: Store) -> None:
    reported = outcome(score=0.0, success=False, failure_category="hallucination_detected", reason="made it up")
    store.apply_outcomes(A, [(reported, count(0.0))])
    replaced = OutcomeChanges(score=0.1, success=True, replace=True, source="explicit")
    record = store.update_outcome(A, reported.trace_id, replaced, replace_score)
    assert record is not None
    (stored,) = store.outcomes(A, GOAL, reported.reported_at)
    for found in (record, stored):
        assert (found.score, found.success, found.failure_category, found.reason) == (0.1, True, None, None)
        assert found.source == "explicit"
    (arm,) = store.load_arms(A, GOAL, [FAST])
    assert (arm.successes, arm.failures) == pytest.approx((0.1, 0.9))  # counted once, with the new score


def test_update_outcome_of_unknown_trace_is_none(store: Store) -> None:
    assert store.update_outcome(A, new_trace_id(), OutcomeChanges(score=1.0), replace_score) is None


def test_outcomes_window_goal_filter_and_order(store: Store) -> None:
    now = datetime.now(UTC)
    old = outcome(reported_at=now - timedelta(hours=5))
    newer = outcome(reported_at=now - timedelta(hours=1))
    newest = outcome(reported_at=now)
    other_goal = outcome(goal="translate", reported_at=now - timedelta(minutes=30))
    store.apply_outcomes(A, [(item, count(1.0)) for item in (newest, old, other_goal, newer)])
    since = now - timedelta(hours=2)
    assert [r.trace_id for r in store.outcomes(A, GOAL, since)] == [newer.trace_id, newest.trace_id]
    everything = [r.trace_id for r in store.outcomes(A, None, since)]
    assert everything == [newer.trace_id, other_goal.trace_id, newest.trace_id]
    with pytest.raises(UserError, match="timezone-aware"):
        store.outcomes(A, GOAL, datetime(2024, 1, 1))


def columns_as_rows(store: Store, tenant: str, goal: str, since: datetime) -> list[tuple[object, ...]]:
    """The store's columnar read, row by row, in the fields ``outcome_rows`` gives."""
    found = store.outcome_columns(tenant, goal, since)
    rows = []
    for i in range(len(found)):
        category = int(found.category[i])
        rows.append(
            (
                found.path_ids[int(found.path[i])],
                float(found.score[i]),
                None if math.isnan(found.cost_usd[i]) else float(found.cost_usd[i]),
                None if math.isnan(found.latency_ms[i]) else float(found.latency_ms[i]),
                None if category < 0 else found.categories[category],
                bool(found.provider_failed[i]),
                int(found.reported_at[i]),
            )
        )
    return rows


def outcome_rows(store: Store, tenant: str, goal: str, since: datetime) -> list[tuple[object, ...]]:
    return [
        (
            r.path_id,
            r.score,
            r.cost_usd,
            r.latency_ms,
            r.failure_category,
            r.source == "error",
            round((r.reported_at - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1)),
        )
        for r in store.outcomes(tenant, goal, since)
    ]


def test_outcome_columns_hold_the_window_of_outcomes_oldest_first(store: Store) -> None:
    rng = random.Random(7)
    now = datetime.now(UTC).replace(microsecond=0)
    paths = [FAST, SMART, Path("claude-3-5-haiku")]
    items = []
    for i in range(300):
        failed = rng.random() < 0.3
        # Out of order, with ties: the read sorts by report time, ties in arrival order.
        at = now - timedelta(seconds=rng.randrange(120))
        reported = outcome(
            rng.choice(paths),
            score=rng.choice([0.0, 0.25, 0.85, 1.0]),
            goal=GOAL if i % 10 else "translate",
            failure_category=rng.choice(["timeout", "provider_error", None]) if failed else None,
            cost_usd=rng.choice([None, 0.002, 0.0001]),
            latency_ms=rng.choice([None, 120.5, 980.0]),
            source="error" if failed and rng.random() < 0.5 else "explicit",
            reported_at=at,
        )
        items.append((reported, count(reported.score)))
    for start in range(0, len(items), 50):
        store.apply_outcomes(A, items[start : start + 50])
    since = now - timedelta(seconds=60)
    expected = outcome_rows(store, A, GOAL, since)
    assert 100 < len(expected) < 270
    assert columns_as_rows(store, A, GOAL, since) == expected
    assert len(store.outcome_columns(A, "translate", since)) == len(outcome_rows(store, A, "translate", since))
    assert len(store.outcome_columns(B, GOAL, since)) == 0
    assert len(store.outcome_columns(A, "nothing-here", since)) == 0
    with pytest.raises(UserError, match="timezone-aware"):
        store.outcome_columns(A, GOAL, datetime(2024, 1, 1))


def test_outcome_columns_name_each_paths_latest_model_and_follow_updates_and_pruning(store: Store) -> None:
    now = datetime.now(UTC)
    first = outcome(FAST, score=1.0, reported_at=now - timedelta(days=40))
    renamed = dataclasses.replace(outcome(FAST, source="error", reported_at=now), model="gpt-4o-mini-2024")
    store.apply_outcomes(A, [(first, count(1.0)), (renamed, count(1.0))])
    found = store.outcome_columns(A, GOAL, now - timedelta(days=60))
    assert found.path_ids == (FAST.path_id,)
    assert found.models == ("gpt-4o-mini-2024",)
    assert found.provider_failed.tolist() == [False, True]
    changes = OutcomeChanges(score=0.0, failure_category="timeout", replace=True, source="explicit")
    store.update_outcome(A, renamed.trace_id, changes, replace_score)
    assert columns_as_rows(store, A, GOAL, now - timedelta(days=60)) == outcome_rows(
        store, A, GOAL, now - timedelta(days=60)
    )
    assert columns_as_rows(store, A, GOAL, now - timedelta(days=60))[-1][4:6] == ("timeout", False)
    store.prune(now - timedelta(days=30))
    assert [row[1] for row in columns_as_rows(store, A, GOAL, now - timedelta(days=60))] == [0.0]


def test_outcome_columns_keep_a_model_name_holding_a_control_character(store: Store) -> None:
    odd = dataclasses.replace(outcome(FAST, score=0.0, failure_category="timeout"), model="odd\x1fname")
    store.apply_outcomes(A, [(odd, count(0.0)), (outcome(SMART), count(1.0))])
    found = store.outcome_columns(A, GOAL, datetime.now(UTC) - timedelta(hours=1))
    assert dict(zip(found.path_ids, found.models, strict=True)) == {
        FAST.path_id: "odd\x1fname",
        SMART.path_id: SMART.model,
    }
    assert found.categories == ("timeout",)


def test_goals_come_from_paths_and_outcomes(store: Store) -> None:
    store.register_path(A, PathRecord("translate", FAST, True, datetime.now(UTC)))
    store.apply_outcomes(A, [(outcome(goal="classify"), count(1.0))])
    store.update_arm(A, "warm-only", FAST, count(1.0))
    assert store.goals(A) == ["classify", "translate"]


def test_register_path_is_idempotent_and_keeps_no_secret(store: Store) -> None:
    keyed = Path("gpt-4o", params={"temperature": 0.2}, provider="openai", base_url="http://gw", api_key="sk-secret")
    first = store.register_path(A, PathRecord(GOAL, keyed, True, datetime(2025, 1, 1, tzinfo=UTC), "high", "search"))
    again = store.register_path(A, PathRecord(GOAL, keyed, True, datetime(2025, 6, 1, tzinfo=UTC)))
    assert again == first
    assert first.path.api_key is None
    assert (first.path.provider, first.path.base_url, first.risk_level, first.tool_id) == (
        "openai",
        "http://gw",
        "high",
        "search",
    )
    assert first.path.path_id == keyed.path_id
    assert store.list_paths(A, GOAL) == [first]


def test_disabled_paths_are_listed_only_on_request(store: Store) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    with_tools = Path("gpt-4o", tools=tools)
    store.register_path(A, PathRecord(GOAL, FAST, True, datetime(2025, 1, 1, tzinfo=UTC)))
    store.register_path(A, PathRecord(GOAL, with_tools, True, datetime(2025, 1, 2, tzinfo=UTC)))
    store.register_path(A, PathRecord("translate", with_tools, True, datetime(2025, 1, 3, tzinfo=UTC)))
    assert store.set_path_enabled(A, with_tools.path_id, False)
    assert not store.set_path_enabled(A, SMART.path_id, False)
    assert [r.path for r in store.list_paths(A, GOAL)] == [FAST]
    listed = store.list_paths(A, None, include_disabled=True)
    assert [(r.goal, r.path.path_id, r.enabled) for r in listed] == [
        (GOAL, FAST.path_id, True), (GOAL, with_tools.path_id, False), ("translate", with_tools.path_id, False),
    ]  # fmt: skip
    assert listed[1].path.tools == tools


def test_config_falls_back_to_star_then_defaults(store: Store) -> None:
    assert store.get_config(A, GOAL) == PolicyConfig()
    store.set_config(A, "*", PolicyConfig(exploration_rate=0.3))
    assert store.get_config(A, GOAL) == PolicyConfig(exploration_rate=0.3)
    store.set_config(A, GOAL, PolicyConfig(min_samples_before_exploit=5))
    store.set_config(A, GOAL, PolicyConfig(min_samples_before_exploit=7))
    assert store.get_config(A, GOAL) == PolicyConfig(min_samples_before_exploit=7)
    assert store.get_config(A, "other") == PolicyConfig(exploration_rate=0.3)


def test_api_keys_map_to_one_tenant(store: Store) -> None:
    store.add_api_key(A, "hash-a")
    store.add_api_key(A, "hash-a")
    assert store.tenant_for_key("hash-a") == A
    assert store.tenant_for_key("hash-unknown") is None
    with pytest.raises(UserError, match="another tenant"):
        store.add_api_key(B, "hash-a")


def test_api_keys_are_listed_and_revoked(store: Store) -> None:
    assert isinstance(store, KeyAdmin)
    store.add_api_key(A, "hash-a1")
    store.add_api_key(B, "hash-b1")
    store.add_api_key(A, "hash-a2")
    assert [(tenant, key_hash) for tenant, key_hash, _ in store.list_api_keys(A)] == [(A, "hash-a1"), (A, "hash-a2")]
    assert {key_hash for _, key_hash, _ in store.list_api_keys(None)} == {"hash-a1", "hash-a2", "hash-b1"}
    assert all(created.tzinfo is not None for _, _, created in store.list_api_keys(None))
    assert store.revoke_api_key("hash-a1")
    assert not store.revoke_api_key("hash-a1")
    assert store.tenant_for_key("hash-a1") is None
    assert store.tenant_for_key("hash-a2") == A


def test_decisions_are_recorded_once(store: Store) -> None:
    decision = Decision(new_trace_id(), GOAL, SMART, exploration=True, reason="explore", confidence=0.5)
    store.record_decisions(A, [decision, decision])
    record = store.get_decision(A, decision.trace_id)
    assert record is not None
    assert (record.goal, record.path_id, record.model, record.exploration) == (GOAL, SMART.path_id, "gpt-4o", True)
    assert record.decided_at == decision.decided_at
    assert store.get_decision(A, new_trace_id()) is None


def test_apply_outcomes_records_its_decisions_in_the_same_transaction(store: Store) -> None:
    def broken(arm: ArmState) -> ArmState:
        raise RuntimeError("policy bug")

    reported = outcome()
    decision = Decision(reported.trace_id, GOAL, FAST, exploration=False, reason="best", confidence=0.9)
    with pytest.raises(RuntimeError, match="policy bug"):
        store.apply_outcomes(A, [(reported, broken)], [decision])
    assert store.get_decision(A, decision.trace_id) is None  # rolled back with the outcome
    assert store.apply_outcomes(A, [(reported, count(1.0))], [decision, decision]) == [True]
    record = store.get_decision(A, decision.trace_id)
    assert record is not None
    assert (record.goal, record.path_id) == (GOAL, FAST.path_id)
    assert store.apply_outcomes(A, [(reported, count(1.0))], [decision]) == [False]  # both idempotent


def test_prune_deletes_old_decisions_and_outcomes_of_every_tenant_and_keeps_what_was_learned(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("kalibr.stores._records.PRUNE_BATCH", 1)  # several batches, however few rows
    now = datetime.now(UTC)
    old, recent = now - timedelta(days=40), now - timedelta(days=1)
    kept = []
    for tenant in (A, B):
        for when in (old, recent):
            reported = outcome(reported_at=when)
            decision = Decision(reported.trace_id, GOAL, FAST, False, "best", 0.9, decided_at=when)
            store.apply_outcomes(tenant, [(reported, count(1.0))], [decision])
            if when == recent:
                kept.append((tenant, reported.trace_id))
        store.record_event(tenant, GOAL, "config_changed", {"exploration_rate": 0.2})
    assert store.prune(now - timedelta(days=30)) == (2, 2)
    for tenant in (A, B):
        assert [o.trace_id for o in store.outcomes(tenant, GOAL, old - timedelta(days=1))] == [
            trace_id for owner, trace_id in kept if owner == tenant
        ]
        assert store.load_arms(tenant, GOAL, [FAST])[0].samples == 2  # the learned state stays
        assert len(store.events(tenant, GOAL, old)) == 1
    assert all(store.get_decision(tenant, trace_id) is not None for tenant, trace_id in kept)
    assert store.prune(now - timedelta(days=30)) == (0, 0)


def test_model_totals_sum_over_goals(store: Store) -> None:
    store.apply_outcomes(A, [(outcome(FAST, 1.0), count(1.0)), (outcome(FAST, 0.0, goal="other"), count(0.0))])
    store.apply_outcomes(A, [(outcome(SMART, 0.5), count(0.5))])
    assert dict(store.model_totals(A)) == {"gpt-4o-mini": (1.0, 1.0), "gpt-4o": (0.5, 0.5)}


def test_model_costs_sum_the_calls_with_a_cost_over_goals(store: Store) -> None:
    def priced(cost: float | None) -> Callable[[ArmState], ArmState]:
        return partial(ThompsonPolicy().update, score=1.0, cost_usd=cost, latency_ms=None, now=0.0)

    store.apply_outcomes(A, [(outcome(FAST), priced(0.002)), (outcome(FAST, goal="other"), priced(0.004))])
    store.apply_outcomes(A, [(outcome(FAST), priced(None)), (outcome(SMART), priced(None))])
    assert dict(store.model_costs(A)) == {"gpt-4o-mini": (pytest.approx(0.006), 2)}  # no cost, no entry
    assert dict(store.model_costs(B)) == {}


def test_tenant_b_sees_nothing_of_tenant_a(store: Store) -> None:
    reported = outcome()
    decision = Decision(reported.trace_id, GOAL, FAST, exploration=False, reason="best", confidence=0.9)
    store.record_decisions(A, [decision])
    store.apply_outcomes(A, [(reported, count(1.0))])
    store.register_path(A, PathRecord(GOAL, FAST, True, datetime.now(UTC)))
    store.set_config(A, GOAL, PolicyConfig(exploration_rate=0.5))
    store.add_api_key(A, "hash-a")
    since = datetime.now(UTC) - timedelta(days=1)
    assert store.load_arms(B, GOAL, [FAST]) == [ArmState(FAST.path_id, "gpt-4o-mini")]
    assert store.get_decision(B, reported.trace_id) is None
    assert store.outcomes(B, None, since) == []
    assert store.goals(B) == []
    assert store.list_paths(B, None, include_disabled=True) == []
    assert not store.set_path_enabled(B, FAST.path_id, False)
    assert store.get_config(B, GOAL) == PolicyConfig()
    assert dict(store.model_totals(B)) == {}
    assert store.update_outcome(B, reported.trace_id, OutcomeChanges(score=0.0), replace_score) is None
    # The same trace id is a different outcome in another tenant.
    assert store.apply_outcomes(B, [(reported, count(1.0))]) == [True]
    assert store.list_paths(A, GOAL)[0].enabled


def test_a_failing_step_leaves_the_batch_unapplied(store: Store) -> None:
    def broken(arm: ArmState) -> ArmState:
        raise RuntimeError("policy bug")

    first = outcome()
    with pytest.raises(RuntimeError, match="policy bug"):
        store.apply_outcomes(A, [(first, count(1.0)), (outcome(), broken)])
    assert store.load_arms(A, GOAL, [FAST])[0].samples == 0
    assert store.apply_outcomes(A, [(first, count(1.0))]) == [True]


def test_sixteen_threads_lose_no_update(store: Store) -> None:
    per_thread = 200

    def report(index: int) -> None:
        for i in range(per_thread):
            path = FAST if i % 2 else SMART
            store.apply_outcomes(
                A, [(outcome(path, score=1.0 if index % 4 else 0.0), count(1.0 if index % 4 else 0.0))]
            )

    threads = [threading.Thread(target=report, args=(index,)) for index in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    fast, smart = store.load_arms(A, GOAL, [FAST, SMART])
    assert fast.samples == smart.samples == 16 * per_thread // 2
    assert fast.successes + smart.successes == 12 * per_thread
    assert len(store.outcomes(A, GOAL, datetime.now(UTC) - timedelta(hours=1))) == 16 * per_thread


LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)


def at_of(entry: dict[str, object]) -> datetime:
    stamp = datetime.fromisoformat(str(entry["at"]))
    assert stamp.utcoffset() == timedelta(0)
    return stamp


def test_events_come_back_oldest_first_as_recorded(store: Store) -> None:
    store.record_event(A, GOAL, "path_generated", {"path_id": "p1", "params": {"temperature": 0.5}, "ids": ("a",)})
    store.record_event(A, "translate", "config_changed", {"exploration_rate": 0.2})
    store.record_event(A, GOAL, "path_retired", {"path_id": "p1", "rate": 0.41})
    entries = store.events(A, None, LONG_AGO)
    assert [(e["goal"], e["kind"]) for e in entries] == [
        (GOAL, "path_generated"), ("translate", "config_changed"), (GOAL, "path_retired"),
    ]  # fmt: skip
    # Data comes back as plain JSON values: a tuple is a list, as it would be after a restart.
    assert entries[0]["data"] == {"path_id": "p1", "params": {"temperature": 0.5}, "ids": ["a"]}
    stamps = [at_of(e) for e in entries]
    assert stamps == sorted(stamps)
    assert datetime.now(UTC) - stamps[0] < timedelta(hours=1)
    assert set(entries[0]) == {"at", "goal", "kind", "data"}


def test_events_filter_by_goal(store: Store) -> None:
    store.record_event(A, GOAL, "path_generated", {"path_id": "p1"})
    store.record_event(A, "translate", "path_generated", {"path_id": "p2"})
    store.record_event(A, GOAL, "path_retired", {"path_id": "p1"})
    assert [(e["kind"], e["data"]) for e in store.events(A, GOAL, LONG_AGO)] == [
        ("path_generated", {"path_id": "p1"}), ("path_retired", {"path_id": "p1"}),
    ]  # fmt: skip
    assert [e["data"] for e in store.events(A, "translate", LONG_AGO)] == [{"path_id": "p2"}]
    assert store.events(A, "classify", LONG_AGO) == []


def test_events_filter_by_since(store: Store) -> None:
    store.record_event(A, GOAL, "path_generated", {"path_id": "p1"})
    (first,) = store.events(A, GOAL, LONG_AGO)
    first_at = at_of(first)
    while datetime.now(UTC) <= first_at:  # the next entry must get a later stamp than the first
        pass
    store.record_event(A, GOAL, "path_retired", {"path_id": "p1"})
    assert [e["kind"] for e in store.events(A, GOAL, first_at)] == ["path_generated", "path_retired"]
    assert [e["kind"] for e in store.events(A, None, first_at + timedelta(microseconds=1))] == ["path_retired"]
    assert store.events(A, None, datetime.now(UTC) + timedelta(hours=1)) == []
    with pytest.raises(UserError, match="timezone-aware"):
        store.events(A, GOAL, datetime(2024, 1, 1))


def test_events_are_kept_per_tenant(store: Store) -> None:
    store.record_event(A, GOAL, "path_generated", {"path_id": "from-a"})
    assert store.events(B, None, LONG_AGO) == []
    assert store.events(B, GOAL, LONG_AGO) == []
    store.record_event(B, GOAL, "path_generated", {"path_id": "from-b"})
    assert [e["data"] for e in store.events(A, GOAL, LONG_AGO)] == [{"path_id": "from-a"}]
    assert [e["data"] for e in store.events(B, None, LONG_AGO)] == [{"path_id": "from-b"}]


@pytest.mark.parametrize(
    ("goal", "kind", "data", "problem"),
    [
        (GOAL, "path_generated", {"when": datetime(2025, 1, 1, tzinfo=UTC)}, "JSON-serialisable"),
        (GOAL, "path_generated", {"rate": float("nan")}, "JSON-serialisable"),
        (GOAL, "path_generated", ["p1"], "must be a mapping"),
        (GOAL, "path_generated", {"completion": "x" * 20_000}, "never prompt or completion text"),
        (GOAL, "", {}, "needs a goal and a kind"),
        ("", "path_generated", {}, "needs a goal and a kind"),
    ],
)
def test_events_refuse_what_is_not_small_json_metadata(
    store: Store, goal: str, kind: str, data: object, problem: str
) -> None:
    with pytest.raises(UserError, match=problem):
        store.record_event(A, goal, kind, data)  # type: ignore[arg-type]
    assert store.events(A, None, LONG_AGO) == []


def test_events_from_eight_threads_are_all_kept_in_time_order(store: Store) -> None:
    def record(index: int) -> None:
        for i in range(25):
            store.record_event(A, GOAL, "path_generated", {"thread": index, "i": i})

    threads = [threading.Thread(target=record, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    entries = store.events(A, GOAL, LONG_AGO)
    expected = [(thread, i) for thread in range(8) for i in range(25)]
    assert sorted((e["data"]["thread"], e["data"]["i"]) for e in entries) == expected
    stamps = [at_of(e) for e in entries]
    assert stamps == sorted(stamps)
    for index in range(8):  # each thread's entries keep their order
        assert [e["data"]["i"] for e in entries if e["data"]["thread"] == index] == list(range(25))
