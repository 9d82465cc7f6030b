"""A static sentence embedding whose weights ship inside a wheel: WordLlama's 256-dimension token table.

WordLlama's own ``load()`` looks for its tokenizer in a folder the wheel does not have and then downloads it;
this loader reads both files from the installed package instead, so it never touches the network.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import threading
from typing import Any, ClassVar

import numpy as np

from kalibr._exceptions import MissingExtraError

__all__ = ["SentenceEmbedding", "embedding_available"]

_TOKENIZER = ("tokenizers", "l2_supercat_tokenizer_config.json")
_WEIGHTS = ("weights", "l2_supercat_256.safetensors")
_MAX_TOKENS = 512
"""Tokens read per prompt: a static embedding averages them, and the start of a prompt says what it is."""


def embedding_available() -> bool:
    """Whether the ``context`` extra (wordllama) is installed."""
    return importlib.util.find_spec("wordllama") is not None


class SentenceEmbedding:
    """Unit-norm mean of WordLlama token vectors (optionally truncated to ``dimensions``, a Matryoshka prefix).

    Loaded on first use and shared by every thread; ``embed`` is about 0.1-0.2 ms for a short prompt.
    """

    _shared: ClassVar[dict[int, tuple[Any, np.ndarray]]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, dimensions: int = 256) -> None:
        if dimensions not in (64, 128, 256):
            raise ValueError(f"dimensions {dimensions!r}: choose 64, 128 or 256")
        self.dimensions = dimensions

    def _model(self) -> tuple[Any, np.ndarray]:
        with self._lock:
            if self.dimensions not in self._shared:
                self._shared[self.dimensions] = _load(self.dimensions)
            return self._shared[self.dimensions]

    def embed(self, text: str) -> np.ndarray:
        tokenizer, table = self._model()
        ids = tokenizer.encode(text, add_special_tokens=False).ids[:_MAX_TOKENS]
        if not ids:
            return np.zeros(self.dimensions, dtype=np.float32)
        vector = table[ids].mean(axis=0, dtype=np.float32)
        return np.asarray(vector / max(float(np.linalg.norm(vector)), 1e-6), dtype=np.float32)


def _load(dimensions: int) -> tuple[Any, np.ndarray]:
    if not embedding_available():
        raise MissingExtraError("the sentence embedding of prompt-aware routing", "context")
    from safetensors import safe_open
    from tokenizers import Tokenizer

    root = importlib.resources.files("wordllama")
    tokenizer = Tokenizer.from_str(root.joinpath(*_TOKENIZER).read_text(encoding="utf-8"))
    with importlib.resources.as_file(root.joinpath(*_WEIGHTS)) as weights, safe_open(str(weights), "np") as f:
        table = np.asarray(f.get_tensor("embedding.weight")[:, :dimensions], dtype=np.float32)
    return tokenizer, table
