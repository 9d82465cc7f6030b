"""``kalibr replay``: measure routing policies on a per-query outcome table."""

from __future__ import annotations

import json
from pathlib import Path

import click

from kalibr._exceptions import UserError

__all__ = ["replay"]


@click.command()
@click.argument("table", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--seeds", default=10, show_default=True, help="Random orders to replay (mean and spread reported).")
@click.option("--degrade", is_flag=True, help="Also replay with each goal's best path failing from halfway: TTR.")
@click.option(
    "--cost-aware",
    is_flag=True,
    help="Also sweep the cost settings of the default policy: cost weights (lambda), quality tolerances, and "
    "budgets per 1,000 calls as shares of the strongest model's cost.",
)
@click.option(
    "--prompts",
    type=click.Path(dir_okay=False, path_type=Path),
    help="CSV of query_id, prompt: also replay the default policy reading each prompt before it chooses.",
)
@click.option("--merge-goals", is_flag=True, help="Replay the table as one goal, as if goals had never been split.")
@click.option(
    "--lexical-only", is_flag=True, help="With --prompts, use only the lexical features, not the sentence embedding."
)
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="Write a PNG of reward and traffic.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON instead of a table.")
@click.option("--processes", type=int, default=None, help="Worker processes (default: one per core).")
def replay(
    table: Path,
    seeds: int,
    degrade: bool,
    cost_aware: bool,
    prompts: Path | None,
    merge_goals: bool,
    lexical_only: bool,
    plot: Path | None,
    as_json: bool,
    processes: int | None,
) -> None:
    """Replay TABLE (CSV: query_id, goal, model, score[, cost_usd]) under bandit feedback.

    Compares the default policy with always-first-path, uniform, epsilon-greedy, UCB1, plain Thompson
    sampling and MABWiser's Thompson sampling, on the same shuffles and coin flips. With --prompts, also the
    default policy reading each query's prompt (features computed here, in process), and the lift it gives.
    """
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from kalibr.replay import (
        ReplayOptions,
        load_prompts,
        load_table,
        result_rows,
        summary_lines,
        to_json,
        with_features,
        write_plot,
    )
    from kalibr.replay import merge_goals as merge_goals_of
    from kalibr.replay import replay as run_replay

    console = Console(stderr=as_json)
    try:
        data = load_table(table)
        if prompts is not None:
            from kalibr.context import auto_featurizer

            featurize = auto_featurizer(embedding=False if lexical_only else None)
            with console.status(f"computing prompt features of {prompts.name}"):
                data = with_features(data, load_prompts(prompts), featurize)
        if merge_goals:
            data = merge_goals_of(data)
        options = ReplayOptions(seeds=seeds, degrade=degrade, cost_aware=cost_aware, processes=processes)
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(f"replaying {table.name}", total=None)
            result = run_replay(
                data,
                options,
                table_name=table.name,
                progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
    except UserError as error:
        raise click.UsageError(str(error)) from error
    if as_json:
        click.echo(json.dumps(to_json(result), indent=2))
    else:
        headers, rows = result_rows(result)
        view = Table(*headers, title=f"{table.name}: {result.requests:,} requests, {result.goals} goals, {seeds} seeds")
        for row in rows:
            view.add_row(*row)
        console.print(view)
        if result.cost_curve:
            costs = Table("cost-aware point", "quality % of strongest", "cost % of strongest", title="cost-quality")
            for point in result.cost_curve:
                costs.add_row(f"kalibr {point.label}", f"{point.quality:.1f}", f"{point.cost:.1f}")
            for point in result.fixed_models:
                costs.add_row(f"fixed {point.label}", f"{point.quality:.1f}", f"{point.cost:.1f}")
            console.print(costs)
        for line in summary_lines(result):
            console.print(line, markup=False)
    if plot is not None:
        write_plot(result, plot)
        console.print(f"wrote {plot}")
