"""``kalibr prune``: delete old decisions and outcomes from a store (what was learned from them stays)."""

from __future__ import annotations

import click

__all__ = ["prune"]


@click.command()
@click.option(
    "--older-than-days",
    "days",
    required=True,
    type=click.FloatRange(min=0.0, min_open=True),
    help="Delete decisions and outcomes older than this many days.",
)
@click.option(
    "--store", "store_url", default=None, help="Store URL: sqlite:///path.db or postgresql://... [default: $KALIBR_DB]"
)
def prune(days: float, store_url: str | None) -> None:
    """Delete decisions made and outcomes reported more than DAYS ago, for every tenant.

    The arms (what was learned), paths, config, API keys and the change log are kept. Insights and get_policy
    look only at the window they are asked for (a week by default), so keep at least that. Run it from cron, or
    let `kalibr serve --retention-days N` do it hourly.
    """
    from kalibr.stores import open_store
    from kalibr.stores.retention import prune_older_than

    store = open_store(store_url)
    try:
        decisions, outcomes = prune_older_than(store, days)
    finally:
        store.close()
    click.echo(f"pruned {decisions} decisions and {outcomes} outcomes older than {days:g} days")
