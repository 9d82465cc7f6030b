"""Errors the service answers with: each carries its HTTP status and a message naming the problem and fix."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from kalibr._exceptions import StoreError, UserError

__all__ = [
    "Forbidden",
    "Invalid",
    "NotFound",
    "RefusalLog",
    "ServiceError",
    "Unauthorized",
    "describe_validation",
    "error_body",
    "error_response",
]

logger = logging.getLogger("kalibr.service")


class ServiceError(Exception):
    """An error answered as ``{"detail": message, "error": kind}`` with ``status_code``."""

    status_code = 400
    kind = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unauthorized(ServiceError):
    status_code = 401
    kind = "unauthorized"


class Forbidden(ServiceError):
    status_code = 403
    kind = "forbidden"


class NotFound(ServiceError):
    status_code = 404
    kind = "not_found"


class Invalid(ServiceError):
    status_code = 422
    kind = "invalid_request"


def describe_validation(errors: Iterable[Mapping[str, Any]]) -> tuple[str, list[dict[str, str]]]:
    """A message naming each bad field (``goal: Field required``) and the problems as plain dicts."""
    problems = []
    for error in errors:
        location = [str(part) for part in error.get("loc", ()) if part not in ("body", "query", "header", "path")]
        message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
        problems.append({"field": ".".join(location) or "body", "message": message, "type": str(error.get("type", ""))})
    return "; ".join(f"{p['field']}: {p['message']}" for p in problems) or "invalid request", problems


def error_body(kind: str, message: str, **extra: Any) -> dict[str, Any]:
    """The JSON every error is answered with."""
    return {"detail": message, "error": kind, **extra}


class RefusalLog:
    """One INFO line per refused request, at most ``burst`` per ``window`` seconds for each kind (status and route):
    a flood of wrong keys would otherwise print a line per request. What is held back is counted and summed up in
    one line by the next refusal of that kind after the window, or by ``flush`` at shutdown (no timer thread).
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        burst: int = 5,
        window: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._burst = burst
        self._window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._kinds: dict[tuple[int, str], _Window] = {}

    def refused(self, status: int, route: str, where: str, detail: str) -> None:
        """Log (or count) one refusal of ``route`` (its template: the kinds stay few) as ``where`` (the request)."""
        if not self._logger.isEnabledFor(logging.INFO):
            return
        now = self._clock()
        with self._lock:
            window = self._kinds.get((status, route))
            if window is None or now - window.start >= self._window:
                if window is not None and window.held:
                    self._summarise(status, route, window, now)
                window = self._kinds[(status, route)] = _Window(now)
            logged = window.logged < self._burst
            if logged:
                window.logged += 1
            else:
                window.held += 1
        if logged:
            self._logger.info("refused %s: %d %s", where, status, detail[:300])

    def flush(self) -> None:
        """The summary of every kind still holding refusals back (at shutdown)."""
        now = self._clock()
        with self._lock:
            for (status, route), window in self._kinds.items():
                if window.held:
                    self._summarise(status, route, window, now)
            self._kinds.clear()

    def _summarise(self, status: int, route: str, window: _Window, now: float) -> None:
        seconds = min(now - window.start, self._window)
        self._logger.info(
            "%d more refused requests like this (%d %s) in the last %.1fs", window.held, status, route, seconds
        )


class _Window:
    """One kind of refusal in its current window: when it began, the lines logged, the refusals held back."""

    __slots__ = ("held", "logged", "start")

    def __init__(self, start: float) -> None:
        self.start = start
        self.logged = 0
        self.held = 0


def error_response(exc: BaseException, route: str, where: str, refusals: RefusalLog) -> tuple[int, dict[str, Any]]:
    """The status and body ``exc`` is answered with, and one log line (``where``: the request) per refusal.

    A refusal (4xx) is logged as one line without a traceback, through ``refusals`` (which bounds a flood); a store
    failure as one line whose text stays in the log: the body says only that the store is unavailable (a driver's
    message can hold the store's URL).
    """
    if isinstance(exc, ServiceError):
        status, body = exc.status_code, error_body(exc.kind, exc.message)
    elif isinstance(exc, ValidationError | RequestValidationError):
        message, problems = describe_validation(exc.errors())
        status, body = 422, error_body("invalid_request", message, errors=problems)
    elif isinstance(exc, UserError):
        status, body = 422, error_body("invalid_request", str(exc))
    elif isinstance(exc, StoreError):
        logger.error("store error on %s: %s", where, exc)
        return 503, error_body("store_unavailable", "the store is unavailable; retry later")
    else:
        logger.error("unexpected error on %s", where, exc_info=exc)
        return 500, error_body("internal", "internal error (a bug, logged by the service)")
    refusals.refused(status, route, where, body["detail"])
    return status, body
