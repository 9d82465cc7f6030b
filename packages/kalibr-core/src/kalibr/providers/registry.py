"""Which provider serves a path: its ``provider`` name, else one inferred from the model name."""

from __future__ import annotations

import threading

from kalibr._domain import Path
from kalibr._exceptions import UserError
from kalibr.providers.base import DirectProvider, Provider

__all__ = ["provider_for", "provider_name"]

_providers: dict[str, Provider | DirectProvider] = {}
_lock = threading.Lock()


def provider_name(path: Path) -> str:
    """The path's ``provider``, else ``anthropic`` for ``claude*`` models, else ``openai`` (OpenAI-compatible)."""
    return path.provider or ("anthropic" if path.model.startswith("claude") else "openai")


def provider_for(path: Path) -> Provider | DirectProvider:
    """The provider instance for ``path`` (one per name per process, built from the plugins' factories)."""
    name = provider_name(path)
    provider = _providers.get(name)
    if provider is None:
        from kalibr.plugins import provider_factories

        with _lock:
            factories = provider_factories()
            if name not in factories:
                raise UserError(
                    f"unknown provider {name!r} for path {path.label!r}: known providers are {sorted(factories)}"
                )
            provider = _providers[name] = factories[name]()
    return provider


def forget_providers() -> None:
    """Drop cached provider instances (tests that register and unregister plugins use this)."""
    with _lock:
        _providers.clear()
