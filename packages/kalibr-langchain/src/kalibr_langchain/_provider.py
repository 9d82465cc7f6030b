"""The ``langchain`` provider: paths whose ``client`` is a LangChain chat model (a ChatOpenAI, a ChatAnthropic).

The router decides, falls back and learns as for any path; this provider only calls the chosen object, with
the call's tools, tool choice, stop words and other parameters bound to it. Failures of the object become
Kalibr provider errors (so the router falls back and learns), except a ``UserError``, which is the caller's.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from langchain_core.callbacks import BaseCallbackManager
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable, RunnableBinding, RunnableConfig

import kalibr
from kalibr.providers.base import ProviderRequest, ProviderResponse
from kalibr_langchain import _convert

__all__ = ["LangChainProvider", "child_callbacks", "is_chat_model", "path_for_model"]

PROVIDER = "langchain"
_CALLER_ERROR_STATUSES = frozenset({400, 404, 405, 413, 415, 422})

child_callbacks: contextvars.ContextVar[BaseCallbackManager | None] = contextvars.ContextVar(
    "kalibr_langchain_child_callbacks", default=None
)
"""Set by ``ChatKalibr`` around a call so that the chosen model's run nests under the router's run."""


def is_chat_model(value: object) -> bool:
    """A LangChain chat model, or one with arguments bound to it (``ChatOpenAI(...).bind(...)``)."""
    while isinstance(value, RunnableBinding):
        value = value.bound
    return isinstance(value, BaseChatModel)


def _unbound(model: Runnable[Any, Any]) -> BaseChatModel:
    while isinstance(model, RunnableBinding):
        model = model.bound
    assert isinstance(model, BaseChatModel), "checked by is_chat_model"
    return model


def _model_name(runnable: Runnable[Any, Any]) -> str:
    model = _unbound(runnable)
    name = model._get_ls_params().get("ls_model_name")
    return name if isinstance(name, str) and name else model._llm_type


def path_for_model(chat_model: Runnable[Any, Any], /, **fields: Any) -> kalibr.Path:
    """A path that calls ``model``; its name (and so what is learned about it) comes from the model's name."""
    fields.pop("provider", None)
    name = fields.pop("model", None) or _model_name(chat_model)
    return kalibr.Path(model=name, provider=PROVIDER, client=chat_model, **fields)


def _from_openai_tool_choice(choice: Any) -> Any:
    if choice == "required":
        return "any"
    if isinstance(choice, Mapping) and isinstance(choice.get("function"), Mapping):
        return choice["function"].get("name")
    return choice


def _bound(request: ProviderRequest) -> tuple[Runnable[LanguageModelInput, BaseMessage], dict[str, Any]]:
    """The path's model with the call's parameters bound, and the keyword arguments for the call itself."""
    client = request.path.client
    if not isinstance(client, Runnable) or not is_chat_model(client):
        raise kalibr.UserError(
            f"path {request.path.label!r} uses provider 'langchain' but its client is {client!r}: give it a "
            "LangChain chat model, e.g. kalibr.Path(model='gpt-4o', provider='langchain', client=ChatOpenAI())"
        )
    params = dict(request.params)
    call_kwargs: dict[str, Any] = {}
    if params.get("stop"):
        call_kwargs["stop"] = list(params.pop("stop"))
    params.pop("stop", None)
    model: Runnable[LanguageModelInput, BaseMessage] = client
    tools = params.pop("tools", None)
    choice = params.pop("tool_choice", None)
    if tools:
        chat_model = _unbound(client)
        extra = {"tool_choice": _from_openai_tool_choice(choice)} if choice is not None else {}
        with _mapped(request.path.model):
            model = chat_model.bind_tools(tools, **extra)
            if isinstance(client, RunnableBinding):
                model = model.bind(**client.kwargs)
    if params:
        model = model.bind(**params)
    manager = child_callbacks.get()
    if manager is not None:
        call_kwargs["config"] = RunnableConfig(callbacks=manager)
    return model, call_kwargs


@contextlib.contextmanager
def _mapped(model: str) -> Iterator[None]:
    """Translate a framework model's exception into the Kalibr provider error the router learns from."""
    try:
        yield
    except (kalibr.ProviderError, kalibr.UserError):
        raise
    except Exception as error:
        raise _provider_error(error, model) from error


def _provider_error(error: Exception, model: str) -> kalibr.ProviderError:
    message = f"{model!r} failed: {type(error).__name__}: {error}"
    status = getattr(error, "status_code", None) or getattr(getattr(error, "response", None), "status_code", None)
    if isinstance(status, int):
        is_context = "context" in str(error).lower()
        error_class = (
            kalibr.RequestRejected if status in _CALLER_ERROR_STATUSES and not is_context else kalibr.ProviderHTTPError
        )
        return error_class(message, status_code=status, body=str(error)[:2000], model=model)
    if isinstance(error, TimeoutError) or "timeout" in type(error).__name__.lower():
        return kalibr.ProviderTimeout(message, model=model)
    return kalibr.ProviderError(message, model=model)


class LangChainProvider:
    """A ``DirectProvider`` calling the LangChain chat model on the path."""

    name = PROVIDER

    def invoke(self, request: ProviderRequest) -> ProviderResponse:
        model, kwargs = _bound(request)
        messages = _convert.from_openai_messages(request.messages)
        with _mapped(request.path.model):
            message = model.invoke(messages, **kwargs)
        return _convert.message_to_response(message, request.path.model)

    async def ainvoke(self, request: ProviderRequest) -> ProviderResponse:
        model, kwargs = _bound(request)
        messages = _convert.from_openai_messages(request.messages)
        with _mapped(request.path.model):
            message = await model.ainvoke(messages, **kwargs)
        return _convert.message_to_response(message, request.path.model)

    def stream(self, request: ProviderRequest) -> Iterator[kalibr.StreamChunk]:
        model, kwargs = _bound(request)
        messages = _convert.from_openai_messages(request.messages)
        with _mapped(request.path.model):
            for chunk in model.stream(messages, **kwargs):
                yield from _convert.message_to_stream_chunks(chunk)

    async def astream(self, request: ProviderRequest) -> AsyncIterator[kalibr.StreamChunk]:
        model, kwargs = _bound(request)
        messages = _convert.from_openai_messages(request.messages)
        with _mapped(request.path.model):
            async for chunk in model.astream(messages, **kwargs):
                for piece in _convert.message_to_stream_chunks(chunk):
                    yield piece
