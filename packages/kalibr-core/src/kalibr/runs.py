"""Which framework run each routed call belongs to, so ``router.report()`` after a run lands on that run.

Frameworks run a model call inside a copy of the caller's context (a LangChain step, a LlamaIndex span, a DSPy
thread), so what the call sets in a ``ContextVar`` never reaches the caller. They do call the callback for the
start of the outermost run (the root) in the caller's own context. An adapter tells a ``RunTracker`` when each
framework call starts and ends and which decisions were made inside it; at a root's start the tracker opens a
*caller scope* (a mutable object in the caller's context) and at the root's end it publishes the run there.

``Router.report()`` without a trace id then reports, in the caller's thread or asyncio task, whichever is newer:
the router's last direct call made there, or the last run published there that made decisions of this router.
A run's report applies to every decision of the router in that run: the final answer depends on every step, so
a path that picks bad tools or writes a bad intermediate step shares the blame. Several runs at once in one
scope (``chain.batch([...])``) are ambiguous: the report raises a ``UserError`` naming the fixes.

Usage (an adapter)::

    tracker = RunTracker()
    tracker.start(run_id, parent_id)             # a framework call began (parent_id None: a root)
    tracker.record(run_id, router, trace_id)     # a decision was made while run_id was the innermost call
    run = tracker.end(run_id)                    # a root's end returns its Run; judge its final output:
    for trace_id in run.trace_ids(router):
        router.evaluate(trace_id, final_output, final=True)
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kalibr._exceptions import UserError

if TYPE_CHECKING:
    from kalibr._router import Router

__all__ = ["Run", "RunTracker"]

_MAX_OPEN_RUNS = 100_000  # runs whose end never came (an abandoned stream) are forgotten oldest first

_sequence = itertools.count(1)
_lock = threading.Lock()


def next_sequence() -> int:
    """A process-wide increasing number: orders direct calls and finished runs."""
    return next(_sequence)


def _owner() -> tuple[int, int]:
    """The caller's thread and asyncio task: a scope belongs to the one that opened it."""
    try:
        task = asyncio.current_task()
    except RuntimeError:
        task = None
    return threading.get_ident(), id(task) if task is not None else 0


@dataclass(frozen=True)
class Run:
    """A finished root run and every decision made under it, in order."""

    run_id: Hashable
    decisions: tuple[tuple[Router, str], ...]

    def trace_ids(self, router: Router) -> list[str]:
        """The trace ids of ``router``'s decisions in this run."""
        return [trace_id for owner, trace_id in self.decisions if owner is router]


@dataclass(eq=False)
class _RootState:
    run_id: Hashable
    scope: _Scope
    started: int
    decisions: list[tuple[Router, str]] = field(default_factory=list)
    ended: int = 0  # the sequence number of its end; 0 while it runs


@dataclass(eq=False)
class _Scope:
    """The runs started in one caller's context: several only while they overlap (a batch)."""

    owner: tuple[int, int]
    roots: list[_RootState] = field(default_factory=list)
    shared: int = 0  # > 0: roots started in copies of this context (a batch's worker threads) join it


_scope: contextvars.ContextVar[_Scope | None] = contextvars.ContextVar("kalibr_run_scope", default=None)


def _scope_for_root() -> _Scope:
    """The caller scope a new root joins (call holding ``_lock``)."""
    owner = _owner()
    scope = _scope.get()
    if scope is None or (scope.owner != owner and not scope.shared):
        scope = _Scope(owner)
        _scope.set(scope)
    elif not scope.shared and all(root.ended for root in scope.roots):
        scope.roots.clear()  # the previous runs are over: this one is the scope's run now
    return scope


class RunTracker:
    """Which framework run each call belongs to, and the decisions each run made. Thread-safe, bounded."""

    def __init__(self) -> None:
        self._roots: OrderedDict[Hashable, _RootState] = OrderedDict()  # every open run -> the root it is under

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
                scope = _scope_for_root()
                root = _RootState(run_id, scope, next_sequence())
                scope.roots.append(root)
            self._roots[run_id] = root
            if len(self._roots) > _MAX_OPEN_RUNS:
                self._roots.popitem(last=False)

    def record(self, run_id: Hashable | None, router: Router, trace_id: str) -> None:
        """A decision of ``router`` was made while ``run_id`` was the innermost framework call."""
        if run_id is None:
            return
        with _lock:
            root = self._roots.get(run_id)
            if root is not None:
                root.decisions.append((router, trace_id))

    def end(self, run_id: Hashable) -> Run | None:
        """The call ended (or failed). A root's end returns its ``Run`` and publishes it to its caller scope;
        any other call's end returns None (its decisions stay with the root)."""
        with _lock:
            root = self._roots.pop(run_id, None)
            if root is None or root.run_id != run_id:
                return None
            root.ended = next_sequence()
            return Run(run_id, tuple(root.decisions))

    def root_of(self, run_id: Hashable) -> Hashable | None:
        """The root run ``run_id`` is under, or None when it is not an open run of this tracker."""
        with _lock:
            root = self._roots.get(run_id)
            return None if root is None else root.run_id

    @contextlib.contextmanager
    def shared_scope(self) -> Iterator[None]:
        """Make roots started in copies of the current context (a batch's worker threads) join its scope.

        An adapter wraps the framework's own ``batch`` in it, so ``report()`` after a batch sees every item.
        """
        with _lock:
            scope = _scope_for_root()
            scope.shared += 1
        try:
            yield
        finally:
            with _lock:
                scope.shared -= 1


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
        running = [root for root in roots if not root.ended and root.started > direct_sequence]
        mine = [root for root in roots if root.ended > direct_sequence and any(r is router for r, _ in root.decisions)]
        if running:
            raise UserError(
                "report() without a trace_id while a run is still going: report after the chain, query or agent "
                "returns, or pass trace_id= (each message or response carries kalibr_trace_id)"
            )
        if not mine:
            return None
        if len(mine) > 1:
            raise UserError(
                f"report() without a trace_id is ambiguous: {len(mine)} runs (a batch) made calls of {router!r}. "
                "Pass trace_id= (each message or response carries kalibr_trace_id), report each answer with the "
                "adapter's llm.report(message_or_output, ...), or call report() inside each item"
            )
        return [trace_id for owner, trace_id in mine[0].decisions if owner is router]
