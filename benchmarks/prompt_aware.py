"""Prompt-aware routing: the replay with each query's prompt visible, its lift, and the feature extraction time.

Each table is replayed as it is and with its goals merged into one (a user who never split goals); `kalibr` and
`kalibr+prompts` run on the same shuffles and coin flips, so the lift is measured seed by seed.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

from rich.console import Console

from kalibr.context import SentenceEmbedding, auto_featurizer, embedding_available, lexical_features
from kalibr.replay import (
    ReplayOptions,
    ReplayResult,
    ReplayTable,
    load_prompts,
    load_table,
    merge_goals,
    prompt_lift,
    replay,
    with_features,
)

DATA = Path(os.environ.get("KALIBR_BENCH_DATA") or Path(__file__).resolve().parent.parent.parent / "shared" / "data")
TABLES = ("llmrouter_dc_9models", "routellm_2models")
COMMAND = "python -m benchmarks --only prompt_aware"
console = Console()


def run(quick: bool) -> str:
    seeds = 2 if quick else 10
    processes = min(2, os.cpu_count() or 1)
    features = "WordLlama embedding + lexical counts" if embedding_available() else "lexical counts only"
    parts = [
        "## Prompt-aware routing (replay)\n",
        f"Features: {features}, computed in process. `kalibr+prompts` is the default policy choosing, per prompt "
        "cluster, over the cluster's evidence plus the goal's evidence elsewhere pooled by how much clusters differ, "
        "each path's view corrected for the prompt by a ridge regression on a reduced feature vector "
        "(`kalibr.policies.contextual`); `kalibr` is the same policy without the prompt. Lift: points of share of "
        f"best fixed, seed by seed, mean ± spread over {seeds} seeds. TTR: requests of a goal until its broken "
        "best path gets under 10% of the traffic (median / p90 over goals and seeds).\n",
        "| table | goals | kalibr % | kalibr+prompts % | lift (points) | plain Thompson % | TTR kalibr | "
        "TTR +prompts |",
        "|---|---|---|---|---|---|---|---|",
    ]
    prompts_seen: list[str] = []
    for name in TABLES:
        table_path, prompts_path = DATA / f"{name}.csv", DATA / f"{name}_prompts.csv"
        if not table_path.is_file() or not prompts_path.is_file():
            parts.append(f"| {name} | skipped: not found under {DATA} | | | | | | |")
            continue
        prompts = load_prompts(prompts_path)
        prompts_seen.extend(list(prompts.values())[:300])
        with console.status(f"prompt features of {name}"):
            table = with_features(load_table(table_path), prompts, auto_featurizer())
        for label, variant in (("as is", table), ("merged", merge_goals(table))):
            parts.append(_row(name, label, variant, seeds, processes))
    parts += ["", _extraction_line(prompts_seen), "", f"Command: `{COMMAND}`; one table: `kalibr replay "
              "../shared/data/llmrouter_dc_9models.csv --prompts ../shared/data/llmrouter_dc_9models_prompts.csv "
              f"--merge-goals --seeds {seeds}`.\n"]  # fmt: skip
    return "\n".join(parts)


def _row(name: str, label: str, table: ReplayTable, seeds: int, processes: int) -> str:
    started = time.perf_counter()
    options = ReplayOptions(seeds=seeds, degrade=True, contenders=("kalibr", "thompson"), processes=processes)
    with console.status(f"replaying {name} {label} with prompts ({seeds} seeds)"):
        result = replay(table, options, table_name=name)
    share = {key: 100.0 * statistics.fmean(score.share) for key, score in result.scores.items()}
    lift = prompt_lift(result) or (0.0, 0.0)
    row = (
        f"| {name} | {label} ({len(table.goals)}) | {share['kalibr']:.2f} | {share['kalibr+prompts']:.2f} | "
        f"{lift[0]:+.2f} ± {lift[1]:.2f} | {share['thompson']:.2f} | {_ttr(result, 'kalibr')} | "
        f"{_ttr(result, 'kalibr+prompts')} |"
    )
    console.print(f"{row}  [{time.perf_counter() - started:.0f} s]")
    return row


def _ttr(result: ReplayResult, name: str) -> str:
    score = result.scores[name]
    return f"{score.ttr_quantile(50):.0f} / {score.ttr_quantile(90):.0f}" if score.ttr else "-"


def _extraction_line(prompts: list[str]) -> str:
    if not prompts:
        return "Feature extraction: no prompts found."
    lexical = _p50_ms(lexical_features, prompts)
    if not embedding_available():
        return f"Feature extraction p50 per prompt: lexical {lexical:.3f} ms (embedding not installed)."
    model = SentenceEmbedding()
    model.embed("warm up")
    embedding = _p50_ms(model.embed, prompts)
    return (
        f"Feature extraction p50 per prompt ({len(prompts)} benchmark prompts): lexical {lexical:.3f} ms, "
        f"embedding {embedding:.3f} ms."
    )


def _p50_ms(function: object, prompts: list[str]) -> float:
    assert callable(function)
    times = []
    for text in prompts:
        started = time.perf_counter()
        function(text)
        times.append(time.perf_counter() - started)
    return 1000.0 * statistics.median(times)
