"""Recognise a checkable task in a prompt, compute its right answer, and invent a plausible wrong one.

The sandbox never stores the prompt: it reads it here, answers, and forgets it.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

__all__ = ["COMPANIES", "LABELS", "SolvedTask", "sentiment_of", "solve"]

COMPANIES: tuple[str, ...] = (
    "Acme Robotics",
    "Globex Corporation",
    "Initech",
    "Umbrella Health",
    "Hooli",
    "Vandelay Industries",
    "Soylent Foods",
    "Cyberdyne Systems",
    "Wayne Logistics",
    "Tyrell Biotech",
    "Massive Dynamic",
    "Oscorp Energy",
    "Wonka Confectionery",
    "Aperture Labs",
    "Monarch Solutions",
    "Northwind Traders",
    "Contoso Pharma",
    "Fabrikam Motors",
    "Pied Piper",
    "Dunder Mifflin",
    "Blue Sun Mining",
    "Nakatomi Trading",
    "Virtucon Media",
    "Zorg Aerospace",
)
LABELS: tuple[str, ...] = ("positive", "negative", "neutral")

POSITIVE_WORDS = frozenset(
    [
        "love",
        "loved",
        "excellent",
        "great",
        "fantastic",
        "wonderful",
        "amazing",
        "perfect",
        "happy",
        "delighted",
        "superb",
        "flawless",
    ]
)
NEGATIVE_WORDS = frozenset(
    [
        "terrible",
        "awful",
        "broke",
        "broken",
        "worst",
        "disappointed",
        "refund",
        "hate",
        "useless",
        "poor",
        "waste",
        "faulty",
    ]
)

_NUMBER = r"-?\d+(?:\.\d+)?"
_ARITHMETIC = re.compile(rf"({_NUMBER})\s*([-+*/×x÷])\s*({_NUMBER})")
_COMPANY_SUFFIX = re.compile(
    r"\b((?:[A-Z][\w&'-]*\s){0,3}[A-Z][\w&'-]*\s(?:Inc|Corp|Corporation|Ltd|LLC|Labs|Systems|Group|GmbH|AG|SA)\b\.?)"
)
_WORD = re.compile(r"[a-z']+")


@dataclass(frozen=True, slots=True)
class SolvedTask:
    """A task found in a prompt: its kind, its right answer, and the wrong answers a weak model might give."""

    kind: str
    expected: str
    wrong_choices: tuple[str, ...]

    def wrong(self, rng: random.Random) -> str:
        """A plausible, well-formed wrong answer."""
        return rng.choice(self.wrong_choices)


def solve(text: str) -> SolvedTask | None:
    """The task in ``text`` with its answer, or ``None`` when the prompt is not a task the sandbox knows."""
    lowered = text.lower()
    if "extract" in lowered and any(word in lowered for word in ("company", "organization", "organisation")):
        return _solve_extraction(text)
    if "classify" in lowered or "sentiment" in lowered:
        return _solve_classification(lowered)
    return _solve_arithmetic(text)


def _solve_arithmetic(text: str) -> SolvedTask | None:
    match = _ARITHMETIC.search(text)
    if match is None:
        return None
    left, operator, right = float(match.group(1)), match.group(2), float(match.group(3))
    if operator in "+":
        result = left + right
    elif operator == "-":
        result = left - right
    elif operator in "*×x":
        result = left * right
    elif right == 0:
        return None
    else:
        result = left / right
    expected = format_number(result)
    wrong = tuple(format_number(result + delta) for delta in (-10, -2, -1, 1, 2, 10))
    return SolvedTask("arithmetic", expected, wrong)


def format_number(value: float) -> str:
    """``42.0`` -> ``"42"``, ``2.5`` -> ``"2.5"``, at most four decimals."""
    rounded = round(value, 4)
    return str(int(rounded)) if rounded == int(rounded) else f"{rounded:.4f}".rstrip("0")


def _solve_extraction(text: str) -> SolvedTask | None:
    found = [name for name in COMPANIES if name in text]
    if not found:
        found = [match.strip().rstrip(".") for match in _COMPANY_SUFFIX.findall(text)]
    if not found:
        return None
    expected = min(found, key=text.index)
    wrong = tuple(name for name in (*found, *COMPANIES) if name != expected)
    return SolvedTask("extraction", expected, tuple(dict.fromkeys(wrong)))


def _solve_classification(lowered: str) -> SolvedTask:
    expected = sentiment_of(lowered)
    return SolvedTask("classification", expected, tuple(label for label in LABELS if label != expected))


def sentiment_of(lowered: str) -> str:
    """Lexicon sentiment: more positive than negative words is positive, and so on."""
    words = _WORD.findall(lowered)
    score = sum(word in POSITIVE_WORDS for word in words) - sum(word in NEGATIVE_WORDS for word in words)
    return "positive" if score > 0 else "negative" if score < 0 else "neutral"
