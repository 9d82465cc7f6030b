"""The Kalibr intelligence service: the routing engine over HTTP, speaking the Kalibr wire API.

Usage::

    from kalibr.service import create_app
    app = create_app(store="sqlite:///kalibr.db")       # serve with uvicorn, or `kalibr serve`

FastAPI and uvicorn come with the ``server`` extra: ``pip install "kalibr-core[server]"``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kalibr._exceptions import MissingExtraError
from kalibr.service._tenants import API_KEY_PREFIX, check_tenant, hash_api_key, new_api_key

if TYPE_CHECKING:
    from fastapi import FastAPI

    from kalibr.service._backend import EngineFactory
    from kalibr.stores.base import Store

__all__ = ["API_KEY_PREFIX", "check_tenant", "create_app", "hash_api_key", "new_api_key"]


def create_app(
    store: Store | str,
    *,
    auth: bool = True,
    max_body_bytes: int = 1_048_576,
    refresh_interval: float = 0.2,
    engine_factory: EngineFactory | None = None,
    key_cache_seconds: float = 5.0,
    retention_days: float | None = None,
) -> FastAPI:
    """The ASGI app serving ``store`` (a Store, or a store URL such as ``postgresql://...``).

    ``auth=False`` maps every request to the ``default`` tenant without checking keys: for local use and
    tests only, never for a service others can reach. ``refresh_interval`` bounds how stale a replica's
    view of outcomes reported to other replicas may be. ``retention_days`` deletes decisions and outcomes older
    than that at start and hourly (``kalibr prune``); what was learned from them stays.
    """
    try:
        from kalibr.service.app import build_app
    except ImportError as exc:  # fastapi or uvicorn missing
        raise MissingExtraError("kalibr serve", "server") from exc
    owns_store = isinstance(store, str)
    if isinstance(store, str):
        from kalibr.stores import open_store

        store = open_store(store)
    options: dict[str, Any] = {
        "auth": auth,
        "max_body_bytes": max_body_bytes,
        "refresh_interval": refresh_interval,
        "engine_factory": engine_factory,
        "key_cache_seconds": key_cache_seconds,
        "retention_days": retention_days,
    }
    return build_app(store, owns_store=owns_store, **options)
