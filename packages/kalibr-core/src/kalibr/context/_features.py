"""Lexical prompt features and the featurizer that combines them with the sentence embedding."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from kalibr.context._embedding import SentenceEmbedding, embedding_available

__all__ = ["Featurizer", "auto_featurizer", "lexical_features", "prompt_text"]

Featurizer = Callable[[Sequence[Mapping[str, Any]] | str], np.ndarray]
"""Messages (OpenAI chat format, or a prompt string) -> a 1-D float vector; the same length on every call."""

_CODE = re.compile(r"```|\bdef |\bclass |\breturn\b|\bimport |[{};]\s*$|=>|\bfunction\b", re.MULTILINE)
_MATHS = re.compile(r"[=+\-*/^<>]|\\frac|\\sqrt|\$")
_CHOICES = re.compile(r"(?:^|\n)\s*\(?[A-Ja-j][.)]\s", re.MULTILINE)
_DIGIT = re.compile(r"\d")
_WORD = re.compile(r"[A-Za-z]+")
LEXICAL_SIZE = 12
_LEXICAL_WEIGHT = 0.5
"""Norm of the lexical part beside the unit-norm embedding: enough to separate formats, not to dominate."""


def prompt_text(messages: Sequence[Mapping[str, Any]] | str) -> str:
    """The text the features read: every message's string content (or text parts), joined by newlines."""
    if isinstance(messages, str):
        return messages
    parts: list[str] = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return "\n".join(parts)


def lexical_features(text: str) -> np.ndarray:
    """Twelve cheap counts of ``text``, each squashed into [0, 1]: what kind of request it looks like."""
    length = max(len(text), 1)
    lines = text.count("\n") + 1
    words = _WORD.findall(text)
    mean_word = sum(map(len, words)) / len(words) if words else 0.0
    values = (
        math.log1p(length) / 10.0,
        math.log1p(lines) / 6.0,
        min(1.0, len(_CODE.findall(text)) / 5.0),
        min(1.0, 20.0 * len(_MATHS.findall(text)) / length),
        min(1.0, len(_CHOICES.findall(text)) / 4.0),
        min(1.0, 10.0 * len(_DIGIT.findall(text)) / length),
        float("?" in text),
        min(1.0, mean_word / 10.0),
        min(1.0, 50.0 * text.count("(") / length),
        float(text.rstrip().endswith(":")),
        min(1.0, sum(ch.isupper() for ch in text) * 5.0 / length),
        min(1.0, text.count("\n\n") / 10.0),
    )
    return np.asarray(values, dtype=np.float32)


def _lexical_part(text: str) -> np.ndarray:
    values = lexical_features(text)
    return values * (_LEXICAL_WEIGHT / max(float(np.linalg.norm(values)), 1e-6))


def auto_featurizer(*, embedding: bool | None = None) -> Featurizer:
    """A featurizer of messages: the sentence embedding (when installed, or when ``embedding=True``) followed by
    the lexical counts. ``embedding=False`` keeps to the lexical counts."""
    use_embedding = embedding_available() if embedding is None else embedding
    model = SentenceEmbedding() if use_embedding else None

    def features(messages: Sequence[Mapping[str, Any]] | str) -> np.ndarray:
        text = prompt_text(messages)
        lexical = _lexical_part(text)
        if model is None:
            return lexical
        return np.concatenate((model.embed(text), lexical))

    return features
