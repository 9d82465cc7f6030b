"""The scenario: which simulated models exist, how well each does on each goal, and when that changes.

A scenario is plain data (JSON or TOML) validated by pydantic; ``load_scenario`` turns validation failures into a
``UserError`` that names the bad field.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kalibr._exceptions import UserError

__all__ = [
    "AccuracyCurve",
    "Degradation",
    "ErrorRates",
    "GoalSpec",
    "ModelSpec",
    "Price",
    "Scenario",
    "TaskKind",
    "load_scenario",
]

TaskKind: TypeAlias = Literal["arithmetic", "extraction", "classification", "chat"]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]

# Parameters a curve may read when the request leaves them out: the OpenAI defaults.
_PARAM_DEFAULTS = {"temperature": 1.0, "top_p": 1.0}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Price(_Strict):
    """US dollars per million tokens."""

    input_per_mtok: Annotated[float, Field(ge=0.0)] = 0.0
    output_per_mtok: Annotated[float, Field(ge=0.0)] = 0.0


class ErrorRates(_Strict):
    """Probability of each injected failure per request; they must add up to at most 1."""

    rate_limited: Probability = 0.0
    server_error: Probability = 0.0
    bad_gateway: Probability = 0.0
    timeout: Probability = 0.0

    @model_validator(mode="after")
    def _at_most_one(self) -> ErrorRates:
        total = self.rate_limited + self.server_error + self.bad_gateway + self.timeout
        if total > 1.0 + 1e-9:
            raise ValueError(f"error rates add up to {total:.3f}; lower them so the sum is at most 1")
        return self


class AccuracyCurve(_Strict):
    """Accuracy as a piecewise-linear function of one request parameter, flat beyond the end points.

    ``{"param": "temperature", "points": [[0.0, 0.6], [0.7, 0.9], [1.2, 0.5]]}``
    """

    param: str = "temperature"
    points: list[tuple[float, Probability]] = Field(min_length=1)
    default: float | None = None
    """The parameter's value when a request leaves it out (temperature and top_p default to 1.0)."""

    @model_validator(mode="after")
    def _sorted(self) -> AccuracyCurve:
        xs = [x for x, _ in self.points]
        if xs != sorted(xs):
            raise ValueError(f"points must be sorted by {self.param}, got {xs}")
        return self

    def at(self, params: dict[str, Any]) -> float:
        """The accuracy for a request with these parameters."""
        raw = params.get(self.param)
        if not isinstance(raw, int | float) or isinstance(raw, bool):
            raw = self.default if self.default is not None else _PARAM_DEFAULTS.get(self.param, self.points[0][0])
        x = float(raw)
        if x <= self.points[0][0]:
            return self.points[0][1]
        for (x0, y0), (x1, y1) in zip(self.points, self.points[1:], strict=False):
            if x <= x1:
                return y0 + (y1 - y0) * (x - x0) / (x1 - x0) if x1 > x0 else y1
        return self.points[-1][1]


Accuracy: TypeAlias = Probability | AccuracyCurve


def accuracy_at(accuracy: Accuracy, params: dict[str, Any]) -> float:
    """A fixed accuracy, or the curve evaluated at the request's parameters."""
    return accuracy.at(params) if isinstance(accuracy, AccuracyCurve) else float(accuracy)


class ModelSpec(_Strict):
    """One simulated model: its price, speed, size of its answers and how often it fails."""

    price: Price = Price()
    latency_ms: Annotated[float, Field(ge=0.0)] = 0.0
    latency_jitter_ms: Annotated[float, Field(ge=0.0)] = 0.0
    output_tokens: Annotated[int, Field(ge=1)] | None = None
    """Reported completion tokens; ``None`` counts the answer's own length."""
    accuracy: Accuracy = 1.0
    """Accuracy on goals that do not name this model."""
    error_rates: ErrorRates = ErrorRates()
    timeout_sleep_s: Annotated[float, Field(ge=0.0)] = 30.0


class GoalSpec(_Strict):
    """One kind of work and how accurate each model is at it."""

    task: TaskKind = "chat"
    match: str | None = None
    """A regular expression searched in the last user message; the first goal that matches serves the request."""
    accuracy: dict[str, Accuracy] = {}

    @model_validator(mode="after")
    def _regex_compiles(self) -> GoalSpec:
        if self.match is not None:
            try:
                re.compile(self.match)
            except re.error as exc:
                raise ValueError(f"match {self.match!r} is not a valid regular expression: {exc}") from exc
        return self


class Degradation(_Strict):
    """From the ``from_request``-th request to ``goal`` (1-based, counted over every model), ``model`` changes.

    Counting every model's requests keeps the switch point independent of routing. With ``goal="*"`` each goal
    switches at its own ``from_request``-th request. When several degradations apply, the latest one wins.
    """

    goal: str = "*"
    model: str
    from_request: Annotated[int, Field(ge=1)]
    accuracy: Accuracy | None = None
    error_rates: ErrorRates | None = None


class Scenario(_Strict):
    """Everything the sandbox simulates. See ``kalibr.sandbox`` for the file format."""

    name: str = "custom"
    models: dict[str, ModelSpec] = Field(min_length=1)
    goals: dict[str, GoalSpec] = {}
    degradations: list[Degradation] = []
    default_goal: str | None = None
    default_model: str | None = None
    """Serve unknown model names as this model instead of answering 404 (handy for framework test suites)."""

    @model_validator(mode="after")
    def _references_exist(self) -> Scenario:
        for goal_name, goal in self.goals.items():
            for model in goal.accuracy:
                self._check_model(model, f"goals.{goal_name}.accuracy")
        for index, degradation in enumerate(self.degradations):
            self._check_model(degradation.model, f"degradations.{index}.model")
            if degradation.goal != "*" and degradation.goal not in self.goals:
                raise ValueError(f"degradations.{index}.goal {degradation.goal!r} is not a goal: {self._goal_names()}")
        if self.default_goal is not None and self.default_goal not in self.goals:
            raise ValueError(f"default_goal {self.default_goal!r} is not a goal: {self._goal_names()}")
        if self.default_model is not None:
            self._check_model(self.default_model, "default_model")
        return self

    def _check_model(self, model: str, where: str) -> None:
        if model not in self.models:
            raise ValueError(f"{where}: unknown model {model!r}; the scenario's models are {sorted(self.models)}")

    def _goal_names(self) -> str:
        return "use '*' or one of " + ", ".join(sorted(self.goals)) if self.goals else "the scenario has no goals"


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario from a ``.json`` or ``.toml`` file."""
    file = Path(path)
    if file.suffix not in (".json", ".toml"):
        raise UserError(f"scenario file {str(file)!r} must end in .json or .toml")
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read scenario file {str(file)!r}: {exc.strerror}") from exc
    try:
        data: Any = tomllib.loads(text) if file.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"scenario file {str(file)!r} is not valid {file.suffix[1:].upper()}: {exc}") from exc
    return scenario_from_data(data, source=str(file))


def scenario_from_data(data: Any, *, source: str = "scenario") -> Scenario:
    """Validate already-parsed scenario data, raising ``UserError`` that names each bad field."""
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '(top level)'}: {error['msg']}" for error in exc.errors()
        )
        raise UserError(f"invalid {source}: {problems}") from exc
