"""Running the app on uvicorn: in the foreground (``kalibr serve``, one or many worker processes) or in a
background thread (tests and benchmarks), always on a socket we bind ourselves so port 0 works.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["ServeOptions", "app_from_env", "bind", "run_server", "serve_in_thread"]

_OPTIONS_ENV = "KALIBR_SERVE_OPTIONS"


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """What each worker process needs to build its app (passed to workers through the environment)."""

    store: str
    auth: bool = True
    max_body_bytes: int = 1_048_576
    refresh_interval: float = 0.2


def app_from_env() -> FastAPI:
    """The app factory each worker process calls (``uvicorn --factory``)."""
    from kalibr.service import create_app

    options = ServeOptions(**json.loads(os.environ[_OPTIONS_ENV]))
    return create_app(
        options.store,
        auth=options.auth,
        max_body_bytes=options.max_body_bytes,
        refresh_interval=options.refresh_interval,
    )


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
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
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    if workers > 1:
        Multiprocess(config, sockets=[sock]).run()
    else:
        uvicorn.Server(config).run(sockets=[sock])


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
