"""Prompt features for prompt-aware routing, computed in the caller's process.

A featurizer turns a request's messages into a small float vector; the contextual policy
(``kalibr.policies.contextual``) groups prompts by it and learns, per group and per prompt, which path wins.
Nothing here does I/O beyond loading bundled weights once: prompts and vectors never leave the process.

- ``lexical_features(text)``: a dozen cheap counts (length, code, maths, multiple choice), no dependency.
- ``SentenceEmbedding()``: a static sentence embedding whose weights ship inside the ``wordllama`` wheel
  (``pip install "kalibr-core[context]"``), loaded from the installed package without any download.
- ``auto_featurizer()``: the embedding plus the lexical counts when the extra is installed, else the counts.

Usage::

    from kalibr.context import auto_featurizer
    features = auto_featurizer()
    vector = features([{"role": "user", "content": "What is 17 * 23?"}])
"""

from kalibr.context._embedding import SentenceEmbedding, embedding_available
from kalibr.context._features import Featurizer, auto_featurizer, lexical_features, prompt_text

__all__ = [
    "Featurizer",
    "SentenceEmbedding",
    "auto_featurizer",
    "embedding_available",
    "lexical_features",
    "prompt_text",
]
