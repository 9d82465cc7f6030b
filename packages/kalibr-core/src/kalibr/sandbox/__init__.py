"""The sandbox: a local OpenAI- and Anthropic-compatible server whose models are simulated from a scenario.

Each model has a price, a latency, error rates and, per goal, an accuracy (fixed, or a curve over a request
parameter such as temperature); degradations change a model from a given request of a goal on. Prompts that hold a
checkable task (arithmetic, company extraction, sentiment classification) get the right answer with probability
``accuracy`` and otherwise a plausible wrong one, so only a success check can tell them apart.

>>> from kalibr.sandbox import builtin_scenario, serve
>>> with serve(builtin_scenario("demo"), seed=0) as sb:  # doctest: +SKIP
...     client = openai.OpenAI(base_url=sb.openai_base_url, api_key="any")

A scenario file (JSON or TOML)::

    {"models": {"mini": {"price": {"input_per_mtok": 0.15, "output_per_mtok": 0.6}, "latency_ms": 5,
                         "error_rates": {"rate_limited": 0.02}}},
     "goals": {"extract_company": {"task": "extraction", "accuracy": {"mini": 0.7}}},
     "degradations": [{"goal": "extract_company", "model": "mini", "from_request": 300, "accuracy": 0.2}]}

The goal of a request is the ``X-Sandbox-Goal`` header, else the first goal whose ``match`` regex matches the last
user message, else the goal whose task kind the prompt shows, else ``default_goal``.
"""

from kalibr.sandbox._builtins import builtin_scenario, resolve_scenario
from kalibr.sandbox._scenario import (
    AccuracyCurve,
    Degradation,
    ErrorRates,
    GoalSpec,
    ModelSpec,
    Price,
    Scenario,
    load_scenario,
)
from kalibr.sandbox._server import SandboxServer, serve

__all__ = [
    "AccuracyCurve",
    "Degradation",
    "ErrorRates",
    "GoalSpec",
    "ModelSpec",
    "Price",
    "SandboxServer",
    "Scenario",
    "builtin_scenario",
    "load_scenario",
    "resolve_scenario",
    "serve",
]
