"""LangChain adapter overhead: ``ChatKalibr.invoke`` next to invoking the chosen chat model directly.

Both paths are in-process LangChain chat models that answer at once, so the difference is what the adapter adds
per call: LangChain's own invoke machinery for the outer model, message conversion, the router's decide and
report (embedded engine, SQLite store, write-behind) and ``success_when``. Rounds alternate between the variants
so drift on a shared machine hits them alike.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from benchmarks._timing import overhead_section, time_in_turns


class _InstantModel(BaseChatModel):
    """A chat model that answers at once, with usage, like a provider with zero latency."""

    model_name: str = "instant"

    @property
    def _llm_type(self) -> str:
        return "instant"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any) -> Any:
        message = AIMessage(
            content="Paris is the capital of France.",
            usage_metadata={"input_tokens": 12, "output_tokens": 7, "total_tokens": 19},
            response_metadata={"model_name": self.model_name, "finish_reason": "stop"},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])


def run(quick: bool) -> str:
    from kalibr_langchain import ChatKalibr

    logging.getLogger("kalibr").setLevel(logging.ERROR)
    rounds, per_round = (5, 200) if quick else (20, 500)
    messages = [HumanMessage("What is the capital of France?")]
    direct = _InstantModel(model_name="instant-a")
    with tempfile.TemporaryDirectory() as scratch:
        store = f"sqlite:///{Path(scratch) / 'langchain-bench.db'}"
        llm = ChatKalibr(
            goal="bench_langchain",
            paths=[direct, _InstantModel(model_name="instant-b")],
            success_when=lambda text: "Paris" in text,
            store=store,
        )
        router = llm.router
        assert router is not None
        openai_messages = [{"role": "user", "content": "What is the capital of France?"}]
        variants = {
            "chosen chat model, invoked directly": lambda: direct.invoke(messages),
            "router.completion (core only, same paths)": lambda: router.completion(openai_messages),
            "ChatKalibr.invoke (adapter + core)": lambda: llm.invoke(messages),
        }
        samples = time_in_turns(variants, rounds, per_round)
        router.intelligence.flush()
    return _report(samples, rounds * per_round)


def _report(samples: dict[str, list[int]], calls: int) -> str:
    return overhead_section(
        "LangChain (`kalibr-langchain`)",
        "two LangChain-object paths answering instantly, embedded engine on SQLite "
        "(`benchmarks/adapters_langchain.py`)",
        "ChatKalibr",
        samples,
        calls,
    )


if __name__ == "__main__":
    print(run(quick=True))
