"""kalibr.Router with intelligence= a service URL: decisions and outcomes go through `kalibr serve`."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path as FilePath
from typing import Any

import httpx
import pytest
from tests.fault_proxy import HungService

import kalibr
from kalibr._exceptions import UserError
from kalibr.intelligence.remote import RemoteIntelligence
from kalibr.sandbox import SandboxServer
from kalibr.service import create_app
from kalibr.service._server import serve_in_thread
from kalibr.stores import MemoryStore

SINCE = datetime(2000, 1, 1, tzinfo=UTC)


@pytest.fixture
def service(tmp_path: FilePath, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, MemoryStore]]:
    monkeypatch.setenv("KALIBR_SPOOL", str(tmp_path / "spool.db"))
    monkeypatch.setenv("KALIBR_INTELLIGENCE_TIMEOUT", "5")  # a loaded CI machine must not turn these into fallbacks
    store = MemoryStore()
    with serve_in_thread(create_app(store, auth=False)) as url:
        yield url, store


def _paths(sandbox: SandboxServer) -> list[dict[str, Any]]:
    return [{"model": model, "base_url": sandbox.openai_base_url} for model in ("sandbox-mini", "sandbox-base")]


def test_router_decides_and_reports_through_the_service(
    service: tuple[str, MemoryStore], sandbox: SandboxServer
) -> None:
    url, store = service
    router = kalibr.Router("remote_greet", _paths(sandbox), success_when=lambda text: bool(text), intelligence=url)
    assert isinstance(router.intelligence, RemoteIntelligence)
    decisions = []
    for _ in range(8):
        completion = router.completion([{"role": "user", "content": "Say hello"}])
        decisions.append(completion.decision)
    assert not any(decision.fallback for decision in decisions)
    router.intelligence.flush()
    stored = store.outcomes("default", "remote_greet", SINCE)
    assert sorted(o.trace_id for o in stored) == sorted(d.trace_id for d in decisions)
    assert {o.model for o in stored} <= {"sandbox-mini", "sandbox-base"}


def test_the_environment_variable_selects_the_service(
    service: tuple[str, MemoryStore], sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KALIBR_INTELLIGENCE_URL", service[0])
    monkeypatch.setenv("KALIBR_INTELLIGENCE_TIMEOUT", "0.5")
    router = kalibr.Router("remote_env", _paths(sandbox))
    assert isinstance(router.intelligence, RemoteIntelligence)
    assert router.intelligence.resilience.timeout == 0.5
    assert not router.decide().fallback


def test_a_bad_timeout_variable_names_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KALIBR_INTELLIGENCE_TIMEOUT", "fast")
    with pytest.raises(UserError, match="KALIBR_INTELLIGENCE_TIMEOUT"):
        RemoteIntelligence("http://127.0.0.1:9")


def test_a_router_passes_its_resilience_to_the_client(service: tuple[str, MemoryStore], sandbox: SandboxServer) -> None:
    resilience = kalibr.Resilience(timeout=0.2, breaker_after=5, cooldown=1.0)
    router = kalibr.Router("remote_res", _paths(sandbox), intelligence=service[0], resilience=resilience)
    assert isinstance(router.intelligence, RemoteIntelligence)
    assert router.intelligence.resilience == resilience


@pytest.mark.parametrize("where", ["embedded", "service"])
def test_a_high_risk_router_never_explores(where: str, service: tuple[str, MemoryStore]) -> None:
    url, _ = service
    paths = ["proven-model", "untried-model"]
    intelligence = url if where == "service" else None
    store = MemoryStore() if where == "embedded" else None
    routers = {
        risky: kalibr.Router("risk_goal", paths, intelligence=intelligence, store=store, high_risk=risky)
        for risky in (True, False)
    }
    learner = routers[False]
    for success in [True] * 8 + [False] * 2:
        learner.report(success=success, trace_id=learner.decide(force_model="proven-model").trace_id)
    if where == "service":
        learner.intelligence.flush()
        body = {"goal": "risk_goal", "exploration_rate": 1.0, "min_samples_before_exploit": 20}
        assert httpx.post(f"{url}/api/v1/routing/config", json=body).status_code == 200
    else:
        learner.intelligence.set_config("risk_goal", kalibr.PolicyConfig(exploration_rate=1.0))  # type: ignore[attr-defined]

    def chosen(router: kalibr.Router) -> set[str]:
        decisions = [router.decide() for _ in range(30)]
        assert not any(decision.fallback for decision in decisions)
        return {decision.model for decision in decisions}

    assert chosen(routers[True]) == {"proven-model"}
    assert chosen(routers[False]) == {"proven-model", "untried-model"}


@pytest.mark.parametrize("calls", [1, 3], ids=["one outcome, sent alone", "several, sent as a batch"])
@pytest.mark.parametrize("forced", ["sandbox-base", "sandbox-pro"], ids=["declared model", "new model"])
def test_a_forced_call_registers_its_path_and_its_outcome_counts(
    calls: int, forced: str, service: tuple[str, MemoryStore], sandbox: SandboxServer
) -> None:
    """A fresh service that never saw a decide of the goal: the forced call's outcome registers the path it took."""
    url, store = service
    router = kalibr.Router("remote_forced", _paths(sandbox), intelligence=url)
    assert isinstance(router.intelligence, RemoteIntelligence)
    trace_ids = []
    for _ in range(calls):
        completion = router.completion([{"role": "user", "content": "Say hello"}], force_model=forced)
        assert completion.model == forced
        router.report(success=True)
        trace_ids.append(completion.decision.trace_id)
    router.intelligence.flush()
    assert (router.intelligence.pending_outcomes(), router.intelligence.dead_outcomes()) == (0, 0)
    stored = store.outcomes("default", "remote_forced", SINCE)
    assert sorted(o.trace_id for o in stored) == sorted(trace_ids)
    assert {o.model for o in stored} == {forced}
    assert forced in {record.path.model for record in store.list_paths("default", "remote_forced")}


@pytest.mark.parametrize("where", ["embedded", "service"])
def test_a_router_sets_its_goals_budget(where: str, service: tuple[str, MemoryStore]) -> None:
    url, service_store = service
    store = MemoryStore()
    router = kalibr.Router(
        "budget_goal", ["dear-model", "cheap-model"], intelligence=url if where == "service" else None,
        store=store if where == "embedded" else None,
    )  # fmt: skip
    router.set_config(kalibr.PolicyConfig(budget_per_1k_calls_usd=1.5))
    stored = (store if where == "embedded" else service_store).get_config("default", "budget_goal")
    assert stored.budget_per_1k_calls_usd == 1.5


def test_a_fallback_skips_a_path_disabled_on_the_service(
    service: tuple[str, MemoryStore], sandbox: SandboxServer
) -> None:
    url, _ = service
    models = ("no-such-model", "sandbox-base", "sandbox-pro")
    paths = [{"model": model, "base_url": sandbox.openai_base_url} for model in models]
    # A timeout no loaded test machine reaches: this is about which path, not how fast the read is.
    remote = RemoteIntelligence(url, resilience=kalibr.Resilience(timeout=5.0), refresh_interval=0.0)
    router = kalibr.Router("remote_skip", paths, success_when=lambda text: bool(text.strip()), intelligence=remote)
    router.completion("Hello")  # the service registers the router's paths
    listed = httpx.get(f"{url}/api/v1/routing/paths", params={"goal": "remote_skip"}).json()["paths"]
    base = next(path["path_id"] for path in listed if path["model_id"] == "sandbox-base")
    assert httpx.delete(f"{url}/api/v1/routing/paths/{base}").status_code == 200  # the dashboard's disable action
    completion = router.completion("Hello again", force_model="no-such-model")
    assert [attempt.decision.model for attempt in completion.attempts] == ["no-such-model"]
    assert completion.model == "sandbox-pro"
    assert completion.decision.reason == "fallback: 'no-such-model' failed"
    remote.close()


def test_with_the_service_down_the_decide_skips_a_path_disabled_on_it(
    sandbox: SandboxServer, tmp_path: FilePath, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KALIBR_SPOOL", str(tmp_path / "spool.db"))
    paths = [{"model": model, "base_url": sandbox.openai_base_url} for model in ("sandbox-mini", "sandbox-base")]
    with serve_in_thread(create_app(MemoryStore(), auth=False)) as url:
        remote = RemoteIntelligence(url, resilience=kalibr.Resilience(timeout=5.0), refresh_interval=0.0)
        router = kalibr.Router("remote_down_skip", paths, intelligence=remote)
        router.completion("Hello")  # the service registers the router's paths
        listed = httpx.get(f"{url}/api/v1/routing/paths", params={"goal": "remote_down_skip"}).json()["paths"]
        mini = next(path["path_id"] for path in listed if path["model_id"] == "sandbox-mini")
        assert httpx.delete(f"{url}/api/v1/routing/paths/{mini}").status_code == 200
        assert len(remote.disabled_paths("remote_down_skip")) == 1  # what an earlier fallback or decide had read
    try:
        decision = router.decide()  # the service is gone: nothing to ask
        assert decision.fallback
        assert decision.model == "sandbox-base"
        assert decision.reason.endswith("using the first path not disabled, 'sandbox-base'")
        assert router.completion("Hello again").model == "sandbox-base"
    finally:
        remote.close()


def test_a_hung_service_costs_a_fallback_one_timeout_then_no_request(
    sandbox: SandboxServer, tmp_path: FilePath
) -> None:
    hung = HungService()
    resilience = kalibr.Resilience(timeout=0.05, breaker_after=3, cooldown=60)
    remote = RemoteIntelligence(hung.url, spool=tmp_path / "spool.db", resilience=resilience, refresh_interval=0.0)
    paths = [{"model": model, "base_url": sandbox.openai_base_url} for model in ("no-such-model", "sandbox-base")]
    router = kalibr.Router("remote_hung", paths, intelligence=remote)
    try:
        first = router.completion("Hello", force_model="no-such-model")
        assert first.model == "sandbox-base"
        assert remote.breaker.state == "open"  # the read of the disabled paths timed out once
        asked = hung.requests  # that read, and the spool's probe to deliver the failed attempt's outcome
        assert asked >= 1
        for _ in range(3):
            assert router.completion("Hello", force_model="no-such-model").model == "sandbox-base"
        assert hung.requests == asked  # the open breaker: the fallbacks asked nothing
    finally:
        remote.close()
        hung.close()
