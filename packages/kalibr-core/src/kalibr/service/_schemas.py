"""Request and response bodies of the Kalibr wire API (field names exact, see docs/wire-api).

Requests are strict (``"yes"`` is not a boolean, ``"3"`` is not a number) but ignore unknown fields, so a
newer client still works. A few optional fields are our own extensions, marked as such; the official SDK
never sends them and loses nothing without them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kalibr._domain import check_goal
from kalibr._types import FAILURE_CATEGORIES, WIRE_ONLY_FAILURE_CATEGORIES, FailureCategory

__all__ = [
    "WIRE_FAILURE_CATEGORIES",
    "ConfigBody",
    "DecideRequest",
    "DecideResponse",
    "HealthResponse",
    "PathRequest",
    "PathResponse",
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
TraceId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]
ModelId = Annotated[str, Field(min_length=1, max_length=256)]
Score = Annotated[float, Field(ge=0.0, le=1.0)]
Reason = Annotated[str, Field(max_length=2000)]


class _Request(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class _GoalRequest(_Request):
    goal: str

    @field_validator("goal")
    @classmethod
    def _valid_goal(cls, goal: str) -> str:
        return check_goal(goal)


class PathRequest(_GoalRequest):
    """Register a path for a goal (``POST /api/v1/routing/paths``)."""

    model_id: ModelId
    tool_id: str | None = None
    params: dict[str, Any] | None = None
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
    params: dict[str, Any] | None = None
    tool_id: str | None = None


class DecideRequest(_GoalRequest):
    task_risk_level: RiskLevel = "low"
    pipeline_id: str | None = None
    candidate_model_ids: list[ModelId] | None = None
    paths: Annotated[list[CandidatePath], Field(max_length=100)] | None = None
    """Extension: decide among exactly these paths, registering any the service has not seen."""


class DecideResponse(BaseModel):
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


class ConfigBody(_Request):
    """Routing config of a goal (``"*"``: every goal without its own)."""

    goal: str = "*"
    exploration_rate: Score = 0.1
    min_samples_before_exploit: Annotated[int, Field(ge=0)] = 20
    rollback_threshold: Score = 0.3
    staleness_days: Annotated[float, Field(gt=0)] = 7.0
    exploration_on_high_risk: bool = False

    @field_validator("goal")
    @classmethod
    def _valid_goal(cls, goal: str) -> str:
        return goal if goal == "*" else check_goal(goal)


class PolicyConstraints(_Request):
    max_cost_usd: Annotated[float, Field(ge=0)] | None = None
    max_latency_ms: Annotated[float, Field(ge=0)] | None = None
    min_quality: Score | None = None
    min_confidence: Score | None = None
    max_risk: Score | None = None


class PolicyRequest(_GoalRequest):
    task_type: str | None = None
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
    metadata: dict[str, Any] | None = None
    tool_id: str | None = None
    execution_params: dict[str, Any] | None = None
    model_id: ModelId | None = None
    pipeline_id: str | None = None


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
    metadata: dict[str, Any] | None = None


class UpdateResponse(BaseModel):
    status: Literal["updated"]
    trace_id: str
    goal: str
    fields_updated: list[str]


class HealthResponse(BaseModel):
    status: str
