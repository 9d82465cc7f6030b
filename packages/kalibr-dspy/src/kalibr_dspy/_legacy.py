"""DSPy 3.0-3.3: a ``BaseLM`` subclass with ``forward``, the extension point before engines.

DSPy 3.4 still runs it (with a deprecation warning) but ``as_dspy`` uses the engine there; 3.5 removes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dspy.clients.base_lm import BaseLM

from kalibr import Completion, Router, UserError
from kalibr_dspy._body import openai_body
from kalibr_dspy._tracker import arouted_completion, install_tracker, routed_completion

__all__ = ["LegacyRouterLM"]


class _Fields(dict[str, Any]):
    """A dict whose keys read as attributes too, like the OpenAI SDK objects ``BaseLM`` expects."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as exc:
            raise AttributeError(name) from exc


def _fields(value: Any) -> Any:
    if isinstance(value, Mapping):
        return _Fields({key: _fields(item) for key, item in value.items()})
    if isinstance(value, list):
        return [_fields(item) for item in value]
    return value


class LegacyRouterLM(BaseLM):  # type: ignore[misc]  # dspy ships no type information
    """A DSPy LM routed by Kalibr, for DSPy versions without the engine interface."""

    def __init__(self, router: Router, **kwargs: Any) -> None:
        if not isinstance(router, Router):
            raise UserError(f"LegacyRouterLM needs a kalibr.Router, got {router!r}")
        kwargs.setdefault("cache", False)
        kwargs.setdefault("num_retries", 0)
        super().__init__(model=f"kalibr/{router.goal}", model_type="chat", **kwargs)
        install_tracker()
        self.router = router

    def _arguments(self, prompt: str | None, messages: list[dict[str, Any]] | None, kwargs: dict[str, Any]) -> Any:
        conversation = messages or [{"role": "user", "content": prompt or ""}]
        params = {**self.kwargs, **kwargs}
        for key in ("cache", "num_retries", "rollout_id"):
            params.pop(key, None)
        return conversation, {key: value for key, value in params.items() if value is not None}

    def _response(self, completion: Completion) -> Any:
        return _fields(openai_body(completion))

    def forward(self, prompt: str | None = None, messages: list[dict[str, Any]] | None = None, **kwargs: Any) -> Any:
        conversation, params = self._arguments(prompt, messages, kwargs)
        return self._response(routed_completion(self.router, conversation, params))

    async def aforward(
        self, prompt: str | None = None, messages: list[dict[str, Any]] | None = None, **kwargs: Any
    ) -> Any:
        conversation, params = self._arguments(prompt, messages, kwargs)
        return self._response(await arouted_completion(self.router, conversation, params))
