"""Where each path's current evidence starts: the read side judges a path the way the router does.

The router's change detector (``kalibr.policies.drift``) restarts a path's evidence when its success rate drops,
and holds the old record on probation. A path's outcomes from before such a drop are stale: recommending it, or
ranking other paths against it, on that history would contradict what the router learned. So each path's
outcomes are cut at its drop, found either by the router (the arm's ``detected_drop``: the evidence the policy
acts on) or, when the router has not fired (another policy, evidence older than its arms), by the likelihood-ratio
scan of the window's outcomes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np

from kalibr.insights._stats import Changepoint, changepoint_at, find_changepoint, rounded, sequential_sum
from kalibr.policies.base import ArmState
from kalibr.policies.drift import detected_drop
from kalibr.stores._records import from_micros
from kalibr.stores.base import OutcomeColumns

__all__ = ["DRIFT_MIN_CHANGE", "DRIFT_STATISTIC", "Drop", "find_drops", "path_rows", "since_drops"]

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


def path_rows(columns: OutcomeColumns) -> dict[str, np.ndarray]:
    """Per path id with outcomes, the indices of its rows (oldest first), paths in order of their first outcome."""
    rows = {code: np.flatnonzero(columns.path == code) for code in np.unique(columns.path).tolist()}
    ordered = sorted(rows.items(), key=lambda item: int(item[1][0]))
    return {columns.path_ids[code]: indices for code, indices in ordered}


def find_drops(
    columns: OutcomeColumns, per_path: Mapping[str, np.ndarray], arms: Mapping[str, ArmState]
) -> dict[str, Drop]:
    """Per path (its rows, from ``path_rows``): the router's standing detection, else a significant change the
    scan finds."""
    found: dict[str, Drop] = {}
    for path_id, rows in per_path.items():
        scores, reported_at = columns.score[rows], columns.reported_at[rows]
        arm = arms.get(path_id)
        drop = _router_drop(path_id, scores, reported_at, arm) if arm is not None else None
        found_change = drop or _scanned_change(path_id, scores, reported_at)
        if found_change is not None:
            found[path_id] = found_change
    return found


def since_drops(columns: OutcomeColumns, per_path: Mapping[str, np.ndarray], drops: Mapping[str, Drop]) -> np.ndarray:
    """Which rows each path is judged on now: all of them, those of a path from before its drop left out."""
    kept = np.ones(len(columns), dtype=np.bool_)
    for path_id, drop in drops.items():
        if drop.direction == "down":
            kept[per_path[path_id][: drop.change.index]] = False
    return kept


def _router_drop(path_id: str, scores: np.ndarray, reported_at: np.ndarray, arm: ArmState) -> Drop | None:
    detection = detected_drop(arm)
    if detection is None or not len(scores):
        return None
    # The detector fired on the outcome stamped ``detected_at``; the change began ``outcomes_since_change`` earlier.
    fired = int(np.count_nonzero(reported_at / 1e6 <= detection.detected_at + 1e-3))
    start = fired - detection.outcomes_since_change
    detected_at = datetime.fromtimestamp(detection.detected_at, UTC)
    if start <= 0:  # the change came before the window: every outcome here is after it
        rate = sequential_sum(scores) / len(scores)
        change = Changepoint(0, from_micros(int(reported_at[0])), detection.rate_before, rate, 0, len(scores), 0.0)
    elif start >= len(scores):
        return None
    else:
        change = changepoint_at(scores, reported_at, start)
    return Drop(path_id, change, "router", detected_at, detection.on_probation)


def _scanned_change(path_id: str, scores: np.ndarray, reported_at: np.ndarray) -> Drop | None:
    change = find_changepoint(scores, reported_at)
    if change is None or change.statistic < DRIFT_STATISTIC:
        return None
    if abs(change.after_rate - change.before_rate) < DRIFT_MIN_CHANGE:
        return None
    return Drop(path_id, change, "insights", None, False)
