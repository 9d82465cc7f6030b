"""Decision overhead in process: Router.decide() and Router.report() with the SQLite store, next to MABWiser.

Each report includes persistence: the engine queues it and a background thread writes batches to SQLite, so the
figure is what the caller pays. A clean shutdown flushes everything; a hard kill loses at most the last flush
interval (50 ms) of queued writes.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks._timing import markdown_table, percentiles_us, time_calls

PATH_COUNTS = (2, 10, 50)
HTTP_DECIDE_MS = (10.0, 50.0)  # one round trip to a hosted decide endpoint (peers.md)


def run(quick: bool) -> str:
    logging.getLogger("kalibr").setLevel(logging.ERROR)
    repeat = 2_000 if quick else 20_000
    rows: list[list[str]] = []
    table = Table(title=f"decide/report overhead, {repeat:,} calls each (us)")
    for column in (
        "paths",
        "kalibr decide p50",
        "p99",
        "kalibr report p50",
        "p99",
        "mabwiser predict p50",
        "p99",
        "mabwiser partial_fit p50",
        "p99",
        "prompt-aware beyond features: no prompt signal",
        "prompts with signal",
        "vs a 10-50 ms HTTP decide",
    ):
        table.add_column(column, justify="right")
    with tempfile.TemporaryDirectory() as scratch:
        measured = _measure(repeat, Path(scratch) / "overhead.db")
    writes: list[float] = []
    contended: list[float] = []
    embedded: list[float] = []
    embedding_features: list[float] = []
    for count in PATH_COUNTS:
        decide, report, predict, fit = (percentiles_us(samples) for samples in measured[count][:4])
        writes.append(percentiles_us(measured[count][4])[0])
        beyond = percentiles_us(measured[count][5])[0] - percentiles_us(measured[count][6])[0]
        beyond_signal = percentiles_us(measured[count][7])[0] - percentiles_us(measured[count][8])[0]
        contended.append(percentiles_us(measured[count][9])[0] - percentiles_us(measured[count][8])[0])
        if measured[count][10]:
            embedded.append(percentiles_us(measured[count][11])[0] - percentiles_us(measured[count][10])[0])
            embedding_features.append(percentiles_us(measured[count][10])[0])
        speedup = f"{HTTP_DECIDE_MS[0] * 1000 / decide[0]:,.0f}-{HTTP_DECIDE_MS[1] * 1000 / decide[0]:,.0f}x"
        cells = [
            str(count),
            *_fmt(decide),
            *_fmt(report),
            *_fmt(predict),
            *_fmt(fit),
            f"{beyond:.1f}",
            f"{beyond_signal:.1f}",
            speedup,
        ]
        table.add_row(*cells)
        rows.append(cells)
    Console().print(table)
    header = [
        "paths",
        "decide p50",
        "decide p99",
        "report p50",
        "report p99",
        "MABWiser predict p50",
        "p99",
        "MABWiser partial_fit p50",
        "p99",
        "prompt-aware decide p50 beyond its features: no prompt signal",
        "prompts with signal",
        "faster than one HTTP decide",
    ]
    return "\n".join(
        [
            "## Decision overhead in process\n",
            f"`nox -s bench` (section `overhead`): `Router.decide()` and `Router.report()` on the embedded engine with "
            f"the SQLite store (a temporary file, WAL), {repeat:,} calls per row after a warm-up, beside MABWiser's "
            "Thompson sampling `predict` and `partial_fit` on the same number of arms, taking turns in "
            f"{ROUNDS} rounds of the same run. Times in "
            "microseconds. Targets: decide p50 <= 50 us, p99 <= 250 us; report likewise. The prompt-aware columns are "
            "`decide(messages=...)` on a router with `context=lexical_features`, minus the p50 of the extraction "
            "alone on the same prompts (target: at most 100 us). *No prompt signal*: one prompt, repeated, so the "
            "goal's prompts say nothing about its outcomes (pooling is full) and the router decides as without "
            "prompts. *Prompts with signal*: three kinds of prompt (arithmetic, code, multiple choice) in turn, "
            f"after a warm-up of {SIGNAL_WARM_UP:,} outcomes in which each path succeeds mostly on one kind, so "
            "each prompt is decided on its cluster's view with the per-prompt correction (the run fails unless the "
            "goal's pooling is finite). As in the decide column, the timed decisions get no outcome, so the goal's "
            "arms stay as the warm-up left them, and the writer's flush comes after the timed calls: the decide "
            f"column's batch is over within the writer's 50 ms interval, so the prompt-aware calls are timed in "
            f"batches of {FLUSH_BATCH}, each followed by a flush.\n",
            markdown_table(header, rows),
            "\nThe writer's share of persistence is paid off the caller's path: after each timed batch its flush "
            "of the batch's decisions and outcomes took, per call, "
            + ", ".join(f"{w:.1f} us at {c} paths" for c, w in zip(PATH_COUNTS, writes, strict=True))
            + " (median over the rounds). It runs on a background thread, so in a busy process it competes with "
            "decide for the interpreter lock: timed in one batch of "
            f"{repeat // ROUNDS:,} calls, during which the writer flushes the batch's decisions, a prompt-aware "
            "decide with signal took, beyond its features, "
            + ", ".join(f"{c:.1f} us at {n} paths" for n, c in zip(PATH_COUNTS, contended, strict=True))
            + ".\n"
            + _embedded_sentence(embedded, embedding_features)
            + "\nA report is queued in memory and written to SQLite by a background thread every 50 ms in one "
            "transaction per batch; `close()` and interpreter exit flush the queue, so a clean shutdown loses "
            "nothing, and a `kill -9` can lose at most the outcomes of the last 50 ms. A failed write keeps the "
            "batch queued and retries it.\n",
        ]
    )


def _embedded_sentence(beyond: list[float], features: list[float]) -> str:
    """The prompts-with-signal decide with ``context="auto"``, or why it is missing."""
    if not beyond:
        return "\nThe decide with the sentence embedding was not measured: the `context` extra is not installed.\n"
    from kalibr.context import auto_featurizer, lexical_features
    from kalibr.policies.contextual import regression_vector

    dims = regression_vector(auto_featurizer()(SIGNAL_PROMPTS[0])).size
    return (
        '\nWith `context="auto"` (the WordLlama embedding and the counts, so the per-prompt correction regresses on '
        f"{dims} values, not {lexical_features('').size}), the decide with signal, timed as in the table, took "
        "beyond its features "
        + ", ".join(f"{b:.1f} us at {n} paths" for n, b in zip(PATH_COUNTS, beyond, strict=True))
        + f"; the features themselves took {features[0]:.1f} us (p50).\n"
    )


def _fmt(pair: tuple[float, float]) -> list[str]:
    return [f"{pair[0]:.1f}", f"{pair[1]:.1f}"]


ROUNDS = 10
FLUSH_BATCH = 200
"""Prompt-aware decides per timed batch: about as long as the decide column's batch, under the writer's 50 ms."""
SIGNAL_WARM_UP = 1_500
SIGNAL_PROMPTS = (
    "What is 17 * 23? Answer with the number only.",
    "```python\ndef add(a, b):\n    return a - b\n```\nFix this function.",
    "Which river flows through Paris?\nA. Seine\nB. Thames\nC. Danube\nD. Rhine",
)


def _measure(repeat: int, db: Path) -> dict[int, list[list[int]]]:
    """Per path count: decide, report, MABWiser predict, partial_fit, writer, prompt-aware decide and feature
    extraction samples (ns), then the same two for prompts with signal, then prompts with signal timed in one
    batch while the writer flushes, then (empty without the ``context`` extra) features and decide for prompts
    with signal with ``auto_featurizer``.

    The contenders take turns in ``ROUNDS`` rounds, so a slow spell of a shared machine hits them all alike.
    """
    from kalibr import Router
    from kalibr._intelligence_registry import reset_shared
    from kalibr.context import auto_featurizer, embedding_available, lexical_features, prompt_text

    def featurize(messages: Any) -> Any:
        return lexical_features(prompt_text(messages))

    embed = auto_featurizer() if embedding_available() else None

    messages = [{"role": "user", "content": "What is 17 * 23? Answer with the number only."}]

    routers = {count: Router(f"bench_overhead_{count}", [f"model-{i}" for i in range(count)], store=f"sqlite:///{db}")
               for count in PATH_COUNTS}  # fmt: skip
    prompted = {count: Router(f"bench_overhead_prompt_{count}", [f"model-{i}" for i in range(count)],
                              store=f"sqlite:///{db}", context=featurize)
                for count in PATH_COUNTS}  # fmt: skip
    signalled = {count: Router(f"bench_overhead_signal_{count}", [f"model-{i}" for i in range(count)],
                               store=f"sqlite:///{db}", context=featurize)
                 for count in PATH_COUNTS}  # fmt: skip
    kinds = [[{"role": "user", "content": prompt}] for prompt in SIGNAL_PROMPTS]
    bandits = {count: _bandit(count) for count in PATH_COUNTS}
    for router in (*routers.values(), *prompted.values()):
        for index in range(1_000):  # warm up caches and give every arm evidence
            router.report(success=index % 3 != 0, trace_id=router.decide(messages=messages).trace_id)
    embedded = {count: Router(f"bench_overhead_embedded_{count}", [f"model-{i}" for i in range(count)],
                              store=f"sqlite:///{db}", context=embed)
                for count in PATH_COUNTS} if embed is not None else {}  # fmt: skip
    coins = random.Random(0)
    for router in (*signalled.values(), *embedded.values()):
        for index in range(SIGNAL_WARM_UP):  # path i mostly succeeds on kind i % 3 and mostly fails on the others
            kind = index % len(kinds)
            decision = router.decide(messages=kinds[kind])
            rate = 0.9 if router.paths.index(decision.path) % len(kinds) == kind else 0.2
            router.report(success=coins.random() < rate, trace_id=decision.trace_id)
        pooling = router.intelligence._clusters[router.goal].pooling
        if not math.isfinite(pooling):
            raise RuntimeError(
                f"{router.goal}: the warm-up left pooling full; the column would time the no-signal path"
            )
    samples: dict[int, list[list[int]]] = {count: [[] for _ in range(12)] for count in PATH_COUNTS}
    per_round = max(1, repeat // ROUNDS)
    for _ in range(ROUNDS):
        for count, router in routers.items():
            decide, report, predict, fit, write, for_prompt, features, for_signal, signal_features, contended = samples[
                count
            ][:10]
            decisions: list[Any] = []
            decide += time_calls(lambda: decisions.append(router.decide()), per_round)  # noqa: B023
            pending = iter(decisions)
            report += time_calls(lambda: router.report(success=True, trace_id=next(pending).trace_id), per_round)  # noqa: B023
            # The deferred half of a report: the writer's batch, per outcome (and per decision recorded).
            write.append(time_calls(router.intelligence.flush, 1)[0] // per_round)
            bandit = bandits[count]
            predict += time_calls(bandit.predict, per_round)
            fit += time_calls(lambda: bandit.partial_fit(["model-0"], [1]), per_round)  # noqa: B023
            features += time_calls(lambda: featurize(messages), per_round)
            for_prompt += _between_flushes(prompted[count], lambda: messages, per_round)
            turns = itertools.cycle(kinds)
            signal_features += time_calls(lambda: featurize(next(turns)), per_round)  # noqa: B023
            for_signal += _between_flushes(signalled[count], lambda: next(turns), per_round)  # noqa: B023
            contended += time_calls(lambda: signalled[count].decide(messages=next(turns)), per_round)  # noqa: B023
            signalled[count].intelligence.flush()
            if embed is not None:
                embedded_features, for_embedded = samples[count][10:]
                embedded_features += time_calls(lambda: embed(next(turns)), per_round)  # noqa: B023
                for_embedded += _between_flushes(embedded[count], lambda: next(turns), per_round)  # noqa: B023
    reset_shared()
    return samples


def _between_flushes(router: Any, messages: Any, repeat: int) -> list[int]:
    """``repeat`` prompt-aware decides timed in batches of ``FLUSH_BATCH``, the writer's flush between them (not
    timed), as the decide column's batch is followed by one: the decide's own cost, its persistence paid apart."""
    samples: list[int] = []
    while len(samples) < repeat:
        samples += time_calls(lambda: router.decide(messages=messages()), min(FLUSH_BATCH, repeat - len(samples)))
        router.intelligence.flush()
    return samples


def _bandit(count: int) -> Any:
    from mabwiser.mab import MAB, LearningPolicy

    arms = [f"model-{i}" for i in range(count)]
    bandit = MAB(arms, LearningPolicy.ThompsonSampling(), seed=0)
    bandit.fit(decisions=[arms[i % count] for i in range(1_000)], rewards=[int(i % 3 != 0) for i in range(1_000)])
    return bandit
