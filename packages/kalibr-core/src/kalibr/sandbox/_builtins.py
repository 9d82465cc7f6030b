"""Scenarios that ship with Kalibr: ``demo`` (drift), ``standard`` (framework test suites), ``param-curve``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kalibr._exceptions import UserError
from kalibr.sandbox._scenario import Scenario, load_scenario, scenario_from_data

__all__ = ["BUILTIN_SCENARIOS", "builtin_scenario", "resolve_scenario"]

_DEMO: dict[str, Any] = {
    "name": "demo",
    "models": {
        "swift-mini": {
            "price": {"input_per_mtok": 0.15, "output_per_mtok": 0.60},
            "latency_ms": 1,
            "latency_jitter_ms": 0.5,
            "output_tokens": 12,
        },
        "nova-medium": {
            "price": {"input_per_mtok": 1.0, "output_per_mtok": 4.0},
            "latency_ms": 2,
            "latency_jitter_ms": 0.5,
            "output_tokens": 14,
        },
        "atlas-large": {
            "price": {"input_per_mtok": 5.0, "output_per_mtok": 15.0},
            "latency_ms": 3,
            "latency_jitter_ms": 1,
            "output_tokens": 16,
        },
    },
    "goals": {
        "extract_company": {
            "task": "extraction",
            "accuracy": {"swift-mini": 0.55, "nova-medium": 0.78, "atlas-large": 0.95},
        },
        "solve_arithmetic": {
            "task": "arithmetic",
            "accuracy": {"swift-mini": 0.75, "nova-medium": 0.88, "atlas-large": 0.95},
        },
        "classify_sentiment": {
            "task": "classification",
            "accuracy": {"swift-mini": 0.80, "nova-medium": 0.90, "atlas-large": 0.93},
        },
    },
    # The best model for company extraction falls apart from the goal's 300th request on.
    "degradations": [{"goal": "extract_company", "model": "atlas-large", "from_request": 300, "accuracy": 0.15}],
}

_STANDARD: dict[str, Any] = {
    "name": "standard",
    "models": {
        name: {"price": price, "accuracy": 1.0}
        for name, price in (
            ("sandbox-mini", {"input_per_mtok": 0.1, "output_per_mtok": 0.4}),
            ("sandbox-base", {"input_per_mtok": 0.5, "output_per_mtok": 2.0}),
            ("sandbox-pro", {"input_per_mtok": 2.0, "output_per_mtok": 8.0}),
        )
    },
}

_PARAM_CURVE: dict[str, Any] = {
    "name": "param-curve",
    "models": {
        "tuned-model": {"price": {"input_per_mtok": 0.5, "output_per_mtok": 1.5}, "output_tokens": 8},
        "steady-model": {"price": {"input_per_mtok": 0.5, "output_per_mtok": 1.5}, "output_tokens": 8},
    },
    "goals": {
        "solve_arithmetic": {
            "task": "arithmetic",
            "accuracy": {
                # Best near temperature 0.5, worse when colder or hotter.
                "tuned-model": {"param": "temperature", "points": [[0.0, 0.55], [0.5, 0.92], [1.0, 0.60], [1.5, 0.3]]},
                "steady-model": 0.70,
            },
        },
    },
    "default_goal": "solve_arithmetic",
}

BUILTIN_SCENARIOS: dict[str, dict[str, Any]] = {"demo": _DEMO, "standard": _STANDARD, "param-curve": _PARAM_CURVE}


def builtin_scenario(name: str) -> Scenario:
    """A scenario that ships with Kalibr: ``"demo"``, ``"standard"`` or ``"param-curve"``."""
    if name not in BUILTIN_SCENARIOS:
        raise UserError(f"unknown builtin scenario {name!r}: use one of {', '.join(BUILTIN_SCENARIOS)} or a file path")
    return scenario_from_data(BUILTIN_SCENARIOS[name], source=f"builtin scenario {name!r}")


def resolve_scenario(value: Scenario | str | Path) -> Scenario:
    """A ``Scenario`` as is, a builtin scenario's name, or a path to a ``.json``/``.toml`` scenario file."""
    if isinstance(value, Scenario):
        return value
    if isinstance(value, str) and value in BUILTIN_SCENARIOS:
        return builtin_scenario(value)
    return load_scenario(value)
