"""A judge of its own for chain (or agent, or graph) runs, passed as a LangChain callback.

The router's own ``success_when``/``score_when`` already judges every run's final output (``_runs``), with no
callback passed. ``KalibrCallbackHandler`` is for a different judge per chain: it follows the run tree, links each
Kalibr decision made inside a run (found in the model's ``response_metadata``) to the outermost run, and when that
run ends reports its own verdict on the final output explicitly, replacing the router's. A run that raises reports
its decisions as failed, with a category. Afterwards ``handler.report(output, ...)`` reports the calls behind an
output the handler saw.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any
from uuid import UUID

from langchain_core.outputs import LLMResult

import kalibr
from kalibr import failure_category_of
from kalibr_langchain._reporting import report_result, report_trace, trace_ids_in
from kalibr_langchain._runs import RunFollower

__all__ = ["KalibrCallbackHandler", "failure_category_of"]

logger = logging.getLogger("kalibr.langchain")

_MAX_RUNS = 10_000
_MAX_OUTPUTS = 1_000


class KalibrCallbackHandler(RunFollower):
    """Reports each chain run's outcome for the Kalibr decisions made inside it.

    Usage::

        handler = KalibrCallbackHandler(llm, success_when=lambda joke: joke.punchline != "")
        joke = chain.invoke({"topic": "cats"}, config={"callbacks": [handler]})
        handler.report(joke, success=False)  # a late signal: the user did not laugh

    Args:
        model: the ``ChatKalibr`` (or ``kalibr.Router``) whose decisions to report; others are left alone.
        success_when: judges the run's final output; defaults to the router's own ``success_when``.
        score_when: like ``success_when`` but returns a score in [0, 1].
    """

    run_inline = True  # keep events in order (an LLM's end before its chain's end), also under asyncio
    raise_error = False

    def __init__(
        self,
        model: Any,
        *,
        success_when: Callable[[Any], bool] | None = None,
        score_when: Callable[[Any], float] | None = None,
    ) -> None:
        super().__init__()
        router = getattr(model, "router", model)
        if not isinstance(router, kalibr.Router):
            raise kalibr.UserError(f"KalibrCallbackHandler needs a ChatKalibr or a kalibr.Router, got {model!r}")
        if success_when is not None and score_when is not None:
            raise kalibr.UserError("pass success_when or score_when, not both")
        self.router = router
        if success_when is None and score_when is None:
            success_when, score_when = router.success_when, router.score_when
        self.success_when = success_when
        self.score_when = score_when
        self._lock = threading.Lock()
        self._root_of: OrderedDict[UUID, UUID] = OrderedDict()
        self._members: dict[UUID, list[UUID]] = {}
        self._traces: dict[UUID, list[str]] = {}
        self._outputs: OrderedDict[int, tuple[Any, list[str]]] = OrderedDict()
        self.last_trace_ids: list[str] = []
        """The decisions of the run that ended last (handy right after a stream, whose output is in pieces)."""

    # --- following the run tree -----------------------------------------------------------------------------
    def started(self, run_id: UUID, parent_run_id: UUID | None) -> None:
        with self._lock:
            root = run_id if parent_run_id is None else self._root_of.get(parent_run_id, parent_run_id)
            self._root_of[run_id] = root
            self._members.setdefault(root, []).append(run_id)
            if len(self._root_of) > _MAX_RUNS:  # runs that never ended (a process killed mid-run)
                _, stale_root = self._root_of.popitem(last=False)
                self._members.pop(stale_root, None)
                self._traces.pop(stale_root, None)

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any) -> Any:
        trace_ids = trace_ids_in(response, self.router.goal)
        if not trace_ids:
            return
        with self._lock:
            root = self._root_of.get(run_id, run_id)
            self._traces.setdefault(root, []).extend(trace_ids)
        if parent_run_id is None:  # the model was called on its own: its answer is the run's output
            self._finish(run_id, response)

    # --- ending runs ----------------------------------------------------------------------------------------
    def on_chain_end(self, outputs: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        if parent_run_id is None:
            self._judge(self._finish(run_id, outputs), outputs)

    def on_chain_error(
        self, error: BaseException, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        if parent_run_id is not None:
            return
        category = failure_category_of(error)
        for trace_id in self._finish(run_id, None):
            self._safely(
                trace_id,
                success=False,
                failure_category=category,
                reason=f"the chain raised {type(error).__name__}",  # never its text: it may quote the output
            )

    def _finish(self, root: UUID, output: Any) -> list[str]:
        with self._lock:
            trace_ids = self._traces.pop(root, [])
            self._forget(root)
            if trace_ids:
                self.last_trace_ids = trace_ids
            if trace_ids and output is not None:
                self._outputs[id(output)] = (output, trace_ids)  # holding the output keeps its id() unique
                if len(self._outputs) > _MAX_OUTPUTS:
                    self._outputs.popitem(last=False)
        return trace_ids

    def _forget(self, root: UUID) -> None:
        for run_id in self._members.pop(root, [root]):
            self._root_of.pop(run_id, None)

    def _judge(self, trace_ids: list[str], output: Any) -> None:
        """Judge the run's output once; the verdict goes to each of its decisions."""
        callback = self.success_when or self.score_when
        if callback is None or not trace_ids:
            return
        name = "success_when" if self.success_when is not None else "score_when"
        verdict: dict[str, Any]
        try:
            value = callback(output)
        except Exception as error:
            reason = f"{name} raised {type(error).__name__}"  # never its text: it may quote the output
            logger.warning("kalibr: %s on the chain output; counting the run as failed", reason)
            verdict = {"success": False, "failure_category": "validation_failed", "reason": reason}
        else:
            measure = {"success": bool(value)} if self.success_when is not None else {"score": float(value)}
            verdict = {**measure, "reason": f"{name} on the chain output"}
        for trace_id in trace_ids:
            self._safely(trace_id, **verdict)

    def _safely(self, trace_id: str, **outcome: Any) -> None:
        # A callback must never break the user's chain; a report that cannot be made is logged.
        try:
            report_trace(self.router, trace_id, **outcome)
        except kalibr.KalibrError as error:
            logger.warning("kalibr: could not report trace %s: %s", trace_id, type(error).__name__)

    # --- late reports ---------------------------------------------------------------------------------------
    def trace_ids_for(self, output: Any) -> list[str]:
        """The trace ids of the run that returned ``output`` (the very object), or found inside it."""
        with self._lock:
            known = self._outputs.get(id(output))
        if known is not None and known[0] is output:
            return list(known[1])
        return trace_ids_in(output, self.router.goal)

    def report(
        self,
        output: Any,
        success: bool | None = None,
        *,
        score: float | None = None,
        reason: str | None = None,
        failure_category: kalibr.FailureCategory | None = None,
    ) -> list[str]:
        """Report how the run that produced ``output`` went; the later word replaces the automatic one."""
        trace_ids = self.trace_ids_for(output)
        if not trace_ids:
            return report_result(
                self.router, output, success=success, score=score, reason=reason, failure_category=failure_category
            )
        for trace_id in trace_ids:
            report_trace(
                self.router, trace_id, success=success, score=score, reason=reason, failure_category=failure_category
            )
        return trace_ids
