"""The Kalibr plugin: ``router.as_langchain()`` and the ``langchain`` provider for LangChain-object paths."""

from __future__ import annotations

from typing import Any

import kalibr

__all__ = ["kalibr_register_adapters", "kalibr_register_providers"]


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
