"""The change log: what automatic jobs did to a goal's paths (generated, retired), shown in insights.

A store that offers ``record_event``/``events`` (see ``EventStore``) keeps the log durably. For the others the
log lives in this process, beside the store object, and is lost when the process ends; the paths themselves
are registered in the store either way.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

__all__ = ["EventStore", "changes", "record_change"]


@runtime_checkable
class EventStore(Protocol):
    """The store protocol addition the change log uses when a store has it."""

    def record_event(self, tenant: str, goal: str, kind: str, data: Mapping[str, Any]) -> None: ...

    def events(self, tenant: str, goal: str | None, since: datetime) -> list[dict[str, Any]]:
        """Events as ``{"at": iso8601, "goal", "kind", "data"}``, oldest first."""
        ...


_lock = threading.Lock()
_side_logs: dict[int, list[dict[str, Any]]] = {}


def record_change(
    store: object, tenant: str, goal: str, kind: str, data: Mapping[str, Any], *, at: datetime | None = None
) -> dict[str, Any]:
    """Append one change; returns it as stored."""
    stamp = (at or datetime.now(UTC)).isoformat()
    if isinstance(store, EventStore):
        store.record_event(tenant, goal, kind, dict(data))
        return {"at": stamp, "goal": goal, "kind": kind, "data": dict(data)}
    event = {"tenant": tenant, "at": stamp, "goal": goal, "kind": kind, "data": dict(data)}
    with _lock:
        log = _side_logs.get(id(store))
        if log is None:
            log = _side_logs[id(store)] = []
            weakref.finalize(store, _forget, id(store))
        log.append(event)
    return {key: value for key, value in event.items() if key != "tenant"}


def changes(store: object, tenant: str, goal: str | None, since: datetime) -> list[dict[str, Any]]:
    """The changes to ``goal`` (or every goal) since ``since``, oldest first."""
    if isinstance(store, EventStore):
        return store.events(tenant, goal, since)
    with _lock:
        log = list(_side_logs.get(id(store), ()))
    return [
        {key: value for key, value in event.items() if key != "tenant"}
        for event in log
        if event["tenant"] == tenant
        and (goal is None or event["goal"] == goal)
        and datetime.fromisoformat(event["at"]) >= since
    ]


def _forget(store_id: int) -> None:
    with _lock:
        _side_logs.pop(store_id, None)
