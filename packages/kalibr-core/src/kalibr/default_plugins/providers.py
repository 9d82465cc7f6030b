"""The built-in providers: OpenAI-compatible chat completions and Anthropic Messages."""

from __future__ import annotations

from typing import Any

from kalibr.hookspecs import hookimpl
from kalibr.providers.anthropic import AnthropicMessages
from kalibr.providers.openai import OpenAIChat


@hookimpl
def kalibr_register_providers(register: Any) -> None:
    register("openai", OpenAIChat)
    register("anthropic", AnthropicMessages)
