"""Which routed decisions each DSPy prediction was made from, through DSPy's callbacks.

DSPy gives every module, LM and tool call an id and, while the call runs, keeps it in
``callback_context.ACTIVE_CALL_ID`` (only when at least one callback is configured). ``DecisionTracker``
remembers each call's parent; the router's engine records each decision under the active LM call. When a
call ends its decisions move to its parent, and the outermost module's ``Prediction`` carries them, so a
metric scoring that prediction can report to exactly those decisions, even with ``Evaluate``'s threads.
A module that raises reports its decisions as failed.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from dspy.primitives.prediction import Prediction
from dspy.utils.callback import BaseCallback
from dspy.utils.callback_context import ACTIVE_CALL_ID

from kalibr import KalibrError, ProviderError, Router

__all__ = ["DecisionTracker", "decisions_of", "record_decision"]

logger = logging.getLogger("kalibr.dspy")

Decisions = list[tuple[Router, str]]
_ATTRIBUTE = "_kalibr_decisions"


class _CallTree:
    """Open DSPy calls, their parents and the decisions made inside them. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parent: dict[str, str | None] = {}
        self._decisions: dict[str, Decisions] = {}

    def start(self, call_id: str) -> None:
        with self._lock:
            self._parent[call_id] = ACTIVE_CALL_ID.get()

    def record(self, router: Router, trace_id: str) -> None:
        call_id = ACTIVE_CALL_ID.get()
        if call_id is None:
            return
        with self._lock:
            if call_id in self._parent:
                self._decisions.setdefault(call_id, []).append((router, trace_id))

    def end(self, call_id: str) -> tuple[Decisions, bool]:
        """The call's decisions, and whether it was outermost; non-outermost decisions move to the parent."""
        with self._lock:
            parent = self._parent.pop(call_id, None)
            decisions = self._decisions.pop(call_id, [])
            outermost = parent is None or parent not in self._parent
            if decisions and not outermost:
                assert parent is not None
                self._decisions.setdefault(parent, []).extend(decisions)
            return decisions, outermost


_tree = _CallTree()


def record_decision(router: Router, trace_id: str) -> None:
    """Attach a routed call to the DSPy LM call it answers (called by the router's engine)."""
    _tree.record(router, trace_id)


def decisions_of(prediction: Any) -> Decisions:
    """The decisions a prediction was made from (empty if it was not tracked)."""
    found = getattr(prediction, _ATTRIBUTE, None) if isinstance(prediction, Prediction) else None
    return list(found or [])


def failure_category(error: BaseException) -> Any:
    if isinstance(error, ProviderError):
        return error.failure_category
    if type(error).__name__ == "AdapterParseError":
        return "malformed_output"
    return "unknown"


def report_failure(decisions: Decisions, error: BaseException, category: Any = None) -> None:
    for router, trace_id in decisions:
        try:
            router.report(
                success=False,
                reason=f"the DSPy program raised {error!r}"[:300],
                failure_category=category or failure_category(error),
                trace_id=trace_id,
            )
        except KalibrError:  # a decision too old for the router's memory: never break the program
            logger.warning("kalibr: could not report a DSPy module error", exc_info=True)


class DecisionTracker(BaseCallback):  # type: ignore[misc]  # dspy ships no type information
    """Links DSPy predictions to the router decisions behind them; reports module errors as failures.

    Add one to DSPy's callbacks: ``dspy.configure(lm=router.as_dspy(), callbacks=[DecisionTracker()])``.
    """

    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        _tree.start(call_id)

    def on_module_end(self, call_id: str, outputs: Any | None, exception: Exception | None = None) -> None:
        self._end(call_id, outputs, exception)

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        _tree.start(call_id)

    def on_lm_end(self, call_id: str, outputs: Any | None, exception: Exception | None = None) -> None:
        self._end(call_id, outputs, exception)

    def on_tool_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        _tree.start(call_id)

    def on_tool_end(self, call_id: str, outputs: Any | None, exception: Exception | None = None) -> None:
        self._end(call_id, outputs, exception)

    def _end(self, call_id: str, outputs: Any, exception: BaseException | None) -> None:
        decisions, outermost = _tree.end(call_id)
        if exception is not None and outermost:
            report_failure(decisions, exception)
        elif outermost and isinstance(outputs, Prediction):
            setattr(outputs, _ATTRIBUTE, decisions_of(outputs) + decisions)
