"""DSPy 3.4's engine interface over a ``kalibr.Router``: ``dspy.LM(engine=RouterEngine(router))``.

An engine makes one attempt per request; the outer ``dspy.LM`` owns caching, retries, history and callbacks.
The router does its own fallback between paths, so ``as_dspy`` turns DSPy's cache and retries off by default:
a cached answer would never reach the router, and a retry would hide a failure the router should learn from.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from dspy.clients.lm15_boundary import request_kwargs
from dspy.lm15 import Request, Response, response_from_openai_chat, response_to_events

from kalibr import Completion, Router, UserError
from kalibr_dspy._body import openai_body
from kalibr_dspy._tracker import arouted_completion, routed_completion

__all__ = ["AsyncRouterEngine", "RouterEngine"]


def _router_arguments(request: Request) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    # DSPy's own serializer turns the canonical request into the OpenAI chat shape the router speaks.
    body = request_kwargs(request, "chat")
    messages = body.pop("messages")
    return messages, body


class _Shared:
    """What the sync and async engines share: the router and the capabilities DSPy reads."""

    supports_function_calling = True
    supports_response_schema = True
    supports_reasoning = False

    def __init__(self, router: Router) -> None:
        if not isinstance(router, Router):
            raise UserError(f"the DSPy engine needs a kalibr.Router, got {router!r}")
        self.router = router

    def _response(self, request: Request, completion: Completion) -> Response:
        return response_from_openai_chat(openai_body(completion), model=request.model)

    def dump_state(self) -> dict[str, Any]:
        return {"goal": self.router.goal}

    @classmethod
    def load_state(cls, state: Mapping[str, Any]) -> Any:
        raise UserError(
            f"a saved DSPy LM routed by Kalibr (goal {state.get('goal')!r}) cannot rebuild its router from a file: "
            "load the program without its LM and configure router.as_dspy() again"
        )


class RouterEngine(_Shared):
    """The synchronous engine: one routed completion per request."""

    def complete(self, request: Request) -> Response:
        messages, params = _router_arguments(request)
        return self._response(request, routed_completion(self.router, messages, params))

    def stream(self, request: Request) -> Iterator[Any]:
        # DSPy streams field by field from whole events; one routed completion replayed as events suffices.
        return iter(response_to_events(self.complete(request)))

    def close(self) -> None:
        """Nothing to close: the router's HTTP clients are shared and closed with the process."""


class AsyncRouterEngine(_Shared):
    """The asynchronous engine, for ``await program.acall(...)``."""

    async def complete(self, request: Request) -> Response:
        messages, params = _router_arguments(request)
        return self._response(request, await arouted_completion(self.router, messages, params))

    async def stream(self, request: Request) -> AsyncIterator[Any]:
        for event in response_to_events(await self.complete(request)):
            yield event

    async def aclose(self) -> None:
        """Nothing to close, as for the sync engine."""
