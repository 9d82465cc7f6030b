"""Over a few hundred examples, the router's traffic moves to the path the DSPy metric favours."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dspy
import pytest

import kalibr
from kalibr.sandbox import SandboxServer
from kalibr.sandbox.tasks import TaskGenerator

STRONG, WEAK = "atlas-large", "swift-mini"  # 95% and 75% right on arithmetic in the demo scenario


def _share_of_last_hundred(sandbox: SandboxServer, rewards_right: bool) -> dict[str, float]:
    tasks = TaskGenerator("arithmetic", seed=3)
    devset = [
        dspy.Example(question=t.prompt, task=t).with_inputs("question") for t in (tasks.next() for _ in range(300))
    ]

    def metric(example: Any, prediction: Any, trace: Any = None) -> bool:
        right = bool(example.task.check(str(prediction.answer)))
        return right if rewards_right else not right

    paths = [{"model": name, "base_url": sandbox.openai_base_url} for name in (WEAK, STRONG)]
    lm = kalibr.Router("dspy_learning", paths, store="memory:").as_dspy()
    with dspy.context(lm=lm):  # nothing else: Evaluate's scores reach the router by themselves
        dspy.Evaluate(devset=devset, metric=metric, num_threads=4)(dspy.Predict("question -> answer"))
    last = [entry["response_model"] for entry in lm.history[-100:]]
    return {model: last.count(model) / len(last) for model in (WEAK, STRONG)}


@pytest.mark.slow
@pytest.mark.parametrize(("rewards_right", "favoured"), [(True, STRONG), (False, WEAK)])
def test_traffic_follows_the_metric(
    start_sandbox: Callable[..., SandboxServer], rewards_right: bool, favoured: str
) -> None:
    shares = _share_of_last_hundred(start_sandbox("demo"), rewards_right)
    assert shares[favoured] >= 0.8, shares
