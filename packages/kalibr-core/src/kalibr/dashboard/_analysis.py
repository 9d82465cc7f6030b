"""What the pages say about a goal beside its aggregates: its insights document (``kalibr.insights``), built by the
function ``get_insights`` calls over the same read, so the dashboard and the API agree on a goal's status, trend,
signals and recommendation.

Building it reads the goal's outcomes (``Store.outcome_columns``), so a page does not build it on every poll: a
document serves for ``max_age`` seconds, then is rebuilt in the background while the last one is still shown. Only
the first view of a goal (or the first after an action changed its tenant's) waits for one.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime
from typing import Any

from kalibr.insights import build_insights
from kalibr.stores.base import Store

__all__ = ["Analyses"]

logger = logging.getLogger("kalibr.dashboard")

_Key = tuple[str, str, float]


class Analyses:
    """Each goal's insights document per window, rebuilt at most every ``max_age`` seconds."""

    def __init__(self, store: Store, max_age: float = 5.0) -> None:
        self.store = store
        self.max_age = max_age
        self._lock = threading.Lock()
        self._documents: dict[_Key, tuple[float, dict[str, Any]]] = {}
        self._building: set[_Key] = set()
        self._generation = 0
        """Bumped by ``forget``: a build that began before it does not store its (older) document."""

    def of(self, tenant: str, goal: str, window_hours: float, now: datetime) -> dict[str, Any]:
        """The goal's entry of the insights document (``goals[0]``) over the window ending ``now``."""
        key = (tenant, goal, window_hours)
        with self._lock:
            found = self._documents.get(key)
            rebuild = found is not None and time.monotonic() - found[0] > self.max_age and key not in self._building
            if rebuild:
                self._building.add(key)
        if found is None:
            return self._build(key, now)
        if rebuild:
            worker = threading.Thread(target=self._rebuild, args=(key, now), name="kalibr-insights", daemon=True)
            worker.start()
        return found[1]

    def forget(self, tenant: str) -> None:
        """Drop the tenant's documents: an action changed what they say (a path is disabled in every goal)."""
        with self._lock:
            self._generation += 1
            for key in [key for key in self._documents if key[0] == tenant]:
                del self._documents[key]

    def _build(self, key: _Key, now: datetime) -> dict[str, Any]:
        tenant, goal, window_hours = key
        with self._lock:
            generation = self._generation
        started = time.monotonic()
        document: dict[str, Any] = build_insights(self.store, tenant, goal, window_hours=window_hours, now=now)[
            "goals"
        ][0]
        with self._lock:
            if generation == self._generation:
                self._documents[key] = (started, document)
        return document

    def _rebuild(self, key: _Key, now: datetime) -> None:
        try:
            self._build(key, now)
        except Exception:  # the page keeps showing the last document; the next view tries again
            logger.warning("kalibr: could not rebuild the insights of goal %r for the dashboard", key[1], exc_info=True)
        finally:
            with self._lock:
                self._building.discard(key)
