"""DSPy adapter: overhead per call next to DSPy's own LM on the same model, and learning from a DSPy metric.

Overhead: ``dspy.Predict`` on ``router.as_dspy()`` next to ``dspy.Predict`` on ``dspy.LM("openai/<model>")``
pointed straight at the same sandbox model over loopback HTTP; rounds alternate between the two.

Learning: ``dspy.Evaluate`` (4 threads) over arithmetic tasks against the sandbox's ``demo`` scenario; the adapter
feeds each example's metric score to the decisions behind it, with no wiring. Run once with a metric that rewards
right answers and once with one that rewards wrong answers: the router's traffic follows whichever the metric
favours, which shows it learns from the metric and not from a fixed preference.
"""

from __future__ import annotations

import collections
import logging
import os
import tempfile
from collections.abc import Callable
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "true")  # DSPy would fetch a price list from the internet
os.environ.setdefault("DSPY_CACHEDIR", tempfile.mkdtemp(prefix="kalibr-bench-dspy-"))

import dspy

import kalibr
from benchmarks._timing import markdown_table, percentiles_us, time_calls
from kalibr.sandbox import builtin_scenario, serve
from kalibr.sandbox.tasks import TaskGenerator

_STRONG, _WEAK = "atlas-large", "swift-mini"


def _overhead(quick: bool) -> str:
    rounds, per_round = (3, 30) if quick else (10, 100)
    with serve(builtin_scenario("standard"), seed=0) as sandbox:
        url = sandbox.openai_base_url
        direct = dspy.LM("openai/sandbox-mini", api_base=url, api_key="sandbox", cache=False, num_retries=0)
        router = kalibr.Router("bench_dspy", [{"model": "sandbox-mini", "base_url": url}], store="memory:")
        routed = router.as_dspy()
        predict = dspy.Predict("question -> answer")

        def on(lm: Any) -> Callable[[], object]:
            def call() -> object:
                with dspy.context(lm=lm):
                    return predict(question="What is 2 + 3?")

            return call

        variants = {"dspy.LM on the model, directly": on(direct), "router.as_dspy()": on(routed)}
        for call in variants.values():
            time_calls(call, 10)
        samples: dict[str, list[int]] = {name: [] for name in variants}
        for _ in range(rounds):
            for name, call in variants.items():
                samples[name] += time_calls(call, per_round)
    direct_p50 = percentiles_us(samples["dspy.LM on the model, directly"])[0]
    rows = []
    for name, values in samples.items():
        p50, p99 = percentiles_us(values)
        rows.append([name, f"{p50 / 1000:,.2f}", f"{p99 / 1000:,.2f}", f"{(p50 - direct_p50) / 1000:+,.2f}"])
    table = markdown_table(["variant (dspy.Predict, one call)", "p50 (ms)", "p99 (ms)", "p50 over direct (ms)"], rows)
    print(table)
    return (
        f"{rounds * per_round:,} predictions per variant over loopback HTTP to the sandbox's `sandbox-mini`.\n\n"
        f"{table}\n\nBoth go through DSPy's ChatAdapter and history; the routed LM adds the router's decide, the "
        "OpenAI-shape conversion of DSPy's canonical request and response, and the outcome bookkeeping. The "
        "model call itself differs: `dspy.LM` sends it through LiteLLM, the routed LM through the core's httpx "
        "provider, which is why the routed call can be the faster of the two.\n"
    )


def _learning_run(examples: int, rewards_right: bool) -> tuple[list[str], float]:
    tasks = TaskGenerator("arithmetic", seed=1)
    devset = [
        dspy.Example(question=task.prompt, task=task).with_inputs("question")
        for task in (tasks.next() for _ in range(examples))
    ]

    def metric(example: Any, prediction: Any, trace: Any = None) -> bool:
        right = bool(example.task.check(str(prediction.answer)))
        return right if rewards_right else not right

    with serve(builtin_scenario("demo"), seed=0) as sandbox:
        paths = [{"model": name, "base_url": sandbox.openai_base_url} for name in (_WEAK, _STRONG)]
        lm = kalibr.Router("bench_dspy_learning", paths, store="memory:").as_dspy()
        with dspy.context(lm=lm):
            evaluate = dspy.Evaluate(devset=devset, metric=metric, num_threads=4)
            result = evaluate(dspy.Predict("question -> answer"))
    return [entry["response_model"] for entry in lm.history], float(result.score)


def _learning(quick: bool) -> str:
    examples, block = (150, 50) if quick else (300, 100)
    rows = []
    for rewards_right, label in ((True, "right answers"), (False, "wrong answers")):
        models, score = _learning_run(examples, rewards_right)
        for start in range(0, len(models), block):
            counts = collections.Counter(models[start : start + block])
            share = counts[_STRONG] / max(1, sum(counts.values()))
            rows.append([label, f"{start + 1}-{start + block}", f"{share:.0%}", f"{1 - share:.0%}", f"{score:.1f}%"])
    table = markdown_table(
        ["metric rewards", "examples", f"`{_STRONG}` (95% right)", f"`{_WEAK}` (75% right)", "metric mean"], rows
    )
    print(table)
    return (
        f"{examples} arithmetic examples through `dspy.Evaluate(num_threads=4)`, sandbox "
        f"`demo` scenario, share of calls per path per block of {block}:\n\n{table}\n"
    )


def run(quick: bool) -> str:
    logging.getLogger("kalibr").setLevel(logging.ERROR)
    logging.getLogger("dspy").setLevel(logging.ERROR)
    return f"### DSPy (`kalibr-dspy`)\n\n{_overhead(quick)}\n#### Learning from a DSPy metric\n\n{_learning(quick)}"


if __name__ == "__main__":
    print(run(quick=True))
