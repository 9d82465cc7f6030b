"""A durable outbox of outcomes waiting for the intelligence service: a small SQLite file.

Every outcome the remote client reports is written here first (a local insert, well under a millisecond)
and deleted only once the service has answered for it, so outcomes survive a service outage and a
process restart. Rows are keyed by (endpoint, trace id): reporting the same trace again before delivery
replaces the row, and the service ignores a trace id it already counted, so replay is idempotent.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kalibr.intelligence._breaker import CircuitBreaker

__all__ = ["OutcomeSpool", "SpoolSender", "default_spool_path"]

logger = logging.getLogger("kalibr.remote")

SPOOL_ENV_VAR = "KALIBR_SPOOL"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spooled_outcomes (
    endpoint TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    spooled_at REAL NOT NULL,
    PRIMARY KEY (endpoint, trace_id)
)
"""


def default_spool_path() -> Path:
    """``$KALIBR_SPOOL`` if set, else ``spool.db`` in the user's data folder."""
    configured = os.environ.get(SPOOL_ENV_VAR, "").strip()
    if configured:
        return Path(configured)
    import platformdirs

    return Path(platformdirs.user_data_dir("kalibr", appauthor=False)) / "spool.db"


class OutcomeSpool:
    """Thread-safe; several processes may share one file (SQLite locks it, the service deduplicates)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=10.0, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)

    def add(self, endpoint: str, trace_id: str, payload: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO spooled_outcomes VALUES (?, ?, ?, ?)",
                (endpoint, trace_id, json.dumps(payload, default=str), time.time()),
            )

    def pending(self, endpoint: str, limit: int) -> list[dict[str, Any]]:
        """The oldest ``limit`` payloads waiting for ``endpoint``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT payload FROM spooled_outcomes WHERE endpoint = ? ORDER BY spooled_at LIMIT ?",
                (endpoint, limit),
            ).fetchall()
        return [json.loads(payload) for (payload,) in rows]

    def remove(self, endpoint: str, trace_ids: Sequence[str]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "DELETE FROM spooled_outcomes WHERE endpoint = ? AND trace_id = ?",
                    [(endpoint, trace_id) for trace_id in trace_ids],
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def count(self, endpoint: str | None = None) -> int:
        with self._lock:
            if endpoint is None:
                row = self._db.execute("SELECT COUNT(*) FROM spooled_outcomes").fetchone()
            else:
                row = self._db.execute(
                    "SELECT COUNT(*) FROM spooled_outcomes WHERE endpoint = ?", (endpoint,)
                ).fetchone()
        return int(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


class SpoolSender:
    """Delivers one endpoint's spooled outcomes from a background thread, in batches, while the breaker allows.

    ``deliver(payloads)`` sends a batch and returns the trace ids the service settled (those are removed);
    it raises when the service is unavailable, and the outcomes stay for the next attempt.
    """

    def __init__(
        self,
        spool: OutcomeSpool,
        endpoint: str,
        deliver: Callable[[list[dict[str, Any]]], list[str]],
        breaker: CircuitBreaker,
        poll_interval: float,
        *,
        batch_size: int = 500,
    ) -> None:
        self.spool = spool
        self._endpoint = endpoint
        self._deliver = deliver
        self._breaker = breaker
        self._poll_interval = min(poll_interval, 1.0)
        self._batch_size = batch_size
        self._wake = threading.Event()
        self._delivering = threading.Lock()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()

    def wake(self) -> None:
        """Something was spooled: make sure the thread runs and let it deliver soon."""
        with self._thread_lock:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="kalibr-spool", daemon=True)
                self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self._poll_interval)
            self._wake.clear()
            if not self._closed:
                self.deliver_pending()

    def deliver_pending(self) -> None:
        """Send batches until the spool is empty, the breaker refuses, or the service fails."""
        with self._delivering:
            while True:
                batch = self.spool.pending(self._endpoint, self._batch_size)
                if not batch or not self._breaker.allow():
                    return
                try:
                    settled = self._deliver(batch)
                except Exception as exc:
                    logger.debug("kalibr: outcome delivery failed (%s); %d stay spooled", exc, len(batch))
                    return
                self.spool.remove(self._endpoint, settled)
                if not settled:
                    return

    def close(self) -> None:
        """Stop the thread, try one last delivery, and close the spool (undelivered outcomes stay in it)."""
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.deliver_pending()
        self.spool.close()
