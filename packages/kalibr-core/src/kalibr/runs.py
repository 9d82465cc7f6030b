"""Which framework run each routed call belongs to, so ``router.report()`` after a run lands on that run.

Frameworks run a model call inside a copy of the caller's context (a LangChain step, a LlamaIndex span, a DSPy
thread), so what the call sets in a ``ContextVar`` never reaches the caller. They do call the callback for the
start of the outermost run (the root) in the caller's own context. An adapter tells a ``RunTracker`` when each
framework call starts and ends and which decisions were made inside it; at a root's start the tracker adds the
run to the *scope* of the caller's thread or asyncio task (a mutable object in a ``ContextVar``), and to the
scopes of the threads and tasks that one was started from (a batch's worker thread, a task of ``gather``).

``Router.report()`` without a trace id then reports, in the caller's thread or asyncio task, whichever is newer:
the router's last direct call made there, or the last run in its scope that made decisions of this router.
A run's report applies to every decision of the router in that run: the final answer depends on every step, so
a path that picks bad tools or writes a bad intermediate step shares the blame. Runs that overlapped the last
one (``chain.batch([...])``, a ``gather``) make it ambiguous, and so does a run still going: the report raises a
``UserError`` naming the fixes.

Usage (an adapter)::

    tracker = RunTracker()
    tracker.start(run_id, parent_id)             # a framework call began (parent_id None: a root)
    tracker.record(run_id, router, trace_id)     # a decision was made while run_id was the innermost call
    run = tracker.end(run_id)                    # a root's end returns its Run (None for any other call)
    run.judge(final_output)                      # each router's judge once, its verdict to all its decisions
    run = tracker.end(run_id, error)             # or, when the call raised:
    run.fail(error)                              # a root's decisions failed if the error blames what a model
                                                 # answered (``blames_output``)
    tracker.end(step_id, output=step_output)     # a step's output: a router's own part when several share the run
    tracker.set_aside(run_id, trace_ids)         # the framework threw those answers away (BestOfN's other attempts)

A step that raised such an error while the run went on (the framework caught it: a retry, a fallback) had its
answer thrown away for being wrong: ``end(step_id, error)`` reports the decisions made inside that step failed at
once, and takes them out of the run, so neither the run's verdict nor a ``report()`` after it lands on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Hashable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kalibr._exceptions import UserError, failure_category_of
from kalibr._types import FailureCategory

if TYPE_CHECKING:
    from kalibr._router import Router

__all__ = ["OUTPUT_FAILURE_CATEGORIES", "Run", "RunOutputs", "RunTracker", "blames_output", "ensure_scope"]

logger = logging.getLogger("kalibr")

OUTPUT_FAILURE_CATEGORIES: frozenset[FailureCategory] = frozenset(
    {"malformed_output", "validation_failed", "tool_error"}
)
"""Categories of a run's error that blame what a model answered (an output parser's error, a failed validation,
a tool called wrongly): the run's decisions are reported failed. Any other error (the caller's own code, a
provider outage the router already blamed on its path) leaves them unjudged."""

_MAX_OPEN_RUNS = 100_000  # runs whose end never came (an abandoned stream) are forgotten oldest first
_MAX_SCOPE_ROOTS = 256  # finished runs a scope remembers (more than any batch whose overlap matters)

_lock = threading.Lock()


next_sequence: Callable[[], int] = itertools.count(1).__next__
"""A process-wide increasing number: orders direct calls and finished runs (the counter's own method: the router
takes one per call, and a Python function around it would double the cost)."""


def _owner() -> tuple[int, int]:
    """The caller's thread and asyncio task: a scope belongs to the one that opened it."""
    loop = asyncio._get_running_loop()  # None outside a loop, where current_task() would raise (costly)
    task = asyncio.current_task(loop) if loop is not None else None
    return threading.get_ident(), id(task) if task is not None else 0


@dataclass(frozen=True)
class Run:
    """A finished root run and every decision made under it, in order."""

    run_id: Hashable
    decisions: tuple[tuple[Router, str], ...]
    own_outputs: tuple[tuple[Router, Any], ...] = ()
    """For a run where several routers made decisions: each router's part of it, the output of the outermost step
    that made all of that router's decisions and none of another router's (a branch of a parallel step, a tool)."""

    def trace_ids(self, router: Router) -> list[str]:
        """The trace ids of ``router``'s decisions in this run."""
        return [trace_id for owner, trace_id in self.decisions if owner is router]

    def routers(self) -> list[Router]:
        """The routers that made this run's decisions, in the order of their first decision."""
        return list({id(router): router for router, _ in self.decisions}.values())

    def judge(self, output: Any) -> None:
        """Judge the run's final ``output``: each router's ``success_when``/``score_when`` runs once and its
        verdict goes to every decision of that router in the run (``Router.evaluate(..., final=True)``). A router
        with a part of the run of its own (``own_outputs``) is judged on that part's output instead: when two
        routers share a run, neither judge sees what the other one's steps answered.

        Called from a framework's end-of-run callback, it never raises: a verdict that cannot be reported (a
        decision evicted from the router's memory, a store failure) is logged with the error's type.
        """
        own = {id(router): part for router, part in self.own_outputs}
        for router in self.routers():
            _logged(router.evaluate, self.trace_ids(router), own.get(id(router), output), final=True)

    def fail(self, error: BaseException) -> None:
        """The run raised ``error``: report its decisions failed when the error blames what a model answered
        (``blames_output``), else report nothing. Never raises; see ``judge``."""
        category = blames_output(error)
        if category is None:
            return
        reason = f"the run raised {type(error).__name__}"
        for router, trace_id in self.decisions:
            _logged(router.report_run_failure, trace_id, failure_category=category, reason=reason)


class RunOutputs:
    """Which recent run returned each output object, so an adapter's ``llm.report(output)`` finds its decisions.

    Keyed by identity (holding the output keeps its ``id()`` unique); thread-safe; the oldest ``size`` are
    forgotten first. The very same object returned by several runs (an interned ``"4"``) belongs to none of them:
    asking for it raises ``UserError`` ending with ``ambiguous_fix``, the adapter's way to name the decision.
    """

    def __init__(self, ambiguous_fix: str, size: int = 1_000) -> None:
        self._ambiguous_fix = ambiguous_fix
        self._size = size
        self._lock = threading.Lock()
        self._outputs: OrderedDict[int, tuple[Any, Run | None]] = OrderedDict()  # None: several runs returned it

    def remember(self, output: Any, run: Run) -> None:
        """``run`` returned ``output`` (None is never remembered); and each router's own part of it (a parallel
        branch's answer, ``Run.own_outputs``) leads to that router's decisions alone."""
        with self._lock:
            self._put(output, run)
            for router, part in run.own_outputs:
                if part is not output:
                    self._put(part, Run(run.run_id, tuple(d for d in run.decisions if d[0] is router)))

    def _put(self, output: Any, run: Run) -> None:
        if output is None:
            return
        known = self._outputs.get(id(output))
        shared = known is not None and known[0] is output and known[1] is not run
        self._outputs[id(output)] = (output, None if shared else run)
        if len(self._outputs) > self._size:
            self._outputs.popitem(last=False)

    def trace_ids(self, output: Any, router: Router) -> list[str] | None:
        """``router``'s decisions in the recent run that returned ``output`` (that very object); None when no
        recent run returned it."""
        with self._lock:
            known = self._outputs.get(id(output))
        if known is None or known[0] is not output:
            return None
        if known[1] is None:
            raise UserError(
                f"several runs returned the very same {type(output).__name__} object: {self._ambiguous_fix}"
            )
        return known[1].trace_ids(router)


def blames_output(error: BaseException) -> FailureCategory | None:
    """The failure category of ``error`` when it blames what a model answered (``OUTPUT_FAILURE_CATEGORIES``),
    else None."""
    category = failure_category_of(error)
    return category if category in OUTPUT_FAILURE_CATEGORIES else None


def _logged(report: Callable[..., None], *args: Any, **kwargs: Any) -> None:
    try:
        report(*args, **kwargs)
    except Exception as error:  # a run's end must never break the caller's run; the type alone is safe to log
        logger.warning("kalibr: could not report a run's outcome: %s", type(error).__name__)


@dataclass(eq=False, slots=True)
class _RootState:
    run_id: Hashable
    started: int
    batch: int  # the shared window it started in (0: none); runs of one window count as concurrent
    decisions: list[tuple[Router, str]] = field(default_factory=list)
    ended: int = 0  # the sequence number of its end; 0 while it runs
    cached: list[Router] = field(default_factory=list)  # routers whose calls the framework's cache answered
    # router id -> (router, the output of the last ended step whose decisions were all that router's, their ids)
    parts: dict[int, tuple[Router, Any, frozenset[str]]] = field(default_factory=dict)

    def used(self, router: Router) -> bool:
        return any(r is router for r, _ in self.decisions) or any(r is router for r in self.cached)

    def overlaps(self, other: _RootState) -> bool:
        if self.batch and self.batch == other.batch:
            return True
        return self.started < other.ended and other.started < self.ended


@dataclass(eq=False, slots=True)
class _StepState:
    """An open call below a root: its parent, and the decisions made inside it (its own steps' included once
    they end), so a step that fails can take exactly its decisions out of the run."""

    parent_id: Hashable
    decisions: list[tuple[Router, str]] = field(default_factory=list)


@dataclass(eq=False, slots=True)
class _Scope:
    """The runs started in one thread or asyncio task, and in the tasks and threads it started (which each have
    their own scope too, whose runs are also published here: the caller of ``abatch`` or ``gather`` sees them)."""

    owner: tuple[int, int]
    parent: _Scope | None
    roots: deque[_RootState] = field(default_factory=lambda: deque(maxlen=_MAX_SCOPE_ROOTS))  # oldest dropped
    batch: int = 0  # while a shared window is open: its id (a sequence number)


_scope: contextvars.ContextVar[_Scope | None] = contextvars.ContextVar("kalibr_run_scope", default=None)


def _own_scope() -> _Scope:
    """The scope of the current thread or task, opened in the current context if it has none (call holding
    ``_lock``). A context copied from another task or thread holds that one's scope: it becomes the parent."""
    owner = _owner()
    scope = _scope.get()
    if scope is None or scope.owner != owner:
        scope = _Scope(owner, scope)
        _scope.set(scope)
    return scope


def owns_scope() -> bool:
    """Whether the current thread or asyncio task has opened its own run scope (every direct router call
    does): a context it merely inherited from the thread or task that created it holds that one's scope."""
    scope = _scope.get()
    return scope is not None and scope.owner == _owner()


def ensure_scope() -> None:
    """Open the current thread's or asyncio task's run scope if it has none (the router does it on every direct
    call), so that roots started later in copies of this context are published here too and ``report()`` here
    sees them.

    A root started in a copied context (a worker thread, a new task) goes into the scope the copy holds and the
    scopes that one was opened from; a context copied before any scope was opened holds none, and the caller
    never sees the run. An adapter calls it in the caller's own context right before the framework copies that
    context for work that will start a root elsewhere: the LlamaIndex adapter in ``capture_propagation_context``
    (just before a workflow starts its task), the LangChain adapter when a ``ChatKalibr`` is built (before
    ``abatch`` starts each item's task). Cheap and idempotent.
    """
    scope = _scope.get()
    if scope is None or scope.owner != _owner():
        with _lock:
            _own_scope()


class RunTracker:
    """Which framework run each call belongs to, and the decisions each run made. Thread-safe, bounded.

    Record only the decision that answered (``completion.trace_id``), not the failed fallback attempts: those
    already carry their own failure outcome, which a report on the run must not replace.
    """

    def __init__(self) -> None:
        self._roots: OrderedDict[Hashable, _RootState] = OrderedDict()  # every open run -> the root it is under
        self._steps: dict[Hashable, _StepState] = {}  # every open run below a root

    def start(self, run_id: Hashable, parent_id: Hashable | None) -> None:
        """A framework call began; ``parent_id`` None (or not a run of this tracker) makes it a root.

        Call it where the framework calls its start callback: for a root, that is the caller's own context,
        where the caller scope is opened (or joined, while another root started there is still running).
        """
        with _lock:
            if run_id in self._roots:
                return
            root = self._roots.get(parent_id) if parent_id is not None else None
            if root is None:
                scope: _Scope | None = _own_scope()
                root = _RootState(run_id, next_sequence(), _window(scope))
                while scope is not None:
                    scope.roots.append(root)
                    scope = scope.parent
            else:
                self._steps[run_id] = _StepState(parent_id)
            self._roots[run_id] = root
            if len(self._roots) > _MAX_OPEN_RUNS:
                forgotten, _ = self._roots.popitem(last=False)
                self._steps.pop(forgotten, None)

    def record(self, run_id: Hashable | None, router: Router, trace_id: str) -> None:
        """A decision of ``router`` was made while ``run_id`` was the innermost framework call."""
        if run_id is None:
            return
        with _lock:
            root = self._roots.get(run_id)
            if root is not None:
                root.decisions.append((router, trace_id))
                step = self._steps.get(run_id)
                if step is not None:
                    step.decisions.append((router, trace_id))

    def record_cached(self, run_id: Hashable | None, router: Router) -> None:
        """A call to ``router`` made while ``run_id`` was the innermost framework call was answered by the
        framework's own cache: no decision made that answer, so ``report()`` after the run must not land on an
        earlier run's decisions (it raises instead, naming the fix)."""
        if run_id is None:
            return
        with _lock:
            root = self._roots.get(run_id)
            if root is not None:
                root.cached.append(router)

    def end(self, run_id: Hashable, error: BaseException | None = None, *, output: Any = None) -> Run | None:
        """The call ended, or failed with ``error``. A root's end returns its ``Run`` and publishes it to its
        caller scope; any other call's end returns None (its decisions stay with the root).

        ``output`` is what a step returned, as a judge should see it: a step whose decisions were all one
        router's gives the run that router's ``own_outputs`` (the outermost such step holding all its decisions),
        when other routers made decisions in the run too. Without it, that router is judged on the root's output.

        A step (not a root) that failed with an error blaming what a model answered (``blames_output``) takes its
        decisions out of the run and reports them failed with that category: the framework threw that answer away
        (a retry, a fallback), so the run's verdict is not about it. If the error reaches the root, the root's
        failure does not report them a second time.
        """
        with _lock:
            root = self._roots.pop(run_id, None)
            if root is None:
                return None
            if root.run_id == run_id:
                root.ended = next_sequence()
                return Run(run_id, tuple(root.decisions), _own_outputs(root))
            thrown_away = self._step_ended(run_id, root, error, output)
        if thrown_away and error is not None:
            Run(run_id, thrown_away).fail(error)
        return None

    def _step_ended(
        self, run_id: Hashable, root: _RootState, error: BaseException | None, output: Any
    ) -> tuple[tuple[Router, str], ...]:
        """Pass a finished step's decisions on to its parent step, or, when its error blames the answer, take
        them out of the run and return them (call holding ``_lock``)."""
        step = self._steps.pop(run_id, None)
        if step is None or not step.decisions:
            return ()
        if error is None or blames_output(error) is None:
            parent = self._steps.get(step.parent_id)
            if parent is not None:
                parent.decisions.extend(step.decisions)
            router = step.decisions[0][0]
            if output is not None and all(owner is router for owner, _ in step.decisions):
                # a later step of one router replaces an earlier one: its parent, or a sibling (which a check at
                # the root's end then finds does not hold all of the router's decisions)
                root.parts[id(router)] = (router, output, frozenset(trace_id for _, trace_id in step.decisions))
            return ()
        thrown_away = {trace_id for _, trace_id in step.decisions}
        _drop(root.decisions, thrown_away)
        return tuple(step.decisions)

    def decisions_in(self, run_id: Hashable) -> tuple[tuple[Router, str], ...]:
        """The decisions made so far inside the open call ``run_id`` (its ended steps' included); none when it is
        not an open call of this tracker. An adapter reads a step's before ending it, to know what it made."""
        with _lock:
            root = self._roots.get(run_id)
            if root is None:
                return ()
            step = self._steps.get(run_id)
            return tuple(root.decisions if step is None else step.decisions)

    def set_aside(self, run_id: Hashable, trace_ids: Collection[str]) -> None:
        """Take the decisions ``trace_ids`` out of the run the open call ``run_id`` is under: the framework threw
        their answers away (``dspy.BestOfN`` keeps one attempt), so neither the run's verdict nor a ``report()``
        after it lands on them. Their own outcome is the adapter's to report (the framework's judgement of each)."""
        if not trace_ids:
            return
        with _lock:
            root = self._roots.get(run_id)
            if root is None:
                return
            _drop(root.decisions, trace_ids)
            step = self._steps.get(run_id)
            while step is not None:  # the open steps up to the root (an ended step passed its decisions on)
                _drop(step.decisions, trace_ids)
                step = self._steps.get(step.parent_id)

    def root_of(self, run_id: Hashable) -> Hashable | None:
        """The root run ``run_id`` is under, or None when it is not an open run of this tracker."""
        with _lock:
            root = self._roots.get(run_id)
            return None if root is None else root.run_id

    @contextlib.contextmanager
    def shared_scope(self) -> Iterator[None]:
        """Count every root started while it is open, here or in copies of this context (a batch's worker
        threads or tasks), as one batch: ``report()`` afterwards is ambiguous unless the batch had one item,
        even when the items ran one after another (which the overlap rule alone would take for separate runs,
        so the report would land on the last item).

        An adapter wraps the framework's own batch-like calls in it: the DSPy adapter holds it open for the
        length of ``dspy.Evaluate`` and an optimizer's ``compile``. Nested windows join the outer one. Usage::

            with tracker.shared_scope():
                results = [program(**example.inputs()) for example in dataset]
            router.report(success=True)   # UserError: ambiguous, pass trace_id= or report per example
        """
        with _lock:
            scope = _own_scope()
            outer = scope.batch
            if not outer:
                scope.batch = next_sequence()
        try:
            yield
        finally:
            with _lock:
                scope.batch = outer


def _drop(decisions: list[tuple[Router, str]], trace_ids: Collection[str]) -> None:
    """Take the decisions ``trace_ids`` out of ``decisions``, in place."""
    decisions[:] = [decision for decision in decisions if decision[1] not in trace_ids]


def _own_outputs(root: _RootState) -> tuple[tuple[Router, Any], ...]:
    """Each router's own part of a run several routers made decisions in: the output of the outermost step that
    holds all of that router's decisions and no other router's (call holding ``_lock``)."""
    routers: dict[int, set[str]] = {}
    for router, trace_id in root.decisions:
        routers.setdefault(id(router), set()).add(trace_id)
    if len(routers) < 2:
        return ()  # the root itself is the one router's part
    return tuple(
        (router, output)
        for key, (router, output, holds) in root.parts.items()
        if key in routers and routers[key] <= holds
    )


def _window(scope: _Scope | None) -> int:
    """The shared window open in ``scope`` or a scope it was started from (0: none)."""
    while scope is not None:
        if scope.batch:
            return scope.batch
        scope = scope.parent
    return 0


def run_targets(router: Router, direct_sequence: int) -> list[str] | None:
    """The trace ids a report without one applies to, when the caller's last run is newer than its last direct
    call (made at ``direct_sequence``, 0 for none); None when the direct call is the one to report.

    Raises ``UserError`` when that run is still going, or when several runs there made decisions of ``router``.
    """
    scope = _scope.get()
    if scope is None or scope.owner != _owner():
        return None
    with _lock:
        roots = list(scope.roots)
    if any(not root.ended and root.started > direct_sequence for root in roots):
        raise UserError(
            "report() without a trace_id while a run is still going: report after the chain, query or agent "
            "returns, or pass trace_id= (each message or response carries kalibr_trace_id)"
        )
    mine = [root for root in roots if root.ended > direct_sequence and root.used(router)]
    if not mine:
        return None
    last = max(mine, key=lambda root: root.ended)
    concurrent = [root for root in mine if root is last or root.overlaps(last)]
    if len(concurrent) > 1:
        raise UserError(
            f"report() without a trace_id is ambiguous: {len(concurrent)} runs at once (a batch) made calls of "
            f"{router!r}. Pass trace_id= (each message or response carries kalibr_trace_id), report each answer "
            "with the adapter's llm.report(message_or_output, ...), or call report() inside each item"
        )
    targets = [trace_id for owner, trace_id in last.decisions if owner is router]
    if not targets:
        raise UserError(
            f"report() without a trace_id after a run whose calls of {router!r} were all answered from the "
            "framework's cache: no routed call made that answer. Pass trace_id= of the call that first made it, "
            "or turn the framework's cache off for this model"
        )
    return targets
