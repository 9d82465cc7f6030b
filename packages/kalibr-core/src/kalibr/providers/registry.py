"""Which provider serves a path: its ``provider`` name, else one inferred from the model name."""

from __future__ import annotations

import threading
from typing import NamedTuple

from kalibr._domain import Path
from kalibr._exceptions import UserError
from kalibr.providers.base import DirectProvider, Provider

__all__ = ["Resolved", "provider_name", "resolve"]


class Resolved(NamedTuple):
    """A path's provider, sorted once: exactly one of ``direct`` (makes the call itself) or ``wire`` is set."""

    direct: DirectProvider | None
    wire: Provider | None


_providers: dict[str, Resolved] = {}
_lock = threading.Lock()


def provider_name(path: Path) -> str:
    """The path's ``provider``, else ``anthropic`` for ``claude*`` models, else ``openai`` (OpenAI-compatible)."""
    return path.provider or ("anthropic" if path.model.startswith("claude") else "openai")


def resolve(path: Path) -> Resolved:
    """The provider for ``path`` (one per name per process, built from the plugins' factories).

    Whether it is a ``DirectProvider`` is checked once here: a runtime Protocol check costs tens of
    microseconds, too much for every call.
    """
    name = provider_name(path)
    resolved = _providers.get(name)
    if resolved is None:
        from kalibr.plugins import provider_factories

        with _lock:
            factories = provider_factories()
            if name not in factories:
                raise UserError(
                    f"unknown provider {name!r} for path {path.label!r}: known providers are {sorted(factories)}"
                )
            provider = factories[name]()
            if isinstance(provider, DirectProvider):
                resolved = _providers[name] = Resolved(provider, None)
            else:
                resolved = _providers[name] = Resolved(None, provider)
    return resolved


def forget_providers() -> None:
    """Drop cached provider instances (tests that register and unregister plugins use this)."""
    with _lock:
        _providers.clear()
