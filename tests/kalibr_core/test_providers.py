"""Providers as wire formats: requests built, responses and stream events parsed, errors mapped (MockTransport)."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from kalibr import Path, ProviderHTTPError, ProviderTimeout, RequestRejected, UserError
from kalibr._completion import StreamAccumulator
from kalibr._domain import Price, Usage
from kalibr._pricing import cost_of, price_for
from kalibr.providers import base as provider_io
from kalibr.providers.anthropic import AnthropicMessages, to_anthropic_messages
from kalibr.providers.base import ProviderRequest
from kalibr.providers.openai import OpenAIChat

LOCAL = "http://llm.local/v1"


def _client(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(handler))


def test_openai_request_merges_params_and_path_tools() -> None:
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    path = Path("gpt-4o-mini", params={"temperature": 0.3}, tools=[tool], base_url=LOCAL)
    call = OpenAIChat().build(
        ProviderRequest(path, [{"role": "user", "content": "hi"}], {"temperature": 0.3}, stream=True)
    )
    assert call.url == f"{LOCAL}/chat/completions"
    assert call.body["temperature"] == 0.3
    assert call.body["tools"] == [tool]
    assert call.body["stream_options"] == {"include_usage": True}


def test_openai_needs_a_key_only_for_openai_itself() -> None:
    with pytest.raises(UserError, match="OPENAI_API_KEY"):
        OpenAIChat().build(ProviderRequest(Path("gpt-4o"), [{"role": "user", "content": "hi"}]))
    call = OpenAIChat().build(ProviderRequest(Path("llama3", base_url=LOCAL), [{"role": "user", "content": "hi"}]))
    assert call.headers["Authorization"] == "Bearer not-needed"


def test_openai_response_with_tool_calls_and_usage() -> None:
    body = {
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "call_1", "function": {"name": "lookup", "arguments": '{"q": 1}'}}],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7},
    }
    client = _client(lambda request: httpx.Response(200, json=body))
    request = ProviderRequest(Path("gpt-4o-mini", base_url=LOCAL), [{"role": "user", "content": "hi"}])
    response = provider_io.complete(OpenAIChat(), request, client, 5.0)
    assert response.tool_calls[0].parsed_arguments() == {"q": 1}
    assert (response.usage.input_tokens, response.usage.output_tokens) == (11, 7)
    assert response.finish_reason == "tool_calls"


@pytest.mark.parametrize(
    ("status", "error", "category"),
    [
        (429, ProviderHTTPError, "rate_limited"),
        (500, ProviderHTTPError, "provider_error"),
        (401, ProviderHTTPError, "auth_error"),
        (400, RequestRejected, "provider_error"),
        (422, RequestRejected, "provider_error"),
    ],
)
def test_error_statuses_map_to_errors_and_categories(status: int, error: type[Exception], category: str) -> None:
    client = _client(lambda request: httpx.Response(status, json={"error": {"message": "nope"}}))
    request = ProviderRequest(Path("m", base_url=LOCAL), [{"role": "user", "content": "hi"}])
    with pytest.raises(error) as caught:
        provider_io.complete(OpenAIChat(), request, client, 5.0)
    assert isinstance(caught.value, ProviderHTTPError)
    assert caught.value.failure_category == category
    assert "nope" in str(caught.value)


def test_a_context_length_error_is_the_paths_not_the_callers() -> None:
    client = _client(
        lambda request: httpx.Response(400, json={"error": {"message": "maximum context length exceeded"}})
    )
    request = ProviderRequest(Path("m", base_url=LOCAL), [{"role": "user", "content": "hi"}])
    with pytest.raises(ProviderHTTPError) as caught:
        provider_io.complete(OpenAIChat(), request, client, 5.0)
    assert not isinstance(caught.value, RequestRejected)
    assert caught.value.failure_category == "context_exceeded"


def test_timeouts_are_provider_timeouts() -> None:
    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    request = ProviderRequest(Path("m", base_url=LOCAL), [{"role": "user", "content": "hi"}])
    with pytest.raises(ProviderTimeout) as caught:
        provider_io.complete(OpenAIChat(), request, _client(hang), 5.0)
    assert caught.value.failure_category == "timeout"


def _sse(events: list[tuple[str | None, dict[str, object] | str]]) -> bytes:
    lines = []
    for event, data in events:
        if event:
            lines.append(f"event: {event}")
        lines.append(f"data: {data if isinstance(data, str) else json.dumps(data)}")
        lines.append("")
    return ("\n".join(lines) + "\n").encode()


def test_openai_stream_accumulates_text_tool_calls_and_usage() -> None:
    events: list[tuple[str | None, dict[str, object] | str]] = [
        (None, {"model": "m", "choices": [{"delta": {"role": "assistant", "content": "Hel"}}]}),
        (None, {"choices": [{"delta": {"content": "lo"}}]}),
        (
            None,
            {
                "choices": [
                    {
                        "delta": {
                            "tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": '{"a"'}}]
                        }
                    }
                ]
            },
        ),
        (
            None,
            {
                "choices": [
                    {
                        "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ": 2}"}}]},
                        "finish_reason": "tool_calls",
                    }
                ]
            },
        ),
        (None, {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}),
        (None, "[DONE]"),
    ]
    client = _client(lambda request: httpx.Response(200, content=_sse(events)))
    request = ProviderRequest(Path("m", base_url=LOCAL), [{"role": "user", "content": "hi"}], stream=True)
    accumulator = StreamAccumulator()
    for chunk in provider_io.stream(OpenAIChat(), request, client, 5.0):
        accumulator.add(chunk)
    response = accumulator.response("m")
    assert response.text == "Hello"
    assert response.tool_calls[0].name == "f"
    assert response.tool_calls[0].parsed_arguments() == {"a": 2}
    assert (response.usage.input_tokens, response.usage.output_tokens, response.finish_reason) == (3, 4, "tool_calls")


def test_anthropic_stream_events() -> None:
    events: list[tuple[str | None, dict[str, object] | str]] = [
        ("message_start", {"type": "message_start", "message": {"model": "claude-x", "usage": {"input_tokens": 9}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}}),
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        ),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {"type": "tool_use", "id": "toolu_1", "name": "f"},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": '{"x": 1}'},
            },
        ),
        (
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 5}},
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    client = _client(lambda request: httpx.Response(200, content=_sse(events)))
    request = ProviderRequest(
        Path("claude-x", base_url="http://a.local"), [{"role": "user", "content": "hi"}], stream=True
    )
    accumulator = StreamAccumulator()
    for chunk in provider_io.stream(AnthropicMessages(), request, client, 5.0):
        accumulator.add(chunk)
    response = accumulator.response("claude-x")
    assert (response.text, response.model, response.finish_reason) == ("Hi", "claude-x", "tool_calls")
    assert response.tool_calls[0].parsed_arguments() == {"x": 1}
    assert (response.usage.input_tokens, response.usage.output_tokens) == (9, 5)


def test_openai_messages_convert_to_anthropic() -> None:
    system, messages = to_anthropic_messages(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"id": "t1", "function": {"name": "w", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "t1", "content": "sunny"},
            {"role": "user", "content": "Thanks"},
        ]
    )
    assert system == "Be brief."
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[1]["content"][0] == {"type": "tool_use", "id": "t1", "name": "w", "input": {}}
    assert messages[2]["content"][0]["type"] == "tool_result"
    assert messages[2]["content"][1] == {"type": "text", "text": "Thanks"}


def test_prices_are_known_or_none_never_guessed() -> None:
    usage = Usage(1_000_000, 1_000_000)
    assert cost_of(Path("gpt-4o-mini"), usage) == pytest.approx(0.15 + 0.60)
    assert price_for(Path("gpt-4o-mini-2024-07-18")) == price_for(Path("gpt-4o-mini"))
    assert cost_of(Path("my-finetune"), usage) is None
    assert cost_of(Path("my-finetune", price=Price(1.0, 2.0)), Usage(500_000, 0)) == pytest.approx(0.5)
