"""The simulation, independent of wire format: pick the goal, count the request, roll the dice, answer.

Randomness for a request comes from ``(seed, goal, model, n)`` where ``n`` counts that model's requests to that
goal, so the same sequence of requests gives the same answers and concurrent models do not perturb each other.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from kalibr.sandbox._answers import solve
from kalibr.sandbox._reply import compose_reply
from kalibr.sandbox._request import ChatRequest, ChatResult, SandboxHTTPError, bad_request
from kalibr.sandbox._scenario import ErrorRates, ModelSpec, Scenario, accuracy_at

__all__ = ["Simulator"]

_NO_GOAL = ""


@dataclass(frozen=True, slots=True)
class _Draws:
    """Every random number a request needs, drawn in a fixed order so determinism survives code changes."""

    latency_s: float
    error: float
    correct: float
    rng: random.Random


class Simulator:
    """Thread-safe: counters sit behind a lock; everything else is per request."""

    def __init__(self, scenario: Scenario, *, seed: int = 0) -> None:
        self.scenario = scenario
        self.seed = seed
        self._lock = threading.Lock()
        self._goal_counts: Counter[str] = Counter()
        self._pair_counts: Counter[tuple[str, str]] = Counter()

    def request_count(self, model: str | None = None, goal: str | None = None) -> int:
        with self._lock:
            return sum(
                count
                for (pair_goal, pair_model), count in self._pair_counts.items()
                if (model is None or pair_model == model) and (goal is None or pair_goal == goal)
            )

    def model_names(self) -> list[str]:
        return sorted(self.scenario.models)

    def complete(self, request: ChatRequest) -> ChatResult:
        """Answer ``request`` or raise ``SandboxHTTPError``; sleeps for the simulated latency."""
        spec_name = self._spec_name(request.model)
        spec = self.scenario.models[spec_name]
        solved = solve(request.last_user_text())
        goal = self._resolve_goal(request, solved.kind if solved else None)
        goal_number, pair_number = self._count(goal, request.model)
        draws = self._draw(spec, goal, request.model, pair_number)
        accuracy, error_rates = self._effective(spec_name, spec, goal, goal_number, request.params)
        time.sleep(draws.latency_s)
        self._inject_error(error_rates, draws.error, spec)
        correct = draws.correct < accuracy
        reply = compose_reply(request, solved, correct=correct, rng=draws.rng)
        output_tokens = spec.output_tokens or max(1, len(reply.output_text()) // 4)
        if request.max_tokens is not None:
            output_tokens = min(output_tokens, request.max_tokens)
        return ChatResult(
            model=request.model,
            text=reply.text,
            tool_calls=reply.tool_calls,
            finish_reason=reply.finish_reason,
            stop_sequence=reply.stop_sequence,
            input_tokens=_input_tokens(request),
            output_tokens=output_tokens,
        )

    def _spec_name(self, model: str) -> str:
        if model in self.scenario.models:
            return model
        if self.scenario.default_model is not None:
            return self.scenario.default_model
        raise SandboxHTTPError(
            404, "not_found", f"The model {model!r} does not exist in this sandbox; use one of {self.model_names()}"
        )

    def _resolve_goal(self, request: ChatRequest, detected_kind: str | None) -> str:
        goals = self.scenario.goals
        if request.goal is not None:
            if request.goal not in goals:
                raise bad_request(f"X-Sandbox-Goal {request.goal!r} is not a goal of this scenario: {sorted(goals)}")
            return request.goal
        text = request.last_user_text()
        for name, goal in goals.items():
            if goal.match is not None and re.search(goal.match, text):
                return name
        for name, goal in goals.items():
            if detected_kind is not None and goal.task == detected_kind:
                return name
        return self.scenario.default_goal or _NO_GOAL

    def _count(self, goal: str, model: str) -> tuple[int, int]:
        with self._lock:
            self._goal_counts[goal] += 1
            self._pair_counts[(goal, model)] += 1
            return self._goal_counts[goal], self._pair_counts[(goal, model)]

    def _draw(self, spec: ModelSpec, goal: str, model: str, pair_number: int) -> _Draws:
        rng = random.Random(f"{self.seed}:{goal}:{model}:{pair_number}")
        latency_s = max(0.0, rng.gauss(spec.latency_ms, spec.latency_jitter_ms)) / 1000.0
        return _Draws(latency_s=latency_s, error=rng.random(), correct=rng.random(), rng=rng)

    def _effective(
        self, spec_name: str, spec: ModelSpec, goal: str, goal_number: int, params: dict[str, Any]
    ) -> tuple[float, ErrorRates]:
        goal_spec = self.scenario.goals.get(goal)
        accuracy = goal_spec.accuracy.get(spec_name, spec.accuracy) if goal_spec else spec.accuracy
        error_rates = spec.error_rates
        active = [
            degradation
            for degradation in self.scenario.degradations
            if degradation.model == spec_name
            and degradation.goal in ("*", goal)
            and goal_number >= degradation.from_request
        ]
        for degradation in sorted(active, key=lambda degradation: degradation.from_request):
            accuracy = degradation.accuracy if degradation.accuracy is not None else accuracy
            error_rates = degradation.error_rates or error_rates
        return accuracy_at(accuracy, params), error_rates

    @staticmethod
    def _inject_error(rates: ErrorRates, draw: float, spec: ModelSpec) -> None:
        threshold = rates.rate_limited
        if draw < threshold:
            raise SandboxHTTPError(429, "rate_limited", "Rate limit reached (simulated); retry after a short wait.")
        threshold += rates.server_error
        if draw < threshold:
            raise SandboxHTTPError(500, "server_error", "The server had an error processing the request (simulated).")
        threshold += rates.bad_gateway
        if draw < threshold:
            raise SandboxHTTPError(502, "bad_gateway", "Bad gateway (simulated).")
        if draw < threshold + rates.timeout:
            time.sleep(spec.timeout_sleep_s)  # the caller's timeout should fire first


def _input_tokens(request: ChatRequest) -> int:
    chars = sum(len(turn.text) for turn in request.turns)
    chars += sum(len(tool.name) + len(tool.description) + len(str(tool.parameters)) for tool in request.tools)
    return max(1, chars // 4)
