"""``kalibr demo``: watch the router find the best model, then leave it when it breaks.

Three simulated models answer a company-extraction goal in the sandbox (real HTTP on loopback); the best one
starts answering wrongly halfway through. Nothing to configure, no service to start: the embedded engine
learns in a fresh SQLite file.
"""

from __future__ import annotations

import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

__all__ = ["demo"]

GOAL = "extract_company"
BARS = " ▁▂▃▄▅▆▇█"
COLORS = {"swift-mini": "cyan", "nova-medium": "green", "atlas-large": "magenta"}


_NEVER = 1e12
WINDOW = 20
"""Calls per window of the chart, and of the rolling share that says when the router moved away."""


@click.command()
@click.option(
    "--requests", "total", default=600, show_default=True, type=click.IntRange(min=20), help="How many calls."
)
@click.option("--seed", default=0, show_default=True, help="Seed of the simulated models and of the router.")
@click.option("--pace", default=0.01, show_default=True, help="Seconds to wait between calls, to watch it happen.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="Also save the chart as a PNG here.")
@click.option(
    "--db", type=click.Path(dir_okay=False, path_type=Path), help="SQLite file to learn in (default: a fresh one)."
)
def demo(total: int, seed: int, pace: float, plot: Path | None, db: Path | None) -> None:
    """Route calls among three simulated models; the best one breaks halfway through.

    One ``--seed`` gives one run, call for call, on a fresh database (the router's own random draws are seeded too).
    """
    from kalibr import Router
    from kalibr.intelligence.engine import Engine
    from kalibr.sandbox import serve
    from kalibr.sandbox.tasks import TaskGenerator
    from kalibr.stores import open_store

    console = Console()
    breaks_at = max(1, total // 2)
    scenario = _scenario(breaks_at)
    broken = next(d.model for d in scenario.degradations if d.goal == GOAL)
    with tempfile.TemporaryDirectory() as scratch, serve(scenario, seed=seed) as sandbox:
        # Seeded, and no periodic re-read of the arms (only other processes' outcomes need one, and the re-read's
        # timing would move the cross-goal priors): one seed, one run.
        store = open_store(f"sqlite:///{db or Path(scratch) / 'demo.db'}")
        engine = Engine(store, seed=seed, refresh_interval=_NEVER)
        paths: list[dict[str, Any]] = [
            {"model": name, "base_url": sandbox.openai_base_url, "price": spec.price.model_dump()}
            for name, spec in scenario.models.items()
        ]
        tasks = TaskGenerator(kind="extraction", seed=seed)
        current = tasks.next()
        router = Router(GOAL, paths, success_when=lambda text: current.check(text), intelligence=engine)
        history: list[tuple[str, bool]] = []
        console.print(
            f"[bold]kalibr demo[/]: {total} calls for goal [bold]{GOAL}[/] among {', '.join(COLORS)}; "
            f"[magenta]{broken}[/] breaks at call {breaks_at}.\n"
        )
        with Live(_live_view(history, total, breaks_at), console=console, refresh_per_second=8) as live:
            for index in range(total):
                completion = router.completion(current.messages)
                history.append((completion.model, current.check(completion.text)))
                current = tasks.next()
                if index % 5 == 0 or index == total - 1:
                    live.update(_live_view(history, total, breaks_at))
                if pace > 0:
                    time.sleep(pace)
        engine.close()
        store.close()
    console.print()
    console.print(_summary(history, breaks_at))
    console.print(_chart(history, breaks_at))
    console.print(_verdict(history, breaks_at, broken))
    if plot is not None:
        _save_png(history, breaks_at, plot)
        console.print(f"chart saved to {plot}")


def _scenario(breaks_at: int) -> Any:
    """The built-in demo scenario with its break moved to call ``breaks_at`` of this run (halfway through)."""
    from kalibr.sandbox import builtin_scenario

    scenario = builtin_scenario("demo")
    moved = [d.model_copy(update={"from_request": breaks_at}) if d.goal == GOAL else d for d in scenario.degradations]
    return scenario.model_copy(update={"degradations": moved})


def _window_stats(history: list[tuple[str, bool]], models: list[str]) -> dict[str, tuple[float, float | None]]:
    """Per model: share of the window's calls, and success rate on them (None when it had none)."""
    stats: dict[str, tuple[float, float | None]] = {}
    for model in models:
        outcomes = [ok for chosen, ok in history if chosen == model]
        share = len(outcomes) / len(history) if history else 0.0
        stats[model] = (share, sum(outcomes) / len(outcomes) if outcomes else None)
    return stats


def _live_view(history: list[tuple[str, bool]], total: int, breaks_at: int) -> Group:
    recent = list(deque(history, maxlen=50))
    table = Table(title=f"call {len(history)}/{total}: the last 50 calls", title_justify="left")
    table.add_column("path")
    table.add_column("traffic share", justify="right")
    table.add_column("", min_width=30)
    table.add_column("success", justify="right")
    table.add_column("calls so far", justify="right")
    for model, (share, success) in _window_stats(recent, list(COLORS)).items():
        bar = Text("█" * round(share * 30), style=COLORS[model])
        rate = "-" if success is None else f"{success:.0%}"
        table.add_row(
            Text(model, style=COLORS[model]), f"{share:.0%}", bar, rate, str(sum(m == model for m, _ in history))
        )
    phase = "[magenta]atlas-large is broken[/]" if len(history) >= breaks_at else "all models healthy"
    return Group(table, Text.from_markup(f"phase: {phase}"))


def _summary(history: list[tuple[str, bool]], breaks_at: int) -> Table:
    table = Table(title="Summary", title_justify="left")
    table.add_column("path")
    labels = (f"share, calls 1-{breaks_at - 1}", "success", f"share, calls {breaks_at}-{len(history)}", "success")
    for label in labels:
        table.add_column(label, justify="right")
    before, after = _phases(history, breaks_at)
    for model in COLORS:
        cells = []
        for share, success in (before[model], after[model]):
            cells += [f"{share:.0%}", "-" if success is None else f"{success:.0%}"]
        table.add_row(Text(model, style=COLORS[model]), *cells)
    overall = sum(ok for _, ok in history) / len(history)
    table.caption = f"overall success {overall:.0%} over {len(history)} calls"
    return table


def _phases(
    history: list[tuple[str, bool]], breaks_at: int
) -> tuple[dict[str, tuple[float, float | None]], dict[str, tuple[float, float | None]]]:
    """Per model, (share, success) over the calls before the break and over the calls from it on."""
    return _window_stats(history[: breaks_at - 1], list(COLORS)), _window_stats(history[breaks_at - 1 :], list(COLORS))


def windows(history: list[tuple[str, bool]], breaks_at: int, window: int = WINDOW) -> list[tuple[int, int]]:
    """The chart's windows as (first call, last call), 1-based and inclusive. A window starts at the break, so none
    mixes calls from before and after it; the window ending each phase may be shorter."""
    spans = []
    for start, stop in ((1, min(breaks_at, len(history) + 1)), (breaks_at, len(history) + 1)):
        spans += [(first, min(first + window, stop) - 1) for first in range(start, stop, window)]
    return spans


def window_series(history: list[tuple[str, bool]], breaks_at: int, model: str) -> list[tuple[float, float | None]]:
    """Per window: ``model``'s share of its calls, and its success rate on them (None when it had none)."""
    series = []
    for first, last in windows(history, breaks_at):
        share, success = _window_stats(history[first - 1 : last], [model])[model]
        series.append((share, success))
    return series


def _chart(history: list[tuple[str, bool]], breaks_at: int) -> Group:
    lines = [Text(f"traffic share per {WINDOW} calls (▲ = the first window after atlas-large breaks)")]
    for model in COLORS:
        bars = "".join(BARS[round(share * (len(BARS) - 1))] for share, _ in window_series(history, breaks_at, model))
        lines.append(Text(f"{model:>12} ", style=COLORS[model]) + Text(bars, style=COLORS[model]))
    first_after = sum(1 for first, _ in windows(history, breaks_at) if first < breaks_at)
    lines.append(Text(" " * 13 + " " * first_after + "▲"))
    return Group(*lines)


def _verdict(history: list[tuple[str, bool]], breaks_at: int, broken: str) -> str:
    """The closing sentences, every number in them read off this run (and the summary table above)."""
    before, after = _phases(history, breaks_at)
    leader = max(before, key=lambda model: (before[model][0], model)) if breaks_at > 1 else None
    text = "\n"
    if leader is not None:
        text += f"Before the break Kalibr sent {before[leader][0]:.0%} of calls 1-{breaks_at - 1} to [bold]{leader}[/]"
        if leader != broken:
            text += f", not to {broken}"
        text += ". "
    moved = recovery_call(history, breaks_at, broken)
    if moved is not None:
        text += (
            f"After {broken} broke at call {breaks_at}, its share of the last {WINDOW} calls fell under 10% at call "
            f"{moved}, {moved - breaks_at + 1} calls after the break. "
        )
    elif len(history) - breaks_at + 1 < WINDOW:
        text += f"The run ended {len(history) - breaks_at + 1} call(s) after {broken} broke, too soon to judge. "
    else:
        text += (
            f"After {broken} broke at call {breaks_at}, its share of the last {WINDOW} calls never fell under 10% "
            f"by call {len(history)}. "
        )
    final = max(after, key=lambda model: (after[model][0], model))
    success = after[final][1]
    text += (
        f"Of calls {breaks_at}-{len(history)}, {after[final][0]:.0%} went to [bold]{final}[/]"
        + ("" if success is None else f", which succeeded on {success:.0%} of them")
        + "."
    )
    return text


def recovery_call(history: list[tuple[str, bool]], breaks_at: int, broken: str, window: int = WINDOW) -> int | None:
    """The first call (1-based) at which ``broken`` had under 10% of the last ``window`` calls, all after the break."""
    for end in range(breaks_at + window - 1, len(history) + 1):
        recent = history[end - window : end]
        if sum(model == broken for model, _ in recent) / window < 0.1:
            return end
    return None


def _save_png(history: list[tuple[str, bool]], breaks_at: int, target: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        from kalibr._exceptions import MissingExtraError

        raise MissingExtraError("kalibr demo --plot", "plot") from error
    spans = windows(history, breaks_at)
    # Each window is drawn as a step over the calls it covers, so nothing seems to move before it happens.
    edges = [first - 0.5 for first, _ in spans] + [spans[-1][1] + 0.5]
    figure, (traffic, success) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for model, color in COLORS.items():
        series = window_series(history, breaks_at, model)
        colour = color.replace("cyan", "c")
        traffic.stairs([share for share, _ in series], edges, label=model, color=colour, linewidth=2, baseline=None)
        rates = [float("nan") if rate is None else rate for _, rate in series]
        success.stairs(rates, edges, label=model, color=colour, linewidth=2, baseline=None)
    for axis, label in ((traffic, "traffic share"), (success, "success rate")):
        axis.axvline(breaks_at - 0.5, color="grey", linestyle="--", label="atlas-large breaks")
        axis.set_ylabel(f"{label} (per {WINDOW} calls)")
        axis.set_ylim(0, 1.02)
    success.set_xlabel("call")
    traffic.legend(loc="upper left", fontsize="small")
    figure.tight_layout()
    figure.savefig(target, dpi=110)
    plt.close(figure)
