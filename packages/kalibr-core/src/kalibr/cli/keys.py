"""``kalibr keys``: create, list and revoke the service's API keys (stored as SHA-256 hashes)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from kalibr._exceptions import UserError

if TYPE_CHECKING:
    from kalibr.stores.base import Store

__all__ = ["keys"]

_store_option = click.option(
    "--store", "store_url", default=None, help="Store URL the service uses [default: $KALIBR_DB, else the data folder]"
)


@click.group()
def keys() -> None:
    """Manage the intelligence service's API keys (one or more per tenant)."""


@keys.command()
@click.option("--tenant", required=True, help="The tenant the key acts for.")
@_store_option
def create(tenant: str, store_url: str | None) -> None:
    """Create a key for TENANT and print it once: it is stored only as a hash."""
    from kalibr.service import check_tenant, hash_api_key, new_api_key
    from kalibr.stores import open_store

    try:
        check_tenant(tenant)
    except UserError as exc:
        raise click.BadParameter(str(exc), param_hint="--tenant") from exc
    key = new_api_key()
    store = open_store(store_url)
    try:
        store.add_api_key(tenant, hash_api_key(key))
    finally:
        store.close()
    click.echo(key)
    click.echo(f"(key for tenant {tenant!r}; shown once, stored hashed: keep it now)", err=True)


@keys.command(name="list")
@click.option("--tenant", default=None, help="Only this tenant's keys.")
@_store_option
def list_keys(tenant: str | None, store_url: str | None) -> None:
    """List keys by tenant, hash prefix and creation time (the keys themselves are never stored)."""
    store = _admin_store(store_url)
    try:
        for key_tenant, key_hash, created_at in store.list_api_keys(tenant):
            click.echo(f"{key_tenant}\t{key_hash[:12]}\t{created_at:%Y-%m-%d %H:%M}")
    finally:
        store.close()


@keys.command()
@click.argument("key_or_hash_prefix")
@_store_option
def revoke(key_or_hash_prefix: str, store_url: str | None) -> None:
    """Revoke a key, given the key itself or the hash prefix `kalibr keys list` shows."""
    from kalibr.service import API_KEY_PREFIX, hash_api_key

    store = _admin_store(store_url)
    try:
        if key_or_hash_prefix.startswith(API_KEY_PREFIX):
            matches = [hash_api_key(key_or_hash_prefix)]
        else:
            matches = [h for _, h, _ in store.list_api_keys(None) if h.startswith(key_or_hash_prefix.lower())]
        if len(matches) != 1:
            found = "no key" if not matches else f"{len(matches)} keys"
            raise click.ClickException(f"{found} match {key_or_hash_prefix!r}: give a longer hash prefix or the key")
        if not store.revoke_api_key(matches[0]):
            raise click.ClickException(f"no key matches {key_or_hash_prefix!r}")
        click.echo(f"revoked {matches[0][:12]} (services stop accepting it within 5 seconds)")
    finally:
        store.close()


def _admin_store(store_url: str | None) -> Store:
    from kalibr.stores import open_store

    return open_store(store_url)
