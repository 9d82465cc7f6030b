"""The sandbox over real HTTP, in Anthropic's Messages shape."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from kalibr.sandbox import SandboxServer

_CUSTOMER_TOOL = {
    "name": "unicode_customer",
    "description": "Create a customer.",
    "input_schema": {
        "type": "object",
        "properties": {"customer_name": {"type": "string"}, "description": {"type": "string"}},
        "required": ["customer_name", "description"],
    },
}


@pytest.fixture
def client(sandbox: SandboxServer) -> Iterator[httpx.Client]:
    headers = {"x-api-key": "anything", "anthropic-version": "2023-06-01"}
    with httpx.Client(base_url=sandbox.anthropic_base_url, headers=headers) as http:
        yield http


def _message(client: httpx.Client, content: Any, **extra: Any) -> httpx.Response:
    body = {"model": "sandbox-base", "max_tokens": 256, "messages": [{"role": "user", "content": content}], **extra}
    return client.post("/v1/messages", json=body)


def _events(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in response.text.strip().split("\n\n"):
        name_line, data_line = block.split("\n")
        name = name_line.removeprefix("event: ")
        data = json.loads(data_line.removeprefix("data: "))
        assert data["type"] == name
        events.append((name, data))
    return events


def test_message_has_the_anthropic_shape(client: httpx.Client) -> None:
    body = _message(client, "What is 12 * 3?", system="Answer briefly.").json()
    assert body["type"] == "message"
    assert body["role"] == "assistant"
    assert body["model"] == "sandbox-base"
    assert body["id"].startswith("msg_")
    assert body["content"] == [{"type": "text", "text": "36"}]
    assert body["stop_reason"] == "end_turn"
    assert body["usage"]["input_tokens"] >= 1
    assert body["usage"]["output_tokens"] >= 1


def test_content_blocks_and_system_blocks_are_read(client: httpx.Client) -> None:
    content = [{"type": "text", "text": "Extract the company name: Initech hired 40 people."}]
    body = _message(client, content, system=[{"type": "text", "text": "Be exact."}]).json()
    assert body["content"][0]["text"] == "Initech"


def test_stop_sequences_truncate_and_are_reported(client: httpx.Client) -> None:
    body = _message(client, "Hello", stop_sequences=["How"]).json()
    assert body["content"][0]["text"] == "Hello! "
    assert body["stop_reason"] == "stop_sequence"
    assert body["stop_sequence"] == "How"


def test_streaming_emits_the_anthropic_event_sequence(client: httpx.Client) -> None:
    events = _events(_message(client, "What is 100 - 1?", stream=True))
    names = [name for name, _ in events]
    assert names[0] == "message_start"
    assert names[1] == "content_block_start"
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert events[0][1]["message"]["usage"]["input_tokens"] >= 1
    text = "".join(data["delta"]["text"] for name, data in events if name == "content_block_delta")
    assert text == "99"
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert delta["usage"]["output_tokens"] >= 1


def test_forced_tool_use_copies_a_cjk_name_verbatim(client: httpx.Client) -> None:
    prompt = "Create a customer named '你好啊集团' (Hello Group) - a Chinese technology company"
    body = _message(client, prompt, tools=[_CUSTOMER_TOOL], tool_choice={"type": "tool", "name": "unicode_customer"})
    assert body.json()["stop_reason"] == "tool_use"
    [block] = body.json()["content"]
    assert block["type"] == "tool_use"
    assert block["id"].startswith("toolu_")
    assert block["input"]["customer_name"] == "你好啊集团"
    assert block["input"]["description"]


def test_streamed_tool_use_sends_input_json_deltas(client: httpx.Client) -> None:
    prompt = "Create a customer named 「こんにちは株式会社」 - a Japanese company"
    events = _events(_message(client, prompt, tools=[_CUSTOMER_TOOL], tool_choice={"type": "any"}, stream=True))
    start = next(data for name, data in events if name == "content_block_start")
    assert start["content_block"]["type"] == "tool_use"
    partial = "".join(data["delta"]["partial_json"] for name, data in events if name == "content_block_delta")
    assert json.loads(partial)["customer_name"] == "こんにちは株式会社"
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_after_a_tool_result_the_model_answers_in_text(client: httpx.Client) -> None:
    messages = [
        {"role": "user", "content": "What is the weather in Paris? Use the tool."},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny, 21 C"}]},
    ]
    tool = {"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
    body = client.post(
        "/v1/messages", json={"model": "sandbox-base", "max_tokens": 64, "messages": messages, "tools": [tool]}
    ).json()
    assert body["stop_reason"] == "end_turn"
    assert "Sunny, 21 C" in body["content"][0]["text"]


@pytest.mark.parametrize(
    "body",
    [
        {"model": "sandbox-base", "max_tokens": 10, "messages": []},
        {"model": "sandbox-base", "max_tokens": 10, "messages": [{"role": "system", "content": "x"}]},
        {"max_tokens": 10, "messages": [{"role": "user", "content": "x"}]},
    ],
)
def test_malformed_requests_get_400_with_an_anthropic_error(client: httpx.Client, body: dict[str, Any]) -> None:
    response = client.post("/v1/messages", json=body)
    assert response.status_code == 400
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_unknown_model_gets_404_not_found_error(client: httpx.Client) -> None:
    response = client.post(
        "/v1/messages", json={"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    )
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"
