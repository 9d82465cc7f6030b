"""Kalibr for LangChain: a router as a chat model (``ChatKalibr``), and outcomes from LangChain's callbacks.

``router.as_langchain()`` returns a ``ChatKalibr`` around an existing router; ``ChatKalibr(goal=..., paths=[...])``
builds one. Every LangChain run that calls it is followed (``router.report()`` after a chain, batch, stream or agent
lands on that run, and the router's ``success_when`` judges the run's final output); ``KalibrCallbackHandler``
judges chain runs with a judge of its own.
Names are imported on first use: the core loads this package's plugin on every process's first routed call, and
that must not pay for importing LangChain.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kalibr.plugins import lazy_exports

if TYPE_CHECKING:
    from kalibr_langchain._callbacks import KalibrCallbackHandler, failure_category_of
    from kalibr_langchain._reporting import trace_ids_in
    from kalibr_langchain.chat_model import ChatKalibr

__all__ = ["ChatKalibr", "KalibrCallbackHandler", "failure_category_of", "trace_ids_in"]

_HOMES = {
    "ChatKalibr": "kalibr_langchain.chat_model",
    "KalibrCallbackHandler": "kalibr_langchain._callbacks",
    "failure_category_of": "kalibr_langchain._callbacks",
    "trace_ids_in": "kalibr_langchain._reporting",
}

__getattr__ = lazy_exports(__name__, _HOMES)
