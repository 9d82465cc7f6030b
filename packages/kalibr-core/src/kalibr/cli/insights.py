"""``kalibr insights [GOAL]`` and ``kalibr policy GOAL``: what the outcomes say, as tables or JSON.

Both read a local store (``--store``, default ``$KALIBR_DB``) or ask a running service (``--url``, default
``$KALIBR_INTELLIGENCE_URL``), and print the same document the HTTP API returns when given ``--json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kalibr._exceptions import IntelligenceUnavailable, UserError
from kalibr.intelligence.base import Constraints, PolicyAnswer

__all__ = ["insights", "policy"]

_F = TypeVar("_F", bound=Callable[..., Any])
_SEVERITY_STYLE = {"high": "bold red", "medium": "yellow", "low": "cyan", "info": "green"}
_STATUS_STYLE = {"failing": "bold red", "degraded": "yellow", "insufficient_data": "dim", "healthy": "green"}


def _source_options(command: _F) -> _F:
    options = [
        click.option("--window-hours", default=168.0, show_default=True, help="How far back to look."),
        click.option("--json", "as_json", is_flag=True, help="Print the JSON document instead of tables."),
        click.option("--store", "store_url", default=None, help="Store URL to read [default: $KALIBR_DB]."),
        click.option("--url", default=None, help="Ask this service instead [default: $KALIBR_INTELLIGENCE_URL]."),
        click.option("--api-key", default=None, help="The service's API key [default: $KALIBR_API_KEY]."),
        click.option("--tenant", default="default", show_default=True, help="Tenant to read (local store)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@click.command()
@click.argument("goal", required=False)
@_source_options
def insights(
    goal: str | None,
    window_hours: float,
    as_json: bool,
    store_url: str | None,
    url: str | None,
    api_key: str | None,
    tenant: str,
) -> None:
    """Health, trend, path comparison, parameter sensitivity and signals for GOAL (or every goal)."""
    document = _run(
        lambda source: source.get_insights(goal, window_hours=window_hours), store_url, url, api_key, tenant
    )
    if as_json:
        click.echo(json.dumps(document, indent=2))
        return
    console = Console(width=max(120, Console().width))
    goals = document.get("goals", [])
    if not goals:
        console.print(f"No goals with data in the last {window_hours:g} h.")
        return
    if goal is None:
        console.print(_summary_table(goals, window_hours))
    for item in goals:
        _print_goal(console, item)


@click.command()
@click.argument("goal")
@_source_options
@click.option("--max-cost", "max_cost_usd", type=float, default=None, help="Max mean cost per call (USD).")
@click.option("--max-latency-ms", type=float, default=None, help="Max mean latency (ms).")
@click.option("--min-quality", type=float, default=None, help="Min success rate in [0, 1].")
@click.option("--min-confidence", type=float, default=None, help="Min confidence in [0, 1].")
def policy(
    goal: str,
    window_hours: float,
    as_json: bool,
    store_url: str | None,
    url: str | None,
    api_key: str | None,
    tenant: str,
    max_cost_usd: float | None,
    max_latency_ms: float | None,
    min_quality: float | None,
    min_confidence: float | None,
) -> None:
    """The path to use for GOAL (under optional constraints), how sure we are, and the alternatives."""
    constraints = Constraints(max_cost_usd, max_latency_ms, min_quality, min_confidence)
    answer: PolicyAnswer = _run(
        lambda source: source.get_policy(goal, window_hours=window_hours, constraints=constraints),
        store_url,
        url,
        api_key,
        tenant,
    )
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(answer), indent=2, default=list))
        return
    _print_policy(Console(width=max(120, Console().width)), answer)


def _run(ask: Callable[[Any], Any], store_url: str | None, url: str | None, api_key: str | None, tenant: str) -> Any:
    """Build the engine (local store) or the service client, ask it, and close it; errors become messages."""
    from kalibr._intelligence_registry import INTELLIGENCE_URL_ENV

    url = url or (None if store_url else os.environ.get(INTELLIGENCE_URL_ENV))
    try:
        source = _remote(url, api_key) if url else _local(store_url, tenant)
        try:
            return ask(source)
        finally:
            source.close()
    except (UserError, IntelligenceUnavailable) as exc:
        raise click.ClickException(str(exc)) from exc


def _local(store_url: str | None, tenant: str) -> Any:
    from kalibr.intelligence.engine import Engine
    from kalibr.stores import open_store

    return Engine(open_store(store_url), tenant=tenant, write_behind=False)


def _remote(url: str, api_key: str | None) -> Any:
    from kalibr.intelligence.remote import RemoteIntelligence

    return RemoteIntelligence(url, api_key=api_key)


# --- rendering ---------------------------------------------------------------------------------------------------
def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _money(value: float | None) -> str:
    return "-" if value is None else f"${value:.6f}"


def _number(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:,.0f}{unit}"


def _styled(text: str, styles: Mapping[str, str]) -> str:
    return f"[{styles.get(text, '')}]{text}[/]" if styles.get(text) else text


def _summary_table(goals: Sequence[Mapping[str, Any]], window_hours: float) -> Table:
    table = Table(title=f"Goals, last {window_hours:g} h", title_justify="left")
    for header in ("goal", "status", "success", "outcomes", "trend", "signals"):
        table.add_column(header, justify="right" if header in ("success", "outcomes") else "left")
    for item in goals:
        kinds = sorted({s["type"] for s in item.get("actionable_signals", []) if s["type"] != "goal_healthy"})
        table.add_row(
            item["goal"],
            _styled(item["status"], _STATUS_STYLE),
            _percent(item.get("success_rate")),
            str(item.get("sample_count", 0)),
            str(item.get("trend", {}).get("direction", "-")),
            ", ".join(kinds) or "-",
        )
    return table


def _print_goal(console: Console, item: Mapping[str, Any]) -> None:
    trend = item.get("trend", {})
    console.print(
        f"\n[bold]{item['goal']}[/]  {_styled(item['status'], _STATUS_STYLE)}  "
        f"success {_percent(item.get('success_rate'))} over {item.get('sample_count', 0)} outcomes, "
        f"trend {trend.get('direction', '-')}"
    )
    console.print(_paths_table(item.get("paths", [])))
    if item.get("param_sensitivity"):
        console.print(_sensitivity_table(item["param_sensitivity"]))
    console.print(_signals_table(item.get("actionable_signals", [])))
    for change in item.get("path_changes", []):
        console.print(escape(f"  {change['at'][:16]}  {change['kind']}: {change['data'].get('label', change['data'])}"))


def _paths_table(paths: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(title="Paths", title_justify="left")
    headers = ("path", "status", "outcomes", "share", "success", "95% CI", "now", "cost/call", "latency", "top failure")
    for header in headers:
        table.add_column(header, justify="left" if header in ("path", "status", "top failure") else "right")
    for row in paths:
        failures = row.get("failure_modes") or {}
        top = next(iter(failures.items()), None)
        ci = "-" if row.get("ci_low") is None else f"{row['ci_low']:.0%}-{row['ci_high']:.0%}"
        label = escape(row["label"]) + (" (generated)" if row.get("generated") else "")
        label += "" if row["enabled"] else " (off)"
        # "now": the evidence the path is judged on (its outcomes since a detected drop, else the whole window).
        now = f"{_percent(row.get('current_success_rate'))} of {row.get('current_samples', row['samples'])}"
        table.add_row(
            label,
            _styled(str(row.get("status", "-")), _STATUS_STYLE),
            str(row["samples"]),
            _percent(row.get("traffic_share")),
            _percent(row.get("success_rate")),
            ci,
            now,
            _money(row.get("mean_cost_usd")),
            _number(row.get("mean_latency_ms"), " ms"),
            "-" if top is None else f"{top[0]} ({top[1]})",
        )
    return table


def _sensitivity_table(effects: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(title="Parameter sensitivity", title_justify="left")
    for header in ("model", "param", "values (success)", "best", "diff", "p", "significant"):
        table.add_column(header)
    for effect in effects:
        values = "  ".join(f"{v['value']:g}: {_percent(v['success_rate'])}" for v in effect["values"])
        table.add_row(
            effect["model"],
            effect["param"],
            values,
            f"{effect['best_value']:g}" + (f" ({effect['best_at_boundary']})" if effect["best_at_boundary"] else ""),
            f"{effect['difference']:+.1%}",
            f"{effect['p_value']:.3g}",
            "yes" if effect["significant"] else "no",
        )
    return table


def _signals_table(signals: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(title="Signals", title_justify="left")
    for header in ("severity", "signal", "what"):
        table.add_column(header)
    for signal in signals:
        table.add_row(_styled(signal["severity"], _SEVERITY_STYLE), signal["type"], escape(signal.get("message", "")))
    return table


def _print_policy(console: Console, answer: PolicyAnswer) -> None:
    if answer.recommended_model is None:  # a service's answer names the model, not always the path id
        console.print(f"[bold]{answer.goal}[/]: no recommendation. {escape(answer.reasoning)}")
    else:
        params = ", ".join(f"{k}={v}" for k, v in sorted(answer.params.items()))
        console.print(
            f"[bold]{answer.goal}[/]: use [bold green]{answer.recommended_model}[/]"
            + (f" ({params})" if params else "")
            + f"  success {_percent(answer.success_rate)} over {answer.sample_count} outcomes, "
            f"confidence {answer.confidence:.0%}, window {answer.window_hours:g} h"
        )
        console.print(f"  {escape(answer.reasoning)}")
    if answer.alternatives:
        console.print(_alternatives_table(answer.alternatives))


def _alternatives_table(alternatives: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(title="Alternatives", title_justify="left")
    for header in ("model", "params", "outcomes", "success", "cost/call", "latency", "why not"):
        table.add_column(header)
    for row in alternatives:
        table.add_row(
            str(row.get("model", "-")),
            json.dumps(row.get("params") or {}),
            str(row.get("sample_count", "-")),
            _percent(row.get("success_rate")),
            _money(row.get("mean_cost_usd")),
            _number(row.get("mean_latency_ms"), " ms"),
            escape(str(row.get("excluded_because") or ("lower rank" if row.get("eligible", True) else "-"))),
        )
    return table
