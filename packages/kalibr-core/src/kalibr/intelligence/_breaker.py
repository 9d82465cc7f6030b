"""A circuit breaker: stop calling a service that keeps failing, and probe it again after a cool-down.

States::

    closed ──(breaker_after consecutive failures, or one timeout)──> open ──(cooldown elapsed)──> half-open
      ^                                               ^                              │
      └──────────────(probe succeeds)─────────────────┼──────────────────────────────┘
                                                      └──────(probe fails)───────────┘

While open, ``allow()`` answers False at once, so callers fall back without touching the network. In
half-open exactly one caller (the probe) is let through; a probe that never reports back is replaced
after another cool-down.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from kalibr._exceptions import UserError

__all__ = ["TIMEOUT_ENV", "CircuitBreaker", "Resilience", "resilience_from_env"]

TIMEOUT_ENV = "KALIBR_INTELLIGENCE_TIMEOUT"

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
        self._answered_at: float | None = None

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

    def answered_within(self, seconds: float) -> bool:
        """Did the service answer in the last ``seconds`` (so it is known not to hang)?"""
        with self._lock:
            return self._answered_at is not None and self._clock() - self._answered_at < seconds

    def has_answered(self) -> bool:
        """Has the service ever answered through this breaker?"""
        with self._lock:
            return self._answered_at is not None

    def record_success(self) -> None:
        with self._lock:
            self._answered_at = self._clock()
            self._failures = 0
            self._opened_at = None
            self._probe_started = None

    def record_failure(self, *, timed_out: bool = False) -> None:
        """Count a failure. A timeout opens the breaker at once: a hung service must cost the caller the
        timeout once, not ``breaker_after`` times; fast failures (refused, 5xx) cost nothing and are counted."""
        with self._lock:
            self._failures += 1
            if timed_out or self._probe_started is not None or self._failures >= self._threshold:
                self._opened_at = self._clock()
                self._probe_started = None


@dataclass(frozen=True, slots=True)
class Resilience:
    """How the remote client protects the caller from a slow or dead service.

    Usage::

        Resilience()                                   # 50 ms decide timeout, open after 3 failures, 5 s cool-down
        Resilience(timeout=0.2, breaker_after=5, cooldown=30.0)
    """

    timeout: float = 0.05
    """Seconds ``decide`` waits for the service before using the first path."""
    breaker_after: int = 3
    """Consecutive failures (connection refused, 5xx, a timeout from a service that answered within ``cooldown``)
    that open the circuit breaker; a timeout from a service not heard from lately opens it at once."""
    cooldown: float = 5.0
    """Seconds the breaker stays open before one probe is let through."""
    warm_up_timeout: float = 0.25
    """Seconds the first decides of a new client wait once the service has answered its health probe (a cold
    service, a loaded machine); a timeout among them ends the warm-up. A service that never answers is not given
    it: its probe costs ``timeout``, once."""
    call_timeout: float = 5.0
    """Seconds for a call the service is known to be answering (it answered within ``cooldown``): delivering
    outcomes, policy, insights, updates. A service not heard from lately is first probed with ``timeout``, so no
    call waits longer than ``timeout`` on a hung service."""

    def __post_init__(self) -> None:
        for name in ("timeout", "warm_up_timeout", "cooldown", "call_timeout"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value <= 0:
                raise UserError(f"Resilience({name}={value!r}): give a positive number of seconds")
        if not isinstance(self.breaker_after, int) or self.breaker_after < 1:
            raise UserError(f"Resilience(breaker_after={self.breaker_after!r}): give a whole number >= 1")


def resilience_from_env() -> Resilience:
    """The defaults, with ``KALIBR_INTELLIGENCE_TIMEOUT`` (seconds) as the decide timeout when set."""
    configured = os.environ.get(TIMEOUT_ENV, "").strip()
    if not configured:
        return Resilience()
    try:
        return Resilience(timeout=float(configured))
    except ValueError as exc:
        raise UserError(f"{TIMEOUT_ENV}={configured!r}: give the decide timeout in seconds, e.g. 0.05") from exc
