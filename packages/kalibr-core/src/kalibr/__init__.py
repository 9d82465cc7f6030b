"""Kalibr: outcome-aware LLM routing.

Declare several paths (models, with params and tools) for a goal; Kalibr picks one per call by Thompson
sampling over the outcomes you report, and moves traffic to what works.
"""

from __future__ import annotations

from typing import Any

from kalibr._completion import Attempt, Completion, StreamAccumulator
from kalibr._domain import Decision, Outcome, Path, Price, Usage
from kalibr._exceptions import (
    AllPathsFailed,
    IntelligenceUnavailable,
    KalibrError,
    MissingExtraError,
    OutcomeNotFound,
    ProviderError,
    ProviderHTTPError,
    ProviderTimeout,
    RequestRejected,
    StoreError,
    UserError,
    failure_category_of,
)
from kalibr._router import Router
from kalibr._streams import AsyncCompletionStream, CompletionStream
from kalibr._types import FAILURE_CATEGORIES, FailureCategory
from kalibr.hookspecs import hookimpl
from kalibr.intelligence._breaker import Resilience
from kalibr.intelligence.base import Constraints, PolicyAnswer
from kalibr.policies.base import PolicyConfig
from kalibr.providers.base import StreamChunk, ToolCall

__all__ = [
    "FAILURE_CATEGORIES",
    "AllPathsFailed",
    "AsyncCompletionStream",
    "Attempt",
    "Completion",
    "CompletionStream",
    "Constraints",
    "Decision",
    "FailureCategory",
    "IntelligenceUnavailable",
    "KalibrError",
    "MissingExtraError",
    "Outcome",
    "OutcomeNotFound",
    "Path",
    "PolicyAnswer",
    "PolicyConfig",
    "Price",
    "ProviderError",
    "ProviderHTTPError",
    "ProviderTimeout",
    "RequestRejected",
    "Resilience",
    "Router",
    "StoreError",
    "StreamAccumulator",
    "StreamChunk",
    "ToolCall",
    "Usage",
    "UserError",
    "failure_category_of",
    "get_insights",
    "get_policy",
    "hookimpl",
    "update_outcome",
]

__version__ = "0.1.0"


def update_outcome(
    trace_id: str,
    goal: str,
    *,
    success: bool | None = None,
    score: float | None = None,
    failure_category: FailureCategory | None = None,
    reason: str | None = None,
) -> list[str]:
    """Change an outcome already reported (a late signal: a user's thumbs-down, a downstream check).

    Only the fields passed change; returns their names.
    """
    from kalibr._domain import check_goal, check_trace_id
    from kalibr._intelligence_registry import default_intelligence
    from kalibr._router import _changes

    changes = _changes(success=success, score=score, failure_category=failure_category, reason=reason)
    if not changes.fields():
        raise UserError("update_outcome needs at least one of success, score, failure_category, reason")
    return default_intelligence().update_outcome(check_trace_id(trace_id), check_goal(goal), changes)


def get_policy(goal: str, window_hours: float = 168, constraints: Constraints | None = None) -> PolicyAnswer:
    """The path Kalibr recommends for ``goal`` now, with its evidence; see ``PolicyAnswer``."""
    from kalibr._domain import check_goal
    from kalibr._intelligence_registry import default_intelligence

    return default_intelligence().get_policy(check_goal(goal), window_hours=window_hours, constraints=constraints)


def get_insights(goal: str | None = None, window_hours: float = 168) -> dict[str, Any]:
    """What is working and what is not, per goal, with actionable signals (the wire API's insights shape)."""
    from kalibr._domain import check_goal
    from kalibr._intelligence_registry import default_intelligence

    return default_intelligence().get_insights(None if goal is None else check_goal(goal), window_hours=window_hours)
