"""Errors the service answers with: each carries its HTTP status and a message naming the problem and fix."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from kalibr._exceptions import StoreError, UserError

__all__ = [
    "Forbidden",
    "Invalid",
    "NotFound",
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


def error_response(exc: BaseException, where: str) -> tuple[int, dict[str, Any]]:
    """The status and body ``exc`` is answered with, and one log line (``where``: the request) per refusal.

    A refusal (4xx) is logged as one line without a traceback; a store failure as one line whose text stays in the
    log: the body says only that the store is unavailable (a driver's message can hold the store's URL).
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
    logger.info("refused %s: %d %s", where, status, body["detail"][:300])
    return status, body
