"""``kalibr spool``: the outcomes this host's clients still owe the intelligence service, and those it refused."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from kalibr.intelligence._spool import OutcomeSpool, default_spool_path

__all__ = ["spool"]

_SPOOL_OPTION = click.option(
    "--spool", "spool_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="The spool file. [default: $KALIBR_SPOOL, else spool.db in the user data folder]",
)  # fmt: skip
_SERVICE_OPTION = click.option(
    "--service", default=None, help="Only this service URL (every key), or one SERVICE#key=... as listed."
)


def _open(spool_path: Path | None) -> OutcomeSpool:
    path = spool_path or default_spool_path()
    if not path.exists():
        raise click.ClickException(f"no spool at {path}: nothing was ever spooled there (or pass --spool FILE)")
    return OutcomeSpool(path)


def _endpoints(spool: OutcomeSpool, service: str | None) -> list[str]:
    names = list(spool.summary())
    if service is None:
        return names
    wanted = service.rstrip("/")
    chosen = [name for name in names if name == wanted or name.split("#key=", 1)[0] == wanted]
    if not chosen:
        raise click.ClickException(f"the spool holds nothing for {service!r}; `kalibr spool` lists what it holds")
    return chosen


@click.group(invoke_without_command=True)
@_SPOOL_OPTION
@_SERVICE_OPTION
@click.option("--dead", is_flag=True, help="List the dead-lettered outcomes with the service's reason.")
@click.pass_context
def spool(ctx: click.Context, spool_path: Path | None, service: str | None, dead: bool) -> None:
    """Outcomes waiting for each intelligence service (per URL and API-key fingerprint), and those it refused.

    An outcome the service refused for good (a field over its limits, a goal it does not know...) is kept as a
    dead letter with the service's answer, never deleted: fix the cause, then `kalibr spool retry`, or
    `kalibr spool drop` them.
    """
    if ctx.invoked_subcommand is not None:
        return
    store = _open(spool_path)
    try:
        summary = store.summary()
        chosen = _endpoints(store, service)
        if not chosen:
            click.echo(f"{store.path}: empty")
        for name in chosen:
            pending, dead_count = summary[name]
            click.echo(f"{name}  pending {pending}  dead {dead_count}")
            if dead:
                for letter in store.dead_letters(name, limit=1000):
                    when = datetime.fromtimestamp(letter.dead_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
                    click.echo(
                        f"  {when}  {letter.kind} {letter.trace_id}  goal {letter.goal}  "
                        f"HTTP {letter.status_code}: {letter.reason}"
                    )
    finally:
        store.close()


@spool.command()
@_SPOOL_OPTION
@_SERVICE_OPTION
def retry(spool_path: Path | None, service: str | None) -> None:
    """Put dead-lettered outcomes back in line: the next client of that service and key delivers them."""
    store = _open(spool_path)
    try:
        moved = sum(store.retry_dead(name) for name in _endpoints(store, service))
    finally:
        store.close()
    click.echo(f"{moved} dead-lettered outcomes queued again")


@spool.command()
@_SPOOL_OPTION
@_SERVICE_OPTION
@click.option("--pending", is_flag=True, help="Also delete outcomes still waiting for delivery.")
@click.confirmation_option(prompt="Delete these outcomes for good?")
def drop(spool_path: Path | None, service: str | None, pending: bool) -> None:
    """Delete dead-lettered outcomes (with --pending, undelivered ones too): they will never be counted."""
    store = _open(spool_path)
    try:
        dropped = sum(store.drop(name, dead_only=not pending) for name in _endpoints(store, service))
    finally:
        store.close()
    click.echo(f"{dropped} outcomes deleted")
