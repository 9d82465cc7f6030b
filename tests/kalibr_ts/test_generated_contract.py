"""The TypeScript client's price table and failure categories are generated from the core, and the committed file
is up to date."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "packages" / "kalibr-ts" / "scripts" / "generate_contract.py"


def test_the_committed_typescript_module_matches_the_core() -> None:
    spec = importlib.util.spec_from_file_location("generate_contract", SCRIPT)
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    expected = generator.render()
    assert generator.TARGET.read_text() == expected, (
        f"{generator.TARGET} is stale: run python {SCRIPT.relative_to(SCRIPT.parents[3])}"
    )
