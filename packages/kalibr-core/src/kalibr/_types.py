"""Type aliases and fixed vocabularies shared by every layer."""

from __future__ import annotations

from typing import Any, Literal, TypeAlias, get_args

FailureCategory: TypeAlias = Literal[
    "timeout",
    "context_exceeded",
    "tool_error",
    "rate_limited",
    "validation_failed",
    "hallucination_detected",
    "user_unsatisfied",
    "empty_response",
    "malformed_output",
    "auth_error",
    "provider_error",
    "unknown",
]
"""Why a call failed. The twelve categories of the Kalibr wire contract."""

FAILURE_CATEGORIES: tuple[FailureCategory, ...] = get_args(FailureCategory)

WIRE_ONLY_FAILURE_CATEGORIES: tuple[str, ...] = ("healed",)
"""Categories the official SDK sends that we accept on the wire but never produce."""

Message: TypeAlias = dict[str, Any]
"""A chat message in the OpenAI chat-completions shape: ``{"role": "user", "content": "..."}``."""

PathSpec: TypeAlias = "str | dict[str, Any] | Any"
"""What a user may pass as a path: a model name, a dict with ``model``/``params``/``tools``, or a ``Path``."""

OutcomeSource: TypeAlias = Literal["explicit", "run", "success_when", "score_when", "error", "update"]
"""Who produced an outcome: the caller, a verdict on a whole run (a chain, a query, an agent), a per-call
callback, a provider failure, or a late update."""

SOURCE_PRECEDENCE: dict[str, int] = {
    "error": 1,
    "success_when": 1,
    "score_when": 1,
    "run": 2,
    "explicit": 3,
    "update": 3,
}
"""A later outcome for a trace id replaces an earlier one whose source ranks lower; the latest explicit report
replaces any earlier outcome (an update too) and the latest run verdict an earlier one: the caller's word beats a
run's verdict, which beats a per-call check. A replacing outcome is the whole outcome (fields it does not give
are cleared); ``update_outcome`` changes only the fields it is given."""


def source_replaces(new: str, old: str) -> bool:
    """Whether an outcome from source ``new`` replaces a stored one from ``old`` (``SOURCE_PRECEDENCE``): the latest
    explicit report replaces any earlier outcome, the latest run verdict any but an explicit one or an update, and
    otherwise only a higher-ranked source replaces a lower one."""
    rank_new, rank_old = SOURCE_PRECEDENCE.get(new, 1), SOURCE_PRECEDENCE.get(old, 1)
    return new == "explicit" or rank_new > rank_old or (new == old == "run")


def check_failure_category(value: str | None) -> FailureCategory | None:
    """Return ``value`` as a failure category, or raise ``ValueError`` listing the valid ones."""
    if value is None:
        return None
    if value in FAILURE_CATEGORIES:
        return value  # type: ignore[return-value,unused-ignore]
    raise ValueError(f"unknown failure_category {value!r}: use one of {', '.join(FAILURE_CATEGORIES)}")
