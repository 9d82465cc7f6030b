"""The built-in stores, registered through the same hook a third-party store plugin uses."""

from __future__ import annotations

from typing import Any

from kalibr.hookspecs import hookimpl

__all__ = ["kalibr_register_stores"]


@hookimpl
def kalibr_register_stores(register: Any) -> None:
    """Register "memory", "sqlite", "postgresql" and "postgres"."""
    from kalibr.stores import builtin_store_factories

    for scheme, factory in builtin_store_factories().items():
        register(scheme, factory)
