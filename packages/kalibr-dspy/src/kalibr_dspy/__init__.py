"""Kalibr for DSPy: ``router.as_dspy()`` is a DSPy LM routed by Kalibr, and metric scores become outcomes.

>>> dspy.configure(lm=router.as_dspy(), callbacks=[kalibr_dspy.DecisionTracker()])  # doctest: +SKIP
>>> dspy.Evaluate(devset=devset, metric=kalibr_dspy.report_metric(metric), num_threads=8)(program)  # doctest: +SKIP
"""

from kalibr_dspy._metric import report_metric, score_of
from kalibr_dspy._plugin import as_dspy
from kalibr_dspy._tracker import DecisionTracker, decisions_of

__all__ = ["DecisionTracker", "as_dspy", "decisions_of", "report_metric", "score_of"]
