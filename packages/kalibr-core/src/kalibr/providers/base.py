"""What a provider is, and the one place that does provider I/O.

A provider is a wire format: it builds an HTTP request from a ``ProviderRequest`` and parses responses and
stream events. It does no I/O itself, so the sync and async paths share every line of protocol logic; the
functions at the bottom of this module send requests (sync and async) and translate httpx failures into
Kalibr errors in one place, ``map_provider_errors``.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import httpx

from kalibr._domain import Path, Usage
from kalibr._exceptions import ProviderError, ProviderHTTPError, ProviderTimeout, RequestRejected, UserError
from kalibr._types import Message

__all__ = [
    "DirectProvider",
    "HTTPCall",
    "Provider",
    "ProviderRequest",
    "ProviderResponse",
    "StreamChunk",
    "ToolCall",
    "ToolCallDelta",
    "acomplete",
    "astream",
    "complete",
    "endpoint",
    "map_provider_errors",
    "stream",
]

# Statuses that mean the caller's request itself is wrong: raised to the caller, never blamed on the path.
# 404 and 405 are not among them: they say the path's model (or its endpoint) does not exist, which no change
# to the request fixes, so they are the path's failure ("provider_error") and the router falls back.
_CALLER_ERROR_STATUSES = frozenset({400, 413, 415, 422})


@dataclass(frozen=True, slots=True)
class ProviderRequest:
    """One model call: the path, the conversation and the call's parameters (path params merged in)."""

    path: Path
    messages: Sequence[Message]
    params: Mapping[str, Any] = field(default_factory=dict)
    stream: bool = False


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str
    """The arguments as a JSON string, as the provider sent them."""

    def parsed_arguments(self) -> dict[str, Any]:
        try:
            value = json.loads(self.arguments or "{}")
        except json.JSONDecodeError:
            return {}
        return value if isinstance(value, dict) else {}


@dataclass(frozen=True, slots=True)
class ProviderResponse:
    text: str
    model: str
    usage: Usage
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """One streamed increment: text, a piece of a tool call, and on the last chunks usage and finish reason."""

    text: str = ""
    tool_call: ToolCallDelta | None = None
    usage: Usage | None = None
    finish_reason: str | None = None
    model: str | None = None


@dataclass(frozen=True, slots=True)
class HTTPCall:
    url: str
    headers: Mapping[str, str]
    body: Mapping[str, Any]


class Provider(Protocol):
    """A wire format. Implementations are pure: no I/O."""

    name: str

    def build(self, request: ProviderRequest) -> HTTPCall:
        """The HTTP request for ``request``; raises ``UserError`` if no key or base URL can be found."""
        ...

    def parse(self, body: Mapping[str, Any], request: ProviderRequest) -> ProviderResponse: ...

    def parse_event(self, data: str, event: str | None) -> StreamChunk | None:
        """One server-sent event (its ``data`` and ``event`` fields) as a chunk; None to skip it."""
        ...

    def error_message(self, body: str) -> str:
        """The human message inside an error body."""
        ...


@runtime_checkable
class DirectProvider(Protocol):
    """A provider that makes the call itself instead of describing an HTTP request.

    Adapters use this for paths that carry a framework model object (``Path.client``): the router keeps
    deciding, falling back and learning; the adapter only invokes the object.
    """

    name: str

    def invoke(self, request: ProviderRequest) -> ProviderResponse: ...

    async def ainvoke(self, request: ProviderRequest) -> ProviderResponse: ...

    def stream(self, request: ProviderRequest) -> Iterator[StreamChunk]: ...

    def astream(self, request: ProviderRequest) -> AsyncIterator[StreamChunk]: ...


def endpoint(path: Path, *, key_env: str, base_env: str, default_base: str) -> tuple[str, str]:
    """(base URL, API key) for ``path``: its own values, else the environment, else the vendor's URL.

    A key is required only by the vendor's own endpoint; a local server (vLLM, Ollama, the sandbox) gets a
    placeholder.
    """
    base_url = (path.base_url or os.environ.get(base_env) or default_base).rstrip("/")
    api_key = path.api_key or os.environ.get(key_env)
    if api_key:
        return base_url, api_key
    if base_url == default_base:
        raise UserError(
            f"no API key for path {path.label!r}: set {key_env}, or give the path an api_key, "
            "or a base_url for a local compatible server"
        )
    return base_url, "not-needed"


@contextlib.contextmanager
def map_provider_errors(model: str) -> Iterator[None]:
    """Translate httpx failures into Kalibr's provider errors (``raise ... from exc``)."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise ProviderTimeout(f"{model!r} timed out: {exc!s}", model=model) from exc
    except httpx.TransportError as exc:
        raise ProviderError(f"{model!r} could not be reached: {exc!s}", model=model) from exc


def _check_status(provider: Provider, response: httpx.Response, model: str, body: str) -> None:
    if response.status_code < 400:
        return
    message = f"{model!r} answered HTTP {response.status_code}: {provider.error_message(body)}"
    error_class = RequestRejected if response.status_code in _CALLER_ERROR_STATUSES else ProviderHTTPError
    error = error_class(message, status_code=response.status_code, body=body[:2000], model=model)
    if error.failure_category == "context_exceeded":
        # The prompt is too long for this model; another path may have a larger window.
        error = ProviderHTTPError(message, status_code=response.status_code, body=body[:2000], model=model)
    raise error


def _json(response_text: str, model: str) -> Mapping[str, Any]:
    try:
        body = json.loads(response_text)
    except json.JSONDecodeError as exc:
        raise ProviderError(f"{model!r} answered with a body that is not JSON", model=model) from exc
    if not isinstance(body, dict):
        raise ProviderError(f"{model!r} answered with JSON that is not an object", model=model)
    return body


def complete(provider: Provider, request: ProviderRequest, client: httpx.Client, timeout: float) -> ProviderResponse:
    call = provider.build(request)
    model = request.path.model
    with map_provider_errors(model):
        response = client.post(call.url, headers=dict(call.headers), json=call.body, timeout=timeout)
    _check_status(provider, response, model, response.text)
    return provider.parse(_json(response.text, model), request)


async def acomplete(
    provider: Provider, request: ProviderRequest, client: httpx.AsyncClient, timeout: float
) -> ProviderResponse:
    call = provider.build(request)
    model = request.path.model
    with map_provider_errors(model):
        response = await client.post(call.url, headers=dict(call.headers), json=call.body, timeout=timeout)
    _check_status(provider, response, model, response.text)
    return provider.parse(_json(response.text, model), request)


class _SSEParser:
    """Accumulates server-sent-event lines; ``feed`` returns (event, data) when an event is complete."""

    def __init__(self) -> None:
        self._event: str | None = None
        self._data: list[str] = []

    def feed(self, line: str) -> tuple[str | None, str] | None:
        if line == "":
            if not self._data:
                self._event = None
                return None
            event, data = self._event, "\n".join(self._data)
            self._event, self._data = None, []
            return event, data
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None


def stream(provider: Provider, request: ProviderRequest, client: httpx.Client, timeout: float) -> Iterator[StreamChunk]:
    call = provider.build(request)
    model = request.path.model
    parser = _SSEParser()
    with (
        map_provider_errors(model),
        client.stream("POST", call.url, headers=dict(call.headers), json=call.body, timeout=timeout) as r,
    ):
        if r.status_code >= 400:
            _check_status(provider, r, model, r.read().decode(errors="replace"))
        for line in r.iter_lines():
            parsed = parser.feed(line)
            if parsed is not None and (chunk := provider.parse_event(parsed[1], parsed[0])) is not None:
                yield chunk
        if (parsed := parser.feed("")) is not None and (chunk := provider.parse_event(parsed[1], parsed[0])):
            yield chunk


async def astream(
    provider: Provider, request: ProviderRequest, client: httpx.AsyncClient | None, timeout: float
) -> AsyncIterator[StreamChunk]:
    call = provider.build(request)
    model = request.path.model
    parser = _SSEParser()
    with map_provider_errors(model):
        if client is None:
            from kalibr._http import async_client

            client = await async_client()
        async with client.stream("POST", call.url, headers=dict(call.headers), json=call.body, timeout=timeout) as r:
            if r.status_code >= 400:
                _check_status(provider, r, model, (await r.aread()).decode(errors="replace"))
            async for line in r.aiter_lines():
                parsed = parser.feed(line)
                if parsed is not None and (chunk := provider.parse_event(parsed[1], parsed[0])) is not None:
                    yield chunk
            if (parsed := parser.feed("")) is not None and (chunk := provider.parse_event(parsed[1], parsed[0])):
                yield chunk
