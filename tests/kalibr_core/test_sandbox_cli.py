"""``kalibr sandbox``: prints where to point the SDKs, and fails clearly on a bad scenario."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from kalibr.cli import cli
from kalibr.sandbox import SandboxServer


def test_sandbox_prints_the_base_urls_and_stops_on_ctrl_c(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(self: SandboxServer) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(SandboxServer, "serve_forever", interrupted)
    result = CliRunner().invoke(cli, ["sandbox", "--scenario", "param-curve", "--port", "0", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "scenario 'param-curve', seed 3" in result.output
    assert re.search(r"OPENAI_BASE_URL=http://127\.0\.0\.1:\d+/v1 ", result.output)
    assert re.search(r"ANTHROPIC_BASE_URL=http://127\.0\.0\.1:\d+ ", result.output)
    assert result.output.rstrip().endswith("stopped")


def test_sandbox_rejects_an_unknown_scenario(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["sandbox", "--scenario", str(tmp_path / "missing.json"), "--port", "0"])
    assert result.exit_code == 1
    assert "cannot read scenario file" in result.output
