"""The Router: decide a path, call it (falling back on provider failures), learn from outcomes.

All per-call state lives in the returned ``Decision``/``Completion``; the instance holds only configuration,
HTTP clients and a bounded map of recent calls, so one Router is safe to share between threads and asyncio
tasks. ``report()`` without a trace id reports the last call made in the same thread or task (a ContextVar), or
the last framework run made there when that is newer (``kalibr.runs``).
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, overload

import httpx

from kalibr._completion import Attempt, Completion, all_failed
from kalibr._domain import Decision, Outcome, Path, Usage, check_goal, new_trace_id, parse_paths, resolve_score
from kalibr._exceptions import ProviderError, RequestRejected, UserError
from kalibr._http import async_client, sync_client
from kalibr._pricing import cost_of
from kalibr._streams import AsyncCompletionStream, CompletionStream
from kalibr._types import FailureCategory, Message, check_failure_category
from kalibr.intelligence.base import Constraints, Intelligence, PolicyAnswer
from kalibr.policies.base import PolicyConfig
from kalibr.providers import base as provider_io
from kalibr.providers.base import ProviderRequest, ProviderResponse, StreamChunk
from kalibr.providers.registry import resolve
from kalibr.runs import ensure_scope, next_sequence, owns_scope, run_targets
from kalibr.stores.base import OutcomeChanges

if TYPE_CHECKING:
    from kalibr.intelligence._breaker import Resilience
    from kalibr.path_generation import PathGenerationConfig

__all__ = ["Router"]

logger = logging.getLogger("kalibr")

_RECENT_CALLS = 50_000
DEFAULT_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class _CallRecord:
    """What the router keeps of a call until it is reported: never the prompt or the answer."""

    decision: Decision
    cost_usd: float | None = None
    latency_ms: float | None = None
    usage: Usage | None = None

    @property
    def trace_id(self) -> str:
        return self.decision.trace_id


class Router:
    """Routes calls for one goal among several paths and learns which path works.

    Usage::

        router = kalibr.Router(
            goal="extract_company",
            paths=["gpt-4o-mini", {"model": "claude-sonnet-4-5", "params": {"temperature": 0.2}}],
            success_when=lambda text: text.strip() != "",
        )
        completion = router.completion([{"role": "user", "content": "..."}])
        router.report(success=True)  # overrides what success_when said for that call

    Args:
        goal: the task's name; goals never share outcomes.
        paths: model names, dicts with ``model``/``params``/``tools``, or ``kalibr.Path`` values. The first
            path is the fallback when the intelligence is unavailable.
        success_when: judges each answer; its bool is reported automatically. It receives the output as you
            think of it: the text for a text answer, the list of ``ToolCall`` for a tool-call turn, the parsed
            object when an adapter parses structured output. A judge taking two positional parameters receives
            ``(output, completion)``, the whole ``kalibr.Completion`` (None for a run's final output). If it raises,
            the call counts as failed (``validation_failed``) and only the exception's type is stored.
        score_when: like ``success_when`` but returns a score in [0, 1].
        intelligence: an ``Intelligence``, a service URL, or None for the embedded engine (or
            ``KALIBR_INTELLIGENCE_URL`` when set).
        store: for the embedded engine, a store URL or ``Store``; None uses ``KALIBR_DB`` or the default file.
            Routers on one URL share one engine for the life of the process; Routers given one store object share
            one engine until the last of them is garbage collected (see ``kalibr._intelligence_registry``).
        timeout: seconds for each provider call.
        http_client, async_http_client: your own httpx clients (proxies, custom transports); by default the
            process-wide shared ones.
        auto_path_generation: try new parameter values between and beyond the declared ones and retire those
            that underperform (default: ``KALIBR_AUTO_PATH_GENERATION``); see ``kalibr.path_generation``.
        path_generation: the generation job's settings (interval, bounds, samples before retiring).
        resilience: for a service URL, the decide timeout, breaker threshold and cool-down
            (``kalibr.Resilience(timeout=0.05, breaker_after=3, cooldown=5.0)``).
        high_risk: a goal whose mistakes are costly: every decision takes the path that looks best now and
            never explores, unless the goal's config sets ``exploration_on_high_risk``.
        context: prompt-aware routing, opt-in: ``"auto"`` (``kalibr.context.auto_featurizer``: lexical counts,
            plus a local sentence embedding with ``kalibr-core[context]``) or a callable of messages returning a
            float vector. Features are computed in this process and used only by the embedded engine; nothing
            of them is stored or sent (with a service URL the router routes per goal, as without ``context``).
    """

    def __init__(
        self,
        goal: str,
        paths: Sequence[Any],
        success_when: Callable[..., bool] | None = None,
        *,
        score_when: Callable[..., float] | None = None,
        intelligence: Intelligence | str | None = None,
        store: Any = None,
        timeout: float = DEFAULT_TIMEOUT,
        http_client: httpx.Client | None = None,
        async_http_client: httpx.AsyncClient | None = None,
        auto_path_generation: bool | None = None,
        path_generation: PathGenerationConfig | None = None,
        resilience: Resilience | None = None,
        high_risk: bool = False,
        context: str | Callable[[Sequence[Message]], Any] | None = None,
    ) -> None:
        self.goal = check_goal(goal)
        self._featurize = _featurizer(context)
        self.high_risk = high_risk
        self.paths = parse_paths(paths)
        if success_when is not None and score_when is not None:
            raise UserError("pass success_when or score_when, not both")
        for name, callback in (("success_when", success_when), ("score_when", score_when)):
            if callback is not None and not callable(callback):
                raise UserError(f"{name} must be a callable taking the answer's output, got {callback!r}")
        self.success_when = success_when
        self.score_when = score_when
        judge = success_when or score_when
        self._judge_takes_completion = judge is not None and _required_positionals(judge) >= 2
        self.timeout = timeout
        from kalibr._intelligence_registry import resolve_intelligence

        self.intelligence = resolve_intelligence(
            intelligence,
            store,
            auto_path_generation=auto_path_generation,
            path_generation=path_generation,
            resilience=resilience,
            owner=self,
        )
        register = getattr(self.intelligence, "register_paths", None)
        if callable(register):
            register(self.goal, self.paths)
        self._http = http_client or sync_client()
        self._ahttp = async_http_client
        # A decision alone until its call has a cost or latency to keep (a _CallRecord): one object less per decide.
        # Two generations of recent calls: when the newer one holds _RECENT_CALLS it becomes the older one and the
        # previous older one is forgotten, so the last _RECENT_CALLS calls are always kept at the cost of one dict
        # store per call. Dict steps are atomic and a swap takes a lock, so threads share them.
        self._calls: dict[str, _CallRecord | Decision] = {}
        self._older_calls: dict[str, _CallRecord | Decision] = {}
        self._calls_lock = threading.Lock()
        # (when, trace id) of the last direct call in this thread or task; "when" orders it against framework runs.
        self._last_trace: contextvars.ContextVar[tuple[int, str] | None] = contextvars.ContextVar(
            f"kalibr_last_trace_{id(self)}", default=None
        )

    def __repr__(self) -> str:
        return f"Router(goal={self.goal!r}, paths={[p.label for p in self.paths]!r})"

    # --- deciding ---------------------------------------------------------------------------------------
    def decide(
        self, force_model: str | Path | None = None, *, messages: Sequence[Message] | str | None = None
    ) -> Decision:
        """Choose a path for a call you make yourself; report it with ``report(trace_id=decision.trace_id)``.

        ``messages``: with ``context``, the request's messages, read (in process) before choosing."""
        if force_model is not None:
            decision = self._forced(force_model)
        elif messages is None or self._featurize is None:
            decision = self.intelligence.decide(self.goal, self.paths, high_risk=self.high_risk)
        else:
            decision = self._decide_for_prompt(messages) or self.intelligence.decide(
                self.goal, self.paths, high_risk=self.high_risk
            )
        self._remember(decision)
        return decision

    async def adecide(
        self, force_model: str | Path | None = None, *, messages: Sequence[Message] | str | None = None
    ) -> Decision:
        if force_model is not None:
            decision = self._forced(force_model)
        else:  # a decision for a prompt is the embedded engine's, in memory: no need to leave the event loop
            decision = self._decide_for_prompt(messages) or await self.intelligence.adecide(
                self.goal, self.paths, high_risk=self.high_risk
            )
        self._remember(decision)
        return decision

    def _decide_for_prompt(self, messages: Sequence[Message] | str | None) -> Decision | None:
        """With ``context`` on and the embedded engine, its decision for the prompt's features; else None."""
        decide = getattr(self.intelligence, "decide_for_prompt", None)
        if self._featurize is None or messages is None or decide is None:
            return None
        features = self._featurize(_check_messages(messages))
        decision: Decision = decide(self.goal, self.paths, features, high_risk=self.high_risk)
        return decision

    def _forced(self, force_model: str | Path) -> Decision:
        path = self._path_for(force_model)
        decision = Decision(
            trace_id=new_trace_id(),
            goal=self.goal,
            path=path,
            exploration=False,
            reason=f"forced to {path.label!r} by the caller",
            confidence=1.0,
            forced=True,
        )
        self.intelligence.record_forced(decision)
        return decision

    def _path_for(self, model: str | Path) -> Path:
        if isinstance(model, Path):
            return model
        for path in self.paths:
            if model in (path.model, path.path_id, path.label):
                return path
        # A model outside the declared paths: call it like the first path would (same provider settings).
        first = self.paths[0]
        return Path(model, provider=first.provider, base_url=first.base_url, api_key=first.api_key)

    def _fallbacks(self, decision: Decision) -> Iterator[Decision]:
        """The chosen path, then every other path in declared order that is not disabled in the store (unless all
        are, as the decision itself would), each as its own decision."""
        yield decision
        previous = decision
        disabled_paths = getattr(self.intelligence, "disabled_paths", None)
        disabled = disabled_paths(self.goal) if callable(disabled_paths) else frozenset()
        if all(path.path_id in disabled for path in self.paths):
            disabled = frozenset()
        for path in self.paths:
            if path.path_id == decision.path_id or path.path_id in disabled:
                continue
            fallback = Decision(
                trace_id=new_trace_id(),
                goal=self.goal,
                path=path,
                exploration=False,
                reason=f"fallback: {previous.path.label!r} failed",
                confidence=0.0,
                forced=True,
            )
            self.intelligence.record_forced(fallback)
            previous = fallback
            yield fallback

    # --- calling ----------------------------------------------------------------------------------------
    @overload
    def completion(
        self,
        messages: Sequence[Message] | str,
        *,
        force_model: str | Path | None = None,
        evaluate: bool = True,
        stream: Literal[False] = False,
        **params: Any,
    ) -> Completion: ...

    @overload
    def completion(
        self,
        messages: Sequence[Message] | str,
        *,
        force_model: str | Path | None = None,
        evaluate: bool = True,
        stream: Literal[True],
        **params: Any,
    ) -> CompletionStream: ...

    def completion(
        self,
        messages: Sequence[Message] | str,
        *,
        force_model: str | Path | None = None,
        evaluate: bool = True,
        stream: bool = False,
        **params: Any,
    ) -> Completion | CompletionStream:
        """Call the chosen path (falling back to the others on provider failures) and return its answer.

        ``params`` (temperature, max_tokens, tools, tool_choice, response_format, stop, ...) are sent to the
        provider on top of the path's own params. ``stream=True`` returns ``self.stream(...)``.
        ``evaluate=False`` skips ``success_when``/``score_when`` on the answer's text, for callers (adapters)
        that judge a larger output with ``evaluate()`` themselves.
        """
        if stream:
            return self.stream(messages, force_model=force_model, evaluate=evaluate, **params)
        conversation = _check_messages(messages)
        attempts: list[Attempt] = []
        first = self.decide(force_model, messages=conversation)
        for decision in self._fallbacks(first):
            request = self._request(decision, conversation, params, stream=False)
            started = time.perf_counter()
            try:
                response = self._invoke(request)
            except RequestRejected:
                raise
            except ProviderError as error:
                attempts.append(self._report_failure(decision, error, started))
                continue
            return self._finish(decision, response, started, attempts, evaluate=evaluate)
        raise all_failed(self.goal, attempts)

    async def acompletion(
        self,
        messages: Sequence[Message] | str,
        *,
        force_model: str | Path | None = None,
        evaluate: bool = True,
        **params: Any,
    ) -> Completion:
        """The async form of ``completion``; for streaming use ``astream``."""
        if params.pop("stream", False):
            raise UserError("for async streaming call router.astream(messages) instead of stream=True")
        conversation = _check_messages(messages)
        attempts: list[Attempt] = []
        first = await self.adecide(force_model, messages=conversation)
        for decision in self._fallbacks(first):
            request = self._request(decision, conversation, params, stream=False)
            started = time.perf_counter()
            try:
                response = await self._ainvoke(request)
            except RequestRejected:
                raise
            except ProviderError as error:
                attempts.append(self._report_failure(decision, error, started))
                continue
            return self._finish(decision, response, started, attempts, evaluate=evaluate)
        raise all_failed(self.goal, attempts)

    def stream(
        self,
        messages: Sequence[Message] | str,
        *,
        force_model: str | Path | None = None,
        evaluate: bool = True,
        **params: Any,
    ) -> CompletionStream:
        """Stream the answer. Falls back to another path if one fails before its first chunk."""
        return CompletionStream(self, _check_messages(messages), force_model, params, evaluate)

    def astream(
        self,
        messages: Sequence[Message] | str,
        *,
        force_model: str | Path | None = None,
        evaluate: bool = True,
        **params: Any,
    ) -> AsyncCompletionStream:
        """The async form of ``stream``: ``async for chunk in router.astream(messages): ...``."""
        return AsyncCompletionStream(self, _check_messages(messages), force_model, params, evaluate)

    def _request(
        self, decision: Decision, messages: Sequence[Message], params: Mapping[str, Any], *, stream: bool
    ) -> ProviderRequest:
        merged = {**decision.path.params, **params}
        if decision.path.tools and "tools" not in merged:
            merged["tools"] = list(decision.path.tools)
        return ProviderRequest(decision.path, messages, merged, stream=stream)

    def _invoke(self, request: ProviderRequest) -> ProviderResponse:
        direct, wire = resolve(request.path)
        if direct is not None:
            return direct.invoke(request)
        assert wire is not None
        return provider_io.complete(wire, request, self._http, self.timeout)

    async def _ainvoke(self, request: ProviderRequest) -> ProviderResponse:
        direct, wire = resolve(request.path)
        if direct is not None:
            return await direct.ainvoke(request)
        assert wire is not None
        return await provider_io.acomplete(wire, request, self._ahttp or await async_client(), self.timeout)

    def _open_stream(self, request: ProviderRequest) -> Iterator[StreamChunk]:
        direct, wire = resolve(request.path)
        if direct is not None:
            return direct.stream(request)
        assert wire is not None
        return provider_io.stream(wire, request, self._http, self.timeout)

    def _aopen_stream(self, request: ProviderRequest) -> AsyncIterator[StreamChunk]:
        direct, wire = resolve(request.path)
        if direct is not None:
            return direct.astream(request)
        assert wire is not None
        return provider_io.astream(wire, request, self._ahttp, self.timeout)

    # --- finishing a call -------------------------------------------------------------------------------
    def _finish(
        self,
        decision: Decision,
        response: ProviderResponse,
        started: float,
        attempts: Sequence[Attempt],
        *,
        evaluate: bool = True,
    ) -> Completion:
        latency_ms = (time.perf_counter() - started) * 1000
        record = _CallRecord(decision, cost_of(decision.path, response.usage), latency_ms, response.usage)
        self._remember(record)
        completion = Completion(
            text=response.text,
            decision=decision,
            usage=response.usage,
            model=response.model,
            latency_ms=latency_ms,
            cost_usd=record.cost_usd,
            tool_calls=response.tool_calls,
            finish_reason=response.finish_reason,
            attempts=tuple(attempts),
            raw=response.raw,
            _reporter=lambda **kw: self.report(trace_id=decision.trace_id, **kw),
        )
        if evaluate:
            try:
                self.evaluate(completion.trace_id, completion.output, completion=completion)
            except Exception as error:  # the answer is the caller's: a report that failed must not take it away
                _log_unreported(decision.trace_id, error)
        return completion

    def evaluate(
        self, trace_id: str | Sequence[str], output: Any, *, final: bool = False, completion: Completion | None = None
    ) -> None:
        """Run ``success_when``/``score_when`` on ``output`` and report the result for ``trace_id``.

        The router calls this on every answer (with ``completion.output``). Adapters call it with ``final=True``
        on the final output of a whole run (a chain's parsed result, a query's response, an agent's answer) with
        the trace ids of all the run's decisions: the judge runs once and its verdict (or its failure) goes to
        each, replacing their per-call verdicts; an explicit ``report()`` replaces both. A judge taking two
        positional parameters also receives ``completion`` (None when not given).

        A judge that raises counts as a failure (``validation_failed``, reason "success_when raised ValueError":
        the exception's text may quote the output, so it is never stored or logged). Only the judge's own
        exception is caught: an error while reporting (a ``StoreError``) propagates as itself, once every trace
        id has been tried.
        """
        callback = self.success_when or self.score_when
        if callback is None:
            return
        trace_ids = [trace_id] if isinstance(trace_id, str) else list(trace_id)
        if not trace_ids:
            return
        name = "success_when" if self.success_when is not None else "score_when"
        verdict: dict[str, Any]
        try:
            value = callback(output, completion) if self._judge_takes_completion else callback(output)
            score = resolve_score(bool(value), None) if self.success_when is not None else resolve_score(None, value)
            verdict = {"score": score, "success": score >= 0.5}
        except Exception as error:
            reason = f"{name} raised {type(error).__name__}"
            logger.warning("kalibr: %s for trace %s; counting the call as failed", reason, trace_ids[0])
            verdict = {"score": 0.0, "success": False, "reason": reason, "failure_category": "validation_failed"}
        failed: Exception | None = None
        for target in trace_ids:
            try:
                self._report(target, source="run" if final else name, **verdict)
            except Exception as error:  # the other decisions still get the verdict
                failed = failed or error
        if failed is not None:
            raise failed

    def report_run_failure(self, trace_id: str, *, failure_category: FailureCategory, reason: str) -> None:
        """Fail ``trace_id`` as the verdict of a run (source ``run``) whose error blames what the model answered: a
        parser's or a validator's. Adapters call it through ``kalibr.runs``; an explicit ``report()`` replaces it."""
        category = check_failure_category(failure_category)
        self._report(trace_id, score=0.0, success=False, source="run", reason=reason, failure_category=category)

    def _report_failure(self, decision: Decision, error: ProviderError, started: float) -> Attempt:
        self._remember(_CallRecord(decision, latency_ms=(time.perf_counter() - started) * 1000))
        try:
            self._report(
                decision.trace_id,
                score=0.0,
                success=False,
                source="error",
                reason=error.summary,
                failure_category=error.failure_category,
            )
        except Exception as report_error:  # the fallback to the next path goes on
            _log_unreported(decision.trace_id, report_error)
        return Attempt(decision, str(error), error.failure_category, error)

    # --- reporting --------------------------------------------------------------------------------------
    def report(
        self,
        success: bool | None = None,
        score: float | None = None,
        reason: str | None = None,
        failure_category: FailureCategory | None = None,
        trace_id: str | None = None,
        *,
        cost_usd: float | None = None,
        latency_ms: float | None = None,
        usage: Usage | None = None,
    ) -> None:
        """Report how a call went: ``success`` and/or a ``score`` in [0, 1].

        Without ``trace_id`` it reports, in this thread or asyncio task, whichever is newer: the router's last
        direct call (``completion``/``stream``/``decide``), or the last framework run (a chain, a query, an
        agent, a DSPy module) that made calls of this router. A run's report applies to every one of its calls
        of this router: its final answer depends on every step. Several runs at once (a batch), or a run still
        going, raise ``UserError``: pass ``trace_id=`` then.

        An explicit report replaces the call's whole outcome: what ``success_when``/``score_when`` or an
        earlier ``report()`` said, fields not passed here included (they are cleared). For a partial change use
        ``update_outcome``.
        """
        value = resolve_score(success, score)
        category = check_failure_category(failure_category)
        targets = [trace_id] if trace_id is not None else self._report_targets()
        for target in targets:
            self._report(
                target,
                score=value,
                success=success if success is not None else value >= 0.5,
                source="explicit",
                reason=reason,
                failure_category=category,
                cost_usd=cost_usd,
                latency_ms=latency_ms,
                usage=usage,
            )

    def _report_targets(self) -> list[str]:
        # A direct call opens its thread's or task's scope; without one of its own, the last call the context
        # holds was made elsewhere (a task or thread inherits its creator's context) and is not this one's.
        last = self._last_trace.get() if owns_scope() else None
        direct_sequence, direct_trace = last if last is not None else (0, None)
        from_run = run_targets(self, direct_sequence)
        if from_run is not None:
            return from_run
        if direct_trace is None:
            raise UserError(
                "no call to report in this thread or task: call completion()/decide() first, or pass trace_id= "
                "(every Completion and Decision has one, and adapters' messages carry it as kalibr_trace_id); "
                "calls made in other tasks or a framework's batch started here are reported by their trace_id"
            )
        return [direct_trace]

    def _report(self, trace_id: str, *, score: float, success: bool, source: str, **fields: Any) -> None:
        remembered = self._calls.get(trace_id)
        if remembered is None:
            remembered = self._older_calls.get(trace_id)
        if remembered is None:
            raise UserError(
                f"trace_id {trace_id!r} is not a call of this router (or is too old): "
                "use kalibr.update_outcome(trace_id, goal, ...) for calls made elsewhere"
            )
        record = remembered if isinstance(remembered, _CallRecord) else _CallRecord(remembered)
        outcome = Outcome(
            trace_id=trace_id,
            goal=self.goal,
            path_id=record.decision.path_id,
            model=record.decision.model,
            score=score,
            success=success,
            source=source,  # type: ignore[arg-type]
            failure_category=fields.get("failure_category"),
            reason=fields.get("reason"),
            cost_usd=fields.get("cost_usd") if fields.get("cost_usd") is not None else record.cost_usd,
            latency_ms=fields.get("latency_ms") if fields.get("latency_ms") is not None else record.latency_ms,
            usage=fields.get("usage") or record.usage,
        )
        self.intelligence.report(outcome)

    def _remember(self, record: _CallRecord | Decision) -> None:
        trace_id = record.trace_id
        calls = self._calls
        # A decision is new (its trace id too); a record may be a decided call again, now with its cost and
        # latency: that one keeps its place.
        if record.__class__ is _CallRecord and trace_id not in calls and trace_id in self._older_calls:
            self._older_calls[trace_id] = record
        else:
            calls[trace_id] = record
            if len(calls) >= _RECENT_CALLS:
                with self._calls_lock:
                    if self._calls is calls:  # not swapped by another thread meanwhile
                        self._older_calls, self._calls = calls, {}
        self._last_trace.set((next_sequence(), trace_id))
        ensure_scope()  # runs started later from copies of this context are then seen by report() here

    # --- reading ----------------------------------------------------------------------------------------
    def update_outcome(self, trace_id: str, **changes: Any) -> list[str]:
        """Change a reported outcome of this router's goal; see ``kalibr.update_outcome``."""
        return self.intelligence.update_outcome(trace_id, self.goal, _changes(**changes))

    def set_config(self, config: PolicyConfig) -> None:
        """Set this goal's routing config, e.g. a cost setting: ``PolicyConfig(budget_per_1k_calls_usd=2.0)`` or
        ``PolicyConfig(quality_tolerance=0.01)``. Stored (embedded) or sent to the service; the next decide uses it."""
        setter = getattr(self.intelligence, "set_config", None)
        if not callable(setter):
            raise UserError(
                f"{type(self.intelligence).__name__} takes no routing config: use the embedded engine or a service URL"
            )
        setter(self.goal, config)

    def get_policy(self, window_hours: float = 168, constraints: Constraints | None = None) -> PolicyAnswer:
        return self.intelligence.get_policy(self.goal, window_hours=window_hours, constraints=constraints)

    def get_insights(self, window_hours: float = 168) -> dict[str, Any]:
        return self.intelligence.get_insights(self.goal, window_hours=window_hours)

    # --- adapters ---------------------------------------------------------------------------------------
    def as_langchain(self, **options: Any) -> Any:
        """This router as a LangChain chat model (``pip install "kalibr-core[langchain]"``)."""
        from kalibr.plugins import make_adapter

        return make_adapter("langchain", "langchain", self, **options)

    def as_llamaindex(self, **options: Any) -> Any:
        """This router as a LlamaIndex LLM (``pip install "kalibr-core[llamaindex]"``)."""
        from kalibr.plugins import make_adapter

        return make_adapter("llamaindex", "llamaindex", self, **options)

    def as_dspy(self, **options: Any) -> Any:
        """This router as a DSPy LM (``pip install "kalibr-core[dspy]"``)."""
        from kalibr.plugins import make_adapter

        return make_adapter("dspy", "dspy", self, **options)


def _log_unreported(trace_id: str, error: Exception) -> None:
    logger.error("kalibr: could not report the outcome of trace %s (%s)", trace_id, type(error).__name__)


def _required_positionals(function: Callable[..., Any]) -> int:
    """How many positional arguments ``function`` needs (2 for ``lambda output, completion: ...``)."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: give it the output alone
        return 1
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(1 for p in parameters if p.kind in positional and p.default is inspect.Parameter.empty)


def _featurizer(context: str | Callable[[Sequence[Message]], Any] | None) -> Callable[[Sequence[Message]], Any] | None:
    if context is None or callable(context):
        return context
    if context == "auto":
        from kalibr.context import auto_featurizer

        return auto_featurizer()
    raise UserError(f'context {context!r}: pass "auto" or a callable that turns messages into a vector of floats')


def _check_messages(messages: Sequence[Message] | str) -> list[Message]:
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    if not isinstance(messages, Sequence) or not messages:
        raise UserError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts, or a string")
    checked: list[Message] = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message:
            raise UserError(f"messages[{index}] is {message!r}: each message is a dict with a 'role' and 'content'")
        checked.append(dict(message))
    return checked


def _changes(
    success: bool | None = None,
    score: float | None = None,
    failure_category: FailureCategory | None = None,
    reason: str | None = None,
) -> OutcomeChanges:
    if score is not None:
        resolve_score(None, score)
    return OutcomeChanges(
        score=score if score is not None else (None if success is None else float(success)),
        success=success,
        failure_category=check_failure_category(failure_category),
        reason=reason,
    )
