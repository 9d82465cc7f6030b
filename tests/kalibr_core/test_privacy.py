"""Prompts and completions never reach a store or the spool: only metadata does.

One secret is in every prompt. The workload makes it travel every way it could leak: the answers echo it, a judge
raises with it in its message, a provider plugin's error quotes it, a tool call carries it in its arguments, and a
path holds it as its API key. Then every byte the store (SQLite, PostgreSQL) or the client spool holds is searched.
Each check has a guard, so it cannot pass because nothing was written or the secret never travelled.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from tests.openai_tools import WEATHER_TOOL

import kalibr
from kalibr._intelligence_registry import reset_shared
from kalibr.context import auto_featurizer
from kalibr.plugins import pm
from kalibr.providers import base as provider_io
from kalibr.providers.base import ProviderRequest, ProviderResponse
from kalibr.providers.openai import OpenAIChat
from kalibr.providers.registry import forget_providers
from kalibr.sandbox import SandboxServer

SECRET = "Zanzibar-7f3c-confidential"
GOAL = "private_goal"


class _QuotingProvider:
    """A third-party provider plugin, written carelessly: its errors quote the user's last message."""

    name = "quoting"

    def invoke(self, request: ProviderRequest) -> ProviderResponse:
        with httpx.Client() as client:
            try:
                return provider_io.complete(OpenAIChat(), request, client, 10.0)
            except kalibr.ProviderError as error:
                raise kalibr.ProviderError(f"failed on {request.messages[-1]['content']!r}") from error

    async def ainvoke(self, request: ProviderRequest) -> ProviderResponse:
        return self.invoke(request)

    def stream(self, request: ProviderRequest) -> Iterator[kalibr.StreamChunk]:
        raise NotImplementedError

    def astream(self, request: ProviderRequest) -> AsyncIterator[kalibr.StreamChunk]:
        raise NotImplementedError


class _QuotingPlugin:
    @kalibr.hookimpl
    def kalibr_register_providers(self, register: Any) -> None:
        register("quoting", _QuotingProvider)


@pytest.fixture
def quoting_provider() -> Iterator[None]:
    pm.register(_QuotingPlugin(), name="test-quoting-provider")
    forget_providers()
    try:
        yield
    finally:
        pm.unregister(name="test-quoting-provider")
        forget_providers()


@pytest.fixture
def failing_sandbox(start_sandbox: Any) -> SandboxServer:
    scenario = {
        "name": "down",
        "models": {"down-model": {"error_rates": {"server_error": 1.0}}},
        "goals": {"chat": {"task": "chat"}},
        "default_goal": "chat",
    }
    server: SandboxServer = start_sandbox(scenario)
    return server


class _Travelled:
    """Where the secret went during the workload: every guard checks one of these."""

    def __init__(self) -> None:
        self.answers: list[str] = []
        self.judge_errors: list[str] = []
        self.provider_errors: list[str] = []
        self.tool_arguments: list[str] = []
        self.trace_ids: list[str] = []  # calls with an outcome: a judged one, a reported one, a failed one


def _workload(sandbox: SandboxServer, failing: SandboxServer, **router_options: Any) -> _Travelled:
    travelled = _Travelled()

    def judge(output: Any) -> bool:
        message = f"could not judge {output!r}"
        travelled.judge_errors.append(message)
        raise ValueError(message)

    router = kalibr.Router(
        GOAL,
        [
            {"model": "sandbox-mini", "base_url": sandbox.openai_base_url, "params": {"temperature": 0.37}},
            {"model": "sandbox-base", "base_url": sandbox.openai_base_url, "api_key": f"sk-{SECRET}"},
        ],
        success_when=judge,
        **router_options,
    )
    for index in range(5):
        completion = router.completion(
            [
                {"role": "system", "content": f"System note {SECRET}"},
                {"role": "user", "content": f"Please repeat this exactly: {SECRET} #{index}"},
            ]
        )
        travelled.answers.append(completion.text)
        stream = router.stream(f"Stream and repeat: {SECRET}")
        travelled.answers.append("".join(chunk.text for chunk in stream))
        router.report(success=index % 2 == 0, reason="checked by the caller")
    tools = kalibr.Router(
        GOAL,
        [{"model": "sandbox-mini", "base_url": sandbox.openai_base_url, "tools": [WEATHER_TOOL]}],
        **router_options,
    )
    called = tools.completion(f"What is the weather in {SECRET}? Use get_weather.", tool_choice="required")
    travelled.tool_arguments.extend(call.arguments for call in called.tool_calls)
    tools.report(success=True)
    careless = kalibr.Router(
        GOAL,
        [
            {"model": "down-model", "base_url": failing.openai_base_url, "provider": "quoting"},
            {"model": "sandbox-mini", "base_url": sandbox.openai_base_url},
        ],
        **router_options,
    )
    rescued = careless.completion(f"Please repeat this exactly: {SECRET}", force_model="down-model")
    travelled.provider_errors.extend(attempt.error for attempt in rescued.attempts)
    travelled.trace_ids.extend([completion.trace_id, called.trace_id, rescued.attempts[0].decision.trace_id])
    return travelled


def _assert_private(stored: bytes, travelled: _Travelled) -> None:
    # The guards: the secret travelled every way, and the store holds the workload's metadata.
    assert any(SECRET in answer for answer in travelled.answers), "the sandbox should echo the secret"
    assert travelled.judge_errors and all(SECRET in message for message in travelled.judge_errors)
    assert travelled.provider_errors and SECRET in travelled.provider_errors[0]
    assert travelled.tool_arguments and SECRET.split("-")[0] in travelled.tool_arguments[0]
    assert GOAL.encode() in stored
    assert b"success_when raised ValueError" in stored  # the judge's failures were stored...
    assert b"ProviderError from ProviderHTTPError" in stored  # ...and the provider's
    assert b"0.37" in stored and b"get_weather" in stored  # path params and tool ids are metadata: stored
    # The checks.
    assert SECRET.encode() not in stored
    assert SECRET.split("-")[0].encode() not in stored  # not even the part that reached the tool's arguments
    for answer in travelled.answers:
        fragment = answer.strip()[:24].encode()
        if fragment and SECRET.encode() not in fragment:
            assert fragment not in stored, fragment


def _sqlite_bytes(folder: Path, prefix: str) -> bytes:
    return b"".join(path.read_bytes() for path in folder.iterdir() if path.name.startswith(prefix))


@pytest.mark.parametrize("context", [None, "auto"])
def test_nothing_private_reaches_sqlite(
    sandbox: SandboxServer,
    failing_sandbox: SandboxServer,
    quoting_provider: None,
    tmp_path: Path,
    context: str | None,
) -> None:
    db = tmp_path / "private.db"
    travelled = _workload(sandbox, failing_sandbox, store=f"sqlite:///{db}", context=context)
    reset_shared()  # flush and close, so every byte is on disk
    stored = _sqlite_bytes(tmp_path, "private.db")
    _assert_private(stored, travelled)
    if context is not None:  # prompt-aware routing keeps its features in memory: neither raw nor rounded in the store
        features = auto_featurizer()(f"Stream and repeat: {SECRET}")
        for dtype in (np.float32, np.float64):
            assert features[:4].astype(dtype).tobytes() not in stored


@pytest.mark.postgres
def test_nothing_private_reaches_postgresql(
    sandbox: SandboxServer, failing_sandbox: SandboxServer, quoting_provider: None, postgres_url: str
) -> None:
    import psycopg
    from psycopg import sql

    from kalibr.stores.postgres import PostgresStore

    schema = f"kalibr_privacy_{uuid.uuid4().hex[:12]}"
    store = PostgresStore(postgres_url, schema=schema)
    try:
        travelled = _workload(sandbox, failing_sandbox, store=store)
        reset_shared()
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            tables = [
                row[0]
                for row in conn.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
                )
            ]
            assert {"outcomes", "decisions", "paths"} <= set(tables)
            dumped = [
                str(row[0])
                for table in tables
                for row in conn.execute(
                    sql.SQL("SELECT t::text FROM {}.{} t").format(sql.Identifier(schema), sql.Identifier(table))
                )
            ]
        _assert_private("\n".join(dumped).encode(), travelled)
    finally:
        store.close()
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def test_nothing_private_reaches_the_client_spool(
    sandbox: SandboxServer, failing_sandbox: SandboxServer, quoting_provider: None, tmp_path: Path
) -> None:
    # The service is down: every outcome waits in the spool (KALIBR_SPOOL, set per test by conftest).
    resilience = kalibr.Resilience(timeout=0.05, breaker_after=1, cooldown=3600.0)
    travelled = _workload(sandbox, failing_sandbox, intelligence="http://127.0.0.1:9", resilience=resilience)
    reset_shared()
    spooled = _sqlite_bytes(tmp_path, "spool.db")
    assert all(trace_id.encode() in spooled for trace_id in travelled.trace_ids)  # the outcomes are there
    _assert_private(spooled, travelled)
