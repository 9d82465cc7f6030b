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
        [name, f"{value['p50']:,.0f}", f"{value['p99']:,.0f}", "-" if name == "direct fetch" else f"{value['p50'] - direct:,.0f}"]
        for name, value in figures.items()
    ]
    table = markdown_table(["variant", "p50 (us)", "p99 (us)", "p50 over direct (us)"], rows)
    print(table)
    overhead_ms = (figures["router.completion"]["p50"] - direct) / 1000
    verdict = "meets" if overhead_ms <= TARGET_MS else "misses"
    calls = figures["direct fetch"]["calls"]
    return "\n".join(
        [
            header,
            f"`python -m benchmarks --only ts`: Node {_node_version()}, {calls:,} calls per variant in {rounds} rounds "
            "taking turns, against the sandbox's `gpt-4o` (OpenAI-compatible, real HTTP on loopback) and a real "
            "`kalibr serve` (SQLite). The router has two paths (one model, two temperatures), a `successWhen` that "
            "reports every call, and decides through the service; the direct variant is `fetch` plus `response.json()` "
            "to the same model.\n",
            table,
            f"\n`router.completion()` costs {overhead_ms:.3f} ms over the direct call at p50: it {verdict} the "
            f"{TARGET_MS} ms target. With decide-ahead (the default) each call takes a decision the client fetched from "
            "the service during the previous call, so the service's round trip is off the call's path; the last row "
            "turns that off and pays the round trip on every call. A call finds no decision ready on a goal's first "
            "call, after more than ten idle seconds, or when concurrent calls outrun the one decision kept ahead.\n",
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
