"""The official OpenAI SDK against the sandbox: responses parse, streams assemble, errors map to the SDK's classes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from kalibr.sandbox import SandboxServer, Scenario, serve

openai = pytest.importorskip("openai")


class Firm(BaseModel):
    company: str
    employees: int


@pytest.fixture
def client(sandbox: SandboxServer) -> Iterator[Any]:
    with openai.OpenAI(base_url=sandbox.openai_base_url, api_key="anything", max_retries=0) as sdk:
        yield sdk


def test_sdk_parses_a_completion_with_usage(client: Any) -> None:
    completion = client.chat.completions.create(
        model="sandbox-mini", messages=[{"role": "user", "content": "What is 9 * 9?"}]
    )
    assert completion.choices[0].message.content == "81"
    assert completion.model == "sandbox-mini"
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


def test_sdk_stream_assembles_text_and_usage(client: Any) -> None:
    stream = client.chat.completions.create(
        model="sandbox-mini",
        messages=[{"role": "user", "content": "Please repeat this exactly: 你好, world"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices) == "你好, world"
    assert chunks[-1].usage.completion_tokens >= 1


def test_sdk_parses_structured_output_into_a_pydantic_model(client: Any) -> None:
    completion = client.chat.completions.parse(
        model="sandbox-mini",
        messages=[{"role": "user", "content": "Extract the company name: Initech employs 250 people."}],
        response_format=Firm,
    )
    assert completion.choices[0].message.parsed == Firm(company="Initech", employees=250)


def test_sdk_reads_a_forced_tool_call(client: Any) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
        },
    }
    completion = client.chat.completions.create(
        model="sandbox-mini",
        messages=[{"role": "user", "content": 'Look up "quarterly results" for me'}],
        tools=[tool],
        tool_choice={"type": "function", "function": {"name": "lookup"}},
    )
    [call] = completion.choices[0].message.tool_calls
    assert call.function.name == "lookup"
    assert call.function.arguments == '{"query": "quarterly results"}'


def test_sdk_maps_sandbox_errors_to_its_exception_classes(client: Any) -> None:
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="sandbox-mini", messages=[])
    scenario = Scenario.model_validate({"models": {"busy": {"error_rates": {"rate_limited": 1.0}}}})
    with (
        serve(scenario) as server,
        openai.OpenAI(base_url=server.openai_base_url, api_key="x", max_retries=0) as sdk,
        pytest.raises(openai.RateLimitError),
    ):
        sdk.chat.completions.create(model="busy", messages=[{"role": "user", "content": "x"}])
