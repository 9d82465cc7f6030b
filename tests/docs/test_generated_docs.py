"""The reference pages in docs/ match the code they are generated from."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _generator() -> object:
    spec = importlib.util.spec_from_file_location("docs_generate", DOCS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("page", ["insights.md", "cli.md"])
def test_generated_page_is_current(page: str) -> None:
    generator: object = _generator()
    rendered = getattr(generator, "PAGES")[page]()  # noqa: B009
    assert (DOCS / page).read_text() == rendered, f"docs/{page} is stale: run `python docs/generate.py`"
