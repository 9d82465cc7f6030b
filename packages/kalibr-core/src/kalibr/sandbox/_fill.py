"""Fill a JSON schema from a prompt, the way an obliging model fills a forced tool call's arguments.

Numbers come from the numbers in the prompt in order (``magic_function(3)`` gives ``{"input": 3}``), strings from
quoted text (copied verbatim, CJK included) or the prompt's most relevant words, enums from a value the prompt
mentions. Required fields are always present; a schema with no properties gives ``{}``.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["fill_schema"]

_QUOTED = re.compile(
    r'"([^"\n]+)"|(?<!\w)\'([^\'\n]+)\'(?!\w)|“([^”\n]+)”|「([^」\n]+)」|『([^』\n]+)』|«([^»\n]+)»|`([^`\n]+)`'
)
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?")
_PROPER_NOUN = re.compile(r"\b[A-Z][\w'-]+(?:,?\s[A-Z][\w'-]+)*")
_SENTENCE_START = re.compile(r"(?:^|[.!?:]\s+)$")
_LEADING_FILLER = re.compile(
    r"^(?:please\s+|can you\s+|could you\s+|use the \w+ tool to\s+|using the tool,?\s+|what is\s+|what's\s+)+",
    re.IGNORECASE,
)
_ANSWER_FIELDS = frozenset(
    [
        "answer",
        "result",
        "output",
        "value",
        "response",
        "company",
        "company_name",
        "name",
        "label",
        "sentiment",
        "category",
        "text",
    ]
)
_FORMAT_EXAMPLES = {
    "date": "2024-01-01",
    "date-time": "2024-01-01T00:00:00Z",
    "time": "00:00:00",
    "email": "user@example.com",
    "uri": "https://example.com",
    "url": "https://example.com",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


class _Pools:
    """What the prompt offers, consumed in order as fields are filled."""

    def __init__(self, text: str, answer: str | None) -> None:
        self.text = text
        self.quoted = [next(group for group in match.groups() if group) for match in _QUOTED.finditer(text)]
        unquoted = _QUOTED.sub(" ", text)
        self.numbers = [float(number) for number in _NUMBER.findall(unquoted)]
        self.nouns = _proper_nouns(unquoted)
        self.answer = answer
        self._next_number = 0

    def take_number(self) -> float | None:
        if not self.numbers:
            return None
        number = self.numbers[min(self._next_number, len(self.numbers) - 1)]
        self._next_number += 1
        return number

    def take_answer(self) -> str | None:
        answer, self.answer = self.answer, None
        return answer

    def summary(self) -> str:
        words = _LEADING_FILLER.sub("", _QUOTED.sub(" ", self.text).strip()).split()
        return " ".join(words[:16]).rstrip("?.!,") or "example"


def fill_schema(schema: dict[str, Any], text: str, *, answer: str | None = None) -> Any:
    """A value satisfying ``schema`` built from ``text``; ``answer`` goes into the first answer-like field."""
    return _Filler(schema, _Pools(text, answer)).fill(schema, field_name="")


class _Filler:
    def __init__(self, root: dict[str, Any], pools: _Pools) -> None:
        self.root = root
        self.pools = pools
        self._depth = 0

    def fill(self, schema: dict[str, Any], *, field_name: str) -> Any:
        schema = self._resolve(schema)
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return self._enum(schema["enum"])
        for key in ("anyOf", "oneOf", "allOf"):
            if schema.get(key):
                return self.fill(_first_non_null(schema[key]), field_name=field_name)
        kind = _type_of(schema)
        if kind == "object":
            return self._object(schema)
        if kind == "array":
            return self._array(schema, field_name)
        if kind in ("integer", "number"):
            return self._number(schema, integer=kind == "integer", field_name=field_name)
        if kind == "boolean":
            return "false" not in self.pools.text.lower()
        if kind == "null":
            return None
        return self._string(schema, field_name)

    def _resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        ref = schema.get("$ref")
        if not isinstance(ref, str) or not ref.startswith("#/"):
            return schema
        target: Any = self.root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return target if isinstance(target, dict) else {}

    def _enum(self, values: list[Any]) -> Any:
        lowered = self.pools.text.lower()
        mentioned = [value for value in values if re.search(rf"\b{re.escape(str(value).lower())}\b", lowered)]
        return mentioned[0] if mentioned else values[0]

    def _object(self, schema: dict[str, Any]) -> dict[str, Any]:
        properties: dict[str, Any] = schema.get("properties") or {}
        if self._depth > 8:  # a recursive schema: stop at the required fields' minimum
            properties = {name: properties[name] for name in schema.get("required", []) if name in properties}
        self._depth += 1
        try:
            return {name: self.fill(sub or {}, field_name=name) for name, sub in properties.items()}
        finally:
            self._depth -= 1

    def _array(self, schema: dict[str, Any], field_name: str) -> list[Any]:
        items = self._resolve(schema.get("items") or {})
        count = max(1, int(schema.get("minItems", 1)))
        if _type_of(items) in ("integer", "number") and len(self.pools.numbers) > count:
            count = len(self.pools.numbers)
        if "maxItems" in schema:
            count = min(count, int(schema["maxItems"]))
        return [self.fill(items, field_name=field_name) for _ in range(count)]

    def _number(self, schema: dict[str, Any], *, integer: bool, field_name: str) -> float | int:
        value = self._answer_number(field_name)
        if value is None:
            value = self.pools.take_number()
        if value is None:
            value = 0.0
        if "minimum" in schema:
            value = max(value, float(schema["minimum"]))
        if "maximum" in schema:
            value = min(value, float(schema["maximum"]))
        return round(value) if integer else value

    def _answer_number(self, field_name: str) -> float | None:
        if field_name.lower() not in _ANSWER_FIELDS or self.pools.answer is None:
            return None
        try:
            value = float(self.pools.answer)
        except ValueError:
            return None
        self.pools.take_answer()
        return value

    def _string(self, schema: dict[str, Any], field_name: str) -> str:
        value = self._pick_string(schema, field_name)
        if "maxLength" in schema:
            value = value[: int(schema["maxLength"])]
        return value.ljust(int(schema.get("minLength", 0)), "x")

    def _pick_string(self, schema: dict[str, Any], field_name: str) -> str:
        fmt = schema.get("format")
        if isinstance(fmt, str) and fmt in _FORMAT_EXAMPLES:
            return _FORMAT_EXAMPLES[fmt]
        if field_name.lower() in _ANSWER_FIELDS and self.pools.answer is not None:
            return self.pools.take_answer() or ""
        if self.pools.quoted:
            return self.pools.quoted.pop(0)
        name_like = any(part in field_name.lower() for part in ("name", "city", "location", "place", "company"))
        if name_like and self.pools.nouns:
            return str(self.pools.nouns.pop(0))
        return self.pools.summary()


def _proper_nouns(text: str) -> list[str]:
    """Capitalised phrases, those inside a sentence first: "in San Francisco, CA" before a sentence's first word."""
    inside: list[str] = []
    initial: list[str] = []
    for match in _PROPER_NOUN.finditer(text):
        (initial if _SENTENCE_START.search(text[: match.start()]) else inside).append(match.group())
    return inside + initial


def _type_of(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((option for option in kind if option != "null"), "null")
    if isinstance(kind, str):
        return kind
    return "object" if "properties" in schema else "string"


def _first_non_null(options: list[Any]) -> dict[str, Any]:
    for option in options:
        if isinstance(option, dict) and option.get("type") != "null":
            return option
    return options[0] if options and isinstance(options[0], dict) else {}
