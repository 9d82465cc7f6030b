"""Prompts and completions never reach the store: only metadata does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kalibr import Router
from kalibr._intelligence_registry import reset_shared
from kalibr.context import auto_featurizer
from kalibr.sandbox import SandboxServer


@pytest.mark.parametrize("context", [None, "auto"])
def test_no_prompt_or_completion_text_reaches_the_store(
    sandbox: SandboxServer, tmp_path: Path, context: str | None
) -> None:
    secret = "Zanzibar-7f3c-confidential"
    db = tmp_path / "private.db"
    router = Router(
        "private_goal",
        [
            {"model": "sandbox-mini", "base_url": sandbox.openai_base_url},
            {"model": "sandbox-base", "base_url": sandbox.openai_base_url},
        ],
        success_when=lambda text: bool(text),
        store=f"sqlite:///{db}",
        context=context,
    )
    answers = []
    for index in range(20):
        completion = router.completion(
            [
                {"role": "system", "content": f"System note {secret}"},
                {"role": "user", "content": f"Please repeat this exactly: {secret} #{index}"},
            ]
        )
        answers.append(completion.text)
        stream = router.stream(f"Stream and repeat: {secret}")
        answers.append("".join(chunk.text for chunk in stream))
    reset_shared()  # flush and close, so every byte is on disk

    stored = b"".join(path.read_bytes() for path in tmp_path.iterdir() if path.name.startswith("private.db"))
    assert b"private_goal" in stored  # the metadata is there...
    assert secret.encode() not in stored  # ...the prompt is not...
    for answer in answers:
        fragment = answer.strip()[:24].encode()
        if fragment and secret.encode() not in fragment:
            assert fragment not in stored, fragment  # ...and neither is any answer
    assert any(secret in answer for answer in answers), "the sandbox should echo the secret, or this proves nothing"
    if context is not None:  # prompt-aware routing keeps its features in memory: neither raw nor rounded in the store
        features = auto_featurizer()(f"Stream and repeat: {secret}")
        for dtype in (np.float32, np.float64):
            assert features[:4].astype(dtype).tobytes() not in stored
