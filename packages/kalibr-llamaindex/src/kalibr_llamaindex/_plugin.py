"""The ``kalibr`` entry point: ``router.as_llamaindex()`` and paths whose client is a LlamaIndex LLM.

Loaded on every process's first routed call, so LlamaIndex is imported only when a factory runs.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import kalibr

if TYPE_CHECKING:
    from kalibr_llamaindex._llm import KalibrLLM
    from kalibr_llamaindex._provider import LlamaIndexProvider

__all__ = ["as_llamaindex", "kalibr_failure_category", "kalibr_register_adapters", "kalibr_register_providers"]


def as_llamaindex(router: kalibr.Router, /, *, run_outcomes: bool = True, **options: Any) -> KalibrLLM:
    """The router as a LlamaIndex LLM; ``options`` are ``KalibrLLM`` fields (``call_params``, ...).

    With ``run_outcomes`` (the default) the outcome of a whole query or agent run is reported for the
    decisions it made, through LlamaIndex's instrumentation; see ``RunOutcomeHandler``.
    """
    from kalibr_llamaindex._llm import KalibrLLM
    from kalibr_llamaindex._runs import install_run_outcomes

    llm = KalibrLLM(router=router, run_outcomes=run_outcomes, **options)
    if run_outcomes:
        install_run_outcomes()
    return llm


def _provider() -> LlamaIndexProvider:
    from kalibr_llamaindex._provider import LlamaIndexProvider

    return LlamaIndexProvider()


@kalibr.hookimpl
def kalibr_register_adapters(register: Any) -> None:
    register("llamaindex", as_llamaindex)


@kalibr.hookimpl
def kalibr_register_providers(register: Any) -> None:
    register("llamaindex", _provider)


@kalibr.hookimpl
def kalibr_failure_category(error: BaseException) -> str | None:
    """LlamaIndex's own failures: an output parser that could not parse, a workflow (agent) that timed out."""
    if "llama_index.core" not in sys.modules:
        return None  # LlamaIndex was never imported, so this is not one of its errors
    from llama_index.core.output_parsers.base import OutputParserException
    from llama_index.core.workflow import WorkflowTimeoutError

    if isinstance(error, OutputParserException):
        return "malformed_output"
    if isinstance(error, WorkflowTimeoutError):
        return "timeout"
    return None
