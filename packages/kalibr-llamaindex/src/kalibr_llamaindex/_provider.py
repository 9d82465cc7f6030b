"""Paths that are LlamaIndex LLM objects: ``kalibr.Path(model="local", provider="llamaindex", client=llm)``.

The router still decides, falls back and learns; this provider only calls the object. Any failure of the
wrapped LLM becomes a ``kalibr.ProviderError`` so the router tries the next path and blames this one.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

from llama_index.core.base.llms.types import ChatResponse
from llama_index.core.callbacks.token_counting import get_tokens_from_response
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import LLM

from kalibr import Path, ProviderError, ProviderTimeout, StreamChunk, ToolCall, Usage, UserError
from kalibr.providers.base import ProviderRequest, ProviderResponse, ToolCallDelta
from kalibr_llamaindex._messages import messages_from_dicts, tool_calls_of, tools_from_dicts

__all__ = ["LlamaIndexProvider"]

# Router params a LlamaIndex LLM takes through its own configuration, not per call.
_NOT_PER_CALL = frozenset({"tools", "tool_choice", "response_format"})


@contextlib.contextmanager
def _as_provider_errors(model: str) -> Iterator[None]:
    try:
        yield
    except (ProviderError, UserError):
        raise
    except TimeoutError as exc:
        raise ProviderTimeout(f"LlamaIndex LLM {model!r} timed out: {exc!s}", model=model) from exc
    except Exception as exc:
        raise ProviderError(f"LlamaIndex LLM {model!r} failed: {exc!r}", model=model) from exc


def _llm_of(path: Path) -> LLM:
    if not isinstance(path.client, LLM):
        raise UserError(
            f"path {path.label!r} has provider='llamaindex' but its client is {path.client!r}: "
            "pass a LlamaIndex LLM as client=, e.g. kalibr.Path(model='local', provider='llamaindex', client=llm)"
        )
    return path.client


def _call_arguments(llm: LLM, request: ProviderRequest) -> tuple[str, dict[str, Any]]:
    """Which chat method to call ("chat" or "chat_with_tools") and its keyword arguments."""
    messages = messages_from_dicts(request.messages)
    extra = {key: value for key, value in request.params.items() if key not in _NOT_PER_CALL}
    tools = request.params.get("tools")
    if not tools:
        return "chat", {"messages": messages, **extra}
    if not isinstance(llm, FunctionCallingLLM):
        raise UserError(f"path {request.path.label!r} is offered tools but its LLM {llm!r} cannot call functions")
    required = request.params.get("tool_choice") == "required"
    arguments = {"tools": tools_from_dicts(tools), "chat_history": messages, "tool_required": required, **extra}
    return "chat_with_tools", arguments


def _response(llm: LLM, response: ChatResponse, model: str) -> ProviderResponse:
    calls = tuple(
        ToolCall(id=call.tool_id, name=call.tool_name, arguments=json.dumps(call.tool_kwargs))
        for call in (tool_calls_of(response) or _framework_tool_calls(llm, response))
    )
    input_tokens, output_tokens = get_tokens_from_response(response)
    return ProviderResponse(
        text=response.message.content or "",
        model=model,
        usage=Usage(int(input_tokens), int(output_tokens)),
        tool_calls=calls,
        finish_reason="tool_calls" if calls else "stop",
    )


def _framework_tool_calls(llm: LLM, response: ChatResponse) -> list[Any]:
    if not isinstance(llm, FunctionCallingLLM):
        return []
    try:
        return llm.get_tool_calls_from_response(response, error_on_no_tool_call=False)
    except NotImplementedError:
        return []


def _chunks(responses: Iterator[ChatResponse], llm: LLM, model: str) -> Iterator[StreamChunk]:
    last: ChatResponse | None = None
    for last in responses:
        if last.delta:
            yield StreamChunk(text=last.delta, model=model)
    if last is not None:
        yield from _closing_chunks(_response(llm, last, model))


def _closing_chunks(final: ProviderResponse) -> Iterator[StreamChunk]:
    for index, call in enumerate(final.tool_calls):
        yield StreamChunk(tool_call=ToolCallDelta(index, call.id, call.name, call.arguments))
    yield StreamChunk(usage=final.usage, finish_reason=final.finish_reason, model=final.model)


class LlamaIndexProvider:
    """Calls the LlamaIndex LLM on a path (``provider="llamaindex"``)."""

    name = "llamaindex"

    def invoke(self, request: ProviderRequest) -> ProviderResponse:
        llm, model = _llm_of(request.path), request.path.model
        method, arguments = _call_arguments(llm, request)
        with _as_provider_errors(model):
            response = getattr(llm, method)(**arguments)
        return _response(llm, response, model)

    async def ainvoke(self, request: ProviderRequest) -> ProviderResponse:
        llm, model = _llm_of(request.path), request.path.model
        method, arguments = _call_arguments(llm, request)
        with _as_provider_errors(model):
            response = await getattr(llm, f"a{method}")(**arguments)
        return _response(llm, response, model)

    def stream(self, request: ProviderRequest) -> Iterator[StreamChunk]:
        llm, model = _llm_of(request.path), request.path.model
        method, arguments = _call_arguments(llm, request)
        with _as_provider_errors(model):
            yield from _chunks(getattr(llm, f"stream_{method}")(**arguments), llm, model)

    async def astream(self, request: ProviderRequest) -> AsyncIterator[StreamChunk]:
        llm, model = _llm_of(request.path), request.path.model
        method, arguments = _call_arguments(llm, request)
        with _as_provider_errors(model):
            last: ChatResponse | None = None
            async for last in await getattr(llm, f"astream_{method}")(**arguments):
                if last.delta:
                    yield StreamChunk(text=last.delta, model=model)
            if last is not None:
                for chunk in _closing_chunks(_response(llm, last, model)):
                    yield chunk
