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


@click.command()
@click.option("--requests", "total", default=600, show_default=True, help="How many calls to make.")
@click.option("--seed", default=0, show_default=True, help="Seed of the simulated models.")
@click.option("--pace", default=0.01, show_default=True, help="Seconds to wait between calls, to watch it happen.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="Also save the chart as a PNG here.")
@click.option(
    "--db", type=click.Path(dir_okay=False, path_type=Path), help="SQLite file to learn in (default: a fresh one)."
)
def demo(total: int, seed: int, pace: float, plot: Path | None, db: Path | None) -> None:
    """Route 600 calls among three simulated models; the best one breaks halfway."""
    from kalibr import Router
    from kalibr.sandbox import builtin_scenario, serve
    from kalibr.sandbox.tasks import TaskGenerator

    console = Console()
    scenario = builtin_scenario("demo")
    breaks_at = next(d.from_request for d in scenario.degradations if d.goal == GOAL)
    with tempfile.TemporaryDirectory() as scratch, serve(scenario, seed=seed) as sandbox:
        store = f"sqlite:///{db or Path(scratch) / 'demo.db'}"
        paths: list[dict[str, Any]] = [
            {"model": name, "base_url": sandbox.openai_base_url, "price": spec.price.model_dump()}
            for name, spec in scenario.models.items()
        ]
        tasks = TaskGenerator(kind="extraction", seed=seed)
        current = tasks.next()
        router = Router(GOAL, paths, success_when=lambda text: current.check(text), store=store)
        history: list[tuple[str, bool]] = []
        console.print(
            f"[bold]kalibr demo[/]: {total} calls for goal [bold]{GOAL}[/] among {', '.join(COLORS)}; "
            f"[magenta]atlas-large[/] breaks at call {breaks_at}.\n"
        )
        with Live(_live_view(history, total, breaks_at), console=console, refresh_per_second=8) as live:
            for index in range(total):
                completion = router.completion(current.messages)
                history.append((completion.model, current.check(completion.text)))
                current = tasks.next()
                if index % 5 == 0 or index == total - 1:
                    live.update(_live_view(history, total, breaks_at))
                time.sleep(pace)
        router.intelligence.flush()
    console.print()
    console.print(_summary(history, breaks_at))
    console.print(_chart(history, breaks_at))
    console.print(_verdict(history, breaks_at))
    if plot is not None:
        _save_png(history, breaks_at, plot)
        console.print(f"chart saved to {plot}")


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
    for label in (f"share, calls 1-{breaks_at - 1}", "success", f"share, calls {breaks_at}-{len(history)}", "success"):
        table.add_column(label, justify="right")
    before = _window_stats(history[: breaks_at - 1], list(COLORS))
    after = _window_stats(history[breaks_at - 1 :], list(COLORS))
    for model in COLORS:
        cells = []
        for share, success in (before[model], after[model]):
            cells += [f"{share:.0%}", "-" if success is None else f"{success:.0%}"]
        table.add_row(Text(model, style=COLORS[model]), *cells)
    overall = sum(ok for _, ok in history) / len(history)
    table.caption = f"overall success {overall:.0%} over {len(history)} calls"
    return table


def _share_series(history: list[tuple[str, bool]], model: str, window: int = 20) -> list[float]:
    return [
        sum(chosen == model for chosen, _ in history[start : start + window]) / len(history[start : start + window])
        for start in range(0, len(history), window)
    ]


def _chart(history: list[tuple[str, bool]], breaks_at: int, window: int = 20) -> Group:
    lines = [Text(f"traffic share per {window} calls (▲ = atlas-large breaks)")]
    for model in COLORS:
        series = _share_series(history, model, window)
        bars = "".join(BARS[round(share * (len(BARS) - 1))] for share in series)
        lines.append(Text(f"{model:>12} ", style=COLORS[model]) + Text(bars, style=COLORS[model]))
    lines.append(Text(" " * 13 + " " * ((breaks_at - 1) // window) + "▲"))
    return Group(*lines)


def _verdict(history: list[tuple[str, bool]], breaks_at: int) -> str:
    before = _window_stats(history[breaks_at - 101 : breaks_at - 1], list(COLORS))
    leader = max(before, key=lambda model: before[model][0])
    recovered = _recovery_call(history, breaks_at)
    after = _window_stats(history[-100:], list(COLORS))
    final = max(after, key=lambda model: after[model][0])
    recovery = (
        f"moved away within {recovered - breaks_at + 1} calls of the break"
        if recovered is not None
        else "was still sending traffic to it at the end"
    )
    return (
        f"\nBefore the break Kalibr sent {before[leader][0]:.0%} of calls to [bold]{leader}[/]; after "
        f"atlas-large broke it {recovery}, and ended with {after[final][0]:.0%} on [bold]{final}[/]."
    )


def _recovery_call(history: list[tuple[str, bool]], breaks_at: int, window: int = 20) -> int | None:
    """The first call after the break where atlas-large had under 10% of the last ``window`` calls."""
    for end in range(breaks_at, len(history) + 1):
        recent = history[max(breaks_at - 1, end - window) : end]
        if len(recent) == window and sum(m == "atlas-large" for m, _ in recent) / window < 0.1:
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
    window = 20
    figure, axis = plt.subplots(figsize=(9, 4))
    for model, color in COLORS.items():
        series = _share_series(history, model, window)
        axis.plot([i * window for i in range(len(series))], series, label=model, color=color.replace("cyan", "c"))
    axis.axvline(breaks_at, color="grey", linestyle="--", label="atlas-large breaks")
    axis.set_xlabel("call")
    axis.set_ylabel(f"traffic share (per {window} calls)")
    axis.set_ylim(0, 1)
    axis.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(target, dpi=110)
    plt.close(figure)
