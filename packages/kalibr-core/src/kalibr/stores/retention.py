"""Retention: decisions and outcomes older than a number of days are deleted; what was learned from them (the arms)
stays. ``kalibr prune`` runs it once; ``kalibr serve --retention-days`` runs it hourly."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta

from kalibr._exceptions import UserError
from kalibr.stores.base import Store

__all__ = ["RetentionJob", "prune_older_than"]

logger = logging.getLogger("kalibr.retention")


def prune_older_than(store: Store, days: float) -> tuple[int, int]:
    """Delete decisions and outcomes older than ``days``; returns how many of each."""
    return store.prune(datetime.now(UTC) - timedelta(days=_checked(days)))


def _checked(days: float) -> float:
    if not days > 0:
        raise UserError(f"retention of {days!r} days: give a positive number of days, e.g. 30")
    return days


class RetentionJob:
    """Prunes ``store`` at start and then every ``every`` seconds, on a daemon thread, until ``stop()``."""

    def __init__(self, store: Store, days: float, *, every: float = 3_600.0) -> None:
        self._store, self._days, self._every = store, _checked(days), every
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kalibr-retention", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                decisions, outcomes = prune_older_than(self._store, self._days)
                if decisions or outcomes:
                    logger.info(
                        "pruned %d decisions and %d outcomes older than %s days", decisions, outcomes, self._days
                    )
            except Exception:  # the store is down: try again next time, serving goes on
                logger.warning("retention: pruning failed; will retry", exc_info=True)
            self._stopped.wait(self._every)
