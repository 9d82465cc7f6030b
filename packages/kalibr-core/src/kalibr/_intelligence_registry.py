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


def resolve_intelligence(
    intelligence: Intelligence | str | None,
    store: Any = None,
    *,
    auto_path_generation: bool | None = None,
    path_generation: Any = None,
    resilience: Any = None,
) -> Intelligence:
    """An explicit intelligence object, else a service URL, else ``KALIBR_INTELLIGENCE_URL``, else embedded.

    With automatic path generation on (the argument, else ``KALIBR_AUTO_PATH_GENERATION``), the embedded
    intelligence is wrapped so decisions include generated paths, and one generation job runs per store.
    """
    if intelligence is not None and not isinstance(intelligence, str):
        base = intelligence
        key: tuple[object, ...] = ("object", id(intelligence))
    else:
        url = intelligence or (None if store is not None else os.environ.get(INTELLIGENCE_URL_ENV))
        if url:
            # The service runs its own generation job; a remote client only decides.
            return _shared_instance(("remote", url, resilience), lambda: _remote(url, resilience))
        key = ("store", store if isinstance(store, str | None) else id(store))
        base = _shared_instance(key, lambda: _embedded(store))
    if not _generation_enabled(auto_path_generation):
        return base
    return _shared_instance(("generated", *key), lambda: _with_generation(base, path_generation))


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


def _generation_enabled(explicit: bool | None) -> bool:
    if explicit is not None:
        return explicit
    from kalibr.path_generation import flag_enabled

    return flag_enabled(None)


def _with_generation(base: Intelligence, config: Any) -> Intelligence:
    from kalibr.path_generation import GeneratedPathsIntelligence, PathGenerator

    store = getattr(base, "store", None)
    if store is None:
        from kalibr._exceptions import UserError

        raise UserError("auto_path_generation needs the embedded engine (or an intelligence with a .store)")
    job = PathGenerator(store, tenant=str(getattr(base, "tenant", "default")), config=config)
    return GeneratedPathsIntelligence(base, store, job=job)


def _remote(url: str, resilience: Any) -> Intelligence:
    from kalibr.intelligence.remote import RemoteIntelligence

    return RemoteIntelligence(url, resilience=resilience)


def reset_shared() -> None:
    """Close and forget every shared intelligence (tests use this between cases)."""
    with _lock:
        instances = list(_shared.values())
        _shared.clear()
    for instance in instances:
        instance.close()
