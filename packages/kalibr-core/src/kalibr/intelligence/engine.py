"""The embedded intelligence: the policy and a store, in process.

Decisions are computed from an in-memory cache of arm states, re-read from the store every
``refresh_interval`` seconds so other processes' outcomes are seen. With ``write_behind=True`` (the default)
a background writer flushes queued writes to the store in batches and does those re-reads too, so a decide
touches the store only on a goal's first decision; ``flushed()`` lets the service answer a report once it is
committed. With ``write_behind=False`` every write goes straight to the store and stale arms are re-read inline.

What a crash can lose: with write-behind, outcomes and decisions queued in the last ``flush_interval``
(50 ms by default) if the process is killed outright. A clean shutdown (``close()``, interpreter exit)
flushes everything. A store failure never loses an outcome: the batch stays queued and is retried.
"""

from __future__ import annotations

import atexit
import logging
import math
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol

import numpy as np

from kalibr._domain import Decision, Outcome, Path, check_goal, made_decision
from kalibr._exceptions import OutcomeNotFound
from kalibr._pricing import price_for
from kalibr._types import source_replaces
from kalibr.intelligence.base import Constraints, PolicyAnswer
from kalibr.policies import default_policy
from kalibr.policies.base import ArmState, Choice, Policy, PolicyConfig
from kalibr.policies.contextual import PromptClusters, PromptHandle
from kalibr.policies.cost import cost_priors_from_model_costs
from kalibr.policies.priors import priors_from_model_totals
from kalibr.stores.base import DEFAULT_TENANT, OutcomeChanges, PathRecord, Store

__all__ = ["Engine"]

logger = logging.getLogger("kalibr.engine")

_RECENT_OUTCOMES = 100_000

_Priors = tuple[list[tuple[float, float]], list[float | None]]
"""Per arm of a goal: Beta pseudo-counts, and the cost per call to expect before its own is measured."""


class _Chooser(Protocol):
    """A policy's choice over one goal's current arms (``ThompsonPolicy.prepare``, or ``_Unprepared``)."""

    def choose(self, rng: np.random.Generator, now: float, explore: bool = True) -> Choice: ...


@dataclass(frozen=True, slots=True)
class _Unprepared:
    """A policy without ``prepare``: ``choose`` over the same arms, config and priors each time."""

    policy: Policy
    arms: Sequence[ArmState]
    config: PolicyConfig
    priors: Sequence[tuple[float, float]] | None
    cost_priors: Sequence[float | None] | None

    def choose(self, rng: np.random.Generator, now: float, explore: bool = True) -> Choice:
        return self.policy.choose(
            self.arms,
            config=self.config,
            rng=rng,
            now=now,
            priors=self.priors,
            explore=explore,
            cost_priors=self.cost_priors,
        )


@dataclass(frozen=True, slots=True)
class _GoalView:
    """What a decide reads without taking a lock: a goal's enabled paths and the policy's choice over their arms.

    Built under the lock from the cached arms; any change to them (an outcome, a re-read, a config change, a
    correction) drops it under the same lock, so a decide sees the arms as they were before or after a change,
    never half of one. ``fresh_until``: when the arms or priors are due to be re-read."""

    paths: Sequence[Path]
    enabled: Sequence[Path]
    arms: tuple[ArmState, ...]  # the enabled paths' arms and the goal's priors the chooser was built from
    priors: Sequence[tuple[float, float]] | None
    chooser: _Chooser
    explore_on_high_risk: bool
    fresh_until: float


@dataclass(frozen=True, slots=True)
class _GoalState:
    """What a view is built from: a goal's enabled paths for ``paths``, their arms, its config and priors. The
    prompt-aware decide, whose choice is per prompt, keeps one per goal while its prompts show signal; it is
    dropped with the goal's view, so it too holds what the cache holds now."""

    paths: Sequence[Path]
    enabled: Sequence[Path]
    arms: tuple[ArmState, ...]
    config: PolicyConfig
    priors: Sequence[tuple[float, float]] | None
    cost_priors: Sequence[float | None] | None
    fresh_until: float


@dataclass(frozen=True, slots=True)
class _Applied:
    """What the engine remembers of an outcome it applied: enough to let an explicit report override it."""

    goal: str
    path_id: str
    score: float
    source: str


class Engine:
    """Decides with the policy over cached arm state; learns by applying outcomes to the store."""

    def __init__(
        self,
        store: Store,
        *,
        tenant: str = DEFAULT_TENANT,
        policy: Policy | None = None,
        seed: int | None = None,
        write_behind: bool = True,
        refresh_interval: float = 1.0,
        flush_interval: float = 0.05,
    ) -> None:
        self.store = store
        self.tenant = tenant
        self.policy: Policy = policy if policy is not None else default_policy()
        self._rng = np.random.default_rng(seed)
        self._write_behind = write_behind
        self._refresh_interval = refresh_interval
        self._flush_interval = flush_interval
        self._lock = threading.RLock()
        self._arms: dict[str, dict[str, ArmState]] = {}  # goal -> path id -> arm
        self._path_ids: dict[int, tuple[Sequence[Path], tuple[str, ...]]] = {}
        self._loaded_at: dict[str, float] = {}
        self._due: dict[str, Sequence[Path]] = {}  # goals whose arms the writer re-reads next, with their paths
        self._configs: dict[str, PolicyConfig] = {}
        self._disabled: dict[str, frozenset[str]] = {}  # goal -> path ids disabled in the store (re-read with arms)
        self._disabled_at: dict[str, float] = {}  # goal -> when those were read (with the arms, or by disabled_paths)
        self._enabled_paths: dict[str, tuple[Sequence[Path], frozenset[str], tuple[Path, ...]]] = {}
        self._config_changes = 0
        self._totals: tuple[float, Mapping[str, tuple[float, float]]] = (-1e18, {})
        self._model_costs: Mapping[str, tuple[float, int]] = {}  # read with the totals
        self._prior_cache: dict[str, tuple[float, tuple[str, ...], _Priors]] = {}
        self._registered: set[tuple[str, str]] = set()
        self._applied: OrderedDict[str, _Applied] = OrderedDict()
        self._clusters: dict[str, PromptClusters] = {}  # prompt-aware goals (Router(context=...)), in memory only
        self._cluster_of: OrderedDict[str, tuple[str, PromptHandle]] = OrderedDict()  # trace id -> (goal, prompt)
        self._views: dict[str, _GoalView] = {}
        self._states: dict[str, _GoalState] = {}  # prompt-aware goals whose prompts show signal (decide_for_prompt)
        # Appended without a lock (deque appends are atomic); the writer drains it after taking the outcomes, so
        # every queued outcome's decision is written with it or before it.
        self._pending_decisions: deque[Decision] = deque()
        self._pending_outcomes: list[tuple[Outcome, Callable[[ArmState], ArmState]]] = []
        self._pending_replacements: list[tuple[str, OutcomeChanges]] = []  # written after the outcomes they replace
        # The write queues have their own lock, held only to append or swap, so the flusher never waits
        # behind a decide and a decide never waits behind the flusher.
        self._queue_lock = threading.Lock()
        self._wake = threading.Condition(self._queue_lock)
        self._next_flush: Future[None] | None = None  # what flushed() callers wait on until the writer takes it
        # One flush at a time: when flush() returns, everything queued before it was called is written, even the
        # part a concurrent flush had already taken.
        self._flush_lock = threading.Lock()
        self._closed = False
        self._flusher: threading.Thread | None = None
        if write_behind:
            self._flusher = threading.Thread(target=self._flush_loop, name="kalibr-flush", daemon=True)
            self._flusher.start()
            _flush_at_exit.add(self)

    # --- deciding ---------------------------------------------------------------------------------------
    def decide(self, goal: str, paths: Sequence[Path], *, high_risk: bool = False) -> Decision:
        """Choose among ``paths``; for a ``high_risk`` task, without exploring unless the goal's config allows it
        (``exploration_on_high_risk``)."""
        now = time.time()
        view = self._views.get(goal)
        if view is None or view.paths is not paths or now > view.fresh_until:
            view = self._view(goal, paths, now)
        choice = view.chooser.choose(self._rng, now, not high_risk or view.explore_on_high_risk)
        decision = made_decision(goal, view.enabled[choice.index], choice, now)
        if self._write_behind:
            self._pending_decisions.append(decision)  # what _record does, without its call
        else:
            self._record(decision)
        return decision

    def _view(self, goal: str, paths: Sequence[Path], now: float) -> _GoalView:
        """The goal's view for ``paths``, rebuilt from the cached arms (read from the store when due)."""
        with self._lock:
            state = self._state(goal, paths, now)
            arms, config, priors, cost_priors = state.arms, state.config, state.priors, state.cost_priors
            prepare = getattr(self.policy, "prepare", None)
            chooser: _Chooser = (
                prepare(arms, config=config, priors=priors, cost_priors=cost_priors)
                if prepare is not None
                else _Unprepared(self.policy, arms, config, priors, cost_priors)
            )
            view = _GoalView(
                paths, state.enabled, arms, priors, chooser, config.exploration_on_high_risk, state.fresh_until
            )
            self._views[goal] = view
        return view

    def _state(self, goal: str, paths: Sequence[Path], now: float) -> _GoalState:
        """The goal's state for ``paths`` from the cached arms (read from the store when due); the caller holds
        ``_lock``."""
        check_goal(goal)
        enabled, listed = self._enabled(goal, paths, self._arms_for(goal, paths, now))
        config = self._config(goal)
        priors, cost_priors = self._priors(goal, enabled, listed, now)
        fresh_until = min(self._loaded_at.get(goal, now), self._prior_cache[goal][0]) + self._refresh_interval
        if fresh_until <= now and self._flusher is not None:
            # The writer re-reads the goal (it is due) and drops this view then; until it does, rebuilding
            # the view from the same arms on every decide would only cost time. Due even when just read: the
            # view is not rebuilt meanwhile, so only the writer's re-read (or a flush) can show a change.
            self._due[goal] = paths
            fresh_until = now + self._flush_interval
        return _GoalState(paths, enabled, tuple(listed), config, priors, cost_priors, fresh_until)

    def _drop_view(self, goal: str) -> None:
        """Forget the goal's view and state (the caller holds ``_lock``): its arms, config or paths changed."""
        self._views.pop(goal, None)
        self._states.pop(goal, None)

    def decide_for_prompt(
        self, goal: str, paths: Sequence[Path], features: np.ndarray, *, high_risk: bool = False
    ) -> Decision:
        """``decide`` for a prompt (``Router(context=...)``): the policy chooses over the goal's arm states with the
        priors of the prompt's cluster (``kalibr.policies.contextual``). Features and clusters stay in this
        process's memory; the store sees the decision and its outcome as usual.

        While the goal's prompts show no signal (pooling is full) the prompt's view is the goal's own, so the choice
        is ``decide``'s, made by the same cached view: the same draws, without preparing a choice per prompt."""
        check_goal(goal)
        now = time.time()
        with self._lock:
            clusters = self._clusters.get(goal)
            if clusters is None:
                clusters = self._clusters[goal] = PromptClusters()
            if clusters.pooling == math.inf:
                # The view holds what _arms_for, _enabled, _config and _priors would return now: every change to
                # them drops it, and it is rebuilt once due. (While the writer's re-read is due, decide keeps the
                # view for a flush interval; so does this, as decide would.)
                view = self._views.get(goal)
                if view is None or view.paths is not paths or now > view.fresh_until:
                    view = self._view(goal, paths, now)
                prompt = clusters.assign(features)
                prompt.goal_view = (view.arms, view.priors)  # what clusters.priors keeps while pooling is full
                enabled = view.enabled
                choice = view.chooser.choose(self._rng, now, not high_risk or view.explore_on_high_risk)
            else:  # the same arms and priors, kept like the view (and dropped with it), as a prompt's view reads
                state = self._states.get(goal)
                if state is None or state.paths is not paths or now > state.fresh_until:
                    state = self._states[goal] = self._state(goal, paths, now)
                prompt = clusters.assign(features)
                arms, config = state.arms, state.config
                priors = clusters.priors(prompt, arms, state.priors)
                explore = not high_risk or config.exploration_on_high_risk
                enabled = state.enabled
                choice = self.policy.choose(
                    arms,
                    config=config,
                    rng=self._rng,
                    now=now,
                    priors=priors,
                    explore=explore,
                    cost_priors=state.cost_priors,
                )
            decision = made_decision(goal, enabled[choice.index], choice, now)
            self._cluster_of[decision.trace_id] = (goal, prompt)
            if len(self._cluster_of) > _RECENT_OUTCOMES:
                self._cluster_of.popitem(last=False)
        self._record(decision)
        return decision

    async def adecide(self, goal: str, paths: Sequence[Path], *, high_risk: bool = False) -> Decision:
        return self.decide(goal, paths, high_risk=high_risk)

    def record_forced(self, decision: Decision) -> None:
        self._record(decision)

    def register_paths(self, goal: str, paths: Sequence[Path]) -> None:
        """Register the goal's paths in the store once (params feed insights; the service lists them)."""
        for path in paths:
            key = (goal, path.path_id)
            if key in self._registered:
                continue
            self.store.register_path(self.tenant, PathRecord(goal, path, True, _utcnow()))
            self._registered.add(key)

    def _arms_for(self, goal: str, paths: Sequence[Path], now: float) -> list[ArmState]:
        arms = self._arms.get(goal)
        if now - self._loaded_at.get(goal, -1e18) > self._refresh_interval:
            if arms is None or self._flusher is None:
                arms = self._install(goal, *self._read(goal, paths))  # a goal seen first (or no writer): read now
            else:
                self._due[goal] = paths  # the writer re-reads it within a flush interval: no store I/O here
        if arms is None:
            arms = self._arms[goal] = {}
        try:
            return [arms[path_id] for path_id in self._ids(paths)]
        except KeyError:
            for path in paths:
                arms.setdefault(path.path_id, ArmState(path.path_id, path.model))
            return [arms[path.path_id] for path in paths]

    def disabled_paths(self, goal: str) -> frozenset[str]:
        """The goal's path ids disabled in the store (the router's fallbacks skip them): as last read, with the arms
        or here, and read again when that is older than the refresh interval (a forced call decides nothing), so a
        burst of fallbacks costs one store read per interval."""
        now = time.time()
        if now - self._disabled_at.get(goal, -1e18) <= self._refresh_interval:
            return self._disabled.get(goal, frozenset())
        try:
            disabled = self._stored_disabled(goal)
        except Exception:  # a provider just failed: falling back matters more than the store's latest word
            logger.warning("kalibr: could not read the disabled paths of goal %r; using the last known", goal)
            disabled = self._disabled.get(goal, frozenset())
        with self._lock:
            self._disabled_at[goal] = now  # a failure too: one attempt per interval
            if disabled != self._disabled.get(goal, frozenset()):
                self._disabled[goal] = disabled
                self._drop_view(goal)  # the next decide leaves the newly disabled paths out too
        return disabled

    def _stored_disabled(self, goal: str) -> frozenset[str]:
        """The goal's path ids disabled in the store, read now."""
        records = self.store.list_paths(self.tenant, goal, include_disabled=True)
        return frozenset(record.path.path_id for record in records if not record.enabled)

    def _enabled(self, goal: str, paths: Sequence[Path], arms: list[ArmState]) -> tuple[Sequence[Path], list[ArmState]]:
        """``paths`` and their ``arms`` without those disabled in the store (``kalibr dashboard``, the service's
        disable endpoint). When every declared path is disabled, all of them: the caller's request still routes."""
        disabled = self._disabled.get(goal)
        if not disabled:
            return paths, arms
        cached = self._enabled_paths.get(goal)
        if cached is None or cached[0] is not paths or cached[1] is not disabled:
            kept = tuple(path for path in paths if path.path_id not in disabled)
            if not kept:
                logger.warning("kalibr: every declared path of goal %r is disabled in the store; using them all", goal)
                kept = tuple(paths)
            cached = self._enabled_paths[goal] = (paths, disabled, kept)  # the same tuple keeps _ids' cache warm
        if len(cached[2]) == len(paths):
            return paths, arms
        return cached[2], [arm for arm in arms if arm.path_id not in disabled]

    def _read(self, goal: str, paths: Sequence[Path]) -> tuple[list[ArmState], PolicyConfig, frozenset[str]]:
        """The goal's stored arms, config and disabled path ids; the tenant's model totals too when stale."""
        arms = self.store.load_arms(self.tenant, goal, paths)
        config = self.store.get_config(self.tenant, goal)
        disabled = self._stored_disabled(goal)
        now = time.time()
        if now - self._totals[0] > self._refresh_interval:
            self._totals = (now, self.store.model_totals(self.tenant))
            self._model_costs = self.store.model_costs(self.tenant)
        return arms, config, disabled

    def _install(
        self, goal: str, stored: list[ArmState], config: PolicyConfig | None, disabled: frozenset[str]
    ) -> dict[str, ArmState]:
        """Cache the goal's stored arms with the outcomes still queued replayed on top, its ``config`` unless
        None, and its disabled path ids (the caller holds ``_lock``)."""
        arms = {arm.path_id: arm for arm in stored}
        with self._queue_lock:
            queued = [(outcome.path_id, step) for outcome, step in self._pending_outcomes if outcome.goal == goal]
        for path_id, step in queued:
            if path_id in arms:
                arms[path_id] = step(arms[path_id])
        self._arms[goal] = arms
        self._drop_view(goal)
        if config is not None:
            self._configs[goal] = config
        if disabled != self._disabled.get(goal, frozenset()):
            self._disabled[goal] = disabled
        self._loaded_at[goal] = self._disabled_at[goal] = time.time()
        return arms

    def _refresh_due(self) -> None:
        """Re-read the arms decides found stale (other processes' outcomes). Runs holding the flush lock, so no
        write is in flight: the store plus the queue is every outcome, each counted once. The reads hold no other
        lock, so decides go on meanwhile."""
        with self._lock:
            due, self._due = self._due, {}
        for goal, paths in due.items():
            with self._lock:
                config_changes = self._config_changes
            try:
                stored, config, disabled = self._read(goal, paths)
            except Exception:  # the writes succeeded: a failed re-read must not fail them; decides ask again
                logger.warning("kalibr: could not re-read the arms of goal %r; keeping the cached ones", goal)
                return
            with self._lock:
                # A set_config during the read wins over the config read before it.
                self._install(goal, stored, config if config_changes == self._config_changes else None, disabled)

    def _ids(self, paths: Sequence[Path]) -> tuple[str, ...]:
        """The path ids of ``paths``, remembered per sequence object (a router passes the same tuple each call)."""
        cached = self._path_ids.get(id(paths))
        if cached is None or cached[0] is not paths:
            if len(self._path_ids) > 1_024:
                self._path_ids.clear()
            cached = self._path_ids[id(paths)] = (paths, tuple(path.path_id for path in paths))
        return cached[1]

    def _priors(self, goal: str, paths: Sequence[Path], arms: list[ArmState], now: float) -> _Priors:
        """Cross-goal priors (a model's record and mean cost on the tenant's other goals, else its list price at
        the tenant's dollars per price unit), recomputed once per refresh."""
        ids = self._ids(paths)
        cached = self._prior_cache.get(goal)
        if cached is None or cached[1] != ids or now - cached[0] > self._refresh_interval:
            priors = (
                priors_from_model_totals(arms, self._totals[1]),
                cost_priors_from_model_costs(arms, self._model_costs, [_price_hint(path) for path in paths]),
            )
            cached = self._prior_cache[goal] = (now, ids, priors)
        return cached[2]

    def _config(self, goal: str) -> PolicyConfig:
        config = self._configs.get(goal)
        if config is None:  # just changed with set_config
            config = self._configs[goal] = self.store.get_config(self.tenant, goal)
        return config

    def get_config(self, goal: str) -> PolicyConfig:
        return self.store.get_config(self.tenant, goal)

    def set_config(self, goal: str, config: PolicyConfig) -> None:
        self.store.set_config(self.tenant, goal, config)
        with self._lock:
            self._configs.clear()
            self._views.clear()
            self._states.clear()
            self._config_changes += 1

    # --- learning ---------------------------------------------------------------------------------------
    def report(self, outcome: Outcome) -> None:
        with self._lock:
            previous = self._applied.get(outcome.trace_id)
            if previous is None:
                self._apply(outcome)
                return
            if not source_replaces(outcome.source, previous.source):
                return
            # e.g. an explicit report after success_when's: correct the score already counted.
            self._correct_in_memory(outcome, previous)
        changes = _replacement(outcome)
        if not self._write_behind:
            self._write_replacement(outcome.trace_id, changes)
            return
        # Queued like any outcome: a store failure neither loses it nor fails the caller's report.
        with self._queue_lock:
            for index, (queued, _) in enumerate(self._pending_outcomes):
                if queued.trace_id == outcome.trace_id:
                    # Not written yet: the store gets the replacing outcome in the replaced one's place, so the
                    # policy steps through the outcomes in the order they were reported.
                    self._pending_outcomes[index] = (outcome, self._step(outcome))
                    return
            self._pending_replacements.append((outcome.trace_id, changes))

    async def areport(self, outcome: Outcome) -> None:
        self.report(outcome)

    def has_outcome(self, trace_id: str) -> bool:
        """Whether this engine applied an outcome of ``trace_id`` (recently): reporting it again corrects the
        stored one, which is store I/O."""
        with self._lock:
            return trace_id in self._applied

    def _apply(self, outcome: Outcome) -> None:
        self._remember(outcome)
        step = self._step(outcome)
        arms = self._arms.get(outcome.goal, {})
        prompt_cluster = self._cluster_of.pop(outcome.trace_id, None)
        if outcome.path_id in arms:
            before = arms[outcome.path_id]
            after = arms[outcome.path_id] = step(before)
            self._drop_view(outcome.goal)
            if prompt_cluster is not None:
                goal, prompt = prompt_cluster
                self._clusters[goal].learn(prompt, before, after, outcome.score)
        self._enqueue_outcome(outcome, step)

    def _step(self, outcome: Outcome) -> Callable[[ArmState], ArmState]:
        """The policy's update of an arm by ``outcome``."""
        update = partial(
            self.policy.update,
            score=outcome.score,
            cost_usd=outcome.cost_usd,
            latency_ms=outcome.latency_ms,
            now=outcome.reported_at.timestamp(),
        )

        def step(arm: ArmState) -> ArmState:
            try:
                return update(arm)
            except Exception as error:
                return _unchanged(arm, error)

        return step

    def _correct_in_memory(self, outcome: Outcome, previous: _Applied) -> None:
        self._applied[outcome.trace_id] = _Applied(previous.goal, previous.path_id, outcome.score, outcome.source)
        arms = self._arms.get(previous.goal, {})
        if previous.path_id in arms:
            arms[previous.path_id] = self._adjuster(arms[previous.path_id], previous.score, outcome.score)
            self._drop_view(previous.goal)

    def update_outcome(self, trace_id: str, goal: str, changes: OutcomeChanges) -> list[str]:
        self.flush()
        record = self.store.update_outcome(self.tenant, trace_id, changes, self._adjuster)
        if record is None:
            raise OutcomeNotFound(f"no outcome with trace_id {trace_id!r} for goal {goal!r}: report it first")
        with self._lock:
            self._loaded_at.pop(record.goal, None)  # the corrected arm is re-read after the next decide
            self._drop_view(record.goal)
            if trace_id in self._applied:
                self._applied[trace_id] = _Applied(record.goal, record.path_id, record.score, "update")
        return changes.fields()

    def _adjuster(self, arm: ArmState, old_score: float, new_score: float) -> ArmState:
        try:
            return self.policy.adjust(arm, old_score=old_score, new_score=new_score)
        except Exception as error:
            return _unchanged(arm, error)

    def _remember(self, outcome: Outcome) -> None:
        self._applied[outcome.trace_id] = _Applied(outcome.goal, outcome.path_id, outcome.score, outcome.source)
        if len(self._applied) > _RECENT_OUTCOMES:
            self._applied.popitem(last=False)

    # --- persistence ------------------------------------------------------------------------------------
    def _record(self, decision: Decision) -> None:
        if not self._write_behind:
            self.store.record_decisions(self.tenant, [decision])
            return
        self._pending_decisions.append(decision)

    def _enqueue_outcome(self, outcome: Outcome, step: Callable[[ArmState], ArmState]) -> None:
        if not self._write_behind:
            applied = self.store.apply_outcomes(self.tenant, [(outcome, step)])
            for trace_id, changes in self._stored_before([(outcome, step)], applied):
                self._write_replacement(trace_id, changes)
            return
        with self._queue_lock:
            self._pending_outcomes.append((outcome, step))

    def flush(self) -> None:
        """Write every queued decision and outcome to the store now."""
        with self._flush_lock:
            self._write_queued()
            self._refresh_due()

    def flushed(self) -> Future[None]:
        """A future that completes once everything queued so far is written, or fails with the store's error.

        The background writer is woken at once, and every caller until it starts shares its next transaction (group
        commit) and the same future: the service answers a report only once it is durable, without one commit per
        report.
        """
        with self._queue_lock:
            if self._flusher is None or self._closed:
                future: Future[None] = Future()
                if self._closed:
                    future.set_exception(RuntimeError("the engine is closed"))
                else:  # write-through: already written
                    future.set_result(None)
                return future
            if self._next_flush is None or self._next_flush.cancelled():
                self._next_flush = Future()
                self._wake.notify()
            return self._next_flush

    def _write_queued(self) -> None:
        with self._queue_lock:
            outcomes, self._pending_outcomes = self._pending_outcomes, []
            replacements, self._pending_replacements = self._pending_replacements, []
        # After the outcomes: a decision queued before its outcome is in this batch or an earlier one.
        queue = self._pending_decisions
        decisions = [queue.popleft() for _ in range(len(queue))]
        try:
            if outcomes:
                applied = self.store.apply_outcomes(self.tenant, outcomes, decisions)
                replacements[:0] = self._stored_before(outcomes, applied)
            elif decisions:
                self.store.record_decisions(self.tenant, decisions)
        except Exception:
            with self._queue_lock:  # keep everything for the next attempt: an outcome is never dropped
                self._pending_decisions.extendleft(reversed(decisions))
                self._pending_outcomes[:0] = outcomes
                self._pending_replacements[:0] = replacements
            raise
        for index, (trace_id, changes) in enumerate(replacements):
            try:
                self._write_replacement(trace_id, changes)
            except Exception:
                with self._queue_lock:
                    self._pending_replacements[:0] = replacements[index:]
                raise

    def _stored_before(
        self, outcomes: Sequence[tuple[Outcome, Callable[[ArmState], ArmState]]], applied: Sequence[bool]
    ) -> list[tuple[str, OutcomeChanges]]:
        """The outcomes the store already had one for (reported through another replica or process, or before this
        engine forgot it), as replacements: the replace rule holds whichever engine applied the first outcome, and
        the store, which reads the stored source in the same transaction, decides. The cached arm counted each as
        new, so its goal is re-read after the next decide."""
        earlier = [outcome for (outcome, _), new in zip(outcomes, applied, strict=True) if not new]
        with self._lock:
            for outcome in earlier:
                self._loaded_at.pop(outcome.goal, None)
                self._drop_view(outcome.goal)
        return [(outcome.trace_id, _replacement(outcome)) for outcome in earlier]

    def _write_replacement(self, trace_id: str, changes: OutcomeChanges) -> None:
        record = self.store.update_outcome(self.tenant, trace_id, changes, self._adjuster)
        if record is not None:
            with self._lock:
                if trace_id in self._applied:  # what the store kept: a later report is ranked against it
                    self._applied[trace_id] = _Applied(record.goal, record.path_id, record.score, record.source)

    def _flush_loop(self) -> None:
        delay = self._flush_interval
        while True:
            with self._queue_lock:
                if not self._closed and self._next_flush is None:
                    self._wake.wait(timeout=delay)  # flushed() and close() wake it early
                closed = self._closed
                # Taken before the queues are: everything queued before its callers asked is in this flush.
                waiter, self._next_flush = self._next_flush, None
            if waiter is not None and not waiter.set_running_or_notify_cancel():
                waiter = None  # a caller cancelled it: nobody is waiting
            try:
                self.flush()
            except Exception as exc:
                logger.exception("kalibr: store write failed; outcomes stay queued and will be retried")
                delay = min(max(delay, 0.05) * 2, 5.0)
                if waiter is not None:
                    waiter.set_exception(exc)
            else:
                delay = self._flush_interval
                if waiter is not None:
                    waiter.set_result(None)
            if closed:
                return

    # --- reading ----------------------------------------------------------------------------------------
    def get_policy(
        self, goal: str, *, window_hours: float = 168, constraints: Constraints | None = None
    ) -> PolicyAnswer:
        from kalibr import insights

        self.flush()
        return insights.recommend(self.store, self.tenant, goal, window_hours=window_hours, constraints=constraints)

    def get_insights(self, goal: str | None = None, *, window_hours: float = 168) -> dict[str, Any]:
        from kalibr import insights

        self.flush()
        return insights.build_insights(self.store, self.tenant, goal, window_hours=window_hours)

    def close(self) -> None:
        with self._queue_lock:
            if self._closed:
                return
            self._closed = True
            self._wake.notify_all()
        if self._flusher is not None:
            self._flusher.join(timeout=10)
        self.flush()
        _flush_at_exit.discard(self)


def _price_hint(path: Path) -> float | None:
    """The path's relative price before any call (input plus output per token), None for an unknown model."""
    price = price_for(path)
    return None if price is None else price.input_per_mtok + price.output_per_mtok


def _unchanged(arm: ArmState, error: Exception) -> ArmState:
    """A policy that cannot fold an outcome in leaves the arm as it was: the outcome is still stored, and the
    caller's report or completion goes on (only the error's type is logged: its text may quote anything)."""
    logger.error(
        "kalibr: the policy raised %s applying an outcome to path %r; the outcome is kept, the arm is unchanged",
        type(error).__name__,
        arm.path_id,
    )
    return arm


def _replacement(outcome: Outcome) -> OutcomeChanges:
    """A later report as a change of the stored outcome: the whole outcome (a category it does not give is cleared),
    applied only if its source outranks the stored one's."""
    return OutcomeChanges(
        score=outcome.score,
        success=outcome.success,
        failure_category=outcome.failure_category,
        reason=outcome.reason,
        replace=True,
        source=outcome.source,
    )


def _utcnow() -> datetime:
    return datetime.now(UTC)


_flush_at_exit: weakref.WeakSet[Engine] = weakref.WeakSet()


@atexit.register
def _flush_all() -> None:
    for engine in list(_flush_at_exit):
        try:
            engine.flush()
        except Exception:  # pragma: no cover - nothing left to do at exit but say so
            logger.exception("kalibr: could not flush outcomes at exit")
