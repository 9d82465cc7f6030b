"""A Router that records the outcomes adapters report, for the adapters' tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kalibr
from kalibr.stores.base import OutcomeRecord

__all__ = ["RecordingRouter", "Report", "recording_judge", "stored_outcomes"]


@dataclass(frozen=True)
class Report:
    trace_id: str
    success: bool | None
    score: float | None
    failure_category: str | None
    source: str


class _RecordingIntelligence:
    """Delegates to the real intelligence and keeps every outcome that is not a per-call automatic check."""

    def __init__(self, inner: Any, reports: list[Report]) -> None:
        self._inner = inner
        self._reports = reports

    def report(self, outcome: kalibr.Outcome) -> None:
        if outcome.source not in ("success_when", "score_when"):
            self._reports.append(
                Report(outcome.trace_id, outcome.success, outcome.score, outcome.failure_category, outcome.source)
            )
        self._inner.report(outcome)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class RecordingRouter(kalibr.Router):
    """A router whose ``reports`` lists the explicit, run-level and failure outcomes reported through it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reports: list[Report] = []
        self.intelligence = _RecordingIntelligence(self.intelligence, self.reports)  # type: ignore[assignment]


def stored_outcomes(router: kalibr.Router) -> list[OutcomeRecord]:
    """Every outcome of the router's goal in its embedded engine's store, once the queued writes are flushed."""
    engine: Any = router.intelligence
    engine.flush()
    return list(engine.store.outcomes(engine.tenant, router.goal, datetime(2000, 1, 1, tzinfo=UTC)))


def recording_judge(seen: list[Any], verdict: bool) -> Callable[[Any], bool]:
    """A ``success_when`` that keeps each output it is given in ``seen`` and returns ``verdict``."""

    def judge(output: Any) -> bool:
        seen.append(output)
        return verdict

    return judge
