"""``kalibr import``: seed routing priors from an offline evaluation table (warm start)."""

from __future__ import annotations

from pathlib import Path

import click

from kalibr._exceptions import UserError

__all__ = ["import_table"]


@click.command(name="import")
@click.argument("table", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--goal-column", default="goal", show_default=True, help="Column naming the goal.")
@click.option("--model-column", default="model", show_default=True, help="Column naming the model (the path).")
@click.option("--score-column", default="score", show_default=True, help="Column with the score in [0, 1].")
@click.option("--weight", default=0.2, show_default=True, help="Pseudo-counts per offline row (live rows count 1).")
@click.option("--max-pseudo-counts", default=20.0, show_default=True, help="Cap per (goal, model).")
@click.option("--db", "db", default=None, help="Store URL or SQLite path (default: $KALIBR_DB or the data folder).")
@click.option("--tenant", default=None, help="Tenant to seed (default: the embedded engine's).")
def import_table(
    table: Path,
    goal_column: str,
    model_column: str,
    score_column: str,
    weight: float,
    max_pseudo_counts: float,
    db: str | None,
    tenant: str | None,
) -> None:
    """Seed each goal's paths from TABLE so routing starts from what offline evaluation found.

    Each (goal, model) gets WEIGHT pseudo-outcomes per offline row, at most MAX_PSEUDO_COUNTS, on the path
    of that model name (no params). Live outcomes count 1 each, so they take over quickly. Importing again
    replaces the earlier import.
    """
    from rich.console import Console
    from rich.table import Table

    from kalibr.stores import DEFAULT_TENANT, open_store
    from kalibr.warm_start import aggregate_rows, import_priors, read_rows

    columns = {"goal_column": goal_column, "model_column": model_column, "score_column": score_column}
    try:
        sums = aggregate_rows(read_rows(table, **columns), **columns)
        store = open_store(db)
        try:
            seeded = import_priors(
                store, sums, weight=weight, max_pseudo_counts=max_pseudo_counts, tenant=tenant or DEFAULT_TENANT
            )
        finally:
            store.close()
    except UserError as error:
        raise click.UsageError(str(error)) from error
    view = Table("goal", "model", "offline rows", "offline rate", "pseudo-counts", title=f"seeded from {table.name}")
    for arm in seeded:
        view.add_row(
            arm.goal, arm.model, str(arm.rows), f"{arm.offline_rate:.3f}", f"{arm.successes + arm.failures:.1f}"
        )
    Console().print(view)
