"""Framework adapters' overhead per call, each next to calling the chosen model directly in the same run."""

from __future__ import annotations

import importlib

SECTIONS = ("adapters_langchain", "adapters_llamaindex", "adapters_dspy")


def run(quick: bool) -> str:
    parts = ["## Framework adapters: overhead per call\n"]
    for name in SECTIONS:
        try:
            module = importlib.import_module(f"benchmarks.{name}")
        except ImportError as error:
            parts.append(f"`{name}`: not run ({error}).\n")
            continue
        parts.append(module.run(quick=quick))
    return "\n".join(parts)
