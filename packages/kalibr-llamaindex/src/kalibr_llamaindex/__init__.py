"""Kalibr for LlamaIndex: ``router.as_llamaindex()`` is a function-calling LLM routed by Kalibr.

>>> llm = router.as_llamaindex()  # doctest: +SKIP
>>> Settings.llm = llm  # doctest: +SKIP

Paths may also be LlamaIndex LLMs: ``kalibr.Path(model="local", provider="llamaindex", client=llm)``.
Names are imported on first use: the core loads this package's plugin on every process's first routed call,
and that must not pay for importing LlamaIndex.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kalibr.plugins import lazy_exports

if TYPE_CHECKING:
    from kalibr_llamaindex._llm import KalibrLLM
    from kalibr_llamaindex._plugin import as_llamaindex
    from kalibr_llamaindex._provider import LlamaIndexProvider
    from kalibr_llamaindex._runs import RunOutcomeHandler

__all__ = ["KalibrLLM", "LlamaIndexProvider", "RunOutcomeHandler", "as_llamaindex"]

_HOMES = {
    "KalibrLLM": "kalibr_llamaindex._llm",
    "LlamaIndexProvider": "kalibr_llamaindex._provider",
    "RunOutcomeHandler": "kalibr_llamaindex._runs",
    "as_llamaindex": "kalibr_llamaindex._plugin",
}

__getattr__ = lazy_exports(__name__, _HOMES)
