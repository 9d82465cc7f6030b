"""Errors the service answers with: each carries its HTTP status and a message naming the problem and fix."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["Forbidden", "Invalid", "NotFound", "ServiceError", "Unauthorized", "describe_validation"]


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
