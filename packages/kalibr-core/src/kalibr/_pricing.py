"""Model prices, USD per million tokens, and the cost of a call.

The table is versioned by the date it was read from the vendors' price pages. A model that is not in it has
an unknown cost (None): never a guess, never a vendor default. A path's own ``price`` overrides the table.
"""

from __future__ import annotations

from kalibr._domain import Path, Price, Usage

__all__ = ["PRICE_TABLE", "PRICE_TABLE_VERSION", "cost_of", "price_for"]

PRICE_TABLE_VERSION = "2026-11-01"

PRICE_TABLE: dict[str, Price] = {
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4.1": Price(2.00, 8.00),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "gpt-5": Price(1.25, 10.00),
    "gpt-5-mini": Price(0.25, 2.00),
    "gpt-5-nano": Price(0.05, 0.40),
    "o3": Price(2.00, 8.00),
    "o4-mini": Price(1.10, 4.40),
    "claude-opus-4-1": Price(15.00, 75.00),
    "claude-sonnet-4-5": Price(3.00, 15.00),
    "claude-haiku-4-5": Price(1.00, 5.00),
    "claude-3-5-haiku-latest": Price(0.80, 4.00),
}


def price_for(path: Path) -> Price | None:
    """The path's own price, else the table's for its model (a dated snapshot like ``gpt-4o-2024-08-06`` too)."""
    if path.price is not None:
        return path.price
    model = path.model.split("/")[-1]
    if model in PRICE_TABLE:
        return PRICE_TABLE[model]
    # Dated snapshots: the longest table key that prefixes the model name and is followed by "-".
    candidates = [key for key in PRICE_TABLE if model.startswith(key + "-")]
    return PRICE_TABLE[max(candidates, key=len)] if candidates else None


def cost_of(path: Path, usage: Usage) -> float | None:
    """USD cost of a call on ``path``, or None when the price is unknown."""
    price = price_for(path)
    return None if price is None else price.cost(usage.input_tokens, usage.output_tokens)
