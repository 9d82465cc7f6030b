"""The ``kalibr`` entry point: ``router.as_dspy()``.

Loaded on every process's first routed call, so DSPy is imported only when the factory runs.
"""

from __future__ import annotations

import sys
from typing import Any

import kalibr

__all__ = ["as_dspy", "engine_interface_available", "kalibr_failure_category", "kalibr_register_adapters"]


def engine_interface_available() -> bool:
    """True on DSPy 3.4 and later, which take custom engines (``dspy.LM(engine=...)``)."""
    try:
        import dspy.clients.engines.base
        import dspy.lm15  # noqa: F401
    except ImportError:
        return False
    return True


def as_dspy(router: kalibr.Router, /, **lm_options: Any) -> Any:
    """The router as a DSPy LM for ``dspy.configure(lm=...)`` or ``dspy.context(lm=...)``.

    ``lm_options`` go to ``dspy.LM`` (``temperature``, ``max_tokens``, ``callbacks``, ...). DSPy's response cache
    and retries are off unless you pass ``cache=True`` or ``num_retries=``: a cached answer never reaches the
    router, and a retry hides a failure the router should learn from (it falls back between paths itself).

    It also adds a ``kalibr_dspy.DecisionTracker`` to DSPy's callbacks (once per process), which ties each
    prediction to its decisions: ``dspy.Evaluate`` and optimizers' metric scores then reach the router, and
    ``router.report()`` after a module call reports that call's decisions.
    """

    import dspy

    from kalibr_dspy._tracker import install_tracker

    install_tracker()
    lm_options.setdefault("cache", False)
    lm_options.setdefault("num_retries", 0)
    if not engine_interface_available():
        from kalibr_dspy._legacy import LegacyRouterLM

        return LegacyRouterLM(router, **lm_options)
    from kalibr_dspy._engine import AsyncRouterEngine, RouterEngine

    return dspy.LM(
        f"kalibr/{router.goal}", engine=RouterEngine(router), async_engine=AsyncRouterEngine(router), **lm_options
    )


@kalibr.hookimpl
def kalibr_register_adapters(register: Any) -> None:
    register("dspy", as_dspy)


@kalibr.hookimpl
def kalibr_failure_category(error: BaseException) -> str | None:
    """DSPy's own failures: an adapter that could not parse the model's answer into the signature's fields."""
    if "dspy" not in sys.modules:
        return None  # DSPy was never imported, so this is not one of its errors
    from dspy.utils.exceptions import AdapterParseError

    return "malformed_output" if isinstance(error, AdapterParseError) else None
