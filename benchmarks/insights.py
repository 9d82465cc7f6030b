"""Insights: does each signal fire on the scenario built for it and stay quiet on a healthy goal; what automatic
path generation gains on the sandbox's temperature curve; how long an insights document takes to build.
"""

from __future__ import annotations

import collections
import contextlib
import importlib
import io
import json
import logging
import os
import random
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path as FilePath
from typing import Any

from benchmarks._timing import markdown_table, time_calls

GOAL = "bench"
PG_ENV = "KALIBR_TEST_POSTGRES_URL"
NOW = datetime(2025, 6, 1, tzinfo=UTC)


def run(quick: bool) -> str:
    logging.getLogger("kalibr").setLevel(logging.ERROR)
    seeds = 10 if quick else 50
    calls = 400 if quick else 1200
    parts = [
        "## Insights and automatic path generation\n",
        _signals_section(seeds),
        _generation_section(calls),
        _timing_section(2_000 if quick else 20_000),
    ]
    text = "\n".join(parts)
    print(text)
    return text


# --- signals -----------------------------------------------------------------------------------------------------
def _feed(store: Any, model: str, rate: float, n: int, rng: random.Random, **kw: Any) -> None:
    """``n`` outcomes of one path, spread over the day before NOW, in order."""
    from kalibr._domain import Outcome, Path, new_trace_id
    from kalibr.stores import PathRecord

    path = Path(model, params=kw.pop("params", {}))
    store.register_path("default", PathRecord(GOAL, path, True, NOW - timedelta(days=2)))
    start = NOW - timedelta(hours=24) + timedelta(minutes=kw.pop("offset_minutes", 0))
    items = []
    for i in range(n):
        ok = rng.random() < rate
        outcome = Outcome(
            trace_id=new_trace_id(),
            goal=GOAL,
            path_id=path.path_id,
            model=model,
            score=float(ok),
            failure_category=None if ok else kw.get("failure", "unknown"),
            cost_usd=kw.get("cost"),
            reported_at=start + timedelta(seconds=30 * i),
        )
        items.append((outcome, lambda arm: arm))
    store.apply_outcomes("default", items)


def _healthy(store: Any, rng: random.Random) -> None:
    _feed(store, "a", 0.95, 300, rng, cost=0.001)
    _feed(store, "b", 0.94, 100, rng, cost=0.0012)


def _underperforming(store: Any, rng: random.Random) -> None:
    _feed(store, "a", 0.92, 200, rng)
    _feed(store, "b", 0.6, 200, rng)


def _timeouts(store: Any, rng: random.Random) -> None:
    _feed(store, "a", 0.95, 200, rng)
    _feed(store, "b", 0.3, 200, rng, failure="timeout")


def _temperatures(store: Any, rng: random.Random) -> None:
    _feed(store, "m", 0.9, 150, rng, params={"temperature": 0.3})
    _feed(store, "m", 0.75, 150, rng, params={"temperature": 0.9})


def _drift(after: int) -> Callable[[Any, random.Random], None]:
    def build(store: Any, rng: random.Random) -> None:
        _feed(store, "a", 0.93, 150, rng)
        _feed(store, "a", 0.3, after, rng, offset_minutes=80)

    return build


def _costly(store: Any, rng: random.Random) -> None:
    _feed(store, "a", 0.93, 300, rng, cost=0.01)
    _feed(store, "b", 0.93, 100, rng, cost=0.001)


def _new_goal(store: Any, rng: random.Random) -> None:
    _feed(store, "a", 0.9, 10, rng)


SCENARIOS: list[tuple[str, str, Callable[[Any, random.Random], None]]] = [
    ("path_underperforming", "0.92 vs 0.60, 200 outcomes each", _underperforming),
    ("failure_mode_dominant", "one path times out 70% of the time", _timeouts),
    ("param_sensitivity_detected", "temperature 0.3: 0.90 vs 0.9: 0.75, 150 each", _temperatures),
    ("drift_detected", "0.93 for 150 outcomes, then 8 at 0.30 (the router left it)", _drift(8)),
    ("drift_detected", "0.93 for 150 outcomes, then 30 at 0.30", _drift(30)),
    ("cost_inefficiency", "75% of traffic on a path 10x the cost of an equal one", _costly),
    ("low_confidence", "10 outcomes", _new_goal),
    ("goal_healthy", "two good paths (the healthy scenario itself)", _healthy),
]


def _fired(build: Callable[[Any, random.Random], None], seed: int) -> set[str]:
    from kalibr.insights import build_insights
    from kalibr.stores import MemoryStore

    store = MemoryStore()
    build(store, random.Random(seed))
    goal = build_insights(store, "default", GOAL, now=NOW)["goals"][0]
    return {signal["type"] for signal in goal["actionable_signals"]}


def _signals_section(seeds: int) -> str:
    healthy = [_fired(_healthy, 1000 + seed) for seed in range(seeds)]
    underperforming = [_fired(_underperforming, 2000 + seed) for seed in range(seeds)]
    rows = []
    for kind, description, build in SCENARIOS:
        detected = sum(kind in _fired(build, seed) for seed in range(seeds)) / seeds
        quiet_on = underperforming if kind == "goal_healthy" else healthy
        false_alarms = sum(kind in fired for fired in quiet_on) / seeds
        rows.append([f"`{kind}`", description, f"{detected:.0%}", f"{false_alarms:.0%}"])
    return (
        f"### Signals: fired on their own scenario, and false alarms ({seeds} seeds each)\n\n"
        "Each scenario is synthetic outcomes in a MemoryStore; the false-alarm column is the same signal on the "
        "healthy scenario (for `goal_healthy`: on the path_underperforming scenario).\n\n"
        + markdown_table(["signal", "scenario", "fired", "false alarms"], rows)
        + "\n"
    )


# --- path generation on the sandbox ------------------------------------------------------------------------------
def _route(calls: int, generate: bool) -> dict[str, Any]:
    from kalibr import Router
    from kalibr.intelligence.engine import Engine
    from kalibr.path_generation import GeneratedPathsIntelligence, PathGenerator
    from kalibr.sandbox import builtin_scenario, serve
    from kalibr.sandbox.tasks import TaskGenerator
    from kalibr.stores import MemoryStore

    goal = "solve_arithmetic"
    store = MemoryStore()
    engine = Engine(store, seed=0)
    job = PathGenerator(store, goals=[goal])
    chosen: list[tuple[Any, bool]] = []
    with serve(builtin_scenario("param-curve"), seed=0) as sandbox:
        specs: list[dict[str, Any]] = [{"model": "tuned-model", "params": {"temperature": t}} for t in (0.0, 1.0)]
        specs.append({"model": "steady-model"})
        paths = [{**spec, "base_url": sandbox.openai_base_url, "api_key": "sandbox"} for spec in specs]
        tasks = TaskGenerator("arithmetic", seed=0)
        task = tasks.next()
        intelligence = GeneratedPathsIntelligence(engine, refresh_interval=0.0) if generate else engine
        router = Router(goal, paths, success_when=lambda text: task.check(text), intelligence=intelligence)
        for call in range(calls):
            completion = router.completion(task.messages)
            chosen.append((completion.decision.path.label, task.check(completion.text)))
            task = tasks.next()
            if generate and call % 100 == 99:
                engine.flush()
                job.run_once()
        engine.flush()
    from kalibr.insights import changes

    log = changes(store, "default", goal, NOW - timedelta(days=3650))
    engine.close()
    return {"chosen": chosen, "log": log}


def _generation_section(calls: int) -> str:
    started = time.perf_counter()
    runs = {"declared paths only": _route(calls, False), "with auto path generation": _route(calls, True)}
    tail = calls // 3
    rows = []
    for name, result in runs.items():
        last = result["chosen"][-tail:]
        success = sum(ok for _, ok in last) / len(last)
        overall = sum(ok for _, ok in result["chosen"]) / calls
        top, count = collections.Counter(label for label, _ in last).most_common(1)[0]
        rows.append([name, f"{overall:.1%}", f"{success:.1%}", f"`{top}` ({count / len(last):.0%})"])
    log = runs["with auto path generation"]["log"]
    changes = "\n".join(f"- {c['kind']}: `{c['data'].get('label', c['data'].get('path_id'))}`" for c in log) or "- none"
    return (
        f"### Automatic path generation on the sandbox's temperature curve ({calls} calls per run)\n\n"
        "Scenario `param-curve`: `tuned-model` peaks at temperature 0.5 (92%) and the declared paths are "
        "temperature 0.0 (55%) and 1.0 (60%), next to `steady-model` (70%). The job runs every 100 calls "
        "(standing in for the hourly schedule).\n\n"
        + markdown_table(["run", "success, all calls", f"success, last {tail}", "most used path, last calls"], rows)
        + f"\n\nChanges the job made:\n\n{changes}\n\n({time.perf_counter() - started:.0f} s)\n"
    )


# --- timing ------------------------------------------------------------------------------------------------------
BASELINE_COMMIT = "6da54ef"
"""The last commit whose insights read records (``store.outcomes``) and analysed them outcome by outcome."""


def _timing_section(outcomes: int) -> str:
    from kalibr.insights import build_insights, recommend
    from kalibr.stores import MemoryStore
    from kalibr.stores.sqlite import SQLiteStore

    baseline = _baseline_functions()
    rows = []
    with tempfile.TemporaryDirectory() as scratch, _postgres_store() as postgres:
        stores: list[tuple[str, Any]] = [
            ("MemoryStore", MemoryStore()),
            ("SQLiteStore", SQLiteStore(f"{scratch}/b.db")),
        ]
        if postgres is not None:
            stores.append(("PostgresStore", postgres))
        for name, store in stores:
            _fill_for_timing(store, outcomes)
            variants: dict[str, Callable[[], Any]] = {
                "insights": lambda s=store: build_insights(s, "default", GOAL, now=NOW),
                "policy": lambda s=store: recommend(s, "default", GOAL, now=NOW),
            }
            if baseline is not None:
                old_insights, old_recommend = baseline
                variants["old insights"] = lambda s=store, f=old_insights: f(s, "default", GOAL, now=NOW)
                variants["old policy"] = lambda s=store, f=old_recommend: f(s, "default", GOAL, now=NOW)
            ms = _medians_in_turns(variants)
            same = "-"
            if baseline is not None:
                same = "yes" if _document(variants["insights"]()) == _document(variants["old insights"]()) else "no"
            rows.append(
                [
                    name,
                    f"{outcomes:,}",
                    *_side_by_side(ms, "insights"),
                    *_side_by_side(ms, "policy"),
                    same,
                ]
            )
            store.close()
    where = (
        f"the code of commit `{BASELINE_COMMIT}` (its `kalibr.insights`, loaded from `git archive` into this "
        "process beside today's), reading the same store through `store.outcomes`: one record per outcome"
        if baseline is not None
        else "unavailable (no git checkout with that commit)"
    )
    skipped = "" if os.environ.get(PG_ENV) else f"\nPostgresStore row skipped: set {PG_ENV} to include it.\n"
    return (
        "### Cost of one answer (one goal, 4 paths, median of 7, old and new taking turns)\n\n"
        f"New: the store's columnar read (`outcome_columns`) analysed with numpy. Old: {where}. "
        '"same document" compares the two insights documents (all but `generated_at`).\n\n'
        + markdown_table(
            [
                "store",
                "outcomes in window",
                "build_insights old",
                "new",
                "old / new",
                "recommend (get_policy) old",
                "new",
                "old / new",
                "same document",
            ],
            rows,
        )
        + "\n"
        + skipped
    )


@contextlib.contextmanager
def _postgres_store() -> Iterator[Any]:
    """A PostgresStore in a schema of its own (dropped after; the caller closes the store), or None without
    ``KALIBR_TEST_POSTGRES_URL``."""
    url = os.environ.get(PG_ENV)
    if not url:
        yield None
        return
    import psycopg
    from psycopg import sql

    from kalibr.stores.postgres import PostgresStore

    schema = f"kalibr_bench_{uuid.uuid4().hex[:12]}"
    store = PostgresStore(url, schema=schema)
    try:
        yield store
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _fill_for_timing(store: Any, outcomes: int) -> None:
    rng = random.Random(0)
    per_path = outcomes // 4
    for model, rate in (("a", 0.9), ("b", 0.8), ("c", 0.7)):
        _feed(store, model, rate, per_path, rng, cost=0.001)
    _feed(store, "m", 0.85, per_path, rng, params={"temperature": 0.5})


def _side_by_side(ms: dict[str, float], name: str) -> list[str]:
    new = f"{ms[name]:,.1f} ms"
    if f"old {name}" not in ms:
        return ["-", new, "-"]
    old = ms[f"old {name}"]
    return [f"{old:,.1f} ms", new, f"{old / ms[name]:.1f}x"]


def _document(document: dict[str, Any]) -> str:
    return json.dumps({key: value for key, value in document.items() if key != "generated_at"}, sort_keys=True)


def _medians_in_turns(variants: dict[str, Callable[[], Any]], rounds: int = 7) -> dict[str, float]:
    for call in variants.values():  # warm up: imports, first reads
        call()
    samples: dict[str, list[int]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, call in variants.items():
            samples[name] += time_calls(call, 1)
    return {name: statistics.median(values) / 1e6 for name, values in samples.items()}


def _baseline_functions() -> tuple[Callable[..., Any], Callable[..., Any]] | None:
    """``build_insights`` and ``recommend`` of ``BASELINE_COMMIT``, imported under their own names beside today's.

    The commit's ``kalibr`` package is unpacked in a scratch folder and imported while today's modules are set
    aside; its functions keep their own modules, and today's are put back.
    """
    root = FilePath(__file__).resolve().parent.parent
    scratch = FilePath(tempfile.mkdtemp(prefix="kalibr-baseline-"))
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", BASELINE_COMMIT, "packages/kalibr-core/src/kalibr"],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        return None
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as bundle:
        bundle.extractall(scratch, filter="data")
    source = str(scratch / "packages" / "kalibr-core" / "src")
    today = {name: module for name, module in sys.modules.items() if name.split(".")[0] == "kalibr"}
    for name in today:
        del sys.modules[name]
    sys.path.insert(0, source)
    try:
        old = importlib.import_module("kalibr.insights")
        return old.build_insights, old.recommend
    finally:
        sys.path.remove(source)
        for name in [name for name in sys.modules if name.split(".")[0] == "kalibr"]:
            del sys.modules[name]
        sys.modules.update(today)
