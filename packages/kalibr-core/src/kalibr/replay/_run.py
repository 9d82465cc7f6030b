"""Run every contender over several seeds (in worker processes) and gather the figures."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from kalibr._exceptions import UserError
from kalibr.replay._learners import BASELINES, KALIBR, KALIBR_PROMPTS, MABWISER, mabwiser_available, make_learner
from kalibr.replay._simulate import Run, simulate
from kalibr.replay._table import ReplayTable

__all__ = ["CostPoint", "ReplayOptions", "ReplayResult", "Score", "replay"]

DEFAULT_COST_WEIGHTS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)
DEFAULT_TOLERANCES = (0.005, 0.01, 0.02, 0.03, 0.05, 0.1)
"""Settings of "the cheapest path within N points of the best" in the cost-aware sweep (0.01 = 1 point)."""
DEFAULT_BUDGET_SHARES = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.5)
"""Budgets per call in the cost-aware sweep, as shares of the strongest model's mean cost per call."""
Job = tuple[str, int, bool, float, float, float]
"""(contender, seed, degraded, cost weight, quality tolerance, budget share; 0 = off)."""


@dataclass(frozen=True)
class ReplayOptions:
    """What to replay. ``cost_weights`` are the lambdas of the cost-aware sweep (costs scaled to max 1),
    ``tolerances`` its "cheapest path within N points of the best" settings, ``budget_shares`` its budgets per
    call as shares of the strongest model's mean cost per call (0.25: a quarter of what always using it costs)."""

    seeds: int = 10
    degrade: bool = False
    cost_aware: bool = False
    contenders: tuple[str, ...] = (KALIBR, *BASELINES)
    cost_weights: tuple[float, ...] = DEFAULT_COST_WEIGHTS
    tolerances: tuple[float, ...] = DEFAULT_TOLERANCES
    budget_shares: tuple[float, ...] = DEFAULT_BUDGET_SHARES
    processes: int | None = None

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise UserError(f"seeds {self.seeds!r} must be at least 1")
        if any(share <= 0.0 for share in self.budget_shares):
            raise UserError(f"budget shares {self.budget_shares!r} must be > 0: 0.25 is a quarter of the strongest's")


@dataclass
class Score:
    """One contender's figures, one value per seed (``ttr``/``recovery_regret``: one per broken goal)."""

    name: str
    share: list[float] = field(default_factory=list)
    regret_best: list[float] = field(default_factory=list)
    regret_oracle: list[float] = field(default_factory=list)
    ttr: list[int] = field(default_factory=list)
    recovery_regret: list[float] = field(default_factory=list)
    unrecovered: int = 0

    def ttr_quantile(self, q: float) -> float | None:
        return float(np.percentile(self.ttr, q)) if self.ttr else None


@dataclass(frozen=True)
class CostPoint:
    """A point of the cost-quality curve, relative to the strongest single model (100% = its quality/cost)."""

    label: str
    quality: float
    cost: float


@dataclass
class ReplayResult:
    table_name: str
    cost_source: str
    requests: int
    goals: int
    options: ReplayOptions
    scores: dict[str, Score]
    cost_curve: list[CostPoint]
    fixed_models: list[CostPoint]
    strongest: str
    skipped: list[str]
    sample_runs: dict[str, Run]
    """Seed 0's stationary (and degraded, under ``name + ' degraded'``) run per contender, for plots."""


_TABLE: ReplayTable | None = None


def _init_worker(table: ReplayTable) -> None:
    global _TABLE
    _TABLE = table


def _job(job: Job) -> tuple[Job, Run]:
    name, seed, degrade, cost_weight, tolerance, share = job
    assert _TABLE is not None
    report_cost = cost_weight > 0.0 or tolerance > 0.0 or share > 0.0
    budget = 1000.0 * share * _strongest_cost_per_call(_TABLE) if share > 0.0 else None
    learner = make_learner(
        name, _TABLE, seed, cost_weight=cost_weight, tolerance=tolerance, budget_per_1k=budget, report_cost=report_cost
    )
    return job, simulate(_TABLE, learner, seed, degrade=degrade)


def replay(
    table: ReplayTable,
    options: ReplayOptions,
    *,
    table_name: str = "table",
    progress: Callable[[int, int], None] | None = None,
) -> ReplayResult:
    """Replay ``table`` with every contender and seed; ``progress(done, total)`` is called as runs finish."""
    contenders = list(options.contenders)
    skipped = []
    if table.has_features and KALIBR_PROMPTS not in contenders:
        contenders.insert(contenders.index(KALIBR) + 1 if KALIBR in contenders else 0, KALIBR_PROMPTS)
    if not table.has_features and KALIBR_PROMPTS in contenders:
        contenders.remove(KALIBR_PROMPTS)
        skipped.append(f"{KALIBR_PROMPTS}: the table has no prompts (kalibr replay TABLE --prompts PROMPTS.csv)")
    if MABWISER in contenders and not mabwiser_available():
        contenders.remove(MABWISER)
        skipped.append(f"{MABWISER}: mabwiser is not installed (pip install mabwiser, or the 'bench' group)")
    jobs = _jobs(contenders, options, table)
    runs = _run_jobs(table, jobs, options.processes, progress)
    scores = {name: _score(name, runs, options) for name in contenders}
    curve = _cost_curve(table, runs, options)
    fixed, strongest = _fixed_models(table)
    samples = {name: runs[(name, 0, False, 0.0, 0.0, 0.0)] for name in contenders}
    if options.degrade:
        samples.update({f"{name} degraded": runs[(name, 0, True, 0.0, 0.0, 0.0)] for name in contenders})
    return ReplayResult(
        table_name, table.cost_source, table.query_count, len(table.goals), options, scores, curve, fixed,
        strongest, skipped, samples,
    )  # fmt: skip


def _jobs(contenders: Sequence[str], options: ReplayOptions, table: ReplayTable) -> list[Job]:
    scenarios = (False, True) if options.degrade else (False,)
    jobs = [
        (name, seed, degrade, 0.0, 0.0, 0.0)
        for name in contenders
        for degrade in scenarios
        for seed in range(options.seeds)
    ]
    if options.cost_aware:
        if table.cost_source == "none":
            raise UserError("--cost-aware needs costs: add a cost_usd column, or input/output_price_per_mtok columns")
        weights = [w for w in options.cost_weights if w > 0.0]
        aware = [name for name in (KALIBR, KALIBR_PROMPTS) if name in contenders]
        tolerances = [t for t in options.tolerances if t > 0.0]
        for name in aware:
            for seed in range(options.seeds):
                jobs += [(name, seed, False, w, 0.0, 0.0) for w in weights]
                jobs += [(name, seed, False, 0.0, t, 0.0) for t in tolerances]
                jobs += [(name, seed, False, 0.0, 0.0, share) for share in options.budget_shares]
    return jobs


def _run_jobs(
    table: ReplayTable,
    jobs: list[Job],
    processes: int | None,
    progress: Callable[[int, int], None] | None,
) -> dict[Job, Run]:
    workers = processes if processes is not None else min(len(jobs), os.cpu_count() or 1)
    results: dict[Job, Run] = {}
    if workers <= 1:
        _init_worker(table)
        outcomes = map(_job, jobs)
        for key, run in outcomes:
            results[key] = run
            if progress:
                progress(len(results), len(jobs))
        return results
    context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    with context.Pool(workers, initializer=_init_worker, initargs=(table,)) as pool:
        for key, run in pool.imap_unordered(_job, jobs):
            results[key] = run
            if progress:
                progress(len(results), len(jobs))
    return results


def _score(name: str, runs: dict[Job, Run], options: ReplayOptions) -> Score:
    score = Score(name)
    for seed in range(options.seeds):
        run = runs[(name, seed, False, 0.0, 0.0, 0.0)]
        score.share.append(run.reward / run.best_fixed)
        score.regret_best.append((run.best_fixed - run.reward) * 1000.0 / run.requests)
        score.regret_oracle.append((run.oracle - run.reward) * 1000.0 / run.requests)
        if options.degrade:
            for ttr, regret, recovered in runs[(name, seed, True, 0.0, 0.0, 0.0)].recoveries():
                score.ttr.append(ttr)
                score.recovery_regret.append(regret)
                score.unrecovered += not recovered
    return score


def _cost_curve(table: ReplayTable, runs: dict[Job, Run], options: ReplayOptions) -> list[CostPoint]:
    """Per cost-aware contender, one point per setting: the lambdas, the "within N points" tolerances, then the
    budgets."""
    if not options.cost_aware:
        return []
    (quality, cost), _ = _strongest(table)
    settings = [(f"lambda={w:g}", w, 0.0, 0.0) for w in sorted({0.0, *options.cost_weights})]
    settings += [(f"within {100 * t:g} pt", 0.0, t, 0.0) for t in sorted(options.tolerances) if t > 0.0]
    settings += [(f"budget {100 * s:g}% of strongest", 0.0, 0.0, s) for s in sorted(options.budget_shares)]
    points = []
    for name in (KALIBR, KALIBR_PROMPTS):
        if (name, 0, False, 0.0, 0.0, 0.0) not in runs:
            continue
        for label, weight, tolerance, share in settings:
            seeds = [runs[(name, seed, False, weight, tolerance, share)] for seed in range(options.seeds)]
            points.append(
                CostPoint(
                    f"{label}" if name == KALIBR else f"{label} ({name})",
                    100.0 * float(np.mean([run.reward for run in seeds])) / quality,
                    100.0 * float(np.mean([run.cost for run in seeds])) / cost if cost > 0 else 0.0,
                )
            )
    return points


def _strongest(table: ReplayTable) -> tuple[tuple[float, float], str]:
    """(total score, total cost) of the model with the highest total score over the table, and its name."""
    totals: dict[str, tuple[float, float]] = {}
    for goal in table.goals:
        for m, model in enumerate(goal.models):
            quality, cost = totals.get(model, (0.0, 0.0))
            totals[model] = (quality + float(goal.scores[:, m].sum()), cost + float(goal.costs[:, m].sum()))
    name = max(totals, key=lambda model: totals[model][0])
    return totals[name], name


def _strongest_cost_per_call(table: ReplayTable) -> float:
    """The strongest model's mean cost per call over the table, in the table's cost units."""
    (_, cost), _ = _strongest(table)
    return cost / table.query_count


def _fixed_models(table: ReplayTable) -> tuple[list[CostPoint], str]:
    """Every single model as a fixed choice on the goals that list it, relative to the strongest."""
    (quality, cost), name = _strongest(table)
    points = []
    for model in table.models:
        q = sum(float(goal.scores[:, goal.models.index(model)].sum()) for goal in table.goals if model in goal.models)
        c = sum(float(goal.costs[:, goal.models.index(model)].sum()) for goal in table.goals if model in goal.models)
        points.append(CostPoint(model, 100.0 * q / quality, 100.0 * c / cost if cost > 0 else 0.0))
    return sorted(points, key=lambda point: point.cost), name
