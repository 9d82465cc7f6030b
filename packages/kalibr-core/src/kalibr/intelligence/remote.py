"""The client of the intelligence service (``kalibr serve``), built to never slow the caller down.

- ``decide`` waits at most ``Resilience.timeout`` (50 ms by default), then falls back to the first path. A new
  client's first decide is preceded by a health probe with that timeout (a hung service costs it once); once the
  service has answered, its first decides get ``Resilience.warm_up_timeout``, and a timeout from a service that
  answered within ``cooldown`` counts like an error: a cold service or a loaded machine does not open the breaker.
- After ``breaker_after`` consecutive failures a circuit breaker stops asking for ``cooldown`` seconds:
  decisions fall back at once (no network), then one probe checks whether the service is back.
- Every other call honours the same breaker; a service not heard from within ``cooldown`` is first probed with
  the decide timeout, so no call waits on a hung service longer than that.
- ``report`` (and an ``update_outcome`` the service cannot take now) writes to a durable local spool (SQLite),
  keyed by service URL and API-key fingerprint, and returns; a background thread delivers spooled outcomes in
  bounded batches, isolates any the service refuses for good (kept as dead letters: ``kalibr spool``), and keeps
  the rest through outages, process restarts included.
- Construction does no I/O; ``register_paths`` starts, in the background, the HTTP client's build and then the
  spool's thread, which opens the file (never the caller); else the first decide or report starts it.
- ``disabled_paths`` (the router's fallbacks skip them) is read at most once per goal per ``refresh_interval``,
  with the decide timeout, under the same breaker; a goal's first answered decide reads it in the background.
  A failing service leaves the last known set: a fallback never fails or waits long because the service is down.
- Requests are built and answers parsed with the service's own pydantic models (``kalibr.service._schemas``).

Usage::

    RemoteIntelligence("http://127.0.0.1:8400", api_key="kal_...", resilience=Resilience(timeout=0.1))
"""

from __future__ import annotations

import asyncio
import contextlib
import encodings.idna  # noqa: F401  (the first connection's host lookup imports it: inside a call's timeout)
import json
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path as FilePath
from typing import Any

import httpcore  # noqa: F401  (httpx imports it on the first request: here it costs the import, not a call)
import httpx
from pydantic import BaseModel, ValidationError

from kalibr._domain import Decision, Outcome, Path, new_trace_id
from kalibr._exceptions import IntelligenceUnavailable, OutcomeNotFound, UserError
from kalibr.intelligence._breaker import CircuitBreaker, Resilience, resilience_from_env
from kalibr.intelligence._spool import Delivery, Refused, SpoolSender, default_spool_path, endpoint_for
from kalibr.intelligence.base import Constraints, PolicyAnswer
from kalibr.policies.base import PolicyConfig
from kalibr.service import _schemas as wire
from kalibr.stores.base import OutcomeChanges

__all__ = ["RemoteIntelligence", "Resilience"]

logger = logging.getLogger("kalibr.remote")

API_KEY_ENV = "KALIBR_API_KEY"
TENANT_ENV = "KALIBR_TENANT_ID"
_DECIDE = "/api/v1/routing/decide"
_REPORT = "/api/v1/intelligence/report-outcome"
_REPORT_BATCH = "/api/v1/intelligence/report-outcomes"
_UPDATE = "/api/v1/intelligence/update-outcome"
_HEALTH = "/api/v1/intelligence/health"
_PATHS = "/api/v1/routing/paths"
WARM_UP_DECIDES = 100
"""Decides of a new client that get the warm-up timeout once the service has answered it (see ``_decide_timeout``):
as many as a cold service and a loaded machine may answer slowly. A timeout among them ends the warm-up, so a
service that hangs afterwards costs one ``warm_up_timeout``, not one per warm-up decide."""


class _Unavailable(Exception):
    """The service did not answer usefully (transport error, timeout, 5xx): counts against the breaker."""


class _Rejected(UserError):
    """The service answered 4xx: the request is at fault (or the key), not the service."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(f"intelligence service refused the request: HTTP {status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


class RemoteIntelligence:
    """The ``Intelligence`` protocol over HTTP, sync and async, resilient to the service failing."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        tenant: str | None = None,
        resilience: Resilience | None = None,
        spool: str | os.PathLike[str] | None = None,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
        refresh_interval: float = 1.0,
    ) -> None:
        """``refresh_interval``: how long (seconds) a goal's disabled paths, as last read, are trusted."""
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise UserError(
                f"invalid intelligence URL {url!r}: give the service's base URL, e.g. http://127.0.0.1:8400"
            )
        if isinstance(refresh_interval, bool) or not isinstance(refresh_interval, int | float) or refresh_interval < 0:
            raise UserError(f"invalid refresh_interval {refresh_interval!r}: give seconds, a number >= 0 (e.g. 1.0)")
        self.url = url.rstrip("/")
        self.resilience = resilience or resilience_from_env()
        self.tenant = tenant or os.environ.get(TENANT_ENV) or None
        self._api_key = api_key or os.environ.get(API_KEY_ENV) or ""
        self.endpoint = endpoint_for(self.url, self._api_key)
        """This client's name in the spool: the URL and a fingerprint of the key (outcomes never cross keys)."""
        self._spool_path = FilePath(spool) if spool is not None else None
        self._transport, self._async_transport = transport, async_transport
        self.breaker = CircuitBreaker(self.resilience.breaker_after, self.resilience.cooldown)
        self._lock = threading.Lock()
        self._building = threading.Lock()
        self._client: httpx.Client | None = None
        self._async_clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}
        self._sender: SpoolSender | None = None
        self._paths: dict[str, Path] = {}
        self._warmed = False
        self._warm_up_left = WARM_UP_DECIDES
        self._refresh_interval = refresh_interval
        self._disabled: dict[str, tuple[float, frozenset[str]]] = {}
        """Per goal: when its disabled paths were last asked for (monotonic), and this client's ids of them."""
        self._disabled_reading: set[str] = set()

    # --- deciding -------------------------------------------------------------------------------------
    def register_paths(self, goal: str, paths: Sequence[Path]) -> None:
        """Remember the paths (no I/O): every decide sends them, and the service registers what it lacks.

        The first call also builds the HTTP client (no request: a few ms of CPU, SSL context included), then starts
        the spool's thread (which opens the file), in the background: the router's first decide, or a first
        ``update_outcome`` that times out and spools, does not pay for them on top of its timeout."""
        with self._lock:
            self._paths.update((path.path_id, path) for path in paths)
            warm, self._warmed = not self._warmed, True
        if warm:
            threading.Thread(target=self._warm_up, name="kalibr-client-build", daemon=True).start()

    def _warm_up(self) -> None:
        self._sync_client()  # first: the first call needs it at once, the spool only after its request
        self._ensure_sender()

    def decide(self, goal: str, paths: Sequence[Path], *, high_risk: bool = False) -> Decision:
        if not self.breaker.allow():
            return self._fallback(goal, paths, "circuit breaker open")
        try:
            request = self._decide_body(goal, paths, high_risk)
            if self._cold():
                self._probe()
            timeout, grace = self._decide_timeout()
            answer = self._send("POST", _DECIDE, timeout, json=request, grace=grace)
            decision = self._decision_from(goal, paths, answer)
        except (_Unavailable, UserError, ValidationError) as exc:  # ValidationError: a path the wire cannot carry
            self._ensure_sender()  # after the request (the warm-up has usually started it): it delivers the backlog
            return self._fallback(goal, paths, str(exc))
        self._ensure_sender().service_back()
        self._prefetch_disabled(goal)
        return decision

    async def adecide(self, goal: str, paths: Sequence[Path], *, high_risk: bool = False) -> Decision:
        if not self.breaker.allow():
            return self._fallback(goal, paths, "circuit breaker open")
        try:
            request = self._decide_body(goal, paths, high_risk)
            if self._cold():
                await self._aprobe()
            timeout, grace = self._decide_timeout()
            answer = await self._asend("POST", _DECIDE, timeout, json=request, grace=grace)
            decision = self._decision_from(goal, paths, answer)
        except (_Unavailable, UserError, ValidationError) as exc:  # ValidationError: a path the wire cannot carry
            self._ensure_sender()  # after the request (the warm-up has usually started it): it delivers the backlog
            return self._fallback(goal, paths, str(exc))
        self._ensure_sender().service_back()
        self._prefetch_disabled(goal)
        return decision

    def _fallback(self, goal: str, paths: Sequence[Path], why: str) -> Decision:
        """The decision when the service cannot be asked: the first path not known to be disabled on it (as last
        read: no request, the service is what failed), the first path when all are."""
        with self._lock:
            disabled = self._disabled.get(goal, (None, frozenset[str]()))[1]
        path = next((path for path in paths if path.path_id not in disabled), paths[0])
        which = "the first path" if path is paths[0] else f"the first path not disabled, {path.model!r}"
        return Decision(
            trace_id=new_trace_id(),
            goal=goal,
            path=path,
            exploration=False,
            reason=f"intelligence unavailable ({why}): using {which}",
            confidence=0.0,
            fallback=True,
        )

    def _cold(self) -> bool:
        """Has the service never answered this client? Then the first decide is preceded by a health probe with
        the decide timeout: a hung service costs that once (and opens the breaker), a live one has answered."""
        return not self.breaker.has_answered()

    def _decide_timeout(self) -> tuple[float, bool]:
        """The decide timeout, and whether it is a warm-up one. The first ``WARM_UP_DECIDES`` decides after the service
        first answered wait up to ``Resilience.warm_up_timeout``: a just-started service (or a loaded machine)
        answering the first decides of a new connection slowly is neither a fallback nor mistaken for a hung one."""
        with self._lock:
            if self._warm_up_left <= 0:
                return self.resilience.timeout, False
            self._warm_up_left -= 1
        return max(self.resilience.timeout, self.resilience.warm_up_timeout), True

    def record_forced(self, decision: Decision) -> None:
        """Nothing to send: the outcome carries the model, which is how the service attributes it."""
        self.register_paths(decision.goal, [decision.path])

    def _decide_body(self, goal: str, paths: Sequence[Path], high_risk: bool) -> dict[str, Any]:
        self.register_paths(goal, paths)
        request = wire.DecideRequest(
            goal=goal,
            task_risk_level="high" if high_risk else "low",
            candidate_model_ids=sorted({path.model for path in paths}),
            paths=[
                wire.CandidatePath(model_id=p.model, params=_jsonable(p.params), tool_id=_tool_id(p)) for p in paths
            ],
        )
        return _dumped(request)

    def _decision_from(self, goal: str, paths: Sequence[Path], answer: bytes) -> Decision:
        try:
            body = wire.DecideResponse.model_validate_json(answer)
            return Decision(
                trace_id=body.trace_id,
                goal=goal,
                path=_match(paths, body.model_id, body.params),
                exploration=body.exploration,
                reason=body.reason,
                confidence=body.confidence,
                decided_at=body.decided_at,
                success_rate=body.success_rate,
                sample_count=body.sample_count,
            )
        except (ValidationError, ValueError) as exc:
            raise _Unavailable(f"unusable decide answer: {exc}") from exc

    # --- disabled paths ----------------------------------------------------------------------------------
    def disabled_paths(self, goal: str) -> frozenset[str]:
        """This client's ids of the goal's paths disabled on the service (``kalibr dashboard``, the disable endpoint):
        the router's fallbacks skip them. Asked for at most once per ``refresh_interval``, waiting at most the decide
        timeout; while the breaker is open, another thread is asking, or the service fails, the last known set."""
        with self._lock:
            asked_at, known = self._disabled.get(goal, (None, frozenset()))
            if goal in self._disabled_reading or (
                asked_at is not None and time.monotonic() - asked_at < self._refresh_interval
            ):
                return known
            self._disabled_reading.add(goal)
        try:
            return self._read_disabled(goal, known)
        finally:
            with self._lock:
                self._disabled_reading.discard(goal)

    def _read_disabled(self, goal: str, known: frozenset[str]) -> frozenset[str]:
        if not self.breaker.allow():
            return known
        query = {"goal": goal, "include_disabled": "true"}
        try:
            listed = wire.PathsResponse.model_validate_json(
                self._send("GET", _PATHS, self.resilience.timeout, params=query)
            ).paths
        except (_Unavailable, UserError, ValidationError) as exc:
            logger.debug("kalibr: could not read the disabled paths of goal %r (%s); using the last known", goal, exc)
            disabled = known
        else:
            off = {(path.model_id, _canonical(path.params)) for path in listed if not path.enabled}
            with self._lock:
                ours = list(self._paths.values())
            disabled = frozenset(path.path_id for path in ours if (path.model, _canonical(path.params)) in off)
        with self._lock:
            self._disabled[goal] = (time.monotonic(), disabled)  # a failure too: one request per interval at most
        return disabled

    def _prefetch_disabled(self, goal: str) -> None:
        """A goal's first answered decide reads its disabled paths in the background: its first fallback need not."""
        with self._lock:
            if goal in self._disabled or goal in self._disabled_reading:
                return
            self._disabled[goal] = (-float("inf"), frozenset())  # stale: the thread (or a fallback) asks
        threading.Thread(target=self.disabled_paths, args=(goal,), name="kalibr-disabled-paths", daemon=True).start()

    # --- learning -------------------------------------------------------------------------------------
    def report(self, outcome: Outcome) -> None:
        """Spool the outcome durably and return; a background thread delivers it."""
        self._spool("report", outcome.trace_id, wire.ReportRequest, self._outcome_body(outcome))

    async def areport(self, outcome: Outcome) -> None:
        self.report(outcome)  # a local SQLite insert: no network wait

    def _spool(self, kind: str, trace_id: str, model: type[BaseModel], body: dict[str, Any]) -> None:
        """Validate ``body`` with the service's model and spool it; an outcome the service could never accept
        (a 300-character model id...) is kept as a dead letter at once, with the reason, instead of being sent."""
        sender = self._ensure_sender()
        try:
            payload = _dumped(model.model_validate(body))
        except ValidationError as exc:
            sender.submit(trace_id, body, "dead", status_code=422, reason=_problems(exc))
            return
        sender.submit(trace_id, payload, "update" if kind == "update" else "report")

    def _outcome_body(self, outcome: Outcome) -> dict[str, Any]:
        with self._lock:
            path = self._paths.get(outcome.path_id)
        metadata = {"cost_usd": outcome.cost_usd, "latency_ms": outcome.latency_ms, "source": outcome.source}
        if outcome.usage is not None:
            metadata |= {"input_tokens": outcome.usage.input_tokens, "output_tokens": outcome.usage.output_tokens}
        return {
            "trace_id": outcome.trace_id,
            "goal": outcome.goal,
            "success": outcome.success if outcome.success is not None else outcome.score >= 0.5,
            "score": outcome.score,
            "failure_reason": outcome.reason,
            "failure_category": outcome.failure_category,
            "metadata": {k: v for k, v in metadata.items() if v is not None},
            "model_id": outcome.model or (path.model if path else None),
            # The path's params and tools let a service that does not know the path (a fresh store, a path added
            # during an outage) register it and count the outcome.
            "execution_params": _jsonable(path.params) if path else None,
            "tool_id": _tool_id(path) if path else None,
        }

    def update_outcome(self, trace_id: str, goal: str, changes: OutcomeChanges) -> list[str]:
        """Sent now if the service answers (after any outcome still spooled), else spooled like a report."""
        body = {
            "trace_id": trace_id,
            "goal": goal,
            "success": changes.success,
            "score": changes.score,
            "failure_reason": changes.reason,
            "failure_category": changes.failure_category,
        }
        asked = [
            name for name in ("success", "score", "reason", "failure_category") if getattr(changes, name) is not None
        ]
        if self._ready():  # the spool is needed only after the probe: it opens in the background meanwhile
            try:
                self._ensure_sender().deliver_pending()  # the outcome may still be waiting in the spool
                answer = self._send(
                    "POST", _UPDATE, self.resilience.call_timeout, json=_dumped(wire.UpdateRequest.model_validate(body))
                )
                updated = wire.UpdateResponse.model_validate_json(answer)
            except _Unavailable:
                pass  # spooled below
            except _Rejected as exc:
                if exc.status_code == 404:
                    raise OutcomeNotFound(f"no outcome {trace_id!r} for goal {goal!r}: {exc.detail}") from exc
                raise
            except ValidationError as exc:
                raise UserError(f"update_outcome({trace_id!r}): {_problems(exc)}") from exc
            else:
                return [{"failure_reason": "reason"}.get(name, name) for name in updated.fields_updated]
        self._spool("update", trace_id, wire.UpdateRequest, body)
        return asked

    # --- reading --------------------------------------------------------------------------------------
    def get_policy(
        self, goal: str, *, window_hours: float = 168, constraints: Constraints | None = None
    ) -> PolicyAnswer:
        request = wire.PolicyRequest(goal=goal, window_hours=window_hours, constraints=_constraints_body(constraints))
        answer = wire.PolicyResponse.model_validate_json(
            self._call("POST", "/api/v1/intelligence/policy", json=_dumped(request))
        )
        recommended = answer.recommended_model
        with self._lock:
            path = next((p for p in self._paths.values() if p.model == recommended), None)
        return PolicyAnswer(
            goal=goal,
            recommended_path_id=path.path_id if path else None,
            recommended_model=recommended,
            success_rate=answer.outcome_success_rate,
            sample_count=answer.outcome_sample_count,
            confidence=answer.confidence,
            reasoning=answer.reasoning,
            enough_data=recommended is not None,
            window_hours=window_hours,
            alternatives=tuple(answer.alternatives),
        )

    def set_config(self, goal: str, config: PolicyConfig) -> None:
        """Set ``goal``'s routing config on the service (the fields of ``POST /api/v1/routing/config``)."""
        self._call("POST", "/api/v1/routing/config", json=_dumped(wire.ConfigBody.of(goal, config)))

    def get_insights(self, goal: str | None = None, *, window_hours: float = 168) -> dict[str, Any]:
        params: dict[str, Any] = {"window_hours": window_hours}
        if goal is not None:
            params["goal"] = goal
        body = json.loads(self._call("GET", "/api/v1/intelligence/insights", params=params))
        if not isinstance(body, dict):
            raise IntelligenceUnavailable(f"unexpected insights answer from {self.url}: {body!r}")
        return body

    def _call(self, method: str, url: str, **kwargs: Any) -> bytes:
        """A call whose answer the caller needs: raises IntelligenceUnavailable or UserError, never falls back."""
        if not self._ready():
            raise IntelligenceUnavailable(f"intelligence service at {self.url} unavailable (circuit breaker open)")
        try:
            return self._send(method, url, self.resilience.call_timeout, **kwargs)
        except _Unavailable as exc:
            raise IntelligenceUnavailable(f"intelligence service at {self.url} unavailable: {exc}") from exc

    def _ready(self) -> bool:
        """May a call go out now? The breaker must allow it, and a service not heard from within the cool-down
        must answer a health probe within the decide timeout (so a hung service costs that, not call_timeout)."""
        if not self.breaker.allow():
            return False
        if self.breaker.answered_within(self.resilience.cooldown):
            return True
        try:
            self._probe()
        except _Unavailable:
            return False
        return True

    def _probe(self) -> None:
        """A health request with the decide timeout; raises ``_Unavailable`` if the service does not answer."""
        with contextlib.suppress(_Rejected):  # a 4xx is an answer
            self._send("GET", _HEALTH, self.resilience.timeout)

    async def _aprobe(self) -> None:
        with contextlib.suppress(_Rejected):
            await self._asend("GET", _HEALTH, self.resilience.timeout)

    # --- delivery -------------------------------------------------------------------------------------
    def pending_outcomes(self) -> int:
        """How many outcomes (and updates) wait in the spool for this service and key."""
        return self._ensure_sender().spool.count(self.endpoint)

    def dead_outcomes(self) -> int:
        """How many the service refused for good (kept, with its reason: ``kalibr spool``)."""
        return self._ensure_sender().spool.dead_count(self.endpoint)

    def _ensure_sender(self) -> SpoolSender:
        with self._lock:
            if self._sender is None:
                delivery = Delivery(
                    reports=self._deliver_batch,
                    report_one=lambda payload: self._deliver_one(_REPORT, payload),
                    update_one=lambda payload: self._deliver_one(_UPDATE, payload),
                    ready=self._ready,
                )
                self._sender = SpoolSender(
                    self._spool_file(), self.endpoint, delivery, self.breaker, self.resilience.cooldown
                )
            return self._sender

    def _deliver_batch(self, payloads: list[dict[str, Any]]) -> list[tuple[int, str] | None]:
        """Per payload: None when accepted, else the status and reason the service refused it with."""
        answer = self._delivered(_REPORT_BATCH, {"outcomes": payloads})
        try:
            results = wire.ReportBatchResponse.model_validate_json(answer).results
        except ValidationError as exc:
            raise _Unavailable(f"unusable batch answer: {exc}") from exc
        if len(results) != len(payloads):
            raise _Unavailable(f"the batch answer has {len(results)} results for {len(payloads)} outcomes")
        return [None if r.status == "accepted" else (r.status_code, r.message or "rejected") for r in results]

    def _deliver_one(self, route: str, payload: dict[str, Any]) -> None:
        self._delivered(route, payload)

    def _delivered(self, route: str, body: dict[str, Any]) -> bytes:
        try:
            return self._send("POST", route, self.resilience.call_timeout, json=body)
        except _Rejected as exc:
            if exc.status_code in (401, 403, 408, 429):  # the key or the rate: the outcomes wait, they are fine
                logger.warning("kalibr: the intelligence service refused outcomes (%s); they stay spooled", exc)
                raise _Unavailable(str(exc)) from exc
            raise Refused(exc.status_code, exc.detail) from exc

    def flush(self) -> None:
        """Deliver every spooled outcome now, if the service answers (else they stay spooled)."""
        self._ensure_sender().deliver_pending()

    def _spool_file(self) -> FilePath:
        return self._spool_path or default_spool_path()

    async def aclose(self) -> None:
        """Close the async HTTP client of the running event loop (call before the loop ends)."""
        with self._lock:
            client = self._async_clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    def close(self) -> None:
        """A last delivery if the service answers (bounded like any call); what is left stays spooled."""
        with self._lock:
            sender, self._sender = self._sender, None
        if sender is not None:
            sender.close(wait=self.resilience.call_timeout)
        with self._building:  # after the last delivery, which may have built the client
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # --- HTTP -----------------------------------------------------------------------------------------
    @property
    def _verify(self) -> bool:
        # Plain http has no certificates to check; skipping the CA bundle saves ~20 ms on the first call.
        return self.url.startswith("https://")

    def _headers(self) -> dict[str, str]:
        headers = {"X-API-Key": self._api_key}
        if self.tenant:
            headers["X-Tenant-ID"] = self.tenant
        return headers

    def _sync_client(self) -> httpx.Client:
        # Built under a lock of its own: spooling (``_ensure_sender``, ``_outcome_body``) never waits for the build.
        with self._building:
            if self._client is None:
                self._client = httpx.Client(
                    base_url=self.url, headers=self._headers(), transport=self._transport, verify=self._verify
                )
            return self._client

    def _async_client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._async_clients.get(loop)
            if client is None:
                for stale in [known for known in self._async_clients if known.is_closed()]:
                    del self._async_clients[stale]
                client = httpx.AsyncClient(
                    base_url=self.url, headers=self._headers(), transport=self._async_transport, verify=self._verify
                )
                self._async_clients[loop] = client
            return client

    def _send(self, method: str, url: str, timeout: float, *, grace: bool = False, **kwargs: Any) -> bytes:
        """``grace``: a warm-up decide (``_decide_timeout``)."""
        try:
            response = self._sync_client().request(method, url, timeout=timeout, **kwargs)
        except httpx.HTTPError as exc:
            raise self._failed(exc, grace) from exc
        return self._checked(response)

    async def _asend(self, method: str, url: str, timeout: float, *, grace: bool = False, **kwargs: Any) -> bytes:
        try:
            response = await self._async_client().request(method, url, timeout=timeout, **kwargs)
        except httpx.HTTPError as exc:
            raise self._failed(exc, grace) from exc
        return self._checked(response)

    def _failed(self, exc: httpx.HTTPError, grace: bool) -> _Unavailable:
        """Count a transport failure. A timeout from a service not heard from within ``cooldown`` (never, or not
        lately: it may hang) opens the breaker at once; from one answering lately (a slow answer on a loaded machine)
        it counts toward ``breaker_after`` like an error, so one slow decide costs one fallback, not ``cooldown``
        seconds of them. A warm-up decide's timeout also ends the warm-up, so a service that answers its probe and
        then hangs costs at most ``warm_up_timeout`` plus ``breaker_after - 1`` decide timeouts."""
        timed_out = isinstance(exc, httpx.TimeoutException)
        if timed_out and grace:
            with self._lock:
                self._warm_up_left = 0
        hung = timed_out and not self.breaker.answered_within(self.resilience.cooldown)
        self.breaker.record_failure(timed_out=hung)
        return _Unavailable(_describe(exc))

    def _checked(self, response: httpx.Response) -> bytes:
        """The body of a 2xx; 5xx is the service failing, 4xx is ours (``_Rejected``, a UserError)."""
        if response.status_code >= 500:
            self.breaker.record_failure()
            raise _Unavailable(f"HTTP {response.status_code} from the intelligence service")
        self.breaker.record_success()
        if response.status_code >= 400:
            raise _Rejected(response.status_code, _detail(response))
        return response.content


def _match(paths: Sequence[Path], model: str, params: Mapping[str, Any]) -> Path:
    """Our path the service chose: same model and params, else same model."""
    same_model = [path for path in paths if path.model == model]
    for path in same_model:
        if _canonical(path.params) == _canonical(params):
            return path
    if not same_model:
        raise ValueError(f"the service chose model {model!r}, which is none of this router's paths")
    return same_model[0]


def _canonical(params: Mapping[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def _jsonable(params: Mapping[str, Any]) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(_canonical(params))
    return loaded


def _tool_id(path: Path) -> str | None:
    names = path.metadata()["tools"]
    return ",".join(names) if names else None


def _constraints_body(constraints: Constraints | None) -> wire.PolicyConstraints | None:
    if constraints is None:
        return None
    names = ("max_cost_usd", "max_latency_ms", "min_quality", "min_confidence")
    given = {name: getattr(constraints, name) for name in names if getattr(constraints, name) is not None}
    return wire.PolicyConstraints(**given) if given else None


def _dumped(request: BaseModel) -> dict[str, Any]:
    """A request model as the JSON body sent (fields left out mean "unchanged" or "unknown")."""
    return request.model_dump(mode="json", exclude_none=True)


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}" for error in exc.errors()
    )


def _describe(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer in time ({type(exc).__name__})"
    return f"{type(exc).__name__}: {exc}"


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    return str(detail or response.text[:200])
