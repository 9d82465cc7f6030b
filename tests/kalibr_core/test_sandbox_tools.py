"""Tool calls and structured output in the OpenAI shape, with arguments filled from the prompt."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from kalibr.sandbox import SandboxServer


def _tool(name: str, properties: dict[str, Any] | None = None, required: list[str] | None = None) -> dict[str, Any]:
    parameters = {"type": "object", "properties": properties or {}, "required": required or []}
    return {
        "type": "function",
        "function": {"name": name, "description": f"The {name} tool.", "parameters": parameters},
    }


MAGIC = _tool("magic_function", {"input": {"type": "integer"}}, ["input"])
ADDER = _tool("my_adder_tool", {"a": {"type": "integer"}, "b": {"type": "integer"}}, ["a", "b"])
WEATHER = _tool("get_weather", {"location": {"type": "string"}}, ["location"])


@pytest.fixture
def client(sandbox: SandboxServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox.openai_base_url) as http:
        yield http


def _ask(client: httpx.Client, messages: list[dict[str, Any]] | str, **extra: Any) -> dict[str, Any]:
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    response = client.post("/chat/completions", json={"model": "sandbox-mini", "messages": messages, **extra})
    assert response.status_code == 200, response.text
    choice: dict[str, Any] = response.json()["choices"][0]
    return choice


def _arguments(choice: dict[str, Any]) -> Any:
    [call] = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_")
    return call["function"]["name"], json.loads(call["function"]["arguments"])


def test_forced_tool_call_takes_the_number_from_the_prompt(client: httpx.Client) -> None:
    forced = {"type": "function", "function": {"name": "magic_function"}}
    choice = _ask(client, "What is the value of magic_function(3)? Use the tool.", tools=[MAGIC], tool_choice=forced)
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert _arguments(choice) == ("magic_function", {"input": 3})


def test_required_picks_the_tool_the_prompt_names(client: httpx.Client) -> None:
    choice = _ask(client, "What is 1 + 2? Use my_adder_tool.", tools=[MAGIC, ADDER], tool_choice="required")
    assert _arguments(choice) == ("my_adder_tool", {"a": 1, "b": 2})


def test_auto_calls_a_relevant_tool_and_fills_a_place_name(client: httpx.Client) -> None:
    choice = _ask(client, "What is the weather in San Francisco, CA?", tools=[MAGIC, WEATHER])
    name, arguments = _arguments(choice)
    assert name == "get_weather"
    assert arguments == {"location": "San Francisco, CA"}


def test_auto_does_not_call_a_tool_for_small_talk_and_none_never_does(client: httpx.Client) -> None:
    assert "tool_calls" not in _ask(client, "Hello", tools=[WEATHER])["message"]
    choice = _ask(client, "What is the weather in Oslo?", tools=[WEATHER], tool_choice="none")
    assert "tool_calls" not in choice["message"]


def test_a_tool_without_parameters_gets_empty_arguments(client: httpx.Client) -> None:
    bare = {"type": "function", "function": {"name": "magic_function_no_args", "description": "Magic."}}
    choice = _ask(client, "What is the value of magic_function_no_args()? Use the tool.", tools=[bare])
    assert _arguments(choice) == ("magic_function_no_args", {})


def test_after_the_tool_result_the_model_answers_with_it(client: httpx.Client) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "What is the weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "It's sunny."},
    ]
    choice = _ask(client, messages, tools=[WEATHER])
    assert choice["finish_reason"] == "stop"
    assert "It's sunny." in choice["message"]["content"]


def test_streamed_tool_call_arguments_reassemble(client: httpx.Client) -> None:
    body = {"model": "sandbox-mini", "messages": [{"role": "user", "content": "magic_function(42) please"}]}
    response = client.post(
        "/chat/completions", json={**body, "tools": [MAGIC], "tool_choice": "required", "stream": True}
    )
    chunks = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")]
    deltas = [delta for chunk in chunks for delta in chunk["choices"][0]["delta"].get("tool_calls", [])]
    assert deltas[0]["id"].startswith("call_")
    assert deltas[0]["function"]["name"] == "magic_function"
    assert json.loads("".join(delta["function"]["arguments"] for delta in deltas)) == {"input": 42}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_json_schema_response_satisfies_the_schema(client: httpx.Client) -> None:
    schema = {
        "type": "object",
        "properties": {
            "company": {"type": "string"},
            "employees": {"type": "integer"},
            "public": {"type": "boolean"},
            "sector": {"type": "string", "enum": ["energy", "retail", "software"]},
            "tags": {"type": "array", "items": {"type": "string"}},
            "address": {"$ref": "#/$defs/Address"},
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        },
        "required": ["company", "employees", "public", "sector", "tags", "address", "note"],
        "$defs": {"Address": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
    }
    prompt = "Extract the company name: Hooli, a software firm in Palo Alto, employs 1200 people."
    response_format = {"type": "json_schema", "json_schema": {"name": "Firm", "schema": schema, "strict": True}}
    value = json.loads(_ask(client, prompt, response_format=response_format)["message"]["content"])
    assert value["company"] == "Hooli"
    assert value["employees"] == 1200
    assert value["public"] is True
    assert value["sector"] == "software"
    assert isinstance(value["tags"], list)
    assert value["tags"]
    assert isinstance(value["address"]["city"], str)
    assert isinstance(value["note"], str)


def test_json_object_mode_answers_with_a_json_object(client: httpx.Client) -> None:
    content = _ask(client, "What is 2 + 2? Reply in JSON.", response_format={"type": "json_object"})["message"]
    assert json.loads(content["content"]) == {"answer": "4"}


def test_forcing_a_tool_the_request_lacks_is_a_400(client: httpx.Client) -> None:
    forced = {"type": "function", "function": {"name": "nope"}}
    body = {"model": "sandbox-mini", "messages": [{"role": "user", "content": "x"}], "tools": [MAGIC]}
    response = client.post("/chat/completions", json={**body, "tool_choice": forced})
    assert response.status_code == 400
    assert "nope" in response.json()["error"]["message"]


def test_json_object_mode_uses_the_keys_the_prompt_quotes(client: httpx.Client) -> None:
    prompt = "Tell me a joke about cats. Return the result as a JSON with 'setup' and 'punchline' keys."
    content = _ask(client, prompt, response_format={"type": "json_object"})["message"]["content"]
    value = json.loads(content)
    assert set(value) == {"setup", "punchline"}
    assert all(isinstance(item, str) and item for item in value.values())


def test_json_object_mode_fills_a_schema_given_in_the_system_prompt(client: httpx.Client) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    messages = [
        {"role": "system", "content": f"Reply with JSON matching this schema: {json.dumps(schema)}"},
        {"role": "user", "content": "What is 20 + 22?"},
    ]
    content = _ask(client, messages, response_format={"type": "json_object"})["message"]["content"]
    assert json.loads(content) == {"answer": 42}
