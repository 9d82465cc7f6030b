"""Where each path's current evidence starts: the read side judges a path the way the router does.

The router's change detector (``kalibr.policies.drift``) restarts a path's evidence when its success rate drops,
and holds the old record on probation. A path's outcomes from before such a drop are stale: recommending it, or
ranking other paths against it, on that history would contradict what the router learned. So each path's
outcomes are cut at its drop, found either by the router (the arm's ``detected_drop``: the evidence the policy
acts on) or, when the router has not fired (another policy, evidence older than its arms), by the likelihood-ratio
scan of the window's outcomes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from kalibr.insights._stats import Changepoint, changepoint_at, find_changepoint, rounded
from kalibr.policies.base import ArmState
from kalibr.policies.drift import detected_drop
from kalibr.stores.base import OutcomeRecord

__all__ = ["DRIFT_MIN_CHANGE", "DRIFT_STATISTIC", "Drop", "find_drops", "since_drops"]

DRIFT_STATISTIC = 20.0
"""2 x log-likelihood ratio of the best split; 20 keeps false alarms under 1% on stable paths of 50-1000 outcomes."""
DRIFT_MIN_CHANGE = 0.10
"""A change of the success rate smaller than this is not reported."""


@dataclass(frozen=True, slots=True)
class Drop:
    """A change of one path's success rate inside the window (a drop unless ``direction`` is ``up``)."""

    path_id: str
    change: Changepoint
    """The split of the path's outcomes in the window: ``change.index`` is the first outcome after the change."""
    detected_by: Literal["router", "insights"]
    detected_at: datetime | None
    """When the router's detector fired (None when only the insights' scan found the change)."""
    on_probation: bool

    @property
    def direction(self) -> Literal["down", "up"]:
        return "down" if self.change.after_rate < self.change.before_rate else "up"

    def to_dict(self) -> dict[str, Any]:
        change = self.change
        return {
            "direction": self.direction,
            "detected_by": self.detected_by,
            "detected_at": None if self.detected_at is None else self.detected_at.isoformat(),
            "on_probation": self.on_probation,
            "changed_at": change.changed_at.isoformat(),
            "before_success_rate": rounded(change.before_rate),
            "after_success_rate": rounded(change.after_rate),
            "before_samples": change.before_samples,
            "after_samples": change.after_samples,
            "statistic": rounded(change.statistic, 2),
        }

    def describe(self, label: str) -> str:
        change = self.change
        verb = "dropped" if self.direction == "down" else "rose"
        text = (
            f"{label!r} {verb} from {change.before_rate:.0%} to {change.after_rate:.0%} around "
            f"{change.changed_at:%Y-%m-%d %H:%M} UTC"
        )
        if self.detected_at is not None:
            text += f" (the router detected it at {self.detected_at:%H:%M:%S} UTC"
            text += ", probing it on probation)" if self.on_probation else ")"
        return text


def find_drops(per_path: Mapping[str, Sequence[OutcomeRecord]], arms: Mapping[str, ArmState]) -> dict[str, Drop]:
    """Per path (outcomes oldest first): the router's standing detection, else a significant change the scan finds."""
    found: dict[str, Drop] = {}
    for path_id, records in per_path.items():
        arm = arms.get(path_id)
        drop = _router_drop(path_id, records, arm) if arm is not None else None
        found_change = drop or _scanned_change(path_id, records)
        if found_change is not None:
            found[path_id] = found_change
    return found


def since_drops(per_path: Mapping[str, Sequence[OutcomeRecord]], drops: Mapping[str, Drop]) -> list[OutcomeRecord]:
    """Every path's outcomes, those before its drop left out: the evidence each path is judged on now."""
    kept: list[OutcomeRecord] = []
    for path_id, records in per_path.items():
        drop = drops.get(path_id)
        kept.extend(records if drop is None or drop.direction == "up" else records[drop.change.index :])
    kept.sort(key=lambda record: record.reported_at)
    return kept


def _router_drop(path_id: str, records: Sequence[OutcomeRecord], arm: ArmState) -> Drop | None:
    detection = detected_drop(arm)
    if detection is None or not records:
        return None
    # The detector fired on the outcome stamped ``detected_at``; the change began ``outcomes_since_change`` earlier.
    fired = sum(1 for record in records if record.reported_at.timestamp() <= detection.detected_at + 1e-3)
    start = fired - detection.outcomes_since_change
    detected_at = datetime.fromtimestamp(detection.detected_at, records[0].reported_at.tzinfo)
    if start <= 0:  # the change came before the window: every outcome here is after it
        before = records[0]
        change = Changepoint(0, before.reported_at, detection.rate_before, _rate(records), 0, len(records), 0.0)
    elif start >= len(records):
        return None
    else:
        change = changepoint_at(records, start)
    return Drop(path_id, change, "router", detected_at, detection.on_probation)


def _scanned_change(path_id: str, records: Sequence[OutcomeRecord]) -> Drop | None:
    change = find_changepoint(records)
    if change is None or change.statistic < DRIFT_STATISTIC:
        return None
    if abs(change.after_rate - change.before_rate) < DRIFT_MIN_CHANGE:
        return None
    return Drop(path_id, change, "insights", None, False)


def _rate(records: Sequence[OutcomeRecord]) -> float:
    return sum(record.score for record in records) / len(records)
