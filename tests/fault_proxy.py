"""A fault-injecting HTTP proxy in front of a real service: some requests are answered with an error instead.

Usage::

    with FaultProxy(upstream_url, fault=lambda path, body: 413 if path.endswith("outcomes") else None) as proxy:
        RemoteIntelligence(proxy.url, ...)

``fault(path, body)`` returns a status to answer with (the request never reaches the service), or None to forward.
An upstream that does not answer is a 502, as a real load balancer would say.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

__all__ = ["FaultProxy", "HungService"]

Fault = Callable[[str, bytes], int | None]


class FaultProxy:
    def __init__(self, upstream: str, fault: Fault) -> None:
        self.upstream = upstream.rstrip("/")
        self.fault = fault
        self.injected: dict[int, int] = {}
        self._lock = threading.Lock()
        self._client = httpx.Client(timeout=30.0)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                proxy._handle(self, "GET")

            def do_POST(self) -> None:
                proxy._handle(self, "POST")

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        body = request.rfile.read(int(request.headers.get("Content-Length") or 0))
        status = self.fault(request.path, body)
        if status is not None:
            with self._lock:
                self.injected[status] = self.injected.get(status, 0) + 1
            self._answer(request, status, json.dumps({"detail": f"injected {status}", "error": "fault"}).encode())
            return
        headers = {
            k: v for k, v in request.headers.items() if k.lower() in ("x-api-key", "x-tenant-id", "content-type")
        }
        try:
            upstream = self._client.request(method, self.upstream + request.path, content=body, headers=headers)
        except httpx.HTTPError:
            self._answer(request, 502, b'{"detail": "upstream down"}')
            return
        self._answer(request, upstream.status_code, upstream.content)

    @staticmethod
    def _answer(request: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
        try:
            request.send_response(status)
            request.send_header("Content-Type", "application/json")
            request.send_header("Content-Length", str(len(body)))
            request.end_headers()
            request.wfile.write(body)
        except OSError:  # the client went away (a killed app, a timed-out request): nothing to answer
            request.close_connection = True

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()


class HungService:
    """Accepts connections and reads requests, never answers: the worst kind of outage."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.requests = 0
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            self._held.append(connection)
            threading.Thread(target=self._read, args=(connection,), daemon=True).start()

    def _read(self, connection: socket.socket) -> None:
        while True:
            try:
                data = connection.recv(65536)
            except OSError:
                return
            if not data:
                return
            with self._lock:
                self.requests += data.count(b"HTTP/1.1\r\n")

    def close(self) -> None:
        self.sock.close()
        for connection in self._held:
            connection.close()
