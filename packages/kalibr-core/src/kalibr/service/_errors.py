"""Errors the service answers with: each carries its HTTP status and a message naming the problem and fix."""

from __future__ import annotations

__all__ = ["Forbidden", "Invalid", "NotFound", "ServiceError", "Unauthorized"]


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
