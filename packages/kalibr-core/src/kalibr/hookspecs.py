"""Plugin hooks. A plugin is a module with ``@hookimpl`` functions, found through the ``kalibr`` entry point.

Hooks receive a ``register`` callback and return nothing; the core settles name clashes itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import pluggy

if TYPE_CHECKING:
    import click

    from kalibr.providers.base import Provider
    from kalibr.stores.base import Store

__all__ = ["AdapterFactory", "hookimpl", "hookspec"]

hookspec = pluggy.HookspecMarker("kalibr")
hookimpl = pluggy.HookimplMarker("kalibr")


class ProviderFactory(Protocol):
    def __call__(self) -> Provider: ...


class StoreFactory(Protocol):
    def __call__(self, url: str) -> Store: ...


class AdapterFactory(Protocol):
    """Builds a framework object (a LangChain chat model, a DSPy LM) around a router."""

    def __call__(self, router: Any, /, **options: Any) -> Any: ...


@hookspec
def kalibr_register_providers(register: Any) -> None:
    """Register model providers: ``register(name, factory)``; a path's ``provider`` names one."""


@hookspec
def kalibr_register_stores(register: Any) -> None:
    """Register stores by URL scheme: ``register("postgresql", factory)``, where ``factory(url)`` builds one."""


@hookspec
def kalibr_register_adapters(register: Any) -> None:
    """Register framework adapters: ``register("langchain", factory)``; ``router.as_langchain()`` uses it."""


@hookspec
def kalibr_register_commands(cli: click.Group) -> None:
    """Add commands to the ``kalibr`` command line."""
