"""Reliability under faults: an outage replay, a hung service, a cold service, a flood of wrong keys.

- Outage replay: ``tests/outage_replay.py`` at full size (3 apps x 1,000 outcomes, kill, fresh store, faulty proxy).
- Hung service: a fresh process (cold imports) routes through a service that accepts and never answers; the first
  completion's cost beyond the model call, then the cost while the breaker is open; and the first of every other
  client call on a fresh client.
- Cold start: the first 100 decides of a fresh client against a just-started ``kalibr serve``, 50 ms timeout.
- Wrong-key flood: valid decide+report pairs/s on one replica, alone and beside 1,000 wrong-key requests/s.
- Schemathesis: a bounded run against the OpenAPI document, its failed checks counted (``tests/openapi_run.py``).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path as FilePath
from typing import Any

from benchmarks.service import _cpu_seconds, _pairs, _services
from kalibr.intelligence.remote import WARM_UP_DECIDES

ROOT = FilePath(__file__).resolve().parent.parent
PG_ENV = "KALIBR_TEST_POSTGRES_URL"

_HUNG_PROBE = r"""
import json, socket, statistics, sys, tempfile, time
from pathlib import Path as FilePath
sandbox_url, openai_url, hung_url, folder, mode = sys.argv[1:6]
import kalibr
from kalibr._http import sync_client
from kalibr.intelligence.remote import RemoteIntelligence, Resilience
from kalibr.stores.base import OutcomeChanges

resilience = Resilience(timeout=0.05, cooldown=600)


class Timed(RemoteIntelligence):
    # Times what the intelligence costs inside a completion: its decide and its report.

    spent = {"decide": 0.0, "report": 0.0}

    def decide(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return super().decide(*args, **kwargs)
        finally:
            self.spent["decide"] += time.perf_counter() - started

    def report(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return super().report(*args, **kwargs)
        finally:
            self.spent["report"] += time.perf_counter() - started


sync_client().get(sandbox_url)  # the model's connection is not the intelligence's cost
remote = Timed(hung_url, spool=FilePath(folder) / "a.db", resilience=resilience)
paths = [{"model": "sandbox-mini", "base_url": openai_url}]
if mode == "embedded":  # a baseline: the same cold process deciding in-process
    from kalibr.stores import MemoryStore
    router = kalibr.Router("hung_goal", paths, store=MemoryStore())
elif mode == "refused":  # the other: a service that is simply down (connection refused at once)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0)); free = probe.getsockname()[1]
    down = RemoteIntelligence(f"http://127.0.0.1:{free}", spool=FilePath(folder) / "a.db", resilience=resilience)
    router = kalibr.Router("hung_goal", paths, intelligence=down)
else:
    router = kalibr.Router("hung_goal", paths, intelligence=remote)
messages = [{"role": "user", "content": "ping"}]
started = time.perf_counter(); router.completion(messages); first = time.perf_counter() - started
spent_first = {name: seconds * 1000 for name, seconds in Timed.spent.items()}
later = []
for _ in range(30):
    started = time.perf_counter(); router.completion(messages); later.append(time.perf_counter() - started)
if mode != "hung":
    print(json.dumps({"first_ms": first * 1000}))
    sys.exit(0)
decides = []
for _ in range(2000):
    started = time.perf_counter(); router.decide(); decides.append(time.perf_counter() - started)
calls = {}
for name in ("update_outcome", "get_policy", "get_insights", "close"):
    fresh = RemoteIntelligence(hung_url, spool=FilePath(folder) / f"{name}.db", resilience=resilience)
    fresh.register_paths("hung_goal", router.paths)
    started = time.perf_counter()
    try:
        if name == "update_outcome":
            fresh.update_outcome("ab" * 16, "hung_goal", OutcomeChanges(score=0.5))
        elif name == "get_policy":
            fresh.get_policy("hung_goal")
        elif name == "get_insights":
            fresh.get_insights("hung_goal")
        else:
            fresh.decide("hung_goal", router.paths)  # a client in use, then closed
            started = time.perf_counter()
            fresh.close()
    except kalibr.IntelligenceUnavailable:
        pass
    calls[name] = (time.perf_counter() - started) * 1000
    if name != "close":
        started = time.perf_counter()
        try:
            args = ("ab" * 16, "hung_goal", OutcomeChanges(score=0.5)) if name == "update_outcome" else ("hung_goal",)
            getattr(fresh, name)(*args)
        except kalibr.IntelligenceUnavailable:
            pass
        calls[name + "_again"] = (time.perf_counter() - started) * 1000
decides.sort()
print(json.dumps({
    "first_ms": first * 1000, "model_ms": statistics.median(later) * 1000, "spent": spent_first,
    "open_p50_us": statistics.median(decides) * 1e6, "open_p99_us": decides[int(len(decides) * 0.99) - 1] * 1e6,
    "calls": calls,
}))
"""


def _hung(quick: bool) -> dict[str, Any]:
    import socket

    from kalibr.sandbox import builtin_scenario, serve

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)  # accepted by the kernel, never answered
    runs = []
    with serve(builtin_scenario("standard"), seed=0) as sandbox, tempfile.TemporaryDirectory() as folder:
        for attempt in range(1 if quick else 5):
            run: dict[str, Any] = {}
            for mode in ("embedded", "refused", "hung"):  # side by side, each in a fresh process
                work = FilePath(folder) / f"{attempt}{mode}"
                work.mkdir()
                hung_url = f"http://127.0.0.1:{listener.getsockname()[1]}"
                command = [sys.executable, "-c", _HUNG_PROBE, sandbox.url, sandbox.openai_base_url, hung_url]
                answer = subprocess.run(
                    [*command, str(work), mode], capture_output=True, text=True, check=True, cwd=ROOT
                )
                measured = json.loads(answer.stdout.strip().splitlines()[-1])
                run |= {f"{mode}_first_ms": measured["first_ms"]} if mode != "hung" else measured
            runs.append(run)
    listener.close()
    ordered = sorted(runs, key=lambda run: sum(run["spent"].values()))
    return ordered[len(ordered) // 2]


def _cold_start(quick: bool) -> dict[str, Any]:
    """Fallbacks among the first 100 decides of a fresh client against a just-started service (50 ms timeout)."""
    from kalibr._domain import Path
    from kalibr.intelligence.remote import RemoteIntelligence, Resilience
    from kalibr.service._server import ServiceProcess

    fallbacks, firsts, fell = [], [], []
    with tempfile.TemporaryDirectory() as folder:
        for attempt in range(2 if quick else 5):
            work = FilePath(folder)
            store = f"sqlite:///{work / f'cold{attempt}.db'}"
            with ServiceProcess(["--store", store, "--no-auth"], log_path=str(work / "serve.log")) as service:
                remote = RemoteIntelligence(service.url, spool=work / f"s{attempt}.db", resilience=Resilience())
                paths = [Path("model-a"), Path("model-b", params={"temperature": 0.2})]
                started = time.perf_counter()
                decisions = [remote.decide(f"cold_goal_{attempt}", paths)]
                firsts.append((time.perf_counter() - started) * 1000)
                decisions += [remote.decide(f"cold_goal_{attempt}", paths) for _ in range(99)]
                fallbacks.append(sum(d.fallback for d in decisions))
                fell += [f"run {attempt + 1} decide {i + 1}: {d.reason}" for i, d in enumerate(decisions) if d.fallback]
                remote.close()
    return {"runs": len(fallbacks), "fallbacks": sum(fallbacks), "first_p50_ms": statistics.median(firsts),
            "first_max_ms": max(firsts), "fell": fell}  # fmt: skip


def flood(url: str, rate: float, seconds: float, fresh_keys: bool) -> None:
    """Wrong-key decides at ``rate`` per second for ``seconds``, from a process of its own: prints ``ready`` once
    connected, then the 401 answers per second and its own CPU seconds from then on. As cheap as a Python client can
    be, since it shares the cores with the service: 4 raw keep-alive sockets, each sent a burst of pipelined requests
    every 20 ms (prebuilt bytes; only a fresh key is made per request), answers counted by their status lines, never
    parsed."""
    import base64
    import selectors
    import socket

    host, port = url.removeprefix("http://").split(":")
    body = b'{"goal": "bench_service"}'
    head = (
        f"POST /api/v1/routing/decide HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nX-API-Key: kal_"
    ).encode()

    def new_key() -> bytes:
        return base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=")

    one_key = new_key()
    selector = selectors.DefaultSelector()
    sockets = [socket.create_connection((host, int(port))) for _ in range(4)]
    tails = dict.fromkeys(sockets, b"")
    for sock in sockets:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    refused = sent = 0

    def read_for(seconds: float) -> None:
        nonlocal refused
        deadline = time.perf_counter() + seconds
        while (left := deadline - time.perf_counter()) > 0:
            for found, _ in selector.select(left):
                sock: socket.socket = found.fileobj  # type: ignore[assignment]
                data = tails[sock] + sock.recv(1 << 16)
                refused += data.count(b"HTTP/1.1 401 ")
                tails[sock] = data[-12:]  # shorter than a status line: one cut in two is counted once, whole

    print("ready", flush=True)
    started, cpu_started = time.perf_counter(), time.process_time()
    while (elapsed := time.perf_counter() - started) < seconds:
        due = int(rate * elapsed) - sent
        for index, sock in enumerate(sockets):
            share = due // len(sockets) + (1 if index < due % len(sockets) else 0)
            if share:
                keys = [new_key() if fresh_keys else one_key for _ in range(share)]
                sock.sendall(b"".join(head + key + b"\r\n\r\n" + body for key in keys))
        sent += due
        read_for(0.02)
    read_for(0.2)  # the last answers
    for sock in sockets:
        sock.close()
    print(refused / seconds, time.process_time() - cpu_started)


def _valid_beside(
    url: str, headers: dict[str, str], pids: list[int], seconds: float, fresh_keys: bool | None
) -> dict[str, float]:
    """Valid pairs/s from 24 connections for ``seconds``, alone (``fresh_keys`` None) or beside a flood of wrong
    keys at 1,000/s that covers the whole run; with the service's CPU seconds, and the flood's refusals/s and CPU."""
    flooder = None
    if fresh_keys is not None:
        code = f"from benchmarks.reliability import flood; flood({url!r}, 1000.0, {seconds + 0.3}, {fresh_keys})"
        flooder = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert flooder.stdout is not None
        if flooder.stdout.readline().strip() != "ready":
            raise RuntimeError("the flood generator did not start")
    cpu = _cpu_seconds(pids) or 0.0
    pairs = asyncio.run(_pairs([url], headers, seconds, concurrency=24))
    figures = {"pairs_per_s": pairs / seconds, "service_cpu": (_cpu_seconds(pids) or 0.0) - cpu}
    if flooder is not None:
        out, _ = flooder.communicate(timeout=seconds + 60)
        refused_per_s, flooder_cpu = (float(value) for value in out.split())
        figures |= {"refused_per_s": refused_per_s, "flooder_cpu": flooder_cpu}
    return figures


def _flooded(store_url: str, quick: bool, workdir: FilePath) -> dict[str, float]:
    """Rounds of (alone, one wrong key, fresh wrong keys) on one replica, in rotating order; each flooded run is
    divided by the unflooded run of its own round, and the median of those ratios is reported."""
    seconds, rounds = (3.0, 1) if quick else (2.5, 6)
    runs: dict[str, list[dict[str, float]]] = {"alone": [], "one_key": [], "fresh_keys": []}
    with _services(store_url, 1, workdir) as (services, headers):
        url = services[0].url
        asyncio.run(_pairs([url], headers, 1.0, concurrency=8))  # warm up
        pids = [services[0].pid] if services[0].pid is not None else []
        kinds: list[tuple[str, bool | None]] = [("alone", None), ("one_key", False), ("fresh_keys", True)]
        for number in range(rounds):
            for label, fresh in kinds[number % 3 :] + kinds[: number % 3]:  # no kind always first
                runs[label].append(_valid_beside(url, headers, pids, seconds, fresh))
    alone = runs["alone"]
    figures = {"alone": statistics.median(run["pairs_per_s"] for run in alone)}
    cpu_per_pair = statistics.median(run["service_cpu"] / max(run["pairs_per_s"] * seconds, 1) for run in alone)
    figures["cpu_per_pair_ms"] = cpu_per_pair * 1000
    for label in ("one_key", "fresh_keys"):
        flooded = runs[label]
        figures[label] = statistics.median(run["pairs_per_s"] for run in flooded)
        figures[label + "_ratio"] = statistics.median(
            run["pairs_per_s"] / base["pairs_per_s"] for run, base in zip(flooded, alone, strict=True)
        )
        figures[label + "_rate"] = statistics.median(run["refused_per_s"] for run in flooded)
        # The service's CPU beyond what its valid pairs cost, per refusal; and the flood generator's own CPU.
        figures[label + "_cpu_ms"] = statistics.median(
            max(run["service_cpu"] - run["pairs_per_s"] * seconds * cpu_per_pair, 0.0)
            / max(run["refused_per_s"] * seconds, 1)
            * 1000
            for run in flooded
        )
        figures[label + "_flooder_share"] = statistics.median(run["flooder_cpu"] / seconds for run in flooded)
    return figures


def _outage(quick: bool) -> Any:
    sys.path.insert(0, str(ROOT))
    from tests.outage_replay import run_outage_replay

    with tempfile.TemporaryDirectory() as folder:
        return run_outage_replay(FilePath(folder), apps=3, outcomes=200 if quick else 1000)


def _schema_run(quick: bool) -> Any:
    sys.path.insert(0, str(ROOT))
    from tests.openapi_run import run_bounded_schema_run

    return run_bounded_schema_run(examples_per_route=15 if quick else 50)


def _ms(value: float) -> str:
    return f"{value:.1f} ms"


def _tally(counts: Mapping[int, int]) -> str:
    """HTTP statuses and how often each was seen, lowest status first: "3 x 404, 5 x 413"."""
    return ", ".join(f"{count} x {status}" for status, count in sorted(counts.items()))


def run(quick: bool) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        "## Reliability under faults\n",
        f"Loopback, {os.cpu_count()} cores (load average {load:.1f} at the start). Counts are exact; times are "
        "from a shared machine and quoted beside their baseline.\n",
    ]
    replay = _outage(quick)
    injected = _tally(replay.injected)
    lines += [
        "### Outage replay\n",
        f"3 apps (processes), each with its own key and tenant, sharing the host's spool; {replay.reported // 3:,} "
        "outcomes each. A third of the way in `kalibr serve` is killed; it restarts on a fresh store (keys restored). "
        f'A proxy in front refused or failed requests: {injected}; any request holding a "poison" outcome '
        "(1 in ~85) is refused for good (422). `tests/outage_replay.py`, run by the test suite at 120 outcomes "
        "per app.\n",
        "| reported | delivered once, to its own tenant | dead-lettered with the service's reason | lost | doubled "
        "| crossed tenants | resent after the kill (also in the lost store) | drained after restart |",
        "|---|---|---|---|---|---|---|---|",
        f"| {replay.reported:,} | {replay.delivered - replay.crossed:,} | {replay.dead_lettered:,} "
        f"| {replay.lost} | {replay.doubled} | {replay.crossed} | {replay.resent_across_restart} "
        f"| {replay.seconds_to_drain:.1f} s |",
        "\nDelivery is at least once and counting is once: a store keeps one outcome per tenant and trace id, and "
        "its arms learn only from an outcome it inserted, so a batch sent again (its answer lost) changes nothing. "
        "*Doubled* counts an outcome held twice in one store (two tenants, or a row and a dead letter) and any "
        "outcome the arms counted beyond the rows. *Resent after the kill*: a batch the old store committed as the "
        "service was killed, before it answered, so the client sent it again to the fresh store; the old store is "
        "the one the operator lost.",
    ]
    print("\n".join(lines[-5:]))
    hung = _hung(quick)
    calls = hung["calls"]
    spent = hung["spent"]
    beyond_model = hung["first_ms"] - hung["embedded_first_ms"]
    lines += [
        "\n### A hung service, from a fresh process\n",
        "A service that accepts connections and never answers, and a client with `Resilience(timeout=0.05)` "
        "(every call to a service not heard from lately is first probed with that timeout). Each first call is "
        "made by a fresh process (cold imports), beside a baseline in a fresh process too: the same first "
        f"completion with the embedded engine ({_ms(hung['embedded_first_ms'])}; a warm completion takes "
        f"{_ms(hung['model_ms'])}). The intelligence's share of the first completion is the time inside the "
        f"client's `decide` and `report`. Median of {1 if quick else 5} sets of processes. Target: timeout + 5 ms, "
        "once; then < 1 ms.\n",
        "| call | timeout | first call | next calls (breaker open) |",
        "|---|---|---|---|",
        f"| `router.completion`: the intelligence's share | 50 ms | {_ms(sum(spent.values()))} (decide "
        f"{_ms(spent['decide'])}, report {spent['report']:.2f} ms) "
        f"| decide p50 {hung['open_p50_us']:.0f} µs, p99 {hung['open_p99_us']:.0f} µs |",
        f"| `router.completion`: the whole first call, beyond the embedded one | 50 ms | {_ms(beyond_model)} "
        f"({hung['first_ms']:.0f} ms against {hung['embedded_first_ms']:.0f} ms) | - |",
        f"| `update_outcome` (fresh client) | 50 ms | {_ms(calls['update_outcome'])} (probe, then spooled) "
        f"| {calls['update_outcome_again']:.2f} ms (spooled) |",
        f"| `get_policy` (fresh client) | 50 ms | {_ms(calls['get_policy'])} (probe) "
        f"| {calls['get_policy_again']:.2f} ms |",
        f"| `get_insights` (fresh client) | 50 ms | {_ms(calls['get_insights'])} (probe) "
        f"| {calls['get_insights_again']:.2f} ms |",
        f"| `close()` after a timed-out decide | 50 ms | {_ms(calls['close'])} | - |",
        f"\nFor comparison, a service that is down (refusing connections) costs the same first completion "
        f"{hung['refused_first_ms']:.0f} ms.",
    ]
    print("\n".join(lines[-9:]))
    cold = _cold_start(quick)
    lines += [
        "\n### A just-started service\n",
        "| runs | decides | fell back | first decide p50 (probe included) | first decide max | decide timeout |",
        "|---|---|---|---|---|---|",
        f"| {cold['runs']} | {cold['runs'] * 100} | {cold['fallbacks']} | {cold['first_p50_ms']:.1f} ms "
        f"| {cold['first_max_ms']:.1f} ms | 50 ms (first {WARM_UP_DECIDES}: 250 ms once the probe answered) |",
        "\nThe service warms up (imports, the policy, numpy's generator) before it accepts connections; "
        "without that the first decide took ~100-250 ms here. The client probes a service it has never heard "
        f"from with the 50 ms timeout, then gives its first {WARM_UP_DECIDES} decides the warm-up timeout, and "
        "counts a timeout from a service answering lately like an error (docs/architecture.md, "
        '"The wire under faults"). The test '
        "suite asserts the count: 0 of the first 100 decides fall back.",
    ]
    if cold["fell"]:
        shown = "; ".join(cold["fell"][:4])
        lines.append(
            f"\nThe fallbacks of this run (load average {os.getloadavg()[0]:.1f} after it), first ones: {shown}. A "
            "warm-up decide that times out ends the warm-up (a service that answers its probe, then hangs, must "
            "not cost 250 ms a decide), and three timeouts in a row open the breaker for its 5 s cool-down."
        )
    print("\n".join(lines[-4:]))
    lines += [
        "\n### A flood of wrong keys\n",
        "Valid decide+report pairs/s from 24 connections on one replica, alone and beside 1,000 wrong-key "
        "requests/s (one wrong key repeated, or a fresh random key each time), in rounds of (alone, one key, fresh "
        f"keys) of {'3 s, 1 round' if quick else '2.5 s, 6 rounds'}; each ratio divides a flooded run by the "
        "unflooded run of its own round (median of the rounds; the order within a round rotates). The flood comes "
        "from a process of its own made as cheap as Python allows (4 raw keep-alive sockets, pipelined bursts every "
        "20 ms, answers counted not parsed), but it still shares the 2 cores with the service and the valid load, "
        "so the ratio counts its CPU too (its column). The "
        "service answers every key from a snapshot of the key table (read again at most twice a second for a key "
        "it lacks), before reading the body. A refusal is one line at INFO on the `kalibr.service` logger (at "
        "`kalibr serve`'s default `--log-level info`, at most 5 a second of each status and route, then one line "
        "counting the rest); the replicas here run at `--log-level warning`: the flood writes no log lines. The "
        "last column is what "
        "the service's own CPU says, free of the other work on the machine: a replica bound by its core keeps "
        "1 - (refusals/s x CPU per refusal) of its valid throughput.\n",
        "| store | alone | + one wrong key | ratio | + fresh wrong keys | ratio | flood generator's CPU "
        "| service CPU: per valid pair / per refusal (one key, fresh keys) | CPU-bound ratio (one key, fresh keys) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as folder:
        configs = [("SQLite", f"sqlite:///{FilePath(folder) / 'flood.db'}")]
        if os.environ.get(PG_ENV):
            configs.append(("PostgreSQL", os.environ[PG_ENV]))
        for name, url in configs:
            f = _flooded(url, quick, FilePath(folder))
            bound = [1 - f[label + "_rate"] * f[label + "_cpu_ms"] / 1000 for label in ("one_key", "fresh_keys")]
            row = (
                f"| {name} | {f['alone']:,.0f} | {f['one_key']:,.0f} ({f['one_key_rate']:,.0f} refused/s) "
                f"| {f['one_key_ratio']:.0%} | {f['fresh_keys']:,.0f} ({f['fresh_keys_rate']:,.0f} refused/s) "
                f"| {f['fresh_keys_ratio']:.0%} | {f['one_key_flooder_share']:.0%}, "
                f"{f['fresh_keys_flooder_share']:.0%} of a core | {f['cpu_per_pair_ms']:.2f} ms / "
                f"{f['one_key_cpu_ms']:.3f} ms, {f['fresh_keys_cpu_ms']:.3f} ms | {bound[0]:.0%}, {bound[1]:.0%} |"
            )
            print(row)
            lines.append(row)
        if not os.environ.get(PG_ENV):
            lines.append(f"\nPostgreSQL row skipped: set {PG_ENV} to include it.")
    schema = _schema_run(quick)
    statuses = _tally(schema.statuses)
    lines += [
        "\n### Schemathesis against the OpenAPI document\n",
        f"A bounded run ({15 if quick else 50} generated cases per route; the test suite runs 15): every route of "
        "the document, valid and invalid bodies, queries and headers, each answer checked for a 5xx, a status the "
        "document does not list, and a body or content type off its schema (`tests/openapi_run.py`).\n",
        "| routes | requests | 5xx | undocumented statuses | schema violations | statuses seen |",
        "|---|---|---|---|---|---|",
        f"| {schema.operations} | {schema.requests:,} | {schema.server_errors} | {schema.undocumented_statuses} "
        f"| {schema.schema_violations} | {statuses} |",
    ]
    print("\n".join(lines[-3:]))
    return "\n".join(lines) + "\n"
