"""``KalibrLLM``: a LlamaIndex function-calling LLM that routes every call through a ``kalibr.Router``.

Every public method carries LlamaIndex's callback decorators, so instrumentation events, legacy callback
events and the rate limiter work as for any other LLM. Completion methods derive from the chat methods.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from llama_index.core.base.llms.generic_utils import (
    achat_to_completion_decorator,
    astream_chat_to_completion_decorator,
    chat_to_completion_decorator,
    stream_chat_to_completion_decorator,
)
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
    ToolCallBlock,
)
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection
from pydantic import Field, PrivateAttr

from kalibr import Completion, FailureCategory, Router, StreamChunk, UserError
from kalibr_llamaindex._messages import chat_response, message_to_dict, tool_calls_of
from kalibr_llamaindex._runs import evaluates_each_call, record_decision, trace_ids_of
from kalibr_llamaindex._streaming import StreamedMessage

if TYPE_CHECKING:
    from llama_index.core.tools.types import BaseTool

__all__ = ["KalibrLLM"]

# Keyword arguments LlamaIndex passes along that are not model parameters.
_LLAMAINDEX_ONLY = frozenset({"formatted", "verbose", "allow_parallel_tool_calls", "tool_required"})
_TOOL_CHOICE_KEYWORDS = frozenset({"auto", "none", "required"})


class KalibrLLM(FunctionCallingLLM):
    """A LlamaIndex LLM whose every call is routed (and learned from) by a ``kalibr.Router``.

    Usage::

        llm = router.as_llamaindex()          # or KalibrLLM(router=router)
        Settings.llm = llm
        agent = FunctionAgent(tools=[...], llm=llm)

    Args:
        router: the router that picks a path per call.
        call_params: model parameters sent with every call (temperature, max_tokens, ...).
        context_window: what ``metadata`` reports; LlamaIndex sizes prompts with it.
        num_output: likewise, the room left for the answer.
        run_outcomes: attach each call to the LlamaIndex run (query, ``structured_predict``, agent run) it is
            part of: the run's final output is judged by ``success_when``/``score_when`` for every decision the
            run made, and ``router.report()`` after the run reports all of them.
    """

    router: Any = Field(exclude=True, description="The kalibr.Router that picks a path per call.")
    call_params: dict[str, Any] = Field(default_factory=dict, description="Parameters sent with every call.")
    context_window: int = Field(default=128_000, gt=0)
    num_output: int = Field(default=4096, gt=0)
    run_outcomes: bool = Field(default=True, description="Report each query's or agent run's outcome.")

    _router: Router = PrivateAttr()

    def __init__(self, router: Router, **kwargs: Any) -> None:
        if not isinstance(router, Router):
            raise UserError(f"KalibrLLM needs a kalibr.Router, got {router!r}")
        super().__init__(router=router, **kwargs)
        self._router = router

    @classmethod
    def class_name(cls) -> str:
        return "KalibrLLM"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            context_window=self.context_window,
            num_output=self.num_output,
            is_chat_model=True,
            is_function_calling_model=True,
            model_name=f"kalibr/{self._router.goal}",
        )

    # --- chat ---------------------------------------------------------------------------------------------
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        completion = self._router.completion(self._dicts(messages), evaluate=self._evaluates(), **self._params(kwargs))
        return self._response(completion)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        completion = await self._router.acompletion(
            self._dicts(messages), evaluate=self._evaluates(), **self._params(kwargs)
        )
        return self._response(completion)

    # A stream's span ends as soon as the generator is returned; the call is made when it is consumed, so that is
    # where it is attributed (to the agent step consuming it, or to the caller after a streaming query).
    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        conversation, params = self._dicts(messages), self._params(kwargs)

        def generate() -> ChatResponseGen:
            stream = self._router.stream(conversation, evaluate=self._evaluates(), **params)
            message = StreamedMessage()
            for chunk in stream:
                yield message.add(chunk)
            yield self._final(stream.completion)

        return generate()

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        conversation, params = self._dicts(messages), self._params(kwargs)

        async def generate() -> ChatResponseAsyncGen:
            stream = self._router.astream(conversation, evaluate=self._evaluates(), **params)
            message = StreamedMessage()
            chunk: StreamChunk
            async for chunk in stream:
                yield message.add(chunk)
            yield self._final(stream.completion)

        return generate()

    # --- completion: the chat methods with the prompt as one user message ------------------------------------
    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return chat_to_completion_decorator(self.chat)(prompt, **kwargs)

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return await achat_to_completion_decorator(self.achat)(prompt, **kwargs)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        return stream_chat_to_completion_decorator(self.stream_chat)(prompt, **kwargs)

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseAsyncGen:
        return await astream_chat_to_completion_decorator(self.astream_chat)(prompt, **kwargs)

    # --- tools ----------------------------------------------------------------------------------------------
    def _prepare_chat_with_tools(
        self,
        tools: Sequence[BaseTool],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        messages = list(chat_history or [])
        if isinstance(user_msg, str):
            messages.append(ChatMessage(role=MessageRole.USER, content=user_msg))
        elif user_msg is not None:
            messages.append(user_msg)
        prepared: dict[str, Any] = {**kwargs, "messages": messages}
        if tools:
            prepared["tools"] = [tool.metadata.to_openai_tool(skip_length_check=True) for tool in tools]
            prepared["tool_choice"] = _tool_choice(kwargs.get("tool_choice"), tool_required)
        else:
            prepared.pop("tool_choice", None)
        return prepared

    def _validate_chat_with_tools_response(
        self,
        response: ChatResponse,
        tools: Sequence[BaseTool],
        allow_parallel_tool_calls: bool = False,
        **kwargs: Any,
    ) -> ChatResponse:
        if not allow_parallel_tool_calls:
            _keep_first_tool_call(response.message)
        return response

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        selections = tool_calls_of(response)
        if not selections and error_on_no_tool_call:
            raise ValueError(f"expected at least one tool call, got none in {response.message.content!r}")
        return selections

    # --- outcomes -------------------------------------------------------------------------------------------
    def report(
        self,
        output: Any,
        success: bool | None = None,
        *,
        score: float | None = None,
        failure_category: FailureCategory | None = None,
        reason: str | None = None,
    ) -> list[str]:
        """Report the decisions behind ``output``; returns their trace ids.

        ``output`` is a response of this LLM, or what a recent run that used it returned (a query's response,
        an agent's output, a ``structured_predict`` object). Use it where ``router.report()`` alone would be
        ambiguous, e.g. after ``asyncio.gather`` of two agent runs: ``llm.report(first_output, success=True)``.
        """
        trace_ids = trace_ids_of(output, self._router)
        if not trace_ids:
            raise UserError(
                f"found no Kalibr call of goal {self._router.goal!r} behind this {type(output).__name__}: pass a "
                "response of this LLM or the result of a query or agent run that used it, or call "
                "router.report(trace_id=...) with response.raw['kalibr']['trace_id']"
            )
        for trace_id in trace_ids:
            self._router.report(
                success=success, score=score, failure_category=failure_category, reason=reason, trace_id=trace_id
            )
        return trace_ids

    # --- helpers --------------------------------------------------------------------------------------------
    def _dicts(self, messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
        return [message_to_dict(message) for message in messages]

    def _params(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        merged = {**self.call_params, **kwargs}
        return {key: value for key, value in merged.items() if key not in _LLAMAINDEX_ONLY and value is not None}

    def _evaluates(self) -> bool:
        """Whether the router judges this call on its own: not when it is one step of a larger LlamaIndex run,
        whose final output is judged instead."""
        return not self.run_outcomes or evaluates_each_call()

    def _response(self, completion: Completion) -> ChatResponse:
        self._record(completion)
        return chat_response(completion)

    def _final(self, completion: Completion | None) -> ChatResponse:
        # The stream's last item: the whole message with usage and the decision, and an empty delta.
        assert completion is not None, "a finished stream always has its completion"
        self._record(completion)
        return chat_response(completion, delta="")

    def _record(self, completion: Completion) -> None:
        if self.run_outcomes:
            record_decision(self._router, completion.trace_id)


def _tool_choice(requested: Any, tool_required: bool) -> Any:
    if isinstance(requested, str) and requested not in _TOOL_CHOICE_KEYWORDS:
        return {"type": "function", "function": {"name": requested}}
    if requested is not None:
        return requested
    return "required" if tool_required else "auto"


def _keep_first_tool_call(message: ChatMessage) -> None:
    seen_call = False
    kept = []
    for block in message.blocks:
        if isinstance(block, ToolCallBlock):
            if seen_call:
                continue
            seen_call = True
        kept.append(block)
    message.blocks = kept
