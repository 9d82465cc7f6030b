"""Change detection: notice a path whose success rate has dropped, and stop trusting its old record.

Plain Thompson sampling never forgets: a path with 200 past successes keeps its traffic long after it starts
failing. Always-on discounting forgets, but loses reward when nothing changes. ``DropDetector`` forgets only on
evidence: a one-sided Bernoulli CUSUM (Page's test) of "the rate fell to ``drop_ratio`` of what it was" against
"it did not". Each outcome adds its log-likelihood ratio; the sum is floored at zero, so a success on a healthy
path wipes out earlier bad luck. When the sum passes ``threshold`` the arm's evidence restarts from the outcomes
since the sum last left zero (the estimated change point), so the restarted arm already carries the failures
that revealed the change and Thompson sampling moves its traffic away at once.

A false alarm would be costly (a good path's record thrown away, and a path with little traffic is slow to
win it back), so the old record is held, not deleted: the restarted path is on probation, the policy sends it
an occasional probe (a fifth of the exploration rate), and the probes' outcomes are weighed between the old
rate and the dropped one. Evidence for the old rate restores the held record; ``probation_probes`` outcomes
without it confirm the drop and the held record is forgotten.

The last detection (when, how many outcomes since the estimated change, the rate before) stays in ``extra``
until probes refute it, so the read side (``get_policy``, insights) judges the path on the evidence the policy
trusts instead of its stale history: ``detected_drop(arm)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from kalibr.policies.base import ArmState

__all__ = ["DetectedDrop", "DropDetector", "detected_drop", "on_probation"]

STATISTIC = "drop_cusum"
RUN_SUCCESSES = "run_successes"
RUN_FAILURES = "run_failures"
RUN_LENGTH = "run_length"
RESETS = "resets"
RESTORES = "restores"
HELD_SUCCESSES = "held_successes"
HELD_FAILURES = "held_failures"
PROBATION_EVIDENCE = "probation_llr"
PROBATION_PROBES = "probation_probes"
DETECTED_AT = "drop_detected_at"
DETECTED_RUN = "drop_detected_run"
DETECTED_FROM_RATE = "drop_detected_from_rate"
_PROBATION_CLEARED = {HELD_SUCCESSES: 0.0, HELD_FAILURES: 0.0, PROBATION_EVIDENCE: 0.0, PROBATION_PROBES: 0.0}
_DETECTION_CLEARED = {DETECTED_AT: 0.0, DETECTED_RUN: 0.0, DETECTED_FROM_RATE: 0.0}
_SLACK = 1e-9
"""Rounding tolerance when asking whether the run holds an outcome's weight."""
_RATE_BOUND = 1e-9
_CLEARED = {STATISTIC: 0.0, RUN_SUCCESSES: 0.0, RUN_FAILURES: 0.0, RUN_LENGTH: 0.0}


@dataclass(frozen=True, slots=True)
class DropDetector:
    """Page's CUSUM for a drop in a path's success rate, kept in ``ArmState.extra``.

    Usage::

        DropDetector(threshold=6.0, drop_ratio=0.25)   # less eager than the default
    """

    threshold: float = 7.0
    """Log-likelihood ratio at which the detector fires: higher means fewer false alarms, slower reaction."""
    drop_ratio: float = 0.2
    """The alternative hypothesis: the rate fell to this fraction of the trusted rate."""
    min_evidence: float = 8.0
    """Trusted outcomes needed before the detector runs (too little evidence to have a rate to fall from)."""
    restore_at: float = 1.0
    """Log-likelihood ratio in favour of the old rate, over the probation outcomes, that restores the record."""
    probation_probes: int = 4
    """Outcomes after a restart without enough evidence for the old rate that confirm the drop."""

    def observe(self, before: ArmState, after: ArmState, score: float) -> ArmState:
        """``after`` is ``before`` with ``score`` folded in; returns it with the detector stepped (maybe fired)."""
        extra = before.extra
        if on_probation(before):
            return self._probation(before, after, score)
        run_s = extra.get(RUN_SUCCESSES, 0.0)
        run_f = extra.get(RUN_FAILURES, 0.0)
        trusted_s, trusted_f = _trusted(before)
        if trusted_s + trusted_f < self.min_evidence:
            return after if not extra else replace(after, extra={**extra, **_CLEARED})
        rate = (trusted_s + 1.0) / (trusted_s + trusted_f + 2.0)
        statistic = extra.get(STATISTIC, 0.0) + self._log_ratio(rate, score)
        if statistic <= 0.0:
            return replace(after, extra={**extra, **_CLEARED})
        run_s += score
        run_f += 1.0 - score
        run_length = extra.get(RUN_LENGTH, 0.0) + 1.0
        if statistic < self.threshold:
            state = {**extra, STATISTIC: statistic, RUN_SUCCESSES: run_s, RUN_FAILURES: run_f, RUN_LENGTH: run_length}
            return replace(after, extra=state)
        restarted = {**_CLEARED, RESETS: extra.get(RESETS, 0.0) + 1.0}
        restarted.update({HELD_SUCCESSES: trusted_s, HELD_FAILURES: trusted_f, PROBATION_EVIDENCE: 0.0})
        restarted[PROBATION_PROBES] = 0.0
        restarted.update({DETECTED_AT: after.last_outcome_at or 0.0, DETECTED_RUN: run_length})
        restarted[DETECTED_FROM_RATE] = rate
        return replace(
            after,
            successes=run_s,
            failures=run_f,
            samples=int(run_length),
            extra={**extra, **restarted},
        )

    def adjust(self, before: ArmState, after: ArmState, old_score: float, new_score: float) -> ArmState:
        """``after`` is ``before`` with one outcome's score moved from ``old_score`` to ``new_score`` (a replaced
        report); returns it with the detector's run moved too, so the run never holds more than the arm does.

        The run holds the latest outcomes, and a correction usually follows its call: when the run can hold the
        old score, the outcome is taken to be in it and its step of the statistic is redone with the new score
        (a run whose statistic falls to zero ends, as in ``observe``). On probation the arm's counts are the
        restarted ones and the held record is untouched.
        """
        extra = before.extra
        if not extra or on_probation(before) or not extra.get(RUN_LENGTH):
            return after
        run_s, run_f = extra.get(RUN_SUCCESSES, 0.0), extra.get(RUN_FAILURES, 0.0)
        statistic = extra.get(STATISTIC, 0.0)
        if run_s >= old_score - _SLACK and run_f >= 1.0 - old_score - _SLACK:
            trusted_s, trusted_f = _trusted(before)
            rate = (trusted_s + 1.0) / (trusted_s + trusted_f + 2.0)
            statistic += self._log_ratio(rate, new_score) - self._log_ratio(rate, old_score)
            if statistic <= 0.0:
                return replace(after, extra={**extra, **_CLEARED})
            run_s += new_score - old_score
            run_f -= new_score - old_score
        run_s = min(max(run_s, 0.0), after.successes)
        run_f = min(max(run_f, 0.0), after.failures)
        return replace(after, extra={**extra, STATISTIC: statistic, RUN_SUCCESSES: run_s, RUN_FAILURES: run_f})

    def _probation(self, before: ArmState, after: ArmState, score: float) -> ArmState:
        """Weigh one post-restart outcome: restore the held record, confirm the drop, or keep waiting."""
        extra = before.extra
        held_s, held_f = extra[HELD_SUCCESSES], extra[HELD_FAILURES]
        rate = (held_s + 1.0) / (held_s + held_f + 2.0)
        evidence = extra.get(PROBATION_EVIDENCE, 0.0) - self._log_ratio(rate, score)
        probes = extra.get(PROBATION_PROBES, 0.0) + 1.0
        if evidence >= self.restore_at:
            return replace(
                after,
                successes=after.successes + held_s,
                failures=after.failures + held_f,
                samples=after.samples + round(held_s + held_f),
                extra={
                    **extra,
                    **_PROBATION_CLEARED,
                    **_DETECTION_CLEARED,
                    RESTORES: extra.get(RESTORES, 0.0) + 1.0,
                },
            )
        if probes >= self.probation_probes:
            return replace(after, extra={**extra, **_PROBATION_CLEARED})
        return replace(after, extra={**extra, PROBATION_EVIDENCE: evidence, PROBATION_PROBES: probes})

    def _log_ratio(self, rate: float, score: float) -> float:
        rate = min(max(rate, _RATE_BOUND), 1.0 - _RATE_BOUND)  # both logarithms need a rate inside (0, 1)
        dropped = rate * self.drop_ratio
        return score * math.log(dropped / rate) + (1.0 - score) * math.log((1.0 - dropped) / (1.0 - rate))


def _trusted(arm: ArmState) -> tuple[float, float]:
    """The arm's successes and failures from before the detector's current run (never negative)."""
    extra = arm.extra
    return (
        max(0.0, arm.successes - extra.get(RUN_SUCCESSES, 0.0)),
        max(0.0, arm.failures - extra.get(RUN_FAILURES, 0.0)),
    )


def on_probation(arm: ArmState) -> bool:
    """True while a restarted arm's old record is held, waiting for probes to confirm or refute the drop."""
    extra = arm.extra
    return bool(extra) and extra.get(HELD_SUCCESSES, 0.0) + extra.get(HELD_FAILURES, 0.0) > 0.0


@dataclass(frozen=True, slots=True)
class DetectedDrop:
    """The detector's last drop on an arm that probes have not refuted."""

    detected_at: float
    """Timestamp (seconds) of the outcome that made the detector fire."""
    outcomes_since_change: int
    """Outcomes from the estimated change point to the detection, that one included."""
    rate_before: float
    """The success rate the path had before the drop (the record held on probation)."""
    on_probation: bool
    """True while the old record is held: probes have neither confirmed nor refuted the drop yet."""


def detected_drop(arm: ArmState) -> DetectedDrop | None:
    """The drop the detector found on ``arm`` and still believes in, or None."""
    extra = arm.extra
    if not extra or extra.get(DETECTED_AT, 0.0) <= 0.0:
        return None
    return DetectedDrop(
        extra[DETECTED_AT],
        int(extra.get(DETECTED_RUN, 0.0)),
        extra.get(DETECTED_FROM_RATE, 0.0),
        on_probation(arm),
    )
