"""The TypeScript client's overhead: ``router.completion()`` against ``kalibr serve`` next to a direct ``fetch`` of the
same sandbox model, in one Node process, the variants taking turns (``packages/kalibr-ts/scripts/bench-overhead.mjs``).

Needs Node 20+ and npm; the package is installed from its lockfile and built when ``dist/`` is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from benchmarks._timing import markdown_table

PACKAGE = Path(__file__).resolve().parent.parent / "packages" / "kalibr-ts"
SCENARIO = PACKAGE / "test" / "fixtures" / "sandbox-scenario.json"
TARGET_MS = 0.3


def run(quick: bool) -> str:
    header = "## TypeScript client: overhead per call\n"
    if shutil.which("node") is None or shutil.which("npm") is None:
        print("ts: skipped, node/npm not found")
        return header + "\nNot run: Node.js and npm are not installed.\n"
    _build()
    rounds, per_round = (5, 40) if quick else (20, 100)
    figures = _measure(rounds, per_round)
    direct = figures["direct fetch"]["p50"]
    rows = [
        [
            name,
            f"{value['p50']:,.0f}",
            f"{value['p99']:,.0f}",
            "-" if name == "direct fetch" else f"{value['p50'] - direct:,.0f}",
            "-" if name == "direct fetch" else f"{value['inCallP50']:,.0f} / {value['inCallP99']:,.0f}",
            f"{value['cpu']:,.0f}",
            "-" if name == "direct fetch" else f"{value['serviceRequestsPerCall']:.3f}",
        ]
        for name, value in figures.items()
    ]
    header_row = [
        "variant",
        "p50 (us)",
        "p99 (us)",
        "p50 over direct (us)",
        "call's own time beyond the provider, p50 / p99 (us)",
        "client CPU per call (us)",
        "requests to the service per call",
    ]
    table = markdown_table(header_row, rows)
    print(table)
    routed = figures["router.completion"]
    own_ms = routed["inCallP50"] / 1000
    whole_ms = (routed["p50"] - direct) / 1000
    verdict = "meets" if whole_ms <= TARGET_MS else "misses"
    calls = figures["direct fetch"]["calls"]
    load = " / ".join(f"{value:.1f}" for value in os.getloadavg())
    return "\n".join(
        [
            header,
            f"`python -m benchmarks --only ts_client`: Node {_node_version()}, {calls:,} calls per variant in {rounds} "
            "rounds taking turns, against the sandbox's `gpt-4o` (OpenAI-compatible, real HTTP on loopback) and a real "
            "`kalibr serve` (SQLite), all on this machine (load average after the run, 1/5/15 min: "
            f"{load}, on {os.cpu_count()} cores). The router has two paths (one model, two temperatures) and decides "
            "through the service; `successWhen` reports every call. The direct variant is `fetch` plus "
            "`response.json()` to the same model. The call's own time is the call's wall time minus its provider "
            "round trip (request sent to body read, timed through the Router's `fetch` option): the latency Kalibr "
            "adds on the call's path. Client CPU is the Node process's user+system time per call, background work "
            "included: the decisions fetched ahead, and the outcomes' delivery (each round ends with `flush()`, "
            "inside the round's CPU time, so no variant's outcomes leave on another's time). Requests to the "
            "service count every decide, path registration and outcome batch.\n",
            table,
            f"\nThe whole `router.completion()` call takes {whole_ms:.3f} ms more than the direct `fetch` at p50: it "
            f"{verdict} the {TARGET_MS} ms target; {own_ms:.3f} ms of it is the call's own time beyond the provider. "
            "Decide-ahead (the default) asks the service for a batch of independent draws sized to the call rate "
            "(up to 32, each with its own trace id, each used at most 1 s after it was drawn), and outcomes leave "
            "in batches (a 250 ms window, or 32 outcomes), so the service sees a request per many calls instead of "
            "two per call and its work no longer competes with the provider's answer on the busy cores. The rows "
            "below it turn one "
            "of these off: outcomes sent as soon as the previous batch is answered (no window), or a decide on every "
            "call's path.\n",
        ]
    )


def _build() -> None:
    if not (PACKAGE / "node_modules").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=PACKAGE, check=True)
    subprocess.run(["npm", "run", "--silent", "build"], cwd=PACKAGE, check=True)


def _measure(rounds: int, per_round: int) -> dict[str, dict[str, float]]:
    from kalibr.sandbox import load_scenario, serve
    from kalibr.service import hash_api_key, new_api_key
    from kalibr.service._server import ServiceProcess
    from kalibr.stores import open_store

    with tempfile.TemporaryDirectory() as scratch:
        store_url = f"sqlite:///{scratch}/bench.db"
        key = new_api_key()
        store = open_store(store_url)
        store.add_api_key("bench", hash_api_key(key))
        store.close()
        with serve(load_scenario(SCENARIO), seed=0) as sandbox, ServiceProcess(["--store", store_url]) as service:
            env = {
                **os.environ,
                "OPENAI_BASE_URL": sandbox.openai_base_url,
                "OPENAI_API_KEY": "sandbox",
                "KALIBR_INTELLIGENCE_URL": service.url,
                "KALIBR_API_KEY": key,
            }
            script = PACKAGE / "scripts" / "bench-overhead.mjs"
            command = ["node", str(script), str(rounds), str(per_round)]
            done = subprocess.run(command, cwd=PACKAGE, env=env, check=True, capture_output=True, text=True)
    figures: dict[str, dict[str, float]] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def _node_version() -> str:
    return subprocess.run(["node", "--version"], capture_output=True, text=True, check=True).stdout.strip()
