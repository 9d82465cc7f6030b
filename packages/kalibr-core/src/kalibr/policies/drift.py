"""Change detection: notice a path whose success rate has dropped, and stop trusting its old record.

Plain Thompson sampling never forgets: a path with 200 past successes keeps its traffic long after it starts
failing. Always-on discounting forgets, but loses reward when nothing changes. ``DropDetector`` forgets only on
evidence: a one-sided Bernoulli CUSUM (Page's test) of "the rate fell to ``drop_ratio`` of what it was" against
"it did not". Each outcome adds its log-likelihood ratio; the sum is floored at zero, so a success on a healthy
path wipes out earlier bad luck. When the sum passes ``threshold`` the arm's evidence restarts from the outcomes
since the sum last left zero (the estimated change point), so the restarted arm already carries the failures
that revealed the change and Thompson sampling moves its traffic away at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from kalibr.policies.base import ArmState

__all__ = ["DropDetector"]

STATISTIC = "drop_cusum"
RUN_SUCCESSES = "run_successes"
RUN_FAILURES = "run_failures"
RUN_LENGTH = "run_length"
RESETS = "resets"
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

    def observe(self, before: ArmState, after: ArmState, score: float) -> ArmState:
        """``after`` is ``before`` with ``score`` folded in; returns it with the detector stepped (maybe fired)."""
        extra = before.extra
        run_s = extra.get(RUN_SUCCESSES, 0.0)
        run_f = extra.get(RUN_FAILURES, 0.0)
        trusted_s = before.successes - run_s
        trusted_f = before.failures - run_f
        if trusted_s + trusted_f < self.min_evidence:
            return after if not extra else replace(after, extra={**extra, STATISTIC: 0.0})
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
        return replace(
            after,
            successes=run_s,
            failures=run_f,
            samples=int(run_length),
            extra={**extra, **restarted},
        )

    def _log_ratio(self, rate: float, score: float) -> float:
        dropped = rate * self.drop_ratio
        return score * math.log(dropped / rate) + (1.0 - score) * math.log((1.0 - dropped) / (1.0 - rate))
