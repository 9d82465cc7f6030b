"""Render a replay result: rows of figures, as a Markdown table, a rich table, JSON or a PNG plot."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import numpy as np

from kalibr._exceptions import MissingExtraError
from kalibr.replay._learners import KALIBR, KALIBR_PROMPTS
from kalibr.replay._run import ReplayResult, Score
from kalibr.replay._simulate import Run

__all__ = ["cost_summary", "prompt_lift", "result_rows", "summary_lines", "to_json", "to_markdown", "write_plot"]

HEADERS = ("policy", "share of best fixed %", "regret/1k vs best fixed", "regret/1k vs oracle")
DEGRADE_HEADERS = ("TTR median", "TTR p90", "regret while recovering", "unrecovered")


def _mean_spread(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    mean = statistics.fmean(values) * scale
    spread = statistics.pstdev(values) * scale if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} ± {spread:.{digits}f}"


def result_rows(result: ReplayResult) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """Headers and one row per contender: the numbers every renderer shows."""
    headers = HEADERS + (DEGRADE_HEADERS if result.options.degrade else ())
    rows = []
    for score in result.scores.values():
        row: tuple[str, ...] = (
            score.name,
            _mean_spread(score.share, 100.0, 2),
            _mean_spread(score.regret_best),
            _mean_spread(score.regret_oracle),
        )
        if result.options.degrade:
            row += _degrade_cells(score)
        rows.append(row)
    return headers, rows


def _degrade_cells(score: Score) -> tuple[str, ...]:
    median, p90 = score.ttr_quantile(50), score.ttr_quantile(90)
    regret = f"{statistics.fmean(score.recovery_regret):.1f}" if score.recovery_regret else "-"
    return (
        f"{median:.0f}" if median is not None else "-",
        f"{p90:.0f}" if p90 is not None else "-",
        regret,
        f"{score.unrecovered}/{len(score.ttr)}",
    )


def cost_summary(result: ReplayResult, keep: float = 95.0) -> str | None:
    """ "X% of the strongest model's quality at Y% of its cost": the cheapest sweep point keeping ``keep``%."""
    kept = [point for point in result.cost_curve if point.quality >= keep]
    if not kept:
        return None
    best = min(kept, key=lambda point: point.cost)
    return (
        f"{best.quality:.1f}% of the strongest model's quality ({result.strongest}) at {best.cost:.1f}% of its cost "
        f"({best.label}; costs from {result.cost_source})"
    )


def to_markdown(result: ReplayResult, command: str) -> str:
    headers, rows = result_rows(result)
    lines = [
        f"Replay of `{result.table_name}`: {result.requests:,} requests over {result.goals} goals, "
        f"{result.options.seeds} seeds (mean ± spread across seeds). Command: `{command}`",
        "",
        "| " + " | ".join(headers) + " |",
        "|" + "---|" * len(headers),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]
    lines += ["", *_ratio_lines(result)]
    if result.cost_curve:
        lines += ["", "| cost-aware point | quality % of strongest | cost % of strongest |", "|---|---|---|"]
        lines += [f"| kalibr {p.label} | {p.quality:.1f} | {p.cost:.1f} |" for p in result.cost_curve]
        lines += [f"| fixed {p.label} | {p.quality:.1f} | {p.cost:.1f} |" for p in result.fixed_models]
    lines += ["", *_notes(result)]
    return "\n".join(lines) + "\n"


def summary_lines(result: ReplayResult) -> list[str]:
    """The sentences under the table: ratios to plain Thompson sampling, the cost-aware point, what was skipped."""
    return _ratio_lines(result) + _notes(result)


def _notes(result: ReplayResult) -> list[str]:
    summaries = [cost_summary(result, keep) for keep in (95.0, 97.0)]
    lines = [f"Cost-aware: {summary}." for summary in dict.fromkeys(summaries) if summary]
    lines += frontier_lines(result)
    return lines + [f"Skipped: {reason}" for reason in result.skipped]


def frontier_lines(result: ReplayResult, slack: float = 1.0) -> list[str]:
    """Which fixed models the cost-aware points match: some point within ``slack`` points of the model's quality
    at no more than its cost (the frontier "dominates" it)."""
    if not result.cost_curve:
        return []
    unmatched = [
        fixed.label
        for fixed in result.fixed_models
        if not any(p.quality >= fixed.quality - slack and p.cost <= fixed.cost for p in result.cost_curve)
    ]
    matched = len(result.fixed_models) - len(unmatched)
    line = f"Cost frontier: matches {matched} of {len(result.fixed_models)} fixed models (within {slack:g} point"
    line += " of its quality at no more than its cost)"
    return [line + (f"; not {', '.join(unmatched)}." if unmatched else ".")]


def prompt_lift(result: ReplayResult) -> tuple[float, float] | None:
    """Points of share of best fixed that the prompt adds (``kalibr+prompts`` minus ``kalibr``, seed by seed on
    the same shuffles and coin flips): mean and spread over seeds."""
    with_prompts, without = result.scores.get(KALIBR_PROMPTS), result.scores.get(KALIBR)
    if with_prompts is None or without is None:
        return None
    lifts = [100.0 * (a - b) for a, b in zip(with_prompts.share, without.share, strict=True)]
    return statistics.fmean(lifts), statistics.pstdev(lifts) if len(lifts) > 1 else 0.0


def _ratio_lines(result: ReplayResult) -> list[str]:
    lines = []
    lift = prompt_lift(result)
    if lift is not None:
        lines.append(
            f"Prompt-aware lift: {lift[0]:+.2f} ± {lift[1]:.2f} points of share of best fixed "
            f"({KALIBR_PROMPTS} vs {KALIBR}, same seeds and coin flips)."
        )
    ours, plain = result.scores.get(KALIBR), result.scores.get("thompson")
    if ours is None or plain is None:
        return lines
    lines += [
        f"kalibr vs plain Thompson sampling: share {100 * statistics.fmean(ours.share):.2f}% vs "
        f"{100 * statistics.fmean(plain.share):.2f}%; regret vs best fixed x"
        f"{statistics.fmean(ours.regret_best) / max(statistics.fmean(plain.regret_best), 1e-9):.2f}.",
    ]
    if ours.ttr and plain.ttr:
        lines.append(
            f"Time to recover: median {ours.ttr_quantile(50):.0f} vs {plain.ttr_quantile(50):.0f} requests "
            f"(x{(ours.ttr_quantile(50) or 0) / max(plain.ttr_quantile(50) or 1, 1):.2f}), p90 "
            f"{ours.ttr_quantile(90):.0f} vs {plain.ttr_quantile(90):.0f}."
        )
    return lines


def to_json(result: ReplayResult) -> dict[str, Any]:
    return {
        "table": result.table_name,
        "requests": result.requests,
        "goals": result.goals,
        "seeds": result.options.seeds,
        "cost_source": result.cost_source,
        "policies": {
            name: {
                "share_of_best_fixed": score.share,
                "regret_per_1k_vs_best_fixed": score.regret_best,
                "regret_per_1k_vs_oracle": score.regret_oracle,
                "ttr_median": score.ttr_quantile(50),
                "ttr_p90": score.ttr_quantile(90),
                "recovery_regret_mean": statistics.fmean(score.recovery_regret) if score.recovery_regret else None,
                "unrecovered": score.unrecovered,
            }
            for name, score in result.scores.items()
        },
        "cost_curve": [vars(point) for point in result.cost_curve],
        "fixed_models": [vars(point) for point in result.fixed_models],
        "strongest_model": result.strongest,
        "cost_summary": cost_summary(result),
        "cost_summary_97": cost_summary(result, 97.0),
        "cost_frontier": frontier_lines(result),
        "prompt_lift_points": prompt_lift(result),
        "skipped": result.skipped,
    }


def write_plot(result: ReplayResult, path: Path, window: int = 200) -> None:
    """Seed 0, per contender: rolling reward, and traffic on each goal's best path (or on the broken one)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise MissingExtraError("--plot", "plot") from error
    columns = 2 if result.options.degrade else 1
    figure, axes = plt.subplots(2, columns, figsize=(7 * columns, 7), sharex=True, squeeze=False)
    colours = plt.get_cmap("tab10")
    for position, name in enumerate(result.scores):
        for column, (key, degraded) in enumerate(((name, False), (f"{name} degraded", True))[:columns]):
            rewards, traffic = _series(result.sample_runs[key], degraded, window)
            axes[0][column].plot(rewards, label=name, linewidth=1, color=colours(position))
            axes[1][column].plot(traffic, label=name, linewidth=1, color=colours(position))
    axes[0][0].set_title("stationary")
    axes[0][0].set_ylabel(f"reward (rolling {window})")
    axes[1][0].set_ylabel("traffic on each goal's best path")
    if columns == 2:
        axes[0][1].set_title("best path of each goal fails from halfway")
        axes[1][1].set_ylabel("traffic on the broken path")
    for axis in axes[1]:
        axis.set_xlabel("request")
    axes[0][0].legend(fontsize="small", ncol=2)
    figure.suptitle(f"Replay of {result.table_name} (seed 0)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _series(run: Run, degraded: bool, window: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(np.concatenate([goal.steps for goal in run.goals]))
    rewards = np.concatenate([goal.rewards for goal in run.goals])[order]
    target = [goal.broken if degraded else int(goal.scores.sum(axis=0).argmax()) for goal in run.goals]
    traffic = np.concatenate([goal.chosen == t for goal, t in zip(run.goals, target, strict=True)])[order]
    kernel = np.ones(window) / window
    return np.convolve(rewards, kernel, mode="valid"), np.convolve(traffic.astype(float), kernel, mode="valid")
