"""Plugin hooks. A plugin is a module with ``@hookimpl`` functions, found through the ``kalibr`` entry point.

Registration hooks receive a ``register`` callback and return nothing; the core settles name clashes itself.
``kalibr_failure_category`` is a question instead: the first plugin with an answer wins.
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


@hookspec(firstresult=True)
def kalibr_failure_category(error: BaseException) -> str | None:
    """The failure category (one of ``kalibr.FAILURE_CATEGORIES``) for an exception the core does not know, or
    None to let another plugin answer. Adapters map their framework's errors here (a LangChain
    ``OutputParserException`` is ``malformed_output``); ``kalibr.failure_category_of`` asks it."""
