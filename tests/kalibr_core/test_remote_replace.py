"""The replace rule of repeated reports, through `kalibr serve`: the latest explicit report is the whole outcome,
counted once, whichever replica receives it and whatever reached the store first.

The operator's setup: a Router with ``intelligence=`` a load balancer's URL, in front of replicas over one store.
Between the first and the second report the balancer moves traffic to another replica (a rolling deploy), or the
only replica restarts, so the replica receiving the second report never saw the first.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import kalibr
from kalibr.intelligence.remote import RemoteIntelligence
from kalibr.sandbox import SandboxServer
from kalibr.service import create_app
from kalibr.service._server import serve_in_thread
from kalibr.stores import MemoryStore
from kalibr.stores.base import Store

SINCE = datetime(2000, 1, 1, tzinfo=UTC)
TENANT = "default"


@pytest.fixture(autouse=True)
def _patient_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KALIBR_INTELLIGENCE_TIMEOUT", "5")  # a loaded machine must not turn decides into fallbacks


class Balancer:
    """A reverse proxy in front of the replicas: forwards every request to the current one. ``hold_batches``
    makes it keep the next outcome batch waiting (a slow service) until ``release`` is set."""

    def __init__(self, backends: list[str]) -> None:
        self.backends = backends
        self.url = ""
        self.current = 0
        self.batch_arrived = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.down = False

    def hold_next_batch(self) -> None:
        self.batch_arrived.clear()
        self.release.clear()

    async def forward(self, request: Request) -> Response:
        if self.down:  # every replica gone: what a balancer answers then
            return Response(b'{"detail": "no healthy upstream"}', status_code=503, media_type="application/json")
        if "/report-outcome" in request.url.path and not self.release.is_set():
            self.batch_arrived.set()
            await anyio.to_thread.run_sync(self.release.wait)
        async with httpx.AsyncClient(base_url=self.backends[self.current], timeout=30) as client:
            answer = await client.request(
                request.method,
                request.url.path,
                params=request.query_params,
                content=await request.body(),
                headers={k: v for k, v in request.headers.items() if k.lower() in ("content-type", "x-api-key")},
            )
        return Response(answer.content, status_code=answer.status_code, media_type="application/json")

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{path:path}", self.forward, methods=["GET", "POST"])])


@contextmanager
def _replicas(topology: str, postgres_url: str | None = None) -> Iterator[tuple[Balancer, Store]]:
    """Two service replicas (or one) over one store, behind a balancer; yields the balancer and a store handle."""
    with ExitStack() as stack:
        if topology == "postgres":
            from kalibr.stores.postgres import PostgresStore

            assert postgres_url is not None
            stores: list[Store] = [PostgresStore(postgres_url), PostgresStore(postgres_url)]
            for store in stores:
                stack.callback(store.close)
        else:
            shared = MemoryStore()
            stores = [shared] if topology == "one replica" else [shared, shared]
        urls = [stack.enter_context(serve_in_thread(create_app(store, auth=False))) for store in stores]
        balancer = Balancer(urls)
        balancer.url = stack.enter_context(serve_in_thread(balancer.app()))
        yield balancer, stores[0]


def _next_replica(balancer: Balancer) -> None:
    balancer.current = (balancer.current + 1) % len(balancer.backends)


def _paths(sandbox: SandboxServer) -> list[dict[str, Any]]:
    return [{"model": model, "base_url": sandbox.openai_base_url} for model in ("sandbox-mini", "sandbox-base")]


def _outcome(store: Store, goal: str, trace_id: str) -> Any:
    (outcome,) = [o for o in store.outcomes(TENANT, goal, SINCE) if o.trace_id == trace_id]
    return outcome


def _arm_totals(store: Store, goal: str) -> tuple[float, float, int]:
    from kalibr._domain import Path

    arms = store.load_arms(TENANT, goal, [Path("sandbox-mini"), Path("sandbox-base")])
    return (
        sum(arm.successes for arm in arms),
        sum(arm.failures for arm in arms),
        sum(arm.total_samples for arm in arms),
    )


@contextmanager
def _judging_router(goal: str, sandbox: SandboxServer) -> Iterator[tuple[kalibr.Router, Balancer, Store]]:
    """One replica behind the balancer, and a Router whose judge fails every answer."""
    with _replicas("one replica") as (balancer, store):
        router = kalibr.Router(goal, _paths(sandbox), success_when=lambda text: False, intelligence=balancer.url)
        assert isinstance(router.intelligence, RemoteIntelligence)
        yield router, balancer, store


TOPOLOGIES = [
    "one replica",
    "two replicas",
    pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.slow]),
]


@pytest.fixture
def postgres_or_none(request: pytest.FixtureRequest) -> str | None:
    if request.node.callspec.params.get("topology") == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return None


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_an_explicit_report_after_a_judge_replaces_it_on_any_replica(
    topology: str, sandbox: SandboxServer, postgres_or_none: str | None
) -> None:
    goal = f"replace_{uuid.uuid4().hex[:8]}"
    with _replicas(topology, postgres_or_none) as (balancer, store):
        router = kalibr.Router(goal, _paths(sandbox), success_when=lambda text: False, intelligence=balancer.url)
        assert isinstance(router.intelligence, RemoteIntelligence)
        completion = router.completion([{"role": "user", "content": "Say hello"}])
        assert not completion.decision.fallback
        router.intelligence.flush()
        judged = _outcome(store, goal, completion.decision.trace_id)
        assert (judged.success, judged.source) == (False, "success_when")  # the guard: the judge's outcome arrived

        _next_replica(balancer)
        router.report(success=True)
        router.intelligence.flush()

        final = _outcome(store, goal, completion.decision.trace_id)
        assert (final.success, final.score, final.failure_category, final.reason, final.source) == (
            True,
            1.0,
            None,
            None,
            "explicit",
        )
        assert _arm_totals(store, goal) == (1.0, 0.0, 1)
        assert router.intelligence.pending_outcomes() == 0
        assert router.intelligence.dead_outcomes() == 0


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_the_official_sdks_second_report_replaces_its_first_on_any_replica(
    topology: str, postgres_or_none: str | None
) -> None:
    goal = f"sdk_replace_{uuid.uuid4().hex[:8]}"
    with _replicas(topology, postgres_or_none) as (balancer, store):
        url = balancer.url
        with httpx.Client(base_url=url, timeout=30) as client:
            for model in ("sandbox-mini", "sandbox-base"):
                client.post("/api/v1/routing/paths", json={"goal": goal, "model_id": model}).raise_for_status()
            decision = client.post("/api/v1/routing/decide", json={"goal": goal}).json()
            first = {
                "trace_id": decision["trace_id"],
                "goal": goal,
                "success": False,
                "failure_reason": "wrong total",
                "failure_category": "validation_failed",
                "model_id": decision["model_id"],
                "metadata": {"cost_usd": 0.001},  # what the official SDK sends: no source
            }
            client.post("/api/v1/intelligence/report-outcome", json=first).raise_for_status()
            assert _outcome(store, goal, decision["trace_id"]).success is False

            _next_replica(balancer)
            second = {"trace_id": decision["trace_id"], "goal": goal, "success": True, "model_id": decision["model_id"]}
            client.post("/api/v1/intelligence/report-outcome", json=second).raise_for_status()

        final = _outcome(store, goal, decision["trace_id"])
        assert (final.success, final.failure_category, final.reason, final.source) == (True, None, None, "explicit")
        assert _arm_totals(store, goal) == (1.0, 0.0, 1)


def test_a_judge_spooled_after_an_explicit_report_does_not_replace_it(sandbox: SandboxServer) -> None:
    """During an outage: report(success=True), then the adapter's run verdict (a judge) for the same call. Locally
    the explicit report wins; the spool must deliver the same."""
    goal = f"spool_order_{uuid.uuid4().hex[:8]}"
    with _judging_router(goal, sandbox) as (router, balancer, store):
        completion = router.decide()
        balancer.down = True
        router.report(success=True, trace_id=completion.trace_id)
        router.evaluate(completion.trace_id, "an answer", final=True)  # judged False, source "run"
        balancer.down = False
        router.intelligence.flush()
        assert router.intelligence.pending_outcomes() == 0
    final = _outcome(store, goal, completion.trace_id)
    assert (final.success, final.source) == (True, "explicit")
    assert _arm_totals(store, goal) == (1.0, 0.0, 1)


def test_an_explicit_report_spooled_while_the_judges_batch_is_in_flight_is_delivered(
    sandbox: SandboxServer,
) -> None:
    """A slow service: the judge's outcome is on the wire when the explicit report is spooled. The explicit report
    must still be delivered after it, not deleted with the batch that carried the judge's."""
    goal = f"in_flight_{uuid.uuid4().hex[:8]}"
    with _judging_router(goal, sandbox) as (router, balancer, store):
        balancer.hold_next_batch()
        completion = router.completion([{"role": "user", "content": "Say hello"}])
        assert balancer.batch_arrived.wait(timeout=30)  # the judge's outcome is being delivered
        router.report(success=True)
        balancer.release.set()
        router.intelligence.flush()
        assert router.intelligence.pending_outcomes() == 0
    final = _outcome(store, goal, completion.decision.trace_id)
    assert (final.success, final.source) == (True, "explicit")
    assert _arm_totals(store, goal) == (1.0, 0.0, 1)
