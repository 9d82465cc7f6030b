"""The ``kalibr`` entry point: ``router.as_llamaindex()`` and paths whose client is a LlamaIndex LLM."""

from __future__ import annotations

from typing import Any

import kalibr
from kalibr_llamaindex._llm import KalibrLLM
from kalibr_llamaindex._provider import LlamaIndexProvider
from kalibr_llamaindex._runs import install_run_outcomes

__all__ = ["as_llamaindex", "kalibr_register_adapters", "kalibr_register_providers"]


def as_llamaindex(router: kalibr.Router, /, *, run_outcomes: bool = True, **options: Any) -> KalibrLLM:
    """The router as a LlamaIndex LLM; ``options`` are ``KalibrLLM`` fields (``call_params``, ...).

    With ``run_outcomes`` (the default) the outcome of a whole query or agent run is reported for the
    decisions it made, through LlamaIndex's instrumentation; see ``RunOutcomeHandler``.
    """
    llm = KalibrLLM(router=router, run_outcomes=run_outcomes, **options)
    if run_outcomes:
        install_run_outcomes(lambda instance: isinstance(instance, KalibrLLM))
    return llm


@kalibr.hookimpl
def kalibr_register_adapters(register: Any) -> None:
    register("llamaindex", as_llamaindex)


@kalibr.hookimpl
def kalibr_register_providers(register: Any) -> None:
    register("llamaindex", LlamaIndexProvider)
