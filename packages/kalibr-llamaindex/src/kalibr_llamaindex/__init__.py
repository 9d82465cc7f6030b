"""Kalibr for LlamaIndex: ``router.as_llamaindex()`` is a function-calling LLM routed by Kalibr.

>>> llm = router.as_llamaindex()  # doctest: +SKIP
>>> Settings.llm = llm  # doctest: +SKIP

Paths may also be LlamaIndex LLMs: ``kalibr.Path(model="local", provider="llamaindex", client=llm)``.
"""

from kalibr_llamaindex._llm import KalibrLLM
from kalibr_llamaindex._plugin import as_llamaindex
from kalibr_llamaindex._provider import LlamaIndexProvider
from kalibr_llamaindex._runs import RunOutcomeHandler

__all__ = ["KalibrLLM", "LlamaIndexProvider", "RunOutcomeHandler", "as_llamaindex"]
