"""``ChatKalibr``: a Kalibr router as a first-class LangChain chat model.

Every call asks the router for a path, calls it (falling back on provider failures) and returns an ``AIMessage``
whose ``response_metadata`` names the model actually used (``model_name``) and the decision
(``kalibr_trace_id``), so the outcome can be reported later. Each decision is recorded under its LangChain run
(``kalibr_langchain._runs``): ``router.report()`` after a chain lands on it, and a call inside a larger run is
judged on that run's final output, a call on its own on its answer.
"""

from __future__ import annotations

import contextlib
import re
import zlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, Literal, Self

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManager, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.language_models.chat_models import agenerate_from_stream, generate_from_stream
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from pydantic import ConfigDict, Field, model_validator

import kalibr
from kalibr.runs import ensure_scope
from kalibr_langchain import _convert, _runs, _structured
from kalibr_langchain._provider import child_callbacks, is_chat_model, path_for_model
from kalibr_langchain._reporting import report_result

__all__ = ["ChatKalibr"]

_DEFAULT_TIMEOUT = 60.0
# Roughly one token per short word piece or punctuation mark: close to BPE counts, needs no tokenizer download.
_TOKEN_PIECES = re.compile(r"\w{1,4}|[^\w\s]|\s+")


class ChatKalibr(BaseChatModel):
    """A LangChain chat model that routes each call among several models and learns which one works.

    Usage::

        llm = ChatKalibr(goal="summarize", paths=["gpt-4o-mini", ChatAnthropic(model="claude-sonnet-4-5")],
                         success_when=lambda text: len(text) > 20)
        chain = prompt | llm | StrOutputParser()

    or ``router.as_langchain()`` for an existing ``kalibr.Router``. Paths may be model names, path dicts,
    ``kalibr.Path`` values or LangChain chat model objects. Pass ``model=`` to a call (or to the constructor) to
    force one path.
    """

    goal: str | None = None
    """The router's goal (taken from ``router`` when one is given)."""
    paths: list[Any] = Field(default_factory=list)
    """Model names, path dicts, ``kalibr.Path`` values or LangChain chat models."""
    success_when: Callable[[Any], bool] | None = Field(default=None, exclude=True)
    score_when: Callable[[Any], float] | None = Field(default=None, exclude=True)
    store: Any = Field(default=None, exclude=True)
    """A store URL or ``Store`` for the embedded engine; None uses ``KALIBR_DB``."""
    intelligence: Any = Field(default=None, exclude=True)
    router: kalibr.Router | None = Field(default=None, exclude=True)
    """An existing router; when given, goal, paths and callbacks come from it."""
    model: str | None = None
    """Force every call to this path (by model name); None lets the router decide."""
    temperature: float | None = None
    """Sent with every call when set; it then overrides the paths' own temperatures."""
    max_tokens: int | None = None
    stop: list[str] | None = Field(default=None, alias="stop_sequences")
    timeout: float | None = None
    """Seconds for each provider call."""
    max_retries: int | None = None
    """Accepted for compatibility; the router falls back to other paths instead of retrying one."""
    streaming: bool = False
    """Stream under ``invoke`` too (callbacks then receive tokens)."""
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Extra parameters sent with every call (``top_p``, ``seed``...)."""

    model_config = ConfigDict(populate_by_name=True)

    @model_validator(mode="after")
    def _build_router(self) -> Self:
        _runs.install()
        ensure_scope()  # runs of this model started from copies of this context (abatch's tasks) are seen here
        if self.router is not None:
            if self.goal is not None and self.goal != self.router.goal:
                raise kalibr.UserError(f"goal {self.goal!r} differs from the router's goal {self.router.goal!r}")
            self.goal = self.router.goal
            return self
        if self.goal is None or not self.paths:
            raise kalibr.UserError(
                "ChatKalibr needs goal= and paths=[...] (e.g. ChatKalibr(goal='summarize', paths=['gpt-4o-mini'])), "
                "or router= an existing kalibr.Router"
            )
        self.router = kalibr.Router(
            self.goal,
            [_path_spec(spec) for spec in self.paths],
            self.success_when,
            score_when=self.score_when,
            intelligence=self.intelligence,
            store=self.store,
            timeout=self.timeout or _DEFAULT_TIMEOUT,
        )
        return self

    @property
    def _router(self) -> kalibr.Router:
        assert self.router is not None, "set by the validator"
        return self.router

    @property
    def _llm_type(self) -> str:
        return "kalibr"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"goal": self._router.goal, "paths": [path.label for path in self._router.paths], "model": self.model}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="kalibr",
            ls_model_name=kwargs.get("model") or self.model or f"kalibr:{self._router.goal}",
            ls_model_type="chat",
        )
        temperature = kwargs.get("temperature", self.temperature)
        if temperature is not None:
            params["ls_temperature"] = temperature
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if max_tokens is not None:
            params["ls_max_tokens"] = max_tokens
        if stops := stop or kwargs.get("stop") or self.stop:
            params["ls_stop"] = list(stops)
        return params

    def get_token_ids(self, text: str) -> list[int]:
        """Approximate token ids (stable per piece), without downloading a tokenizer."""
        if self.custom_get_token_ids is not None:
            return self.custom_get_token_ids(text)
        return [zlib.crc32(piece.encode()) for piece in _TOKEN_PIECES.findall(text)]

    # --- calling ------------------------------------------------------------------------------------------
    def _call_params(self, stop: list[str] | None, kwargs: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
        params = {**self.model_kwargs, **kwargs}
        params.pop("ls_structured_output_format", None)
        force_model = params.pop("model", None) or self.model
        if self.temperature is not None:
            params.setdefault("temperature", self.temperature)
        if self.max_tokens is not None:
            params.setdefault("max_tokens", self.max_tokens)
        stops = stop if stop is not None else self.stop
        if stops:
            params["stop"] = list(stops)
        return force_model, params

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.streaming:
            return generate_from_stream(self._stream(messages, stop=stop, run_manager=run_manager, **kwargs))
        force_model, params = self._call_params(stop, kwargs)
        with _nested_under(run_manager):
            completion = self._router.completion(
                _convert.to_openai_messages(messages), force_model=force_model, evaluate=False, **params
            )
        return ChatResult(generations=[ChatGeneration(message=self._answered(completion, run_manager))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.streaming:
            return await agenerate_from_stream(self._astream(messages, stop=stop, run_manager=run_manager, **kwargs))
        force_model, params = self._call_params(stop, kwargs)
        with _nested_under(run_manager):
            completion = await self._router.acompletion(
                _convert.to_openai_messages(messages), force_model=force_model, evaluate=False, **params
            )
        return ChatResult(generations=[ChatGeneration(message=self._answered(completion, run_manager))])

    def _answered(
        self,
        completion: kalibr.Completion | None,
        run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
    ) -> AIMessage:
        """The answer as a message, its decision recorded under this LLM run. Judged here when this call is the
        whole run; otherwise the run's final output is judged when the run ends."""
        assert completion is not None, "a finished stream has its completion"
        message = _convert.completion_to_message(completion)
        run_id = run_manager.run_id if run_manager is not None else _runs.current_llm_run()
        _runs.tracker.record(run_id, self._router, completion.trace_id)
        if run_id is None or _runs.tracker.root_of(run_id) in (run_id, None):
            self._router.evaluate(completion.trace_id, _runs.judged_output(message), completion=completion)
        return message

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        force_model, params = self._call_params(stop, kwargs)
        stream = self._router.stream(
            _convert.to_openai_messages(messages), force_model=force_model, evaluate=False, **params
        )
        for piece in stream:
            if not piece.text and piece.tool_call is None:
                continue
            chunk = ChatGenerationChunk(message=_convert.stream_chunk_to_message(piece))
            if run_manager is not None:
                run_manager.on_llm_new_token(piece.text, chunk=chunk)
            yield chunk
        self._answered(stream.completion, run_manager)
        yield ChatGenerationChunk(message=_convert.last_chunk(stream.completion))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        force_model, params = self._call_params(stop, kwargs)
        stream = self._router.astream(
            _convert.to_openai_messages(messages), force_model=force_model, evaluate=False, **params
        )
        async for piece in stream:
            if not piece.text and piece.tool_call is None:
                continue
            chunk = ChatGenerationChunk(message=_convert.stream_chunk_to_message(piece))
            if run_manager is not None:
                await run_manager.on_llm_new_token(piece.text, chunk=chunk)
            yield chunk
        self._answered(stream.completion, run_manager)
        yield ChatGenerationChunk(message=_convert.last_chunk(stream.completion))

    # --- batches ------------------------------------------------------------------------------------------
    def batch(self, inputs: list[LanguageModelInput], *args: Any, **kwargs: Any) -> list[AIMessage]:
        """LangChain's batch, with its items (which run in worker threads) seen as one batch by ``report()``."""
        with _runs.tracker.shared_scope():
            return super().batch(inputs, *args, **kwargs)

    async def abatch(self, inputs: list[LanguageModelInput], *args: Any, **kwargs: Any) -> list[AIMessage]:
        with _runs.tracker.shared_scope():
            return await super().abatch(inputs, *args, **kwargs)

    # --- tools and structured output ----------------------------------------------------------------------
    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | bool | dict[str, Any] | None = None,
        strict: bool | None = None,
        parallel_tool_calls: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools (any form LangChain accepts) for every path; ``tool_choice="any"`` forces a tool call."""
        formatted = _convert.to_openai_tools(tools, strict=strict)
        if tool_choice is not None:
            kwargs["tool_choice"] = _convert.to_openai_tool_choice(tool_choice, formatted)
        if parallel_tool_calls is not None:
            kwargs["parallel_tool_calls"] = parallel_tool_calls
        return self.bind(tools=formatted, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        include_raw: bool = False,
        method: Literal["function_calling", "json_schema", "json_mode"] = "function_calling",
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | Any]:
        """Answers parsed into ``schema`` (a pydantic model, TypedDict or JSON schema).

        ``method="function_calling"`` (the default, which every tool-calling path supports) forces a tool call;
        ``"json_schema"`` and ``"json_mode"`` use the provider's ``response_format``.
        """
        if kwargs:
            raise kalibr.UserError(f"unexpected arguments {sorted(kwargs)} for with_structured_output")
        return _structured.structured_runnable(self, schema, include_raw=include_raw, method=method, strict=strict)

    # --- outcomes -----------------------------------------------------------------------------------------
    def report(
        self,
        result: Any,
        success: bool | None = None,
        *,
        score: float | None = None,
        reason: str | None = None,
        failure_category: kalibr.FailureCategory | None = None,
    ) -> list[str]:
        """Report how the calls behind ``result`` went: a message, a recent run's output (the very object the
        chain, batch item or agent returned) or a trace id. The report replaces the whole earlier outcome.

        Returns the trace ids reported. ``router.report()`` does the same for the last run, without ``result``.
        """
        return report_result(
            self._router, result, success=success, score=score, reason=reason, failure_category=failure_category
        )


def _path_spec(spec: Any) -> Any:
    """LangChain chat model objects (bare, or as a dict's ``client``) become ``langchain``-provider paths."""
    if is_chat_model(spec):
        return path_for_model(spec)
    if isinstance(spec, dict) and is_chat_model(spec.get("client")):
        fields = {key: value for key, value in spec.items() if key != "client"}
        fields.setdefault("provider", "langchain")
        return path_for_model(spec["client"], **fields)
    return spec


@contextlib.contextmanager
def _nested_under(run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None) -> Iterator[None]:
    """Let a LangChain model on the chosen path report its run as a child of this one."""
    manager = None
    if run_manager is not None and run_manager.inheritable_handlers:  # no handlers: nothing to nest, skip the cost
        manager = CallbackManager(
            handlers=list(run_manager.inheritable_handlers),
            inheritable_handlers=list(run_manager.inheritable_handlers),
            parent_run_id=run_manager.run_id,
            inheritable_tags=list(run_manager.inheritable_tags),
            inheritable_metadata=dict(run_manager.inheritable_metadata),
        )
    token = child_callbacks.set(manager)
    try:
        yield
    finally:
        child_callbacks.reset(token)
