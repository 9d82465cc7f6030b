"""Running the app on uvicorn: in the foreground (``kalibr serve``, one or many worker processes) or in a
background thread (tests and benchmarks), always on a socket we bind ourselves so port 0 works.
"""

from __future__ import annotations

import copy
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["ServeOptions", "ServiceProcess", "app_from_env", "bind", "run_server", "serve_in_thread"]

_OPTIONS_ENV = "KALIBR_SERVE_OPTIONS"


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """What each worker process needs to build its app (passed to workers through the environment)."""

    store: str
    auth: bool = True
    max_body_bytes: int = 1_048_576
    refresh_interval: float = 0.2
    retention_days: float | None = None


def app_from_env() -> FastAPI:
    """The app factory each worker process calls (``uvicorn --factory``)."""
    from kalibr.service import create_app

    options = ServeOptions(**json.loads(os.environ[_OPTIONS_ENV]))
    return create_app(
        options.store,
        auth=options.auth,
        max_body_bytes=options.max_body_bytes,
        refresh_interval=options.refresh_interval,
        retention_days=options.retention_days,
    )


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on such sockets; without it, Nagle's algorithm and
    # delayed ACKs add ~40 ms to every response.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run_server(options: ServeOptions, sock: socket.socket, *, workers: int = 1, log_level: str = "info") -> None:
    """Serve on ``sock`` until interrupted; ``workers`` > 1 runs that many processes sharing the socket."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    os.environ[_OPTIONS_ENV] = json.dumps(asdict(options))
    config = uvicorn.Config(
        "kalibr.service._server:app_from_env",
        factory=True,
        workers=workers,
        log_config=_log_config(log_level),
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    if workers > 1:
        Multiprocess(config, sockets=[sock]).run()
    else:
        uvicorn.Server(config).run(sockets=[sock])


def _log_config(log_level: str) -> dict[str, Any]:
    """uvicorn's logging, plus one handler on the "kalibr" logger at ``log_level`` (its lines would otherwise reach
    only Python's last-resort handler, WARNING and up). The root logger is left alone. uvicorn applies this in each
    worker process."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["kalibr"] = {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    config["handlers"]["kalibr"] = {
        "formatter": "kalibr",
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
    }
    config["loggers"]["kalibr"] = {"handlers": ["kalibr"], "level": log_level.upper(), "propagate": False}
    return config


@contextmanager
def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``app`` from a background thread (on a free loopback port by default); yields its base URL."""
    import uvicorn

    sock = bind(host, port)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="kalibr-service", daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the service thread stopped during startup: see the log above")
            threading.Event().wait(0.01)
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


class ServiceProcess:
    """``kalibr serve`` in a child process (tests and benchmarks): start, wait until ready, kill, restart.

    Usage::

        with ServiceProcess(["--store", "sqlite:///k.db", "--no-auth"]) as service:
            httpx.get(service.url + "/healthz")
    """

    def __init__(
        self, args: list[str], *, port: int = 0, log_path: str | None = None, env: dict[str, str] | None = None
    ):
        self._args = args
        self.port = port
        self._log_path = log_path
        self._env = env
        self._process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self, timeout: float = 90.0) -> ServiceProcess:
        command = [sys.executable, "-m", "kalibr", "serve", "--port", str(self.port), "--log-level", "warning"]
        log = open(self._log_path, "a") if self._log_path else None  # noqa: SIM115
        try:
            self._process = subprocess.Popen(
                [*command, *self._args],
                stdout=subprocess.PIPE,
                stderr=log if log is not None else subprocess.DEVNULL,
                text=True,
                env=self._env,
            )
        finally:
            if log is not None:
                log.close()  # the child has its own copy
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        found = re.search(r"listening on http://[^:]+:(\d+)", line)
        if found is None:
            self.kill()
            raise RuntimeError(f"kalibr serve did not start (said {line!r}); see {self._log_path or 'its stderr'}")
        self.port = int(found.group(1))
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._process is not None and self._process.poll() is None:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        status = "exited" if self._process is None or self._process.poll() is not None else "not ready"
        self.kill()
        raise RuntimeError(f"kalibr serve on port {self.port} {status} within {timeout} s: {self._log_tail()}")

    def _log_tail(self) -> str:
        if not self._log_path or not os.path.exists(self._log_path):
            return "(no log)"
        with open(self._log_path) as log:
            return log.read()[-2000:]

    def stop(self) -> None:
        """SIGTERM: the clean shutdown an operator asks for (the service finishes what it was doing)."""
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=30)
        self.kill()

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, as in a crash."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=10)
            if self._process.stdout is not None:
                self._process.stdout.close()
            self._process = None

    def __enter__(self) -> ServiceProcess:
        return self.start() if self._process is None else self

    def __exit__(self, *exc_info: object) -> None:
        self.kill()
