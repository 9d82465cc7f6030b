"""LlamaIndex adapter overhead: ``KalibrLLM.chat`` next to calling the chosen LlamaIndex LLM directly.

Both paths are in-process LlamaIndex LLMs that answer at once, so the difference is what the adapter adds per
call: LlamaIndex's callback decorators and instrumentation span for the outer LLM, message conversion both ways,
the router's decide and report (embedded engine, SQLite store, write-behind), ``success_when`` and the run
tracker. Rounds alternate between the variants so drift on a shared machine hits them alike.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.llms import CustomLLM
from llama_index.core.llms.callbacks import llm_completion_callback

import kalibr
from benchmarks._timing import overhead_section, time_in_turns

_ANSWER = "Paris is the capital of France."


class _InstantLLM(CustomLLM):
    """A LlamaIndex LLM that answers at once, with usage, like a provider with zero latency."""

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(is_chat_model=False)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text=_ANSWER, raw={"usage": {"prompt_tokens": 12, "completion_tokens": 7}})

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        yield self.complete(prompt)


def run(quick: bool) -> str:
    logging.getLogger("kalibr").setLevel(logging.ERROR)
    rounds, per_round = (5, 200) if quick else (20, 500)
    messages = [ChatMessage(role="user", content="What is the capital of France?")]
    direct = _InstantLLM()
    paths = [
        kalibr.Path(model=name, provider="llamaindex", client=llm)
        for name, llm in (("a", direct), ("b", _InstantLLM()))
    ]
    with tempfile.TemporaryDirectory() as scratch:
        store = f"sqlite:///{Path(scratch) / 'llamaindex-bench.db'}"
        router = kalibr.Router("bench_llamaindex", paths, success_when=lambda text: "Paris" in text, store=store)
        llm = router.as_llamaindex()
        variants = {
            "chosen LLM, chat() directly": lambda: direct.chat(messages),
            "router.completion (core only, same paths)": lambda: router.completion("What is the capital of France?"),
            "KalibrLLM.chat (adapter + core)": lambda: llm.chat(messages),
        }
        samples = time_in_turns(variants, rounds, per_round)
        router.intelligence.flush()
    return _report(samples, rounds * per_round)


def _report(samples: dict[str, list[int]], calls: int) -> str:
    return overhead_section(
        "LlamaIndex (`kalibr-llamaindex`)",
        "two LlamaIndex-LLM paths answering instantly, embedded engine on SQLite (`benchmarks/adapters_llamaindex.py`)",
        "KalibrLLM",
        samples,
        calls,
    )


if __name__ == "__main__":
    print(run(quick=True))
