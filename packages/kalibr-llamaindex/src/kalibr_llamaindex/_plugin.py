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
    """LlamaIndex's own failures: an output parser that could not parse, structured output whose tool call did not
    validate or never came (``FunctionCallingProgram`` raises a plain ``ValueError`` saying so), a workflow (agent)
    that timed out."""
    if "llama_index.core" not in sys.modules:
        return None  # LlamaIndex was never imported, so this is not one of its errors
    from llama_index.core.output_parsers.base import OutputParserException
    from llama_index.core.workflow import WorkflowTimeoutError

    if isinstance(error, OutputParserException):
        return "malformed_output"
    if isinstance(error, WorkflowTimeoutError):
        return "timeout"
    if type(error) is ValueError:
        message = str(error)
        if message.startswith(_NOT_VALIDATED):
            return "validation_failed"
        if message.startswith(_NO_TOOL_CALL):
            return "malformed_output"
    return None


# How llama_index.core.program.function_program words a structured output that failed (it has no error type).
_NOT_VALIDATED = "Structured output extraction failed: the LLM's tool call could not be parsed"
_NO_TOOL_CALL = "LLM did not return any tool calls for structured output"
