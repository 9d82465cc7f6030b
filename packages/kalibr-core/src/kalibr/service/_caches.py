"""Small in-memory caches of the service: a goal's paths (short TTL) and this replica's recent decisions."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable

from kalibr.stores.base import PathRecord, Store

__all__ = ["PathCache", "RecentDecisions"]


class PathCache:
    """A goal's registered paths, re-read from the store at most every ``ttl`` seconds (replicas converge)."""

    def __init__(self, store: Store, ttl: float) -> None:
        self._store, self._ttl = store, ttl
        self._entries: dict[tuple[str, str], tuple[float, list[PathRecord]]] = {}
        self._lock = threading.Lock()

    def get(self, tenant: str, goal: str) -> list[PathRecord]:
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get((tenant, goal))
        if entry is not None and entry[0] > now:
            return entry[1]
        records = self._store.list_paths(tenant, goal, include_disabled=True)
        with self._lock:
            self._entries[(tenant, goal)] = (now + self._ttl, records)
        return records

    def forget(self, tenant: str, goal: str | None = None) -> None:
        with self._lock:
            for key in [k for k in self._entries if k[0] == tenant and goal in (None, k[1])]:
                del self._entries[key]


class RecentDecisions:
    """This replica's latest decisions not yet reported, so a report needs no store read to find its decision
    (decisions are written behind). Bounded: older ones are found in the store."""

    def __init__(self, limit: int = 100_000) -> None:
        self._limit = limit
        self._entries: OrderedDict[tuple[str, str], tuple[str, str, str]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, tenant: str, trace_id: str, decided: tuple[str, str, str]) -> None:
        with self._lock:
            self._entries[(tenant, trace_id)] = decided
            if len(self._entries) > self._limit:
                self._entries.popitem(last=False)

    def get(self, tenant: str, trace_id: str) -> tuple[str, str, str] | None:
        """The decision of ``trace_id``: (goal, path id, model)."""
        with self._lock:
            return self._entries.get((tenant, trace_id))

    def forget(self, tenant: str, trace_ids: Iterable[str]) -> None:
        """Drop decisions whose outcome is committed: the store has them now."""
        with self._lock:
            for trace_id in trace_ids:
                self._entries.pop((tenant, trace_id), None)
