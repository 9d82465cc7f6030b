"""Which intelligence a Router talks to, shared per process so every Router on one store shares one engine."""

from __future__ import annotations

import os
import threading
from typing import Any

from kalibr.intelligence.base import Intelligence

__all__ = ["default_intelligence", "resolve_intelligence"]

INTELLIGENCE_URL_ENV = "KALIBR_INTELLIGENCE_URL"

_lock = threading.Lock()
_shared: dict[object, Intelligence] = {}


def resolve_intelligence(intelligence: Intelligence | str | None, store: Any = None) -> Intelligence:
    """An explicit intelligence object, else a service URL, else ``KALIBR_INTELLIGENCE_URL``, else embedded."""
    if intelligence is not None and not isinstance(intelligence, str):
        return intelligence
    url = intelligence or (None if store is not None else os.environ.get(INTELLIGENCE_URL_ENV))
    if url:
        return _shared_instance(("remote", url), lambda: _remote(url))
    key = ("store", store if isinstance(store, str | None) else id(store))
    return _shared_instance(key, lambda: _embedded(store))


def default_intelligence() -> Intelligence:
    """The intelligence module-level functions (``kalibr.update_outcome``...) use."""
    return resolve_intelligence(None, None)


def _shared_instance(key: object, build: Any) -> Intelligence:
    with _lock:
        instance = _shared.get(key)
        if instance is None:
            instance = _shared[key] = build()
        return instance


def _embedded(store: Any) -> Intelligence:
    from kalibr.intelligence.engine import Engine
    from kalibr.stores import open_store

    return Engine(store if store is not None and not isinstance(store, str) else open_store(store))


def _remote(url: str) -> Intelligence:
    from kalibr.intelligence.remote import RemoteIntelligence

    return RemoteIntelligence(url)


def reset_shared() -> None:
    """Close and forget every shared intelligence (tests use this between cases)."""
    with _lock:
        instances = list(_shared.values())
        _shared.clear()
    for instance in instances:
        instance.close()
