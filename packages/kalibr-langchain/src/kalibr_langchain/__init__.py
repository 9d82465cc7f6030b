"""Kalibr for LangChain: a router as a chat model (``ChatKalibr``), and outcomes from LangChain's callbacks.

``router.as_langchain()`` returns a ``ChatKalibr`` around an existing router; ``ChatKalibr(goal=..., paths=[...])``
builds one. ``KalibrCallbackHandler`` judges whole chain runs with ``success_when``.
"""

from __future__ import annotations

from kalibr_langchain._callbacks import KalibrCallbackHandler, failure_category_of
from kalibr_langchain._reporting import trace_ids_in
from kalibr_langchain.chat_model import ChatKalibr

__all__ = ["ChatKalibr", "KalibrCallbackHandler", "failure_category_of", "trace_ids_in"]

for _name in __all__:
    _value = globals()[_name]
    if getattr(_value, "__module__", "").startswith("kalibr_langchain."):
        _value.__module__ = "kalibr_langchain"
