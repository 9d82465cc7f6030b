"""Errors raised by Kalibr.

The hierarchy::

    KalibrError
    ├── UserError                 a usage mistake: bad goal, bad path, bad outcome; the message says the fix
    │   ├── MissingExtraError     an optional package is needed: the message gives the pip command
    │   └── OutcomeNotFound       no outcome has that trace id (also a LookupError)
    ├── ProviderError             a model provider failed
    │   ├── ProviderTimeout       the call timed out
    │   ├── ProviderHTTPError     the provider answered with an error status (status_code, body)
    │   └── RequestRejected       the provider refused the caller's own request (400, 404, 422): not the path's fault
    ├── AllPathsFailed            every path was tried and failed (an ExceptionGroup of the original ProviderErrors)
    ├── IntelligenceUnavailable   the remote intelligence service did not answer
    └── StoreError                the store could not read or write

``UserError`` also subclasses ``ValueError`` so that bad input is a ``ValueError`` as users expect.
``failure_category_of(error)`` maps any exception to the failure category its outcome is reported with.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from kalibr._types import FAILURE_CATEGORIES, FailureCategory

__all__ = [
    "AllPathsFailed",
    "IntelligenceUnavailable",
    "KalibrError",
    "MissingExtraError",
    "OutcomeNotFound",
    "ProviderError",
    "ProviderHTTPError",
    "ProviderTimeout",
    "RequestRejected",
    "StoreError",
    "UserError",
    "failure_category_of",
]


class KalibrError(Exception):
    """Base class of every error Kalibr raises."""


class UserError(KalibrError, ValueError):
    """A usage mistake by the caller; the message names the problem and the fix."""


class MissingExtraError(UserError, ImportError):
    """An optional dependency is missing."""

    def __init__(self, feature: str, extra: str) -> None:
        super().__init__(f'{feature} needs an optional package: pip install "kalibr-core[{extra}]"')
        self.extra = extra


class OutcomeNotFound(UserError, LookupError):
    """No outcome was reported for that trace id (so there is nothing to update)."""


class ProviderError(KalibrError):
    """A model provider failed. ``failure_category`` says how, for the outcome reported against the path."""

    failure_category: FailureCategory = "provider_error"

    def __init__(self, message: str, *, model: str | None = None) -> None:
        super().__init__(message)
        self.model = model

    @property
    def summary(self) -> str:
        """What is stored as the failed outcome's reason: the error's kind, never the provider's text (which
        may quote the prompt), and the kind of the error it was raised from."""
        cause = self.__cause__
        return type(self).__name__ if cause is None else f"{type(self).__name__} from {type(cause).__name__}"


class ProviderTimeout(ProviderError):
    """The provider did not answer in time."""

    failure_category: FailureCategory = "timeout"


class ProviderHTTPError(ProviderError):
    """The provider answered with an error status."""

    def __init__(self, message: str, *, status_code: int, body: str = "", model: str | None = None) -> None:
        super().__init__(message, model=model)
        self.status_code = status_code
        self.body = body
        self.failure_category = _category_for_status(status_code, body)

    @property
    def summary(self) -> str:
        return f"{type(self).__name__}: HTTP {self.status_code}"


class RequestRejected(ProviderHTTPError):
    """The provider rejected the caller's request itself (bad messages, unknown parameter).

    Not blamed on the path and not retried on another path: the caller must fix the request.
    """


class AllPathsFailed(KalibrError, ExceptionGroup[ProviderError]):
    """Every path was tried and every one failed; ``exceptions`` holds each path's own error in order (the
    exceptions the providers raised, with their status code, failure category and ``__cause__``)."""

    def __new__(cls, message: str, errors: Sequence[ProviderError]) -> AllPathsFailed:
        return super().__new__(cls, message, list(errors))

    def derive(self, excs: Sequence[ProviderError]) -> AllPathsFailed:  # type: ignore[override,unused-ignore]
        return AllPathsFailed(self.message, excs)

    @property
    def failure_category(self) -> FailureCategory:
        """The category of the last path's failure (what finally made the call fail)."""
        last = self.exceptions[-1]
        return last.failure_category if isinstance(last, ProviderError) else failure_category_of(last)


class IntelligenceUnavailable(KalibrError):
    """The intelligence service could not be reached or answered with an error."""


class StoreError(KalibrError):
    """The store failed to read or write."""


def _category_for_status(status_code: int, body: str) -> FailureCategory:
    if status_code == 429:
        return "rate_limited"
    if status_code in (401, 403):
        return "auth_error"
    if status_code in (408, 504):
        return "timeout"
    if status_code in (400, 413) and "context" in body.lower():
        return "context_exceeded"
    return "provider_error"


def failure_category_of(error: BaseException) -> FailureCategory:
    """The failure category an outcome that failed with ``error`` is reported with.

    Kalibr's own errors carry theirs (``AllPathsFailed``: its last path's); ``TimeoutError`` is ``timeout``,
    pydantic's ``ValidationError`` ``validation_failed``, ``json.JSONDecodeError`` ``malformed_output``. For any
    other exception the ``kalibr_failure_category`` plugin hook is asked (adapters map their framework's
    errors there), and ``unknown`` is the answer when no plugin knows it.
    """
    category = getattr(error, "failure_category", None)
    if isinstance(error, KalibrError) and category in FAILURE_CATEGORIES:
        return category  # type: ignore[no-any-return]
    if isinstance(error, TimeoutError):
        return "timeout"
    if isinstance(error, json.JSONDecodeError):
        return "malformed_output"
    if _is_pydantic_validation_error(error):
        return "validation_failed"
    from kalibr.plugins import plugin_failure_category

    found = plugin_failure_category(error)
    return found if found in FAILURE_CATEGORIES else "unknown"  # type: ignore[return-value,unused-ignore]


def _is_pydantic_validation_error(error: BaseException) -> bool:
    from pydantic import ValidationError  # imported here: most processes never need it

    return isinstance(error, ValidationError)
