"""The sandbox over real HTTP, in OpenAI's chat-completions shape."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from kalibr.sandbox import SandboxServer
from kalibr.sandbox.tasks import TaskGenerator


@pytest.fixture
def client(sandbox: SandboxServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox.openai_base_url, headers={"Authorization": "Bearer anything"}) as http:
        yield http


def _chat(client: httpx.Client, content: str, **extra: Any) -> httpx.Response:
    body = {"model": "sandbox-mini", "messages": [{"role": "user", "content": content}], **extra}
    return client.post("/chat/completions", json=body)


def _events(response: httpx.Response) -> list[Any]:
    lines = [line[len("data: ") :] for line in response.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def test_serve_binds_an_ephemeral_loopback_port(sandbox: SandboxServer) -> None:
    assert sandbox.url.startswith("http://127.0.0.1:")
    assert sandbox.port > 0
    assert sandbox.openai_base_url == sandbox.url + "/v1"
    assert sandbox.anthropic_base_url == sandbox.url


def test_completion_has_the_openai_shape(client: httpx.Client) -> None:
    response = _chat(client, "What is 17 + 25?")
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "sandbox-mini"
    choice = body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "42", "refusal": None}
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["prompt_tokens"] >= 1
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


@pytest.mark.parametrize("kind", ["arithmetic", "extraction", "classification"])
def test_accurate_model_answers_every_generated_task(client: httpx.Client, kind: Any) -> None:
    generator = TaskGenerator(kind=kind, seed=3)
    for _ in range(20):
        task = generator.next()
        response = client.post("/chat/completions", json={"model": "sandbox-pro", "messages": task.messages})
        assert task.check(response.json()["choices"][0]["message"]["content"]), task.prompt


def test_list_models(client: httpx.Client) -> None:
    body = client.get("/models").json()
    assert [model["id"] for model in body["data"]] == ["sandbox-base", "sandbox-mini", "sandbox-pro"]


def test_arbitrary_prompts_get_a_short_deterministic_reply(client: httpx.Client) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hello", "name": "alice"},
        {"role": "assistant", "content": "Hi!"},
        {"role": "user", "content": "Tell me about the sea."},
    ]
    first = client.post("/chat/completions", json={"model": "sandbox-mini", "messages": messages}).json()
    second = client.post("/chat/completions", json={"model": "sandbox-mini", "messages": messages}).json()
    text = first["choices"][0]["message"]["content"]
    assert text
    assert text == second["choices"][0]["message"]["content"]
    assert _chat(client, "Hello").json()["choices"][0]["message"]["content"].startswith("Hello")


def test_stop_truncates_at_the_stop_sequence(client: httpx.Client) -> None:
    body = _chat(client, "Hello", stop=["help"]).json()
    assert body["choices"][0]["message"]["content"] == "Hello! How can I "


def test_max_tokens_truncates_and_reports_length(client: httpx.Client) -> None:
    body = _chat(client, "Tell me a long story about the sea.", max_completion_tokens=2).json()
    assert len(body["choices"][0]["message"]["content"]) == 8
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] <= 2


def test_streaming_sends_role_deltas_finish_usage_and_done(client: httpx.Client) -> None:
    response = _chat(client, "What is 6 * 7?", stream=True, stream_options={"include_usage": True})
    assert response.headers["content-type"].startswith("text/event-stream")
    chunks = _events(response)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks if chunk["choices"])
    assert text == "42"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] >= 1
    assert all(chunk["model"] == "sandbox-mini" for chunk in chunks)


def test_streaming_without_include_usage_has_no_usage_chunk(client: httpx.Client) -> None:
    chunks = _events(_chat(client, "Hello", stream=True))
    assert all(chunk["choices"] for chunk in chunks)
    assert "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks).startswith("Hello!")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"model": "sandbox-mini", "messages": []}, "messages"),
        ({"model": "sandbox-mini"}, "messages"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": "sandbox-mini", "messages": [{"role": "robot", "content": "hi"}]}, "role"),
        ({"model": "sandbox-mini", "messages": [{"role": "user", "content": "hi"}], "n": 2}, "'n'"),
        ({"model": "sandbox-mini", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, "temp"),
    ],
)
def test_malformed_requests_get_400_with_an_openai_error(
    client: httpx.Client, body: dict[str, Any], fragment: str
) -> None:
    response = client.post("/chat/completions", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert fragment in error["message"]


def test_invalid_json_gets_400(client: httpx.Client) -> None:
    response = client.post("/chat/completions", content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]["message"]


def test_unknown_model_gets_404_like_openai(client: httpx.Client) -> None:
    response = client.post("/chat/completions", json={"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
    assert "sandbox-mini" in response.json()["error"]["message"]


def test_request_count_counts_served_requests_only(sandbox: SandboxServer, client: httpx.Client) -> None:
    before_mini, before_base = sandbox.request_count(model="sandbox-mini"), sandbox.request_count(model="sandbox-base")
    _chat(client, "Hello")
    client.post("/chat/completions", json={"model": "sandbox-mini", "messages": []})
    assert sandbox.request_count(model="sandbox-mini") == before_mini + 1
    assert sandbox.request_count(model="sandbox-base") == before_base
