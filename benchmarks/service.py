"""The intelligence service on loopback: decide latency, decide+report throughput, and a hung service.

Each configuration starts real `kalibr serve` processes (SQLite; PostgreSQL; two replicas on one PostgreSQL)
and drives them with a minimal asyncio HTTP/1.1 keep-alive client, so the figures measure the service rather
than a heavy client library. The load generator shares the machine's 2 cores with the service.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path as FilePath
from typing import Any

GOAL = "bench_service"
MODELS = ("model-a", "model-b", "model-c")
PG_ENV = "KALIBR_TEST_POSTGRES_URL"
CONNECTIONS_PER_REPLICA = 24
"""Enough concurrent clients to saturate a replica (PostgreSQL commits overlap only with many in flight)."""
TARGETS = "targets: p50 <= 2 ms, p99 <= 10 ms, >= 1,000 decide+report pairs/s"


class _Connection:
    """One keep-alive HTTP/1.1 connection speaking just enough of the protocol for JSON POSTs."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, headers: str) -> None:
        self.reader, self.writer, self.host, self.headers = reader, writer, host, headers

    @classmethod
    async def open(cls, url: str, headers: dict[str, str]) -> _Connection:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        return cls(reader, writer, f"{host}:{port}", extra)

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        payload = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n{self.headers}\r\n"
        )
        self.writer.write(head.encode() + payload)
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        data = await self.reader.readexactly(length)
        return int(status_line.split()[1]), json.loads(data)

    def close(self) -> None:
        self.writer.close()


async def _decide_latencies(url: str, headers: dict[str, str], count: int) -> list[float]:
    connection = await _Connection.open(url, headers)
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        status, body = await connection.post("/api/v1/routing/decide", {"goal": GOAL})
        latencies.append(time.perf_counter() - started)
        _check(status, body)
    connection.close()
    return latencies


async def _pairs(urls: list[str], headers: dict[str, str], seconds: float, concurrency: int) -> int:
    """Decide+report pairs completed in ``seconds`` by ``concurrency`` connections spread over ``urls``."""
    deadline = time.perf_counter() + seconds
    done = 0

    async def worker(url: str) -> None:
        nonlocal done
        connection = await _Connection.open(url, headers)
        while time.perf_counter() < deadline:
            _, decision = await connection.post("/api/v1/routing/decide", {"goal": GOAL})
            outcome = {"trace_id": decision["trace_id"], "goal": GOAL, "success": decision["model_id"] == "model-b"}
            status, body = await connection.post("/api/v1/intelligence/report-outcome", outcome)
            _check(status, body)
            done += 1
        connection.close()

    await asyncio.gather(*(worker(urls[i % len(urls)]) for i in range(concurrency)))
    return done


def _check(status: int, body: Any) -> None:
    if status != 200:
        raise RuntimeError(f"the service answered {status}: {body}")


def _cpu_seconds(pids: list[int]) -> float | None:
    """User+system CPU seconds of processes (Linux /proc), or None elsewhere."""
    try:
        total = 0.0
        for pid in pids:
            fields = FilePath(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total
    except (OSError, ValueError, IndexError):
        return None


@contextmanager
def _services(store_url: str, replicas: int, workdir: FilePath) -> Iterator[tuple[list[Any], dict[str, str]]]:
    """``replicas`` services on ``store_url`` with a fresh tenant and key; yields their URLs and the headers."""
    import httpx

    from kalibr.service import hash_api_key, new_api_key
    from kalibr.service._server import ServiceProcess
    from kalibr.stores import open_store

    tenant, key = f"bench_{uuid.uuid4().hex[:10]}", new_api_key()
    store = open_store(store_url)
    store.add_api_key(tenant, hash_api_key(key))
    store.close()
    headers = {"X-API-Key": key, "X-Tenant-ID": tenant}
    with ExitStack() as stack:
        services = [
            stack.enter_context(ServiceProcess(["--store", store_url], log_path=str(workdir / f"serve{i}.log")))
            for i in range(replicas)
        ]
        for model in MODELS:
            body = {"goal": GOAL, "model_id": model}
            httpx.post(f"{services[0].url}/api/v1/routing/paths", json=body, headers=headers)
        yield services, headers


def _measure(store_url: str, replicas: int, quick: bool, workdir: FilePath) -> dict[str, float]:
    with _services(store_url, replicas, workdir) as (services, headers):
        urls = [service.url for service in services]
        asyncio.run(_decide_latencies(urls[0], headers, 50))  # warm up
        latencies = asyncio.run(_decide_latencies(urls[0], headers, 300 if quick else 3000))
        seconds = 2.0 if quick else 8.0
        pids = [service.pid for service in services if service.pid is not None]
        cpu_before = _cpu_seconds(pids)
        pairs = asyncio.run(_pairs(urls, headers, seconds, concurrency=CONNECTIONS_PER_REPLICA * replicas))
        cpu_after = _cpu_seconds(pids)
    ordered = sorted(latencies)
    cpu_per_pair = None if cpu_before is None or cpu_after is None else (cpu_after - cpu_before) / max(pairs, 1)
    return {
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[int(len(ordered) * 0.99) - 1] * 1000,
        "pairs_per_s": pairs / seconds,
        "cpu_ms_per_pair": float("nan") if cpu_per_pair is None else cpu_per_pair * 1000,
    }


async def _echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A do-nothing ASGI app: reads the body, answers a fixed decision-shaped JSON. The HTTP ceiling."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    body = b'{"trace_id": "0123456789abcdef0123456789abcdef", "model_id": "model-b", "status": "accepted"}'
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def serve_echo(fd: int) -> None:
    """Serve ``_echo_app`` on the listening socket ``fd`` with uvicorn's defaults (httptools, uvloop), as kalibr
    serve does."""
    import socket

    import uvicorn

    sock = socket.socket(fileno=fd)
    uvicorn.Server(uvicorn.Config(_echo_app, log_level="warning", access_log=False)).run(sockets=[sock])


def _http_ceiling(quick: bool) -> dict[str, float]:
    """Pairs per second of the same client against ``_echo_app`` in one process: what HTTP alone costs."""
    import subprocess
    import sys

    from kalibr.service._server import bind

    sock = bind("127.0.0.1", 0)
    code = f"from benchmarks.service import serve_echo; serve_echo({sock.fileno()})"
    root = FilePath(__file__).resolve().parent.parent
    server = subprocess.Popen([sys.executable, "-c", code], cwd=root, pass_fds=[sock.fileno()])
    try:
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        asyncio.run(_decide_latencies(url, {}, 50))  # waits for the server: the kernel queues the connection
        seconds = 2.0 if quick else 8.0
        cpu_before = _cpu_seconds([server.pid])
        pairs = asyncio.run(_pairs([url], {}, seconds, concurrency=CONNECTIONS_PER_REPLICA))
        cpu_after = _cpu_seconds([server.pid])
    finally:
        server.kill()
        server.wait()
        sock.close()
    cpu = float("nan") if cpu_before is None or cpu_after is None else (cpu_after - cpu_before) / pairs * 1000
    return {"pairs_per_s": pairs / seconds, "cpu_ms_per_pair": cpu}


def _hung_service_figures(quick: bool) -> dict[str, float]:
    """Our client against a service that accepts connections and never answers."""
    import socket

    from kalibr._domain import Path
    from kalibr.intelligence.remote import RemoteIntelligence, Resilience

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)  # accepted by the kernel, never answered
    paths = [Path(model) for model in MODELS]
    with tempfile.TemporaryDirectory() as folder:
        remote = RemoteIntelligence(
            f"http://127.0.0.1:{listener.getsockname()[1]}",
            spool=FilePath(folder) / "spool.db",
            resilience=Resilience(timeout=0.05, breaker_after=3, cooldown=60.0),
        )
        started = time.perf_counter()
        remote.decide(GOAL, paths)  # times out, and the timeout opens the breaker
        first = time.perf_counter() - started
        open_costs = []
        for _ in range(200 if quick else 5000):
            started = time.perf_counter()
            remote.decide(GOAL, paths)
            open_costs.append(time.perf_counter() - started)
        remote.close()
    sdk_like = float("nan")
    if not quick:  # what the official SDK's client does: httpx with a 10 s timeout and no breaker
        import httpx

        started = time.perf_counter()
        try:
            httpx.post(f"http://127.0.0.1:{listener.getsockname()[1]}/api/v1/routing/decide", json={}, timeout=10.0)
        except httpx.TimeoutException:
            sdk_like = time.perf_counter() - started
    listener.close()
    open_costs.sort()
    return {
        "sdk_like_ms": sdk_like * 1000,
        "first_ms": first * 1000,
        "open_p50_us": statistics.median(open_costs) * 1e6,
        "open_p99_us": open_costs[int(len(open_costs) * 0.99) - 1] * 1e6,
    }


def _sdk_cell(measured_ms: float) -> str:
    if measured_ms != measured_ms:  # NaN: not measured in a quick run
        return "10,000 ms (its timeout; measured only in full runs)"
    return f"{measured_ms:,.0f} ms (measured once)"


def run(quick: bool) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        "## Intelligence service (`kalibr serve`)\n",
        f"Loopback, {os.cpu_count()} cores shared with the load generator (load average {load:.1f} at the start); "
        "decide latency from one keep-alive connection; "
        f"throughput from {CONNECTIONS_PER_REPLICA} connections per replica, each running "
        "decide then report-outcome. Server CPU per pair is the service processes' own CPU time, so "
        f"1,000 / (CPU ms per pair) is the pairs per second one free core sustains. {TARGETS}.\n",
        "| store | processes | decide p50 | decide p99 | decide+report pairs/s | server CPU per pair |",
        "|---|---|---|---|---|---|",
    ]
    best_pairs = 0.0
    with tempfile.TemporaryDirectory() as folder:
        workdir = FilePath(folder)
        sqlite_url = f"sqlite:///{workdir / 'bench.db'}"
        configs = [("SQLite", sqlite_url, 1), ("SQLite", sqlite_url, 2)]
        pg_url = os.environ.get(PG_ENV)
        if pg_url:
            configs += [("PostgreSQL", pg_url, 1), ("PostgreSQL", pg_url, 2)]
        for name, url, replicas in configs:
            figures = _measure(url, replicas, quick, workdir)
            row = (
                f"| {name} | {replicas} | {figures['p50_ms']:.2f} ms | {figures['p99_ms']:.2f} ms "
                f"| {figures['pairs_per_s']:,.0f} | {figures['cpu_ms_per_pair']:.2f} ms |"
            )
            print(row)
            lines.append(row)
            best_pairs = max(best_pairs, figures["pairs_per_s"])
    ceiling = _http_ceiling(quick)
    row = (
        f"| *HTTP ceiling: a do-nothing ASGI app* | 1 | - | - | {ceiling['pairs_per_s']:,.0f} "
        f"| {ceiling['cpu_ms_per_pair']:.2f} ms |"
    )
    print(row)
    lines += [
        row,
        "\nThe ceiling row is the same client against an app that only reads each request and answers a fixed "
        "JSON, on the same uvicorn: what HTTP alone costs here. The best Kalibr configuration reaches "
        f"{best_pairs / ceiling['pairs_per_s']:.0%} of it.",
    ]
    if not pg_url:
        lines.append(f"\nPostgreSQL rows skipped: set {PG_ENV} to include them.")
    hung = _hung_service_figures(quick)
    lines += [
        "\n### A hung service (accepts connections, never answers)\n",
        "| client | first call | while the breaker is open |",
        "|---|---|---|",
        "| kalibr-core RemoteIntelligence (timeout 50 ms; a timeout opens the breaker) "
        f"| {hung['first_ms']:.0f} ms, once "
        f"| p50 {hung['open_p50_us']:.0f} µs, p99 {hung['open_p99_us']:.0f} µs (no network) |",
        f"| official kalibr SDK 1.14.4 settings (httpx, timeout 10 s, no breaker) | {_sdk_cell(hung['sdk_like_ms'])} "
        "| the same on every call |",
    ]
    print("\n".join(lines[-4:]))
    return "\n".join(lines) + "\n"
