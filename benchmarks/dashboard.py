"""The dashboard: how long its pages take to render over a goal with 100,000 outcomes in SQLite, beside the
insights document built from the same outcomes (what the pages show of it is rebuilt in the background).
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path as FilePath
from typing import Any

from benchmarks._timing import markdown_table, time_calls

GOAL = "bench_goal"
TARGET_MS = 200.0
_PATHS = (
    ("fast-model", {}, 0.82, 0.0004),
    ("smart-model", {}, 0.93, 0.004),
    ("tuned", {"temperature": 0.2}, 0.9, 0.001),
)
_PATHS += (("tuned", {"temperature": 0.8}, 0.84, 0.001),)


def run(quick: bool) -> str:
    outcomes = 10_000 if quick else 100_000
    with tempfile.TemporaryDirectory() as scratch:
        store = _filled_store(FilePath(scratch) / "bench.db", outcomes)
        rows, goal_ms = _timings(store, quick)
        store.close()
    verdict = "meets" if goal_ms < TARGET_MS else "misses"
    text = (
        f"## Dashboard ({outcomes:,} outcomes of one goal, SQLite, median of {5 if quick else 15})\n\n"
        "Each page is one HTTP request to the dashboard served by uvicorn on loopback (routing, the store's "
        "roll-ups, Jinja2). A goal's status, trend, signals and recommendation on the pages are its insights "
        "document, the one `get_insights` returns: `build_insights` reads the goal's outcomes, so the pages reuse "
        "a document for 5 s and rebuild it in the background (only a goal's first view waits for it). CPU per call "
        "counts the whole process (server, client and background threads): on a shared machine it varies less than "
        "wall time.\n\n"
        + markdown_table(["what", "median (wall)", "CPU per call", "wall vs build_insights"], rows)
        + f"\n\nThe goal page {verdict} the {TARGET_MS:.0f} ms target ({goal_ms:,.1f} ms).\n"
    )
    print(text)
    return text


def _filled_store(location: FilePath, outcomes: int) -> Any:
    from kalibr._domain import Decision, Outcome, Path, new_trace_id
    from kalibr.stores.base import PathRecord
    from kalibr.stores.sqlite import SQLiteStore

    store = SQLiteStore(location)
    rng = random.Random(0)
    now = datetime.now(UTC)
    paths = [(Path(model, params=params), rate, cost) for model, params, rate, cost in _PATHS]
    for path, _, _ in paths:
        store.register_path("default", PathRecord(GOAL, path, True, now - timedelta(days=2)))
    spacing = timedelta(hours=23) / outcomes
    batch: list[tuple[Any, Any]] = []
    decisions: list[Any] = []
    for i in range(outcomes):
        path, rate, cost = paths[rng.randrange(len(paths))]
        ok = rng.random() < rate
        at = now - timedelta(hours=23) + spacing * i
        trace_id = new_trace_id()
        decisions.append(Decision(trace_id, GOAL, path, rng.random() < 0.1, "bench", 0.5, decided_at=at))
        outcome = Outcome(
            trace_id=trace_id,
            goal=GOAL,
            path_id=path.path_id,
            model=path.model,
            score=float(ok),
            failure_category=None if ok else rng.choice(["timeout", "hallucination_detected"]),
            cost_usd=cost,
            latency_ms=rng.lognormvariate(5, 0.5),
            reported_at=at,
        )
        batch.append((outcome, _counted))
        if len(batch) == 2_000:
            store.apply_outcomes("default", batch, decisions)
            batch, decisions = [], []
    if batch:
        store.apply_outcomes("default", batch, decisions)
    return store


def _counted(arm: Any) -> Any:
    import dataclasses

    return dataclasses.replace(arm, successes=arm.successes + 1, samples=arm.samples + 1)


def _timings(store: Any, quick: bool) -> tuple[list[list[str]], float]:
    import httpx

    from kalibr.dashboard import create_dashboard, token_for_tenant
    from kalibr.service._server import serve_in_thread

    app = create_dashboard(store, tenant_for_key=token_for_tenant("bench", "default"))
    with serve_in_thread(app) as url, httpx.Client(base_url=url, headers={"X-API-Key": "bench"}) as client:
        return _timed_pages(store, client, 5 if quick else 15)


def _timed_pages(store: Any, client: Any, repeat: int) -> tuple[list[list[str]], float]:
    from kalibr.insights import build_insights

    pages = {
        "goal page (`/goals/GOAL`)": f"/goals/{GOAL}",
        "goal page's live fragment (every 2 s)": f"/goals/{GOAL}/live",
        "goal page's chart data (every 2 s)": f"/goals/{GOAL}/series.json",
        "goals page (`/`)": "/",
        "decisions page (`/decisions`)": "/decisions",
    }

    def get(url: str) -> None:
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code, response.text[:200])

    medians, cpu = {}, {}
    for name, url in pages.items():
        get(url)  # warm: templates compiled, the thread's connection open
        medians[name], cpu[name] = _median_ms(lambda url=url: get(url), repeat)
    baseline, baseline_cpu = _median_ms(lambda: build_insights(store, "default", GOAL), max(3, repeat // 3))
    rows = [[name, f"{ms:,.1f} ms", f"{cpu[name]:,.1f} ms", f"{ms / baseline:.3f}x"] for name, ms in medians.items()]
    rows.append(
        [
            "`build_insights` on the same goal (the background rebuild; a goal's first view waits for it)",
            f"{baseline:,.1f} ms",
            f"{baseline_cpu:,.1f} ms",
            "1x",
        ]
    )
    return rows, medians["goal page (`/goals/GOAL`)"]


def _median_ms(call: Any, repeat: int) -> tuple[float, float]:
    """Median wall time of ``call``, and the process's mean CPU time per call (server and client), in ms."""
    started = time.process_time()
    samples = time_calls(call, repeat)
    return statistics.median(samples) / 1e6, (time.process_time() - started) / repeat * 1e3
