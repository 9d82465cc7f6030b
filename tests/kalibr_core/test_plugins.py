"""Third-party plugins add providers and adapters through the same hooks as the built-ins."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import kalibr
from kalibr import Path, Usage
from kalibr.plugins import pm, provider_factories
from kalibr.providers.base import ProviderRequest, ProviderResponse, StreamChunk


class ReverseProvider:
    """A DirectProvider that answers with the prompt reversed."""

    name = "reverse"

    def invoke(self, request: ProviderRequest) -> ProviderResponse:
        text = str(request.messages[-1]["content"])[::-1]
        return ProviderResponse(text=text, model=request.path.model, usage=Usage(1, 1))

    async def ainvoke(self, request: ProviderRequest) -> ProviderResponse:
        return self.invoke(request)

    def stream(self, request: ProviderRequest) -> Iterator[StreamChunk]:
        yield StreamChunk(text=self.invoke(request).text)

    async def astream(self, request: ProviderRequest) -> AsyncIterator[StreamChunk]:
        yield StreamChunk(text=self.invoke(request).text)


class ReversePlugin:
    @kalibr.hookimpl
    def kalibr_register_providers(self, register: Any) -> None:
        register("reverse", ReverseProvider)

    @kalibr.hookimpl
    def kalibr_register_adapters(self, register: Any) -> None:
        register("langchain", lambda router, **options: ("wrapped", router.goal, options))


@pytest.fixture
def reverse_plugin() -> Iterator[None]:
    pm.register(ReversePlugin(), name="undo-reverse")
    try:
        yield
    finally:
        pm.unregister(name="undo-reverse")
        from kalibr.providers.registry import forget_providers

        forget_providers()


def test_a_plugin_provider_serves_paths_that_name_it(reverse_plugin: None) -> None:
    assert "reverse" in provider_factories()
    router = kalibr.Router("plugin_goal", [Path("rev-1", provider="reverse")], store="memory:")
    assert router.completion("abc").text == "cba"
    assert "".join(chunk.text for chunk in router.stream("xyz")) == "zyx"


def test_a_plugin_adapter_wins_over_the_builtin_lookup(reverse_plugin: None) -> None:
    router = kalibr.Router("plugin_goal", ["m"], store="memory:")
    assert router.as_langchain(temperature=0) == ("wrapped", "plugin_goal", {"temperature": 0})


def test_an_unknown_provider_names_the_known_ones() -> None:
    router = kalibr.Router("plugin_goal", [Path("m", provider="nowhere")], store="memory:")
    with pytest.raises(kalibr.UserError, match=r"unknown provider 'nowhere'.*openai"):
        router.completion("hi")


def test_a_missing_adapter_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import kalibr.plugins

    monkeypatch.setattr(kalibr.plugins, "adapter_factories", dict)
    router = kalibr.Router("plugin_goal", ["m"], store="memory:")
    with pytest.raises(kalibr.MissingExtraError, match=r'pip install "kalibr-core\[dspy\]"'):
        router.as_dspy()


def test_loading_plugins_imports_no_framework() -> None:
    """Entry-point modules must be light: the first routed call loads every plugin, so a plugin that imports its
    framework at module level would make every user of the core pay for LangChain, LlamaIndex and DSPy."""
    import subprocess
    import sys

    code = (
        "import sys; from kalibr.plugins import load_plugins, pm; load_plugins(); "
        "roots = {m.split('.')[0] for m in sys.modules}; "
        "heavy = sorted({'langchain_core', 'llama_index', 'dspy', 'litellm'} & roots); "
        "print(','.join(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip() == "", f"plugins imported {result.stdout.strip()} at load time"


def test_an_installed_plugin_adds_a_cli_command(tmp_path: pathlib.Path) -> None:
    """A real distribution on the path with a ``kalibr`` entry point, as ``pip install`` leaves it."""
    (tmp_path / "kalibr_hello_plugin.py").write_text(
        "import click\n"
        "import kalibr\n\n"
        "@kalibr.hookimpl\n"
        "def kalibr_register_commands(cli):\n"
        "    @cli.command()\n"
        "    def hello():\n"
        "        click.echo('hello from a plugin')\n"
    )
    dist = tmp_path / "kalibr_hello_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: kalibr-hello-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[kalibr]\nhello = kalibr_hello_plugin\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    env.pop("KALIBR_LOAD_PLUGINS", None)
    ran = subprocess.run(
        [sys.executable, "-m", "kalibr", "hello"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "hello from a plugin"
    listed = subprocess.run(
        [sys.executable, "-m", "kalibr", "--help"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert "hello" in listed.stdout
