"""``kalibr sandbox``: serve simulated models on a local OpenAI- and Anthropic-compatible endpoint."""

from __future__ import annotations

import click

from kalibr._exceptions import UserError

__all__ = ["sandbox"]


@click.command()
@click.option(
    "--scenario",
    default="demo",
    show_default=True,
    help="A builtin scenario (demo, standard, param-curve) or a .json/.toml scenario file.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8787, show_default=True, type=click.IntRange(0, 65535), help="0 picks a free port.")
@click.option("--seed", default=0, show_default=True, type=int, help="Same seed and requests, same answers.")
def sandbox(scenario: str, host: str, port: int, seed: int) -> None:
    """Serve simulated models (accuracy, latency, price, errors, drift) until Ctrl-C."""
    from kalibr.sandbox import SandboxServer, resolve_scenario

    try:
        server = SandboxServer(resolve_scenario(scenario), seed=seed, host=host, port=port)
    except UserError as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}; try --port 0") from exc
    models = ", ".join(sorted(server.scenario.models))
    click.echo(f"Kalibr sandbox: scenario {server.scenario.name!r}, seed {seed}, models: {models}")
    click.echo(f"  OpenAI:    export OPENAI_BASE_URL={server.openai_base_url} OPENAI_API_KEY=sandbox")
    click.echo(f"  Anthropic: export ANTHROPIC_BASE_URL={server.anthropic_base_url} ANTHROPIC_API_KEY=sandbox")
    click.echo("  Pick a goal per request with the X-Sandbox-Goal header. Press Ctrl-C to stop.")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped")
    finally:
        server.stop()
