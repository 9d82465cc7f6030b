"""The seam between the Router and whatever decides: the embedded engine or the remote service client.

Data flows one way: Router -> Intelligence -> Store. Both implementations honour the same promises:
``decide`` always returns a decision (the remote client falls back to the first path), and ``report``
never raises because the intelligence is down: outcomes are applied, queued or spooled, never dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from kalibr._domain import Decision, Outcome, Path
from kalibr.stores.base import OutcomeChanges

__all__ = ["Constraints", "Intelligence", "PolicyAnswer"]


@dataclass(frozen=True, slots=True)
class Constraints:
    """Limits a recommended path must respect (``get_policy``)."""

    max_cost_usd: float | None = None
    max_latency_ms: float | None = None
    min_quality: float | None = None
    min_confidence: float | None = None


@dataclass(frozen=True, slots=True)
class PolicyAnswer:
    """What ``get_policy`` recommends for a goal, and how sure it is."""

    goal: str
    recommended_path_id: str | None
    recommended_model: str | None
    success_rate: float | None
    sample_count: int
    confidence: float
    reasoning: str
    enough_data: bool
    window_hours: float
    alternatives: Sequence[Mapping[str, Any]] = field(default_factory=tuple)
    params: Mapping[str, Any] = field(default_factory=dict)


class Intelligence(Protocol):
    """Decides paths and learns from outcomes."""

    def decide(self, goal: str, paths: Sequence[Path], *, high_risk: bool = False) -> Decision:
        """Choose a path among ``paths`` for ``goal``. Never raises because the intelligence is unavailable.

        ``high_risk``: no exploration, unless the goal's config sets ``exploration_on_high_risk``."""
        ...

    async def adecide(self, goal: str, paths: Sequence[Path], *, high_risk: bool = False) -> Decision: ...

    def record_forced(self, decision: Decision) -> None:
        """Remember a decision the caller forced (``force_model``), so its outcome is attributed."""
        ...

    def report(self, outcome: Outcome) -> None:
        """Learn from an outcome. Idempotent by trace id; never loses the outcome."""
        ...

    async def areport(self, outcome: Outcome) -> None: ...

    def update_outcome(self, trace_id: str, goal: str, changes: OutcomeChanges) -> list[str]:
        """Change a reported outcome; returns the names of the fields changed."""
        ...

    def get_policy(
        self, goal: str, *, window_hours: float = 168, constraints: Constraints | None = None
    ) -> PolicyAnswer: ...

    def get_insights(self, goal: str | None = None, *, window_hours: float = 168) -> dict[str, Any]: ...

    def flush(self) -> None:
        """Persist everything queued so far (a clean shutdown calls this)."""
        ...

    def close(self) -> None: ...
