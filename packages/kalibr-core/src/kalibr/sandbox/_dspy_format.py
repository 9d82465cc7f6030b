"""Replies in DSPy's ChatAdapter format: ``[[ ## field ## ]]`` sections, each typed as the prompt asks.

DSPy ends its prompt with "Respond with the corresponding output fields, starting with the field `[[ ## a ## ]]`
(must be formatted as a valid Python int), then ..., and then ending with the marker for `[[ ## completed ## ]]`."
"""

from __future__ import annotations

import json
import re

__all__ = ["dspy_reply", "strip_markers"]

_MARKER = "Respond with the corresponding output fields"
_FIELD = re.compile(r"\[\[ ## (\w+) ## \]\]")
_TYPED_FIELD = re.compile(r"`\[\[ ## (\w+) ## \]\]`(?: \(must be formatted as a valid Python ([^)]*\)?)\))?")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_LITERAL_OPTION = re.compile(r"'([^']*)'|\"([^\"]*)\"")
_ANSWER_NAMES = ("answer", "result", "output", "label", "sentiment", "category", "company")


def strip_markers(text: str) -> str:
    """``text`` without DSPy's ``[[ ## field ## ]]`` markers."""
    return _FIELD.sub(" ", text)


def dspy_reply(prompt: str, answer: str | None) -> str | None:
    """The ChatAdapter-formatted reply, or ``None`` when ``prompt`` is not a DSPy ChatAdapter prompt."""
    marker = prompt.rfind(_MARKER)
    if marker < 0:
        return None
    fields = [(name, kind or "str") for name, kind in _TYPED_FIELD.findall(prompt[marker:]) if name != "completed"]
    if not fields:
        return None
    answer_field = _answer_field(fields)
    snippet = " ".join(strip_markers(prompt[:marker]).split()[:12]) or "the request"
    sections = []
    for name, kind in fields:
        value = _value(kind, answer if name == answer_field else None, prompt, snippet)
        sections.append(f"[[ ## {name} ## ]]\n{value}")
    return "\n\n".join([*sections, "[[ ## completed ## ]]"])


def _answer_field(fields: list[tuple[str, str]]) -> str:
    for name, _ in fields:
        if any(part in name.lower() for part in _ANSWER_NAMES):
            return name
    return fields[-1][0]


def _value(kind: str, answer: str | None, prompt: str, snippet: str) -> str:
    kind = kind.strip()
    if kind == "bool":
        return "True"
    if kind in ("int", "float"):
        numbers = _NUMBER.findall(answer or "") or _NUMBER.findall(strip_markers(prompt)) or ["0"]
        return str(int(float(numbers[0]))) if kind == "int" else numbers[0]
    if kind.startswith("Literal"):
        options = [single or double for single, double in _LITERAL_OPTION.findall(kind)]
        mentioned = [option for option in options if answer and option.lower() == answer.lower()]
        return str((mentioned or options or [answer or snippet])[0])
    if kind.startswith("list"):
        return json.dumps([answer or snippet], ensure_ascii=False)
    if kind.startswith("dict"):
        return "{}"
    return answer or f"Considering the input: {snippet}"
