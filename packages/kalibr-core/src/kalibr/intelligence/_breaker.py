"""A circuit breaker: stop calling a service that keeps failing, and probe it again after a cool-down.

States::

    closed ──(breaker_after consecutive failures)──> open ──(cooldown elapsed)──> half-open
      ^                                               ^                              │
      └──────────────(probe succeeds)─────────────────┼──────────────────────────────┘
                                                      └──────(probe fails)───────────┘

While open, ``allow()`` answers False at once, so callers fall back without touching the network. In
half-open exactly one caller (the probe) is let through; a probe that never reports back is replaced
after another cool-down.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Literal

__all__ = ["CircuitBreaker"]

BreakerState = Literal["closed", "open", "half-open"]


class CircuitBreaker:
    """Thread-safe; ``clock`` is injectable so tests need no sleeping."""

    def __init__(self, breaker_after: int, cooldown: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._threshold = breaker_after
        self._cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._probe_started: float | None = None

    @property
    def state(self) -> BreakerState:
        with self._lock:
            if self._opened_at is None:
                return "closed"
            return "half-open" if self._probe_started is not None else "open"

    def allow(self) -> bool:
        """May a call go out now? While open: no, except one probe per cool-down."""
        with self._lock:
            if self._opened_at is None:
                return True
            now = self._clock()
            if self._probe_started is not None and now - self._probe_started < self._cooldown:
                return False
            if self._probe_started is None and now - self._opened_at < self._cooldown:
                return False
            self._probe_started = now
            return True

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._probe_started = None

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._probe_started is not None or self._failures >= self._threshold:
                self._opened_at = self._clock()
                self._probe_started = None
