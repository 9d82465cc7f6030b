"""Kalibr for DSPy: ``router.as_dspy()`` is a DSPy LM routed by Kalibr, and metric scores become outcomes.

>>> dspy.configure(lm=router.as_dspy())  # doctest: +SKIP
>>> dspy.Evaluate(devset=devset, metric=metric, num_threads=8)(program)  # doctest: +SKIP

Each example's metric score reaches the decisions made while predicting it.

Names are imported on first use: the core loads this package's plugin on every process's first routed call,
and that must not pay for importing DSPy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kalibr.plugins import lazy_exports

if TYPE_CHECKING:
    from kalibr_dspy._plugin import as_dspy
    from kalibr_dspy._tracker import DecisionTracker, decisions_of, report, score_of

__all__ = ["DecisionTracker", "as_dspy", "decisions_of", "report", "score_of"]

_HOMES = {
    "DecisionTracker": "kalibr_dspy._tracker",
    "as_dspy": "kalibr_dspy._plugin",
    "decisions_of": "kalibr_dspy._tracker",
    "report": "kalibr_dspy._tracker",
    "score_of": "kalibr_dspy._tracker",
}

__getattr__ = lazy_exports(__name__, _HOMES)
