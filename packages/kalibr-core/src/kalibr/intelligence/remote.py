"""The client of the intelligence service (``kalibr serve``), built to never slow the caller down.

- ``decide`` waits at most ``Resilience.timeout`` (50 ms by default), then falls back to the first path.
- After ``breaker_after`` consecutive failures a circuit breaker stops asking for ``cooldown`` seconds:
  decisions fall back at once (no network), then one probe checks whether the service is back.
- ``report`` writes the outcome to a durable local spool (SQLite) and returns; a background thread
  delivers spooled outcomes in batches and keeps them through outages, process restarts included.
- Construction does no I/O: clients, the spool and the thread start on first use.

Usage::

    RemoteIntelligence("http://127.0.0.1:8400", api_key="kal_...", resilience=Resilience(timeout=0.1))
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path as FilePath
from typing import Any

import httpx

from kalibr._domain import Decision, Outcome, Path, new_trace_id
from kalibr._exceptions import IntelligenceUnavailable, UserError
from kalibr.intelligence._breaker import CircuitBreaker, Resilience, resilience_from_env
from kalibr.intelligence._spool import OutcomeSpool, SpoolSender, default_spool_path
from kalibr.intelligence.base import Constraints, PolicyAnswer
from kalibr.stores.base import OutcomeChanges

__all__ = ["RemoteIntelligence", "Resilience"]

logger = logging.getLogger("kalibr.remote")

API_KEY_ENV = "KALIBR_API_KEY"
TENANT_ENV = "KALIBR_TENANT_ID"
_DECIDE = "/api/v1/routing/decide"
_REPORT_BATCH = "/api/v1/intelligence/report-outcomes"


class _Unavailable(Exception):
    """The service did not answer usefully (transport error, timeout, 5xx): counts against the breaker."""


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
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise UserError(
                f"invalid intelligence URL {url!r}: give the service's base URL, e.g. http://127.0.0.1:8400"
            )
        self.url = url.rstrip("/")
        self.resilience = resilience or resilience_from_env()
        self.tenant = tenant or os.environ.get(TENANT_ENV) or None
        self._api_key = api_key or os.environ.get(API_KEY_ENV) or ""
        self._spool_path = FilePath(spool) if spool is not None else None
        self._transport, self._async_transport = transport, async_transport
        self.breaker = CircuitBreaker(self.resilience.breaker_after, self.resilience.cooldown)
        self._lock = threading.Lock()
        self._client: httpx.Client | None = None
        self._async_clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}
        self._sender: SpoolSender | None = None
        self._paths: dict[str, Path] = {}
        self._resumed = False

    # --- deciding -------------------------------------------------------------------------------------
    def register_paths(self, goal: str, paths: Sequence[Path]) -> None:
        """Remember the paths (no I/O): every decide sends them, and the service registers what it lacks."""
        with self._lock:
            self._paths.update((path.path_id, path) for path in paths)

    def decide(self, goal: str, paths: Sequence[Path], *, high_risk: bool = False) -> Decision:
        if not self.breaker.allow():
            return _fallback(goal, paths, "circuit breaker open")
        try:
            request = self._decide_body(goal, paths, high_risk)
            body = self._send("POST", _DECIDE, self.resilience.timeout, json=request)
            decision = self._decision_from(goal, paths, body)
        except (_Unavailable, UserError) as exc:
            return _fallback(goal, paths, str(exc))
        self._resume_spool()
        return decision

    async def adecide(self, goal: str, paths: Sequence[Path], *, high_risk: bool = False) -> Decision:
        if not self.breaker.allow():
            return _fallback(goal, paths, "circuit breaker open")
        try:
            request = self._decide_body(goal, paths, high_risk)
            body = await self._asend("POST", _DECIDE, self.resilience.timeout, json=request)
            decision = self._decision_from(goal, paths, body)
        except (_Unavailable, UserError) as exc:
            return _fallback(goal, paths, str(exc))
        self._resume_spool()
        return decision

    def record_forced(self, decision: Decision) -> None:
        """Nothing to send: the outcome carries the model, which is how the service attributes it."""
        self.register_paths(decision.goal, [decision.path])

    def _decide_body(self, goal: str, paths: Sequence[Path], high_risk: bool) -> dict[str, Any]:
        self.register_paths(goal, paths)
        return {
            "goal": goal,
            "task_risk_level": "high" if high_risk else "low",
            "candidate_model_ids": sorted({path.model for path in paths}),
            "paths": [{"model_id": p.model, "params": _jsonable(p.params), "tool_id": _tool_id(p)} for p in paths],
        }

    def _decision_from(self, goal: str, paths: Sequence[Path], body: Mapping[str, Any]) -> Decision:
        try:
            path = _match(paths, str(body["model_id"]), body.get("params") or {})
            return Decision(
                trace_id=str(body["trace_id"]),
                goal=goal,
                path=path,
                exploration=bool(body.get("exploration", False)),
                reason=str(body.get("reason", "")),
                confidence=float(body.get("confidence") or 0.0),
                decided_at=datetime.fromisoformat(str(body["decided_at"]).replace("Z", "+00:00")),
                success_rate=body.get("success_rate"),
                sample_count=int(body.get("sample_count") or 0),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise _Unavailable(f"unusable decide answer: {exc}") from exc

    # --- learning -------------------------------------------------------------------------------------
    def report(self, outcome: Outcome) -> None:
        """Spool the outcome durably and return; a background thread delivers it."""
        sender = self._ensure_sender()
        sender.spool.add(self._endpoint, outcome.trace_id, self._outcome_body(outcome))
        sender.wake()

    async def areport(self, outcome: Outcome) -> None:
        self.report(outcome)  # a local SQLite insert: no network wait

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
            "execution_params": _jsonable(path.params) if path else None,
            "tool_id": _tool_id(path) if path else None,
        }

    def update_outcome(self, trace_id: str, goal: str, changes: OutcomeChanges) -> list[str]:
        self.flush()  # the outcome may still be waiting in the spool
        body = {
            "trace_id": trace_id,
            "goal": goal,
            "success": changes.success,
            "score": changes.score,
            "failure_reason": changes.reason,
            "failure_category": changes.failure_category,
        }
        answer = self._call("POST", "/api/v1/intelligence/update-outcome", json=body)
        return [{"failure_reason": "reason"}.get(name, name) for name in answer.get("fields_updated", [])]

    # --- reading --------------------------------------------------------------------------------------
    def get_policy(
        self, goal: str, *, window_hours: float = 168, constraints: Constraints | None = None
    ) -> PolicyAnswer:
        body = {"goal": goal, "window_hours": window_hours, "constraints": _constraints_body(constraints)}
        answer = self._call("POST", "/api/v1/intelligence/policy", json=body)
        recommended = answer.get("recommended_model")
        with self._lock:
            path = next((p for p in self._paths.values() if p.model == recommended), None)
        return PolicyAnswer(
            goal=goal,
            recommended_path_id=path.path_id if path else None,
            recommended_model=recommended,
            success_rate=answer.get("outcome_success_rate"),
            sample_count=int(answer.get("outcome_sample_count") or 0),
            confidence=float(answer.get("confidence") or 0.0),
            reasoning=str(answer.get("reasoning", "")),
            enough_data=recommended is not None,
            window_hours=window_hours,
            alternatives=tuple(answer.get("alternatives") or ()),
        )

    def get_insights(self, goal: str | None = None, *, window_hours: float = 168) -> dict[str, Any]:
        params: dict[str, Any] = {"window_hours": window_hours}
        if goal is not None:
            params["goal"] = goal
        return self._call("GET", "/api/v1/intelligence/insights", params=params)

    def _call(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        """A call whose answer the caller needs: raises IntelligenceUnavailable or UserError, never falls back."""
        try:
            body = self._send(method, url, self.resilience.call_timeout, **kwargs)
        except _Unavailable as exc:
            raise IntelligenceUnavailable(f"intelligence service at {self.url} unavailable: {exc}") from exc
        if not isinstance(body, dict):
            raise IntelligenceUnavailable(f"unexpected answer from {self.url}{url}: {body!r}")
        return body

    # --- delivery -------------------------------------------------------------------------------------
    @property
    def _endpoint(self) -> str:
        return f"{self.url}|{self.tenant or ''}"

    def pending_outcomes(self) -> int:
        """How many outcomes wait in the spool for this service."""
        return self._ensure_sender().spool.count(self._endpoint)

    def _ensure_sender(self) -> SpoolSender:
        with self._lock:
            if self._sender is None:
                spool = OutcomeSpool(self._spool_file())
                self._sender = SpoolSender(spool, self._endpoint, self._deliver, self.breaker, self.resilience.cooldown)
            return self._sender

    def _deliver(self, payloads: list[dict[str, Any]]) -> list[str]:
        """Send a batch; returns the trace ids the service settled (accepted, or rejected for good)."""
        try:
            body = self._send("POST", _REPORT_BATCH, self.resilience.call_timeout, json={"outcomes": payloads})
        except UserError as exc:  # 401/403 and the like: keep the outcomes until the key is fixed
            logger.warning("kalibr: the intelligence service refused outcomes (%s); they stay spooled", exc)
            raise _Unavailable(str(exc)) from exc
        settled = []
        for result in body.get("results", []):
            if result.get("status") != "accepted":
                logger.warning("kalibr: outcome %s rejected: %s", result.get("trace_id"), result.get("message"))
            settled.append(str(result.get("trace_id")))
        return settled

    def flush(self) -> None:
        """Deliver every spooled outcome now, if the service answers (else they stay spooled)."""
        if self._sender is not None or self._spool_file().exists():
            self._ensure_sender().deliver_pending()

    def _resume_spool(self) -> None:
        """Once per client: outcomes a previous process left in the spool go out in the background."""
        if not self._resumed:
            self._resumed = True
            if self._sender is None and self._spool_file().exists():
                self._ensure_sender().wake()

    def _spool_file(self) -> FilePath:
        return self._spool_path or default_spool_path()

    async def aclose(self) -> None:
        """Close the async HTTP client of the running event loop (call before the loop ends)."""
        with self._lock:
            client = self._async_clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    def close(self) -> None:
        with self._lock:
            sender, self._sender = self._sender, None
            client, self._client = self._client, None
        if sender is not None:
            sender.close()
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
        with self._lock:
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

    def _send(self, method: str, url: str, timeout: float, **kwargs: Any) -> Any:
        try:
            response = self._sync_client().request(method, url, timeout=timeout, **kwargs)
        except httpx.HTTPError as exc:
            self.breaker.record_failure(timed_out=isinstance(exc, httpx.TimeoutException))
            raise _Unavailable(_describe(exc)) from exc
        return self._checked(response)

    async def _asend(self, method: str, url: str, timeout: float, **kwargs: Any) -> Any:
        try:
            response = await self._async_client().request(method, url, timeout=timeout, **kwargs)
        except httpx.HTTPError as exc:
            self.breaker.record_failure(timed_out=isinstance(exc, httpx.TimeoutException))
            raise _Unavailable(_describe(exc)) from exc
        return self._checked(response)

    def _checked(self, response: httpx.Response) -> Any:
        """The JSON body of a 2xx; 5xx is the service failing, 4xx is ours (UserError with its message)."""
        if response.status_code >= 500:
            self.breaker.record_failure()
            raise _Unavailable(f"HTTP {response.status_code} from the intelligence service")
        self.breaker.record_success()
        if response.status_code >= 400:
            raise UserError(f"intelligence service refused the request: {_detail(response)}")
        try:
            return response.json()
        except ValueError as exc:
            raise _Unavailable("the intelligence service sent a body that is not JSON") from exc


def _fallback(goal: str, paths: Sequence[Path], why: str) -> Decision:
    return Decision(
        trace_id=new_trace_id(),
        goal=goal,
        path=paths[0],
        exploration=False,
        reason=f"intelligence unavailable ({why}): using the first path",
        confidence=0.0,
        fallback=True,
    )


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


def _constraints_body(constraints: Constraints | None) -> dict[str, float] | None:
    if constraints is None:
        return None
    body = {
        name: getattr(constraints, name) for name in ("max_cost_usd", "max_latency_ms", "min_quality", "min_confidence")
    }
    return {name: value for name, value in body.items() if value is not None} or None


def _describe(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer in time ({type(exc).__name__})"
    return f"{type(exc).__name__}: {exc}"


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    return f"HTTP {response.status_code}: {detail or response.text[:200]}"
