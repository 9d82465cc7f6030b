"""Metric scores as outcomes: ``report_metric(metric)`` reports each example's score to its decisions.

Works wherever DSPy calls a metric with the prediction it just made: ``dspy.Evaluate`` (threaded or not),
``BootstrapFewShot`` and other optimizers. Needs a ``DecisionTracker`` in DSPy's callbacks.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from typing import Any

import dspy

from kalibr import KalibrError, UserError
from kalibr_dspy._tracker import Decisions, DecisionTracker, decisions_of, report_failure

__all__ = ["report_metric", "score_of"]

logger = logging.getLogger("kalibr.dspy")


def score_of(value: Any) -> float:
    """A metric's value as a score in [0, 1]: a bool, a number in [0, 1], or anything with a ``score``."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and math.isfinite(value) and 0.0 <= value <= 1.0:
        return float(value)
    inner = value.get("score") if isinstance(value, dict) else getattr(value, "score", None)
    if inner is not None and inner is not value:
        return score_of(inner)
    raise UserError(
        f"the metric returned {value!r}: Kalibr needs a bool or a score in [0, 1]; "
        "pass to_score= to report_metric to map it (e.g. to_score=lambda v: v / 10)"
    )


def _tracker_configured() -> bool:
    return any(isinstance(callback, DecisionTracker) for callback in dspy.settings.get("callbacks", []) or [])


def _report(decisions: Decisions, score: float) -> None:
    for router, trace_id in decisions:
        try:
            router.report(score=score, reason="DSPy metric", trace_id=trace_id)
        except KalibrError:  # evicted from the router's memory: the metric's result still stands
            logger.warning("kalibr: could not report a DSPy metric score", exc_info=True)


def report_metric(metric: Callable[..., Any], *, to_score: Callable[[Any], float] | None = None) -> Callable[..., Any]:
    """Wrap a DSPy metric so each call also reports its score to the decisions behind the prediction.

    Usage::

        dspy.configure(lm=router.as_dspy(), callbacks=[kalibr_dspy.DecisionTracker()])
        evaluate = dspy.Evaluate(devset=devset, metric=kalibr_dspy.report_metric(exact_match), num_threads=8)

    The wrapped metric returns what ``metric`` returns. A metric that raises reports the decisions as
    failed (``validation_failed``) and re-raises.
    """
    convert = to_score or score_of

    @functools.wraps(metric)
    def reporting_metric(example: Any, prediction: Any, *args: Any, **kwargs: Any) -> Any:
        if not _tracker_configured():
            raise UserError(
                "report_metric needs a DecisionTracker in DSPy's callbacks: "
                "dspy.configure(callbacks=[kalibr_dspy.DecisionTracker()])"
            )
        decisions = decisions_of(prediction)
        try:
            value = metric(example, prediction, *args, **kwargs)
        except Exception as error:
            report_failure(decisions, error, "validation_failed")
            raise
        _report(decisions, convert(value))
        return value

    return reporting_metric
