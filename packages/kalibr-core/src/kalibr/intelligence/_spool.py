"""A durable outbox of outcomes waiting for the intelligence service: a small SQLite file.

Every outcome (and every late update of one) the remote client reports is written here first and leaves only
once the service has answered for it: accepted (deleted), or refused for good (moved to the dead-letter table
with the service's status and reason, never deleted). Outcomes survive a service outage and a process restart.

Rows are keyed by *endpoint*: the service URL plus a fingerprint (a truncated SHA-256) of the API key, never the
key itself. Two apps with different keys on one host share the file but never each other's outcomes, and a
client only ever sends what was spooled under its own key. Within an endpoint rows are keyed by (kind, trace id):
reporting the same trace again before delivery replaces the payload in place, keeping its turn, when the new
report's source outranks the spooled one's (``source_replaces``: the rule the service applies), so the spool holds
the outcome the service would end with. A payload replaced while its predecessor was on the wire stays spooled and
is sent after it. Replay is idempotent: the service replaces an outcome by an equal one.

Outcomes leave in the order they were spooled, in batches bounded by count and by bytes. A batch the service
refuses as a whole (413, 422, a 404 from a proxy...) is split in halves until the outcome it refuses is alone;
transient failures (5xx, timeouts, connection errors) leave everything in place for a later attempt with backoff.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from kalibr._types import source_replaces
from kalibr.intelligence._breaker import CircuitBreaker

__all__ = [
    "DeadLetter",
    "Delivery",
    "OutcomeSpool",
    "Refused",
    "SpoolSender",
    "SpooledItem",
    "default_spool_path",
    "endpoint_for",
]

logger = logging.getLogger("kalibr.remote")

SPOOL_ENV_VAR = "KALIBR_SPOOL"
Kind = Literal["report", "update"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint TEXT NOT NULL,
    kind TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    spooled_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    UNIQUE (endpoint, kind, trace_id)
);
CREATE INDEX IF NOT EXISTS outbox_by_endpoint ON outbox (endpoint, seq);
CREATE TABLE IF NOT EXISTS dead_letters (
    endpoint TEXT NOT NULL,
    kind TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    spooled_at REAL NOT NULL,
    dead_at REAL NOT NULL,
    status_code INTEGER NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (endpoint, kind, trace_id)
);
"""


_DELETE_SENT = "DELETE FROM outbox WHERE seq = ? AND payload = ?"


def _source(payload: dict[str, Any]) -> str:
    """Who produced a spooled report (our client sends it in ``metadata``; none means an explicit report)."""
    metadata = payload.get("metadata")
    source = metadata.get("source") if isinstance(metadata, dict) else None
    return source if isinstance(source, str) else "explicit"


def default_spool_path() -> Path:
    """``$KALIBR_SPOOL`` if set, else ``spool.db`` in the user's data folder."""
    configured = os.environ.get(SPOOL_ENV_VAR, "").strip()
    if configured:
        return Path(configured)
    import platformdirs

    return Path(platformdirs.user_data_dir("kalibr", appauthor=False)) / "spool.db"


def endpoint_for(url: str, api_key: str) -> str:
    """The spool's name for (service, key): the URL and 16 hex digits of the key's SHA-256, never the key."""
    return f"{url.rstrip('/')}#key={hashlib.sha256(api_key.encode()).hexdigest()[:16]}"


@dataclass(frozen=True, slots=True)
class SpooledItem:
    seq: int
    kind: Kind
    trace_id: str
    payload: dict[str, Any]
    text: str
    """The payload as spooled: a row whose payload was replaced since it was read is not the one delivered."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    endpoint: str
    kind: str
    trace_id: str
    goal: str
    status_code: int
    reason: str
    dead_at: float


class OutcomeSpool:
    """Thread-safe; several processes may share one file (SQLite locks it)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=10.0, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def add(self, endpoint: str, trace_id: str, payload: dict[str, Any], kind: Kind = "report") -> None:
        """Spool ``payload``; one already waiting for the same (endpoint, kind, trace) is replaced in its place, unless
        it is a report whose source outranks this one's (an explicit report, then a judge's verdict)."""
        with self._transaction() as db:
            if kind == "report":
                row = db.execute(
                    "SELECT payload FROM outbox WHERE endpoint = ? AND kind = ? AND trace_id = ?",
                    (endpoint, kind, trace_id),
                ).fetchone()
                if row is not None and not source_replaces(_source(payload), _source(json.loads(row[0]))):
                    return
            db.execute(
                "INSERT INTO outbox (endpoint, kind, trace_id, payload, spooled_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (endpoint, kind, trace_id) DO UPDATE SET payload = excluded.payload, attempts = 0",
                (endpoint, kind, trace_id, json.dumps(payload, default=str), time.time()),
            )

    def next_batch(self, endpoint: str, *, max_count: int, max_bytes: int) -> list[SpooledItem]:
        """The oldest items of ``endpoint`` of one kind, at most ``max_count`` and ``max_bytes`` (at least one)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, kind, trace_id, payload FROM outbox WHERE endpoint = ? ORDER BY seq LIMIT ?",
                (endpoint, max_count),
            ).fetchall()
        batch: list[SpooledItem] = []
        total = 0
        for seq, kind, trace_id, payload in rows:
            if batch and (kind != batch[0].kind or total + len(payload) > max_bytes):
                break
            batch.append(SpooledItem(seq, kind, trace_id, json.loads(payload), payload))
            total += len(payload)
        return batch

    def remove(self, items: Sequence[SpooledItem]) -> None:
        """Delete delivered items; one replaced while it was on the wire stays, to be sent after it."""
        with self._transaction() as db:
            db.executemany(_DELETE_SENT, [(item.seq, item.text) for item in items])

    def dead_letter(self, endpoint: str, item: SpooledItem, status_code: int, reason: str) -> None:
        """Move ``item`` out of the outbox, keeping it with the service's answer (``kalibr spool`` shows it)."""
        with self._transaction() as db:
            row = db.execute("SELECT spooled_at FROM outbox WHERE seq = ?", (item.seq,)).fetchone()
            db.execute(_DELETE_SENT, (item.seq, item.text))
            db.execute(
                "INSERT OR REPLACE INTO dead_letters VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    endpoint,
                    item.kind,
                    item.trace_id,
                    json.dumps(item.payload, default=str),
                    row[0] if row else time.time(),
                    time.time(),
                    status_code,
                    reason[:2000],
                ),
            )

    def add_dead(self, endpoint: str, trace_id: str, payload: dict[str, Any], status_code: int, reason: str) -> None:
        """Keep an outcome that could never be accepted (it failed the wire model) as a dead letter."""
        now = time.time()
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO dead_letters VALUES (?, 'report', ?, ?, ?, ?, ?, ?)",
                (endpoint, trace_id, json.dumps(payload, default=str), now, now, status_code, reason[:2000]),
            )

    def retry_dead(self, endpoint: str | None = None) -> int:
        """Put dead-lettered items back in the outbox (after the cause was fixed); returns how many."""
        where, args = ("WHERE endpoint = ?", (endpoint,)) if endpoint else ("", ())
        with self._transaction() as db:
            rows = db.execute(
                f"SELECT endpoint, kind, trace_id, payload, spooled_at FROM dead_letters {where} ORDER BY spooled_at",
                args,
            ).fetchall()
            db.executemany(
                "INSERT INTO outbox (endpoint, kind, trace_id, payload, spooled_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (endpoint, kind, trace_id) DO NOTHING",
                rows,
            )
            db.execute(f"DELETE FROM dead_letters {where}", args)
        return len(rows)

    def drop(self, endpoint: str | None = None, *, dead_only: bool = True) -> int:
        """Delete dead-lettered items (and, with ``dead_only=False``, pending ones too); returns how many."""
        where, args = ("WHERE endpoint = ?", (endpoint,)) if endpoint else ("", ())
        with self._transaction() as db:
            dropped = db.execute(f"DELETE FROM dead_letters {where}", args).rowcount
            if not dead_only:
                dropped += db.execute(f"DELETE FROM outbox {where}", args).rowcount
        return int(dropped)

    def count(self, endpoint: str | None = None) -> int:
        """Items waiting for delivery (to ``endpoint``, or to any)."""
        return self._count("outbox", endpoint)

    def dead_count(self, endpoint: str | None = None) -> int:
        return self._count("dead_letters", endpoint)

    def _count(self, table: str, endpoint: str | None) -> int:
        where, args = ("WHERE endpoint = ?", (endpoint,)) if endpoint else ("", ())
        with self._lock:
            row = self._db.execute(f"SELECT COUNT(*) FROM {table} {where}", args).fetchone()
        return int(row[0])

    def summary(self) -> dict[str, tuple[int, int]]:
        """Per endpoint: (pending, dead-lettered)."""
        with self._lock:
            pending = dict(self._db.execute("SELECT endpoint, COUNT(*) FROM outbox GROUP BY endpoint").fetchall())
            dead = dict(self._db.execute("SELECT endpoint, COUNT(*) FROM dead_letters GROUP BY endpoint").fetchall())
        return {name: (pending.get(name, 0), dead.get(name, 0)) for name in sorted({*pending, *dead})}

    def dead_letters(self, endpoint: str | None = None, limit: int = 100) -> list[DeadLetter]:
        where, args = ("WHERE endpoint = ?", (endpoint,)) if endpoint else ("", ())
        with self._lock:
            rows = self._db.execute(
                f"SELECT endpoint, kind, trace_id, payload, status_code, reason, dead_at FROM dead_letters {where} "
                "ORDER BY dead_at LIMIT ?",
                (*args, limit),
            ).fetchall()
        return [
            DeadLetter(name, kind, trace_id, str(json.loads(payload).get("goal", "")), status, reason, dead_at)
            for name, kind, trace_id, payload, status, reason, dead_at in rows
        ]

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()


class Refused(Exception):
    """The service refused a request for good (a 4xx other than a key problem): resending it cannot help."""

    def __init__(self, status_code: int, reason: str) -> None:
        super().__init__(f"HTTP {status_code}: {reason}")
        self.status_code = status_code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Delivery:
    """How one endpoint's items reach the service. Each callable raises ``Refused`` when the service refuses the
    whole request for good, and anything else when it is unavailable (the items then stay for a later attempt).

    ``reports(payloads)`` sends a batch and returns, per payload in order, None (accepted), or the (status, reason)
    of its refusal; ``report_one`` and ``update_one`` send a single item through the plain routes.
    """

    reports: Callable[[list[dict[str, Any]]], list[tuple[int, str] | None]]
    report_one: Callable[[dict[str, Any]], None]
    update_one: Callable[[dict[str, Any]], None]
    ready: Callable[[], bool]
    """Whether a request may go out now (the circuit breaker, after a cheap health probe when needed)."""


class SpoolSender:
    """Delivers one endpoint's spooled items from a background thread, in bounded batches, while the service answers.

    The spool file is opened by that thread, never on the caller's: until it is open, ``submit`` keeps items in
    memory and the thread writes them first (a clean exit waits for that). Once open, ``submit`` is a local SQLite
    insert (well under a ms).
    """

    def __init__(
        self,
        spool_path: Path,
        endpoint: str,
        delivery: Delivery,
        breaker: CircuitBreaker,
        poll_interval: float,
        *,
        max_batch: int = 500,
        max_batch_bytes: int = 256 * 1024,
        max_backoff: float = 5.0,
    ) -> None:
        self._spool_path = spool_path
        self._endpoint = endpoint
        self._delivery = delivery
        self._breaker = breaker
        self._poll_interval = min(poll_interval, 1.0)
        self._max_batch, self._max_batch_bytes = max_batch, max_batch_bytes
        self._max_backoff = max_backoff
        self._backoff = 0.0
        self._spool: OutcomeSpool | None = None
        self._opened = threading.Event()
        self._incoming: list[tuple[str, dict[str, Any], str, dict[str, Any]]] = []
        self._resumed = False
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._delivering = threading.Lock()
        self._closed = False
        _opening.add(self)
        self._thread = threading.Thread(target=self._run, name="kalibr-spool", daemon=True)
        self._thread.start()

    @property
    def spool(self) -> OutcomeSpool:
        """The open spool (waits for the background thread to have opened it)."""
        self._opened.wait()
        if self._spool is None:
            raise RuntimeError(f"the outcome spool {self._spool_path} could not be opened (see the log)")
        return self._spool

    def submit(
        self, trace_id: str, payload: dict[str, Any], kind: Kind | Literal["dead"] = "report", **refusal: Any
    ) -> None:
        """Spool an item (``kind="dead"``: straight to the dead letters, with ``status_code`` and ``reason``)."""
        with self._lock:
            spool = self._spool
            if spool is None:
                self._incoming.append((trace_id, payload, kind, refusal))
        if spool is not None:
            self._store(spool, trace_id, payload, kind, refusal)
        if kind != "dead":
            self._wake.set()

    def _store(
        self, spool: OutcomeSpool, trace_id: str, payload: dict[str, Any], kind: str, refusal: dict[str, Any]
    ) -> None:
        if kind == "dead":
            logger.warning("kalibr: outcome %s cannot be sent (%s); kept as dead letter", trace_id, refusal["reason"])
            spool.add_dead(self._endpoint, trace_id, payload, refusal["status_code"], refusal["reason"])
        else:
            spool.add(self._endpoint, trace_id, payload, "update" if kind == "update" else "report")

    def service_back(self) -> None:
        """A call just succeeded: if delivery was backing off (or never ran), deliver now."""
        if self._backoff > 0 or not self._resumed:
            self._resumed = True
            self._backoff = 0.0
            self._wake.set()

    def _open(self) -> None:
        try:
            spool = OutcomeSpool(self._spool_path)
        except Exception:
            logger.exception("kalibr: cannot open the outcome spool %s; outcomes stay in memory", self._spool_path)
            self._opened.set()
            return
        with self._lock:
            incoming, self._incoming = self._incoming, []
            for trace_id, payload, kind, refusal in incoming:
                self._store(spool, trace_id, payload, kind, refusal)
            self._spool = spool
        self._opened.set()
        _opening.discard(self)

    def _run(self) -> None:
        self._open()
        while True:
            self._wake.wait(max(self._poll_interval, self._backoff))
            self._wake.clear()
            if self._spool is not None:
                try:
                    self.deliver_pending()
                except Exception:  # a bug or a broken spool file: log it, keep the thread (and the outcomes)
                    logger.exception("kalibr: outcome delivery failed")
            if self._closed:
                break
        if self._spool is not None:
            self._spool.close()

    def deliver_pending(self) -> None:
        """Send batches until the outbox is empty, the breaker refuses, or the service fails (then back off)."""
        spool = self.spool
        with self._delivering:
            while True:
                batch = spool.next_batch(self._endpoint, max_count=self._max_batch, max_bytes=self._max_batch_bytes)
                if not batch or not self._delivery.ready():
                    return
                try:
                    self._send(spool, batch)
                except Exception as exc:
                    self._backoff = min(max(self._backoff * 2, self._poll_interval), self._max_backoff)
                    logger.debug("kalibr: outcome delivery failed (%s); %d stay spooled", exc, spool.count())
                    return
                self._backoff = 0.0

    def _send(self, spool: OutcomeSpool, batch: list[SpooledItem]) -> None:
        """Deliver ``batch``; a whole-batch refusal is split until the refused item is alone, then dead-lettered."""
        if batch[0].kind == "update" or len(batch) == 1:
            item = batch[0]
            send_one = self._delivery.update_one if item.kind == "update" else self._delivery.report_one
            try:
                send_one(item.payload)
            except Refused as refused:
                self._dead(spool, item, refused.status_code, refused.reason)
                return
            spool.remove([item])
            return
        try:
            answers = self._delivery.reports([item.payload for item in batch])
        except Refused:
            middle = len(batch) // 2
            self._send(spool, batch[:middle])
            self._send(spool, batch[middle:])
            return
        accepted = []
        for item, answer in zip(batch, answers, strict=True):
            if answer is None:
                accepted.append(item)
            elif _permanent(answer[0]):
                self._dead(spool, item, *answer)
        spool.remove(accepted)
        if len(accepted) + sum(1 for a in answers if a is not None and _permanent(a[0])) < len(batch):
            raise RuntimeError("the service failed some outcomes of the batch; they stay spooled")

    def _dead(self, spool: OutcomeSpool, item: SpooledItem, status_code: int, reason: str) -> None:
        logger.warning(
            "kalibr: the intelligence service refused %s %s for good (HTTP %d: %s); kept as dead letter, "
            "see `kalibr spool`",
            item.kind,
            item.trace_id,
            status_code,
            reason,
        )
        spool.dead_letter(self._endpoint, item, status_code, reason)

    def close(self, *, wait: float) -> None:
        """One last delivery by the thread, waited for at most ``wait`` s; undelivered items stay spooled.

        The thread closes the spool when it is done, so a delivery stuck on a hung service never blocks the caller.
        """
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=wait)


_opening: weakref.WeakSet[SpoolSender] = weakref.WeakSet()


@atexit.register
def _write_held_items() -> None:
    """At a clean exit, wait (bounded) for every spool still being opened: what it holds in memory gets written."""
    for sender in list(_opening):
        sender._opened.wait(10.0)


def _permanent(status_code: int) -> bool:
    """A refusal resending cannot fix: 4xx, except a key problem (401/403, fixed by the operator), 408 and 429."""
    return 400 <= status_code < 500 and status_code not in (401, 403, 408, 429)
