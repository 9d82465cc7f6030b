"""Streams returned by ``Router.stream``/``astream``: chunks as they arrive, the whole answer afterwards.

A stream falls back to the next path when one fails before its first chunk; after that, a failure is
reported against the path and raised (what was shown cannot be taken back).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from kalibr._completion import Completion, StreamAccumulator, all_failed
from kalibr._domain import Decision
from kalibr._exceptions import ProviderError, RequestRejected
from kalibr._types import Message
from kalibr.providers.base import StreamChunk

if TYPE_CHECKING:
    from kalibr._router import Router

__all__ = ["AsyncCompletionStream", "CompletionStream"]


class CompletionStream:
    """Iterate for chunks; afterwards ``completion`` holds the whole answer and its decision."""

    def __init__(
        self, router: Router, messages: Sequence[Message], force_model: Any, params: dict[str, Any], evaluate: bool
    ) -> None:
        self._router = router
        self._messages = messages
        self._params = params
        self._evaluate = evaluate
        self.decision = router.decide(force_model, messages=messages)
        self.completion: Completion | None = None

    def __iter__(self) -> Iterator[StreamChunk]:
        router, attempts = self._router, []
        for decision in router._fallbacks(self.decision):
            request = router._request(decision, self._messages, self._params, stream=True)
            started = time.perf_counter()
            accumulator = StreamAccumulator()
            chunks = router._open_stream(request)
            try:
                first = next(chunks, None)
            except RequestRejected:
                raise
            except ProviderError as error:
                attempts.append(router._report_failure(decision, error, started))
                continue
            self.decision = decision
            try:
                for chunk in _prepend(first, chunks):
                    accumulator.add(chunk)
                    yield chunk
            except ProviderError as error:
                router._report_failure(decision, error, started)  # mid-stream: too late to fall back
                raise
            response = accumulator.response(decision.model)
            self.completion = router._finish(decision, response, started, attempts, evaluate=self._evaluate)
            return
        raise all_failed(router.goal, attempts)


class AsyncCompletionStream:
    """``async for`` chunks; afterwards ``completion`` holds the whole answer and its decision."""

    def __init__(
        self, router: Router, messages: Sequence[Message], force_model: Any, params: dict[str, Any], evaluate: bool
    ) -> None:
        self._router = router
        self._messages = messages
        self._params = params
        self._evaluate = evaluate
        self._force_model = force_model
        self.decision: Decision | None = None
        self.completion: Completion | None = None

    async def __aiter__(self) -> AsyncIterator[StreamChunk]:
        router, attempts = self._router, []
        self.decision = await router.adecide(self._force_model, messages=self._messages)
        for decision in router._fallbacks(self.decision):
            request = router._request(decision, self._messages, self._params, stream=True)
            started = time.perf_counter()
            accumulator = StreamAccumulator()
            chunks = router._aopen_stream(request)
            try:
                first = await anext(chunks, None)
            except RequestRejected:
                raise
            except ProviderError as error:
                attempts.append(router._report_failure(decision, error, started))
                continue
            self.decision = decision
            try:
                if first is not None:
                    accumulator.add(first)
                    yield first
                async for chunk in chunks:
                    accumulator.add(chunk)
                    yield chunk
            except ProviderError as error:
                router._report_failure(decision, error, started)
                raise
            response = accumulator.response(decision.model)
            self.completion = router._finish(decision, response, started, attempts, evaluate=self._evaluate)
            return
        raise all_failed(router.goal, attempts)


def _prepend(first: StreamChunk | None, rest: Iterator[StreamChunk]) -> Iterator[StreamChunk]:
    if first is not None:
        yield first
    yield from rest
