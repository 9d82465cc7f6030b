"""Routing quality: the replay figures on both outcome tables, the cost-aware sweep, and warm start.

Every figure sits beside the baselines measured in the same run (same shuffles, same coin flips).
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from kalibr._domain import Path as RoutePath
from kalibr.policies import PolicyConfig, default_policy
from kalibr.replay import GoalTable, ReplayOptions, ReplayTable, load_table, replay, result_rows, to_markdown
from kalibr.replay._learners import PolicyLearner
from kalibr.replay._simulate import simulate
from kalibr.stores import DEFAULT_TENANT, open_store
from kalibr.warm_start import import_priors

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
TABLES = (("llmrouter_dc_9models.csv", True), ("routellm_2models.csv", False))
COMMAND = "python -m benchmarks --only routing"
WARM_REQUESTS = 100
console = Console()


def run(quick: bool) -> str:
    seeds = 2 if quick else 10
    processes = min(2, os.cpu_count() or 1)
    parts = [
        "## Routing quality (replay)\n",
        "Queries replayed in a random order under bandit feedback (fractional scores drawn as Bernoulli); "
        "`kalibr` is the default policy run through the same `choose`/`update` calls as the engine, with priors "
        "from the other goals' per-model totals. Degradation: from halfway through each goal its best path fails "
        "every request; TTR counts that goal's requests until under 10% of the last 20 go to the broken path.\n",
    ]
    for name, cost_aware in TABLES:
        path = DATA / name
        if not path.is_file():
            parts.append(f"Skipped `{name}`: not found at {path}.\n")
            continue
        parts.append(_replay_section(path, seeds, processes, cost_aware, quick))
    llmrouter = DATA / TABLES[0][0]
    if llmrouter.is_file():
        parts.append(_warm_start_section(load_table(llmrouter), seeds))
    return "\n".join(parts)


def _replay_section(path: Path, seeds: int, processes: int, cost_aware: bool, quick: bool) -> str:
    started = time.perf_counter()
    options = ReplayOptions(seeds=seeds, degrade=True, cost_aware=cost_aware, processes=processes)
    with console.status(f"replaying {path.name} ({seeds} seeds)"):
        result = replay(load_table(path), options, table_name=path.name)
    headers, rows = result_rows(result)
    view = Table(*headers, title=f"{path.name} ({time.perf_counter() - started:.0f} s)")
    for row in rows:
        view.add_row(*row)
    console.print(view)
    command = f"kalibr replay ../shared/data/{path.name} --seeds {seeds} --degrade" + (
        " --cost-aware" if cost_aware else ""
    )
    markdown = to_markdown(result, command=f"{COMMAND}{' --quick' if quick else ''}`; this table alone: `{command}")
    return f"### {path.name}\n\n{markdown}"


def _split(table: ReplayTable, seed: int) -> tuple[ReplayTable, ReplayTable]:
    """Each goal's queries split in two at random: an offline half (imported) and a live half (replayed)."""
    rng = np.random.default_rng(seed)
    offline: list[GoalTable] = []
    live: list[GoalTable] = []
    for goal in table.goals:
        order = rng.permutation(len(goal.query_ids))
        for part, rows in ((offline, order[: len(order) // 2]), (live, order[len(order) // 2 :])):
            ids = tuple(goal.query_ids[i] for i in rows)
            part.append(GoalTable(goal.goal, goal.models, ids, goal.scores[rows], goal.costs[rows]))
    return replace(table, goals=tuple(offline)), replace(table, goals=tuple(live))


def _first_requests(table: ReplayTable, seed: int, warm: ReplayTable | None) -> tuple[float, float]:
    """Reward of each goal's first requests (summed over goals), and the best fixed path's on the same requests."""
    learner = PolicyLearner(default_policy(), table, PolicyConfig(), use_priors=True, report_cost=False)
    if warm is not None:
        store = open_store("memory:")
        sums = {
            (goal.goal, model): (len(goal.query_ids), float(goal.scores[:, m].sum()))
            for goal in warm.goals
            for m, model in enumerate(goal.models)
        }
        import_priors(store, sums, weight=0.2)
        for g, goal in enumerate(table.goals):
            learner.arms[g] = store.load_arms(DEFAULT_TENANT, goal.goal, [RoutePath(m) for m in goal.models])
        learner.totals = dict(store.model_totals(DEFAULT_TENANT))
    run = simulate(table, learner, seed, degrade=False)
    reward = sum(float(goal.rewards[:WARM_REQUESTS].sum()) for goal in run.goals)
    best = sum(float(goal.scores[:WARM_REQUESTS].sum(axis=0).max()) for goal in run.goals)
    return reward, best


def _warm_start_section(table: ReplayTable, seeds: int) -> str:
    cold, warm = [], []
    with console.status("warm start"):
        for seed in range(seeds):
            offline, live = _split(table, 1000 + seed)
            cold.append(_first_requests(live, seed, None))
            warm.append(_first_requests(live, seed, offline))
    cold_share = statistics.fmean(r / b for r, b in cold)
    warm_share = statistics.fmean(r / b for r, b in warm)
    saved = statistics.fmean((w[0] - c[0]) / len(table.goals) for c, w in zip(cold, warm, strict=True))
    cold_regret = statistics.fmean((b - r) / len(table.goals) for r, b in cold)
    warm_regret = statistics.fmean((b - r) / len(table.goals) for r, b in warm)
    view = Table("start", f"share of best fixed, first {WARM_REQUESTS}", "regret per goal", title="warm start")
    view.add_row("cold", f"{100 * cold_share:.1f}%", f"{cold_regret:.1f}")
    view.add_row("warm (kalibr import, weight 0.2)", f"{100 * warm_share:.1f}%", f"{warm_regret:.1f}")
    console.print(view)
    return (
        f"### Warm start (llmrouter_dc_9models.csv, {seeds} seeds)\n\n"
        f"Each goal's queries split at random: one half imported as an offline table (`kalibr import`, weight "
        f"0.2, capped at 20 pseudo-counts per path), the other half replayed live. On each goal's first "
        f"{WARM_REQUESTS} live requests:\n\n"
        f"| start | share of best fixed | regret per goal |\n|---|---|---|\n"
        f"| cold | {100 * cold_share:.1f}% | {cold_regret:.1f} |\n"
        f"| warm | {100 * warm_share:.1f}% | {warm_regret:.1f} |\n\n"
        f"Warm start saves {saved:.1f} successes per goal on its first {WARM_REQUESTS} requests "
        f"(regret x{warm_regret / max(cold_regret, 1e-9):.2f} of a cold start). Command: `{COMMAND}`.\n"
    )
