"""The plugin manager: built-in plugins plus every ``kalibr`` entry point.

``KALIBR_LOAD_PLUGINS=a,b`` loads only the named entry points (empty: none). Registries are built lazily,
once, and typed: the rest of the core never calls ``pm.hook`` directly.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

from kalibr import hookspecs

if TYPE_CHECKING:
    from kalibr.hookspecs import AdapterFactory, ProviderFactory, StoreFactory

__all__ = [
    "adapter_factories",
    "lazy_exports",
    "load_plugins",
    "plugin_failure_category",
    "pm",
    "provider_factories",
    "store_factories",
]

DEFAULT_PLUGINS = (
    "kalibr.default_plugins.providers",
    "kalibr.default_plugins.stores",
)

logger = logging.getLogger("kalibr.plugins")

pm = pluggy.PluginManager("kalibr")
pm.add_hookspecs(hookspecs)

_lock = threading.Lock()
_loaded = False


def load_plugins() -> None:
    """Register the built-in plugins and the installed entry points, once."""
    global _loaded
    with _lock:
        if _loaded:
            return
        allow = os.environ.get("KALIBR_LOAD_PLUGINS")
        allowed = None if allow is None else {name.strip() for name in allow.split(",") if name.strip()}
        for entry_point in importlib.metadata.entry_points(group="kalibr"):
            if (allowed is not None and entry_point.name not in allowed) or pm.has_plugin(entry_point.name):
                continue
            try:
                pm.register(entry_point.load(), name=entry_point.name)
            except Exception:  # a broken plugin must not take the router down with it
                logger.warning("kalibr: could not load plugin %r", entry_point.value, exc_info=True)
        for module_name in DEFAULT_PLUGINS:
            if not pm.has_plugin(module_name):
                pm.register(importlib.import_module(module_name), name=module_name)
        pm.check_pending()
        _loaded = True


def _collect(hook_name: str) -> dict[str, Any]:
    load_plugins()
    found: dict[str, Any] = {}

    def register(name: str, factory: Any) -> None:
        # First registration wins; pluggy calls later-registered plugins first, so a third-party plugin
        # can override a built-in of the same name.
        found.setdefault(name, factory)

    getattr(pm.hook, hook_name)(register=register)
    return found


def provider_factories() -> dict[str, ProviderFactory]:
    """Provider name -> factory, from every plugin."""
    return _collect("kalibr_register_providers")


def store_factories() -> dict[str, StoreFactory]:
    """URL scheme -> store factory, from every plugin."""
    return _collect("kalibr_register_stores")


def adapter_factories() -> dict[str, AdapterFactory]:
    """Adapter name -> factory, from every plugin."""
    return _collect("kalibr_register_adapters")


def plugin_failure_category(error: BaseException) -> str | None:
    """The first plugin's ``kalibr_failure_category(error)`` answer, or None when no plugin knows the error."""
    load_plugins()
    try:
        found = pm.hook.kalibr_failure_category(error=error)
    except Exception:  # a broken plugin must not turn a failure report into a crash
        logger.warning("kalibr: a kalibr_failure_category plugin raised", exc_info=True)
        return None
    return found if isinstance(found, str) else None


def make_adapter(name: str, extra: str, router: Any, **options: Any) -> Any:
    """Build the named adapter around ``router``, or say which extra to install."""
    factory: Callable[..., Any] | None = adapter_factories().get(name)
    if factory is None:
        from kalibr._exceptions import MissingExtraError

        raise MissingExtraError(f"router.as_{name}()", extra)
    return factory(router, **options)


def lazy_exports(package: str, homes: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports each public name from its home module on first use.

    Adapter packages use it so that loading their plugin (which the core does on a process's first routed call)
    does not import their framework::

        __getattr__ = lazy_exports(__name__, {"ChatKalibr": "kalibr_langchain.chat_model"})
    """

    def __getattr__(name: str) -> Any:
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(homes[name]), name)

    return __getattr__
