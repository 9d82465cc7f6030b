"""Stores: where the intelligence engine keeps arms, decisions, outcomes, paths, config and API keys.

``open_store(url)`` picks one by URL::

    open_store()                                  # the default SQLite file ($KALIBR_DB, else the data folder)
    open_store("memory:")                         # in memory, for tests
    open_store("sqlite:///var/lib/kalibr.db")     # or "sqlite:kalibr.db", or a plain path
    open_store("postgresql://user@host/db")       # needs kalibr-core[postgres]

Any other scheme comes from a plugin's ``kalibr_register_stores`` hook.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from kalibr._exceptions import UserError
from kalibr.stores.base import DEFAULT_TENANT, DecisionRecord, OutcomeChanges, OutcomeRecord, PathRecord, Store
from kalibr.stores.memory import MemoryStore

if TYPE_CHECKING:
    from kalibr.hookspecs import StoreFactory
    from kalibr.stores.postgres import PostgresStore
    from kalibr.stores.sqlite import SQLiteStore

__all__ = [
    "DEFAULT_TENANT",
    "DecisionRecord",
    "MemoryStore",
    "OutcomeChanges",
    "OutcomeRecord",
    "PathRecord",
    "PostgresStore",
    "SQLiteStore",
    "Store",
    "builtin_store_factories",
    "open_store",
]

# A scheme is at least two characters, so "C:\data\kalibr.db" stays a path.
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")


def open_store(url: str | None = None) -> Store:
    """The store ``url`` names; None means the default SQLite file."""
    if url is None:
        from kalibr._paths import default_db_location

        url = default_db_location()
    if not isinstance(url, str) or not url.strip():
        raise UserError(f"invalid store URL {url!r}: use 'memory:', 'sqlite:///path/kalibr.db' or 'postgresql://...'")
    url = url.strip()
    match = _SCHEME.match(url)
    if match is None:
        return _open_sqlite(url)
    scheme = match.group(1).lower()
    builtins = builtin_store_factories()
    if scheme in builtins:
        return builtins[scheme](url)
    from kalibr.plugins import store_factories

    factories = store_factories()
    factory = factories.get(scheme)
    if factory is None:
        known = sorted({*builtins, *factories})
        raise UserError(
            f"unknown store scheme {scheme!r} in {url!r}: use one of {', '.join(known)} "
            "(or install the plugin that provides it)"
        )
    return factory(url)


def builtin_store_factories() -> dict[str, StoreFactory]:
    """URL scheme -> factory for the stores shipped with the core."""
    return {
        "memory": _open_memory,
        "sqlite": _open_sqlite,
        "postgresql": _open_postgres,
        "postgres": _open_postgres,
    }


def _open_memory(url: str) -> Store:
    if url.lower() not in ("memory:", "memory://"):
        raise UserError(f"invalid memory store URL {url!r}: write 'memory:'")
    return MemoryStore()


def _open_sqlite(url: str) -> Store:
    from kalibr.stores.sqlite import SQLiteStore, sqlite_path_from_url

    return SQLiteStore(sqlite_path_from_url(url))


def _open_postgres(url: str) -> Store:
    try:
        from kalibr.stores.postgres import PostgresStore
    except ImportError as exc:
        from kalibr._exceptions import MissingExtraError

        raise MissingExtraError("the PostgreSQL store", "postgres") from exc
    return PostgresStore(url)


def __getattr__(name: str) -> Any:
    # The SQL stores load on first use, so `import kalibr` does not import sqlite3 or psycopg.
    if name == "SQLiteStore":
        from kalibr.stores.sqlite import SQLiteStore

        return SQLiteStore
    if name == "PostgresStore":
        from kalibr.stores.postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
