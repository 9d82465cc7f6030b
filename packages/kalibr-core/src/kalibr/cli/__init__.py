"""The ``kalibr`` command line. Each command lives in its own module and is imported only when run."""

from __future__ import annotations

import importlib
from typing import Any

import click

__all__ = ["cli", "main", "register_plugin_commands"]

# command name -> "module:attribute"; imported lazily so `kalibr --help` stays fast and extras stay optional.
_COMMANDS: dict[str, str] = {
    "demo": "kalibr.cli.demo:demo",
    "sandbox": "kalibr.cli.sandbox:sandbox",
    "replay": "kalibr.cli.replay:replay",
    "import": "kalibr.cli.warm_start:import_table",
    "serve": "kalibr.cli.serve:serve",
    "keys": "kalibr.cli.keys:keys",
    "insights": "kalibr.cli.insights:insights",
    "policy": "kalibr.cli.insights:policy",
    "prune": "kalibr.cli.prune:prune",
    "spool": "kalibr.cli.spool:spool",
    "dashboard": "kalibr.cli.dashboard:dashboard",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _COMMANDS:
            module_name, attribute = _COMMANDS[cmd_name].split(":")
            command: Any = getattr(importlib.import_module(module_name), attribute)
            assert isinstance(command, click.Command)
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=_LazyGroup)
@click.version_option(package_name="kalibr-core")
def cli() -> None:
    """Kalibr: outcome-aware LLM routing that learns what works for each goal."""


def main() -> None:
    register_plugin_commands()
    cli()


def register_plugin_commands() -> None:
    """Load the installed plugins, then let each add its commands (``kalibr_register_commands``)."""
    from kalibr.plugins import load_plugins, pm

    load_plugins()
    pm.hook.kalibr_register_commands(cli=cli)
