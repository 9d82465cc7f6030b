"""Checkable tasks for the sandbox: prompts whose right answer is known, and a check for any answer.

>>> gen = TaskGenerator(kind="arithmetic", seed=0)
>>> task = gen.next()
>>> task.check(task.expected)
True
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias, get_args

from kalibr._exceptions import UserError
from kalibr.sandbox._answers import COMPANIES, LABELS, format_number

__all__ = ["Task", "TaskGenerator", "TaskKind"]

TaskKind: TypeAlias = Literal["arithmetic", "extraction", "classification"]
_KINDS: tuple[str, ...] = get_args(TaskKind)

_EXTRACTION_TEXTS = (
    "{company} reported quarterly revenue of ${n} million, beating analyst estimates.",
    "Shares of {company} rose {n}% after the firm unveiled a new product line.",
    "In a press release on Monday, {company} said it will open {n} new offices next year.",
    "Analysts expect {company} to hire about {n} engineers before the end of the year.",
    "The regulator fined {company} ${n} million over late safety filings.",
    "After {n} years of research, {company} finally shipped its first commercial device.",
)
_PRODUCTS = ("blender", "headphones", "backpack", "desk lamp", "kettle", "phone case", "keyboard", "tent")
_REVIEWS = {
    "positive": (
        "I love this {product}, it works great and the battery lasts for days.",
        "Excellent {product}: sturdy, quiet and the setup was perfect.",
        "Fantastic value. The {product} exceeded my expectations and I am delighted.",
    ),
    "negative": (
        "The {product} broke after two days and support ignored me. Terrible.",
        "Awful quality, the {product} is useless and I asked for a refund.",
        "Worst purchase this year: the {product} arrived faulty and I am disappointed.",
    ),
    "neutral": (
        "The {product} arrived on Tuesday. It does what the description says.",
        "It is a {product} in grey. The box contained a manual and a cable.",
        "I used the {product} twice this week; it is about the size I expected.",
    ),
}
_FIRST_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_NON_WORD = re.compile(r"[^\w]+")


@dataclass(frozen=True)
class Task:
    """One prompt with a known answer. ``check(text)`` says whether a model's reply is right."""

    kind: TaskKind
    messages: list[dict[str, Any]]
    expected: str
    _checker: Callable[[str, str], bool] = field(repr=False, compare=False)

    @property
    def prompt(self) -> str:
        """The user message's text."""
        return str(self.messages[-1]["content"])

    def check(self, text: str | None) -> bool:
        """Whether ``text`` (a model's reply) contains the right answer."""
        return bool(text) and self._checker(self.expected, str(text))


class TaskGenerator:
    """Seeded generator of checkable tasks of one kind: ``TaskGenerator(kind="extraction", seed=0).next()``."""

    def __init__(self, kind: TaskKind = "arithmetic", *, seed: int = 0) -> None:
        if kind not in _KINDS:
            raise UserError(f"unknown task kind {kind!r}: use one of {', '.join(_KINDS)}")
        self.kind: TaskKind = kind
        self._rng = random.Random(f"{kind}:{seed}")

    def next(self) -> Task:
        """The next task; the same seed gives the same sequence."""
        if self.kind == "arithmetic":
            return self._arithmetic()
        if self.kind == "extraction":
            return self._extraction()
        return self._classification()

    def __iter__(self) -> TaskGenerator:
        return self

    def __next__(self) -> Task:
        return self.next()

    def _arithmetic(self) -> Task:
        left, right = self._rng.randint(2, 99), self._rng.randint(2, 99)
        operator = self._rng.choice("+-*")
        result = left + right if operator == "+" else left - right if operator == "-" else left * right
        prompt = f"What is {left} {operator} {right}? Answer with the number only."
        return Task("arithmetic", _user(prompt), format_number(result), _same_number)

    def _extraction(self) -> Task:
        company = self._rng.choice(COMPANIES)
        text = self._rng.choice(_EXTRACTION_TEXTS).format(company=company, n=self._rng.randint(3, 900))
        prompt = f"Extract the company name from the text below. Reply with the name only.\n\nText: {text}"
        return Task("extraction", _user(prompt), company, _contains_name)

    def _classification(self) -> Task:
        label = self._rng.choice(LABELS)
        review = self._rng.choice(_REVIEWS[label]).format(product=self._rng.choice(_PRODUCTS))
        prompt = (
            "Classify the sentiment of this review as positive, negative, or neutral. "
            f"Reply with one word.\n\nReview: {review}"
        )
        return Task("classification", _user(prompt), label, _first_label)


def _user(prompt: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": prompt}]


def _same_number(expected: str, text: str) -> bool:
    match = _FIRST_NUMBER.search(text)
    return match is not None and float(match.group().replace(",", "")) == float(expected)


def _normalise(text: str) -> str:
    return " ".join(_NON_WORD.sub(" ", text.lower()).split())


def _contains_name(expected: str, text: str) -> bool:
    return f" {_normalise(expected)} " in f" {_normalise(text)} "


def _first_label(expected: str, text: str) -> bool:
    words = _normalise(text).split()
    first = next((word for word in words if word in LABELS), None)
    return first == expected
