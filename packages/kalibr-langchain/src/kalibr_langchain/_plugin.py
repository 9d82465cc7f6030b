"""The Kalibr plugin: ``router.as_langchain()``, the ``langchain`` provider for LangChain-object paths, and the
failure categories of LangChain's own errors."""

from __future__ import annotations

import sys
from typing import Any

import kalibr

__all__ = ["kalibr_failure_category", "kalibr_register_adapters", "kalibr_register_providers"]


def _chat_model(router: kalibr.Router, /, **options: Any) -> Any:
    from kalibr_langchain.chat_model import ChatKalibr

    return ChatKalibr(router=router, **options)


def _provider() -> Any:
    from kalibr_langchain._provider import LangChainProvider

    return LangChainProvider()


@kalibr.hookimpl
def kalibr_register_adapters(register: Any) -> None:
    register("langchain", _chat_model)


@kalibr.hookimpl
def kalibr_register_providers(register: Any) -> None:
    register("langchain", _provider)


@kalibr.hookimpl
def kalibr_failure_category(error: BaseException) -> str | None:
    """A LangChain parser's or tool's error; None for any other (LangChain is never imported just to ask)."""
    exceptions, tools = sys.modules.get("langchain_core.exceptions"), sys.modules.get("langchain_core.tools")
    if exceptions is not None and isinstance(error, exceptions.OutputParserException):
        return "malformed_output"
    if tools is not None and isinstance(error, tools.ToolException):
        return "tool_error"
    return None
