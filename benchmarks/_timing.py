"""Small timing helpers shared by benchmark sections."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def percentiles_us(samples_ns: list[int]) -> tuple[float, float]:
    """p50 and p99 of nanosecond samples, in microseconds."""
    array = np.asarray(samples_ns, dtype=float) / 1e3
    return float(np.percentile(array, 50)), float(np.percentile(array, 99))


def time_calls(call: Callable[[], object], repeat: int) -> list[int]:
    """Wall time of each of ``repeat`` calls, in nanoseconds."""
    samples = []
    for _ in range(repeat):
        started = time.perf_counter_ns()
        call()
        samples.append(time.perf_counter_ns() - started)
    return samples


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def overhead_table(samples: dict[str, list[int]]) -> tuple[str, float]:
    """A table of p50/p99 per variant (the first is the direct call) and the last variant's p50 overhead in ms."""
    names = list(samples)
    direct_p50, _ = percentiles_us(samples[names[0]])
    rows = []
    for name in names:
        p50, p99 = percentiles_us(samples[name])
        rows.append([name, f"{p50:,.1f}", f"{p99:,.1f}", "-" if name == names[0] else f"{p50 - direct_p50:,.1f}"])
    overhead_ms = (percentiles_us(samples[names[-1]])[0] - direct_p50) / 1000
    return markdown_table(["variant", "p50 (us)", "p99 (us)", "p50 over direct (us)"], rows), overhead_ms


def time_in_turns(variants: dict[str, Callable[[], object]], rounds: int, per_round: int) -> dict[str, list[int]]:
    """Samples (ns) per variant, the variants taking turns in ``rounds`` so a slow spell hits them all alike."""
    for call in variants.values():  # warm up imports, plugin loading, the store's first writes
        time_calls(call, 50)
    samples: dict[str, list[int]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, call in variants.items():
            samples[name] += time_calls(call, per_round)
    return samples


def overhead_section(title: str, setup: str, adapter: str, samples: dict[str, list[int]], calls: int) -> str:
    """The Markdown section for one adapter: the table, and whether its overhead meets the 0.5 ms target."""
    table, overhead_ms = overhead_table(samples)
    print(table)
    verdict = "meets" if overhead_ms < ADAPTER_TARGET_MS else "misses"
    return (
        f"### {title}\n\n{calls:,} calls per variant, {setup}.\n\n{table}\n\n"
        f"Adapter overhead per call (p50, {adapter} minus the direct call): **{overhead_ms:.3f} ms**, which "
        f"{verdict} the {ADAPTER_TARGET_MS} ms target.\n"
    )


ADAPTER_TARGET_MS = 0.5
