"""``kalibr serve``: the intelligence service over HTTP (the Kalibr wire API)."""

from __future__ import annotations

import re

import click

from kalibr._exceptions import MissingExtraError

__all__ = ["serve"]


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every one).")
@click.option("--port", default=8400, show_default=True, type=click.IntRange(0, 65535), help="0 picks a free port.")
@click.option(
    "--store",
    "store_url",
    default=None,
    help="Store URL: sqlite:///path.db or postgresql://... [default: $KALIBR_DB, else the data folder]",
)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Worker processes.")
@click.option(
    "--no-auth",
    is_flag=True,
    help="UNSAFE: accept every request as tenant 'default' without an API key (local use and tests only).",
)
@click.option(
    "--refresh-interval",
    default=0.2,
    show_default=True,
    type=click.FloatRange(0.0, 60.0),
    help="Seconds a replica may serve cached arm state before re-reading outcomes other replicas wrote.",
)
@click.option(
    "--retention-days",
    default=None,
    type=click.FloatRange(min=0.0, min_open=True),
    help="Delete decisions and outcomes older than this, at start and hourly (what was learned stays).",
)
@click.option("--max-body-bytes", default=1_048_576, show_default=True, type=click.IntRange(1024))
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    help="Of uvicorn's and Kalibr's log lines (stderr). info: one line per refused request, a flood summed up.",
)
def serve(
    host: str,
    port: int,
    store_url: str | None,
    workers: int,
    no_auth: bool,
    refresh_interval: float,
    retention_days: float | None,
    max_body_bytes: int,
    log_level: str,
) -> None:
    """Serve the routing engine over HTTP, for the official kalibr SDK (KALIBR_INTELLIGENCE_URL) or
    kalibr.Router(intelligence="http://host:port").

    Every request needs an API key (`kalibr keys create --tenant NAME`). Several replicas can share one
    PostgreSQL store (--store postgresql://...).
    """
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError("kalibr serve", "server") from exc
    from kalibr._paths import default_db_location
    from kalibr.service._server import ServeOptions, bind, run_server

    url = store_url or default_db_location()
    options = ServeOptions(
        store=url,
        auth=not no_auth,
        max_body_bytes=max_body_bytes,
        refresh_interval=refresh_interval,
        retention_days=retention_days,
    )
    if no_auth:
        click.echo("kalibr serve: WARNING --no-auth: every request is tenant 'default'; never expose this.", err=True)
    sock = bind(host, port)
    bound = sock.getsockname()[1]
    click.echo(f"kalibr serve: listening on http://{host}:{bound} (store {_redact(url)}, {workers} worker(s))")
    run_server(options, sock, workers=workers, log_level=log_level)


def _redact(url: str) -> str:
    """The store URL without its password, for logs."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)
