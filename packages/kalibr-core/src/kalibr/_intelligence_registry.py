"""Which intelligence a Router talks to, and who shares it.

The rules (``docs/architecture.md``, "Sharing an engine"):

- ``intelligence=`` an object (an ``Engine``, a ``RemoteIntelligence``...): used as given; the caller owns it and
  shares it by passing it to several Routers.
- ``store=`` a URL (or nothing: ``KALIBR_DB``): every Router of the process on that URL shares one engine, for the
  life of the process. A service URL (``intelligence="http://..."``, ``KALIBR_INTELLIGENCE_URL``) likewise shares one
  client.
- ``store=`` a store object: the Routers given that object share one engine while any of them is alive; the last
  one to be garbage collected closes it (flushing what is queued), so nothing outlives them.

Automatic path generation adds one job per shared engine. A Router whose ``path_generation`` settings differ from
the job already running on its engine raises ``UserError`` instead of being silently ignored.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kalibr._exceptions import UserError
from kalibr.intelligence.base import Intelligence

__all__ = ["default_intelligence", "reset_shared", "resolve_intelligence"]

INTELLIGENCE_URL_ENV = "KALIBR_INTELLIGENCE_URL"

_lock = threading.RLock()  # re-entrant: a release can run from the garbage collector while the lock is held
_shared: dict[object, Intelligence] = {}  # by URL, for the life of the process
_held: dict[object, _Held] = {}  # by object identity, while a Router holds it
_generation_settings: dict[object, Any] = {}


@dataclass
class _Held:
    instance: Intelligence
    users: int
    release: Callable[[], None]
    anchor: object
    """What the key's ``id()`` names, kept alive so the id cannot be reused while the entry exists."""


def resolve_intelligence(
    intelligence: Intelligence | str | None,
    store: Any = None,
    *,
    auto_path_generation: bool | None = None,
    path_generation: Any = None,
    resilience: Any = None,
    owner: object | None = None,
) -> Intelligence:
    """An explicit intelligence object, else a service URL, else ``KALIBR_INTELLIGENCE_URL``, else embedded.

    ``owner`` (the Router) holds what is shared by object identity: released when the owner is garbage collected.
    """
    holds: list[object] = []
    if intelligence is not None and not isinstance(intelligence, str):
        base: Intelligence = intelligence
        key: tuple[object, ...] = ("object", id(intelligence))
        anchor: object = intelligence
    else:
        url = intelligence or (None if store is not None else os.environ.get(INTELLIGENCE_URL_ENV))
        if url:
            # The service runs its own generation job; a remote client only decides.
            return _shared_instance(("remote", url, resilience), lambda: _remote(url, resilience))
        if store is None or isinstance(store, str):
            key, anchor = ("store", store), store
            base = _shared_instance(key, lambda: _embedded(store))
        else:
            key, anchor = ("store", id(store)), store
            base = _hold(key, store, lambda: _embedded(store), lambda engine: engine.close(), holds, owner)
    if not _generation_enabled(auto_path_generation):
        _release_with(owner, holds)
        return base
    generated_key = ("generated", *key)
    with _lock:
        _check_generation_settings(generated_key, path_generation)
        if key[0] == "store" and not isinstance(key[1], int):
            wrapper = _shared_instance(generated_key, lambda: _with_generation(base, path_generation))
        else:  # stop the job with the last holder; the engine is released on its own (or is the caller's)
            wrapper = _hold(
                generated_key, anchor, lambda: _with_generation(base, path_generation), _stop_job, holds, owner
            )
    _release_with(owner, holds)
    return wrapper


def default_intelligence() -> Intelligence:
    """The intelligence module-level functions (``kalibr.update_outcome``...) use."""
    return resolve_intelligence(None, None)


def _shared_instance(key: object, build: Callable[[], Intelligence]) -> Intelligence:
    with _lock:
        instance = _shared.get(key)
        if instance is None:
            instance = _shared[key] = build()
        return instance


def _hold(
    key: object,
    anchor: object,
    build: Callable[[], Intelligence],
    release: Callable[[Any], None],
    holds: list[object],
    owner: object | None,
) -> Intelligence:
    """The instance shared under ``key`` by its holders; without an owner, shared for the life of the process."""
    if owner is None:
        return _shared_instance(key, build)
    with _lock:
        held = _held.get(key)
        if held is None:
            instance = build()
            held = _held[key] = _Held(instance, 0, lambda: release(instance), anchor)
        held.users += 1
        holds.append(key)
        return held.instance


def _release_with(owner: object | None, holds: list[object]) -> None:
    if owner is not None and holds:
        weakref.finalize(owner, _release, tuple(holds))


def _release(keys: tuple[object, ...]) -> None:
    for key in reversed(keys):  # the generation job before the engine it reads
        with _lock:
            held = _held.get(key)
            if held is None:  # reset_shared() already closed it
                continue
            held.users -= 1
            if held.users > 0:
                continue
            del _held[key]
            _generation_settings.pop(key, None)
        # RuntimeError: collected on the engine's own writer thread, which flushes and stops by itself.
        with contextlib.suppress(RuntimeError):
            held.release()


def _check_generation_settings(key: object, settings: Any) -> None:
    running = key in _shared or key in _held
    if not running:
        _generation_settings[key] = settings
        return
    current = _generation_settings.get(key)
    if settings is not None and settings != current:
        raise UserError(
            f"path_generation={settings!r} cannot apply: path generation already runs on this store with "
            f"{current!r} (one job per engine). Give every Router on the store the same settings, or pass "
            "intelligence=GeneratedPathsIntelligence(Engine(store), job=PathGenerator(store, config=...)) to run "
            "a separate engine and job"
        )


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
        raise UserError("auto_path_generation needs the embedded engine (or an intelligence with a .store)")
    job = PathGenerator(store, tenant=str(getattr(base, "tenant", "default")), config=config)
    return GeneratedPathsIntelligence(base, store, job=job)


def _stop_job(wrapper: Any) -> None:
    if wrapper.job is not None:
        wrapper.job.stop()


def _remote(url: str, resilience: Any) -> Intelligence:
    from kalibr.intelligence.remote import RemoteIntelligence

    return RemoteIntelligence(url, resilience=resilience)


def reset_shared() -> None:
    """Close and forget every shared intelligence (tests use this between cases)."""
    with _lock:
        instances = list(_shared.values())
        held = list(_held.values())
        _shared.clear()
        _held.clear()
        _generation_settings.clear()
    for instance in instances:
        instance.close()
    for entry in held:
        entry.release()
