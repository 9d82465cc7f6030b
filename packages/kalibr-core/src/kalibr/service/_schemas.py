"""Request and response bodies of the Kalibr wire API (field names exact, see docs/wire-api).

Requests are strict (``"yes"`` is not a boolean, ``"3"`` is not a number) but ignore unknown fields, so a
newer client still works. A few optional fields are our own extensions, marked as such; the official SDK
never sends them and loses nothing without them.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from kalibr._domain import check_goal
from kalibr._types import FAILURE_CATEGORIES, WIRE_ONLY_FAILURE_CATEGORIES, FailureCategory
from kalibr.policies.base import PolicyConfig

__all__ = [
    "MAX_DECIDE_COUNT",
    "WIRE_FAILURE_CATEGORIES",
    "ConfigBody",
    "ConfigQuery",
    "DecideRequest",
    "DecideResponse",
    "Decided",
    "ErrorBody",
    "HealthResponse",
    "InsightsQuery",
    "PathRequest",
    "PathResponse",
    "PathsQuery",
    "PathsResponse",
    "PolicyConstraints",
    "PolicyRequest",
    "PolicyResponse",
    "ReportBatchRequest",
    "ReportBatchResponse",
    "ReportRequest",
    "ReportResponse",
    "UpdateRequest",
    "UpdateResponse",
]

WIRE_FAILURE_CATEGORIES: tuple[str, ...] = (*FAILURE_CATEGORIES, *WIRE_ONLY_FAILURE_CATEGORIES)

WireFailureCategory = Literal[FailureCategory, "healed"]
RiskLevel = Literal["low", "medium", "high"]
MAX_ID_CHARS = 256
MAX_REASON_CHARS = 2000
MAX_PARAMS_BYTES = 4096
MAX_METADATA_BYTES = 16384
MAX_DECIDE_COUNT = 64


def _no_nul(text: str) -> str:
    if "\x00" in text:
        raise ValueError("must not contain a NUL character")
    return text


def _json_value(value: Any, limit: int) -> Any:
    """A JSON object field must be finite numbers and NUL-free strings, ``limit`` bytes at most once serialized:
    the same answer on every store (PostgreSQL rejects NaN in JSONB and NUL in text, SQLite takes both)."""
    try:
        encoded = json.dumps(value, allow_nan=False, ensure_ascii=False)
    except ValueError:
        raise ValueError("numbers must be finite (no NaN or Infinity)") from None
    if "\\u0000" in encoded:
        raise ValueError("must not contain a NUL character")
    if len(encoded.encode()) > limit:
        raise ValueError(f"at most {limit} bytes once serialized as JSON")
    return value


def _params(value: dict[str, Any]) -> dict[str, Any]:
    return _json_value(value, MAX_PARAMS_BYTES)  # type: ignore[no-any-return]


def _metadata(value: dict[str, Any]) -> dict[str, Any]:
    return _json_value(value, MAX_METADATA_BYTES)  # type: ignore[no-any-return]


TraceId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]
ModelId = Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS), AfterValidator(_no_nul)]
Identifier = Annotated[str, Field(max_length=MAX_ID_CHARS), AfterValidator(_no_nul)]
"""tool_id, pipeline_id, task_type: stored and returned on later decides, so bounded."""
Params = Annotated[dict[str, Any], AfterValidator(_params)]
Metadata = Annotated[dict[str, Any], AfterValidator(_metadata)]
Score = Annotated[float, Field(ge=0.0, le=1.0)]
Reason = Annotated[str, Field(max_length=MAX_REASON_CHARS), AfterValidator(_no_nul)]


class _Request(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False)


class _GoalRequest(_Request):
    goal: str

    @field_validator("goal")
    @classmethod
    def _valid_goal(cls, goal: str) -> str:
        return check_goal(goal)


class PathRequest(_GoalRequest):
    """Register a path for a goal (``POST /api/v1/routing/paths``)."""

    model_id: ModelId
    tool_id: Identifier | None = None
    params: Params | None = None
    risk_level: RiskLevel = "low"


class PathResponse(BaseModel):
    path_id: str
    goal: str
    model_id: str
    tool_id: str | None
    params: dict[str, Any]
    risk_level: str
    created_at: datetime
    enabled: bool = True


class PathsResponse(BaseModel):
    paths: list[PathResponse]


class DisableResponse(BaseModel):
    status: Literal["disabled"]
    path_id: str


class CandidatePath(_Request):
    """Extension: a path our own client sends with ``decide`` so no separate registration is needed."""

    model_id: ModelId
    params: Params | None = None
    tool_id: Identifier | None = None


class DecideRequest(_GoalRequest):
    task_risk_level: RiskLevel = "low"
    pipeline_id: Identifier | None = None
    candidate_model_ids: Annotated[list[ModelId], Field(max_length=100)] | None = None
    paths: Annotated[list[CandidatePath], Field(max_length=100)] | None = None
    """Extension: decide among exactly these paths, registering any the service has not seen."""
    count: Annotated[
        int,
        Field(
            ge=1,
            le=MAX_DECIDE_COUNT,
            description="Extension: this many independent draws, each with its own trace id: the first is the "
            "answer itself, the others are in `more` (a client keeps them for its next calls, each used once).",
        ),
    ] = 1


class Decided(BaseModel):
    """One decision: the path chosen for one call, with the trace id its outcome is reported under."""

    trace_id: str
    path_id: str
    model_id: str
    tool_id: str | None
    params: dict[str, Any]
    goal: str
    reason: str
    confidence: float
    exploration: bool
    success_rate: float | None
    sample_count: int
    decided_at: datetime
    alternatives_considered: int


class DecideResponse(Decided):
    more: list[Decided] = Field(
        default_factory=list,
        description="Extension: the `count - 1` further draws asked for with `count` (empty by default).",
    )


class ConfigBody(_Request):
    """Routing config of a goal (``"*"``: every goal without its own)."""

    goal: str = "*"
    exploration_rate: Score = 0.1
    min_samples_before_exploit: Annotated[int, Field(ge=0)] = 20
    rollback_threshold: Score = 0.3
    staleness_days: Annotated[float, Field(gt=0)] = 7.0
    exploration_on_high_risk: bool = False
    cost_weight: Annotated[float, Field(ge=0)] = 0.0
    quality_tolerance: Score = 0.0
    budget_per_1k_calls_usd: Annotated[float, Field(gt=0)] | None = None

    @field_validator("goal")
    @classmethod
    def _valid_goal(cls, goal: str) -> str:
        return goal if goal == "*" else check_goal(goal)

    @classmethod
    def of(cls, goal: str, config: PolicyConfig) -> ConfigBody:
        """The wire fields of ``config`` (the rest of a ``PolicyConfig`` stays with the service's defaults)."""
        return cls(goal=goal, **{name: getattr(config, name) for name in cls.model_fields if name != "goal"})

    def applied_to(self, config: PolicyConfig) -> PolicyConfig:
        """``config`` with this body's fields; ``UserError`` when they contradict (two cost settings at once)."""
        return dataclasses.replace(config, **self.model_dump(exclude={"goal"}))


class PolicyConstraints(_Request):
    max_cost_usd: Annotated[float, Field(ge=0)] | None = None
    max_latency_ms: Annotated[float, Field(ge=0)] | None = None
    min_quality: Score | None = None
    min_confidence: Score | None = None
    max_risk: Score | None = None


class PolicyRequest(_GoalRequest):
    task_type: Identifier | None = None
    constraints: PolicyConstraints | None = None
    window_hours: Annotated[float, Field(gt=0, le=24 * 366)] = 168


class PolicyResponse(BaseModel):
    goal: str
    recommended_model: str | None
    recommended_provider: str | None
    outcome_success_rate: float | None
    outcome_sample_count: int
    confidence: float
    risk_score: float
    reasoning: str
    alternatives: list[dict[str, Any]]


class ReportRequest(_GoalRequest):
    trace_id: TraceId
    success: bool
    score: Score | None = None
    failure_reason: Reason | None = None
    failure_category: WireFailureCategory | None = None
    metadata: Metadata | None = None
    tool_id: Identifier | None = None
    execution_params: Params | None = None
    model_id: ModelId | None = None
    pipeline_id: Identifier | None = None


class ReportResponse(BaseModel):
    status: Literal["accepted"]
    trace_id: str
    goal: str


class ReportBatchRequest(_Request):
    """Extension: many outcomes in one request (our client replays its spool this way)."""

    outcomes: Annotated[list[ReportRequest], Field(min_length=1, max_length=1000)]


class BatchItemResult(BaseModel):
    trace_id: str
    status: Literal["accepted", "rejected"]
    status_code: int
    message: str | None = None


class ReportBatchResponse(BaseModel):
    results: list[BatchItemResult]


class UpdateRequest(_GoalRequest):
    trace_id: TraceId
    success: bool | None = None
    score: Score | None = None
    failure_reason: Reason | None = None
    failure_category: WireFailureCategory | None = None
    metadata: Metadata | None = None


class UpdateResponse(BaseModel):
    status: Literal["updated"]
    trace_id: str
    goal: str
    fields_updated: list[str]


class HealthResponse(BaseModel):
    status: str


class _Query(BaseModel):
    """Query strings are text: numbers and booleans are parsed from it (lax), unknown parameters ignored."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class _OptionalGoalQuery(_Query):
    goal: str | None = None

    @field_validator("goal")
    @classmethod
    def _valid_goal(cls, goal: str | None) -> str | None:
        return None if goal is None else check_goal(goal)


class PathsQuery(_OptionalGoalQuery):
    include_disabled: bool = False


class ConfigQuery(_Query):
    goal: str = "*"

    @field_validator("goal")
    @classmethod
    def _valid_goal(cls, goal: str) -> str:
        return goal if goal == "*" else check_goal(goal)


class InsightsQuery(_OptionalGoalQuery):
    window_hours: Annotated[float, Field(gt=0, le=24 * 366)] = 168


class Problem(BaseModel):
    field: str
    """The bad field, dotted (``outcomes.3.model_id``), or ``body``."""
    message: str
    type: str


class ErrorBody(BaseModel):
    """Every error: ``detail`` names the problem and the fix; ``errors`` lists each bad field of a 422."""

    detail: str
    error: Literal[
        "bad_request",
        "unauthorized",
        "forbidden",
        "not_found",
        "payload_too_large",
        "invalid_request",
        "store_unavailable",
        "internal",
    ]
    errors: list[Problem] | None = None
