"""``kalibr dashboard``: the web dashboard over a local store, for embedded users (no service needed).

It listens on loopback by default and admits only the browser that opened the one-time link it prints: the
token in the link becomes a cookie, so another local user cannot act on the goals.
"""

from __future__ import annotations

import ipaddress
import secrets
import webbrowser

import click

from kalibr._exceptions import MissingExtraError

__all__ = ["dashboard"]


@click.command()
@click.option(
    "--store",
    "store_url",
    default=None,
    help="Store to show: a SQLite file, sqlite:///path.db or postgresql://... [default: $KALIBR_DB]",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback by default).")
@click.option("--port", default=8401, show_default=True, type=click.IntRange(0, 65535), help="0 picks a free port.")
@click.option("--tenant", default="default", show_default=True, help="Tenant whose goals to show.")
@click.option("--read-only", is_flag=True, help="Hide and refuse the actions (disable a path, set the config).")
@click.option("--no-browser", is_flag=True, help="Print the link instead of opening it in a browser.")
def dashboard(store_url: str | None, host: str, port: int, tenant: str, read_only: bool, no_browser: bool) -> None:
    """Serve the dashboard of a local store: goals, one goal's paths over time, recent decisions.

    Run it beside `kalibr demo --db demo.db` with `--store demo.db` to watch traffic move as it happens.
    """
    try:
        import uvicorn

        from kalibr.dashboard import create_dashboard, token_for_tenant
    except ImportError as exc:
        raise MissingExtraError("kalibr dashboard", "dashboard") from exc
    from kalibr._paths import default_db_location
    from kalibr.service._server import bind
    from kalibr.service._tenants import check_tenant
    from kalibr.stores import open_store

    check_tenant(tenant)
    store = open_store(store_url or default_db_location())
    token = secrets.token_urlsafe(24)
    app = create_dashboard(store, tenant_for_key=token_for_tenant(token, tenant), read_only=read_only)
    sock = bind(host, port)
    shown = f"[{host}]" if ":" in host else host
    link = f"http://{shown}:{sock.getsockname()[1]}/login?key={token}"
    if not _is_loopback(host):
        click.echo(f"kalibr dashboard: WARNING listening on {host}: anyone with the link can use it.", err=True)
    click.echo(f"kalibr dashboard: {link}  (store {store!r}{', read-only' if read_only else ''})")
    if not no_browser:
        webbrowser.open(link)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    try:
        server.run(sockets=[sock])
    finally:
        store.close()


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
