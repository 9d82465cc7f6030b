"""The sandbox's HTTP server: stdlib ``ThreadingHTTPServer`` speaking OpenAI and Anthropic on loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from kalibr.sandbox import _anthropic, _openai
from kalibr.sandbox._builtins import resolve_scenario
from kalibr.sandbox._engine import Simulator
from kalibr.sandbox._request import SandboxHTTPError, bad_request
from kalibr.sandbox._scenario import Scenario

__all__ = ["SandboxServer", "serve"]

_GOAL_HEADER = "X-Sandbox-Goal"
_OPENAI_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})
_ANTHROPIC_PATHS = frozenset({"/v1/messages", "/messages"})
_ErrorRenderer = Callable[[SandboxHTTPError], dict[str, Any]]


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes; Nagle would add ~40 ms

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the sandbox logs nothing, prompts included."""

    def do_GET(self) -> None:
        path = self.path.split("?")[0].rstrip("/")
        if path in ("/v1/models", "/models"):
            models = [
                {"id": name, "object": "model", "created": 0, "owned_by": "kalibr-sandbox"}
                for name in self.server.simulator.model_names()
            ]
            self._send_json(200, {"object": "list", "data": models})
        elif path in ("", "/health"):
            self._send_json(200, {"status": "ok", "scenario": self.server.simulator.scenario.name})
        else:
            self._send_json(404, _openai.error_body(SandboxHTTPError(404, "not_found", f"No route for GET {path}.")))

    def do_POST(self) -> None:
        path = self.path.split("?")[0].rstrip("/")
        if path in _OPENAI_PATHS:
            self._serve(self._openai, _openai.error_body)
        elif path in _ANTHROPIC_PATHS:
            self._serve(self._anthropic, _anthropic.error_body)
        else:
            self._read_body()
            self._send_json(404, _openai.error_body(SandboxHTTPError(404, "not_found", f"No route for POST {path}.")))

    def _serve(self, answer: Callable[[Any], None], render_error: _ErrorRenderer) -> None:
        try:
            answer(self._json_body())
        except SandboxHTTPError as error:
            headers = {"retry-after-ms": "10", "retry-after": "0"} if error.status == 429 else {}
            self._send_json(error.status, render_error(error), headers)
        except (ConnectionError, TimeoutError):
            raise
        except Exception as exc:  # a sandbox bug: answer 500 rather than drop the connection
            failure = SandboxHTTPError(500, "server_error", f"The sandbox failed: {type(exc).__name__}: {exc}")
            self._send_json(500, render_error(failure))

    def _openai(self, body: Any) -> None:
        request, stream, include_usage = _openai.parse_request(body, goal=self.headers.get(_GOAL_HEADER))
        result = self.server.simulator.complete(request)
        if stream:
            self._send_events(_openai.render_stream(result, include_usage=include_usage))
        else:
            self._send_json(200, _openai.render_completion(result))

    def _anthropic(self, body: Any) -> None:
        request, stream = _anthropic.parse_request(body, goal=self.headers.get(_GOAL_HEADER))
        result = self.server.simulator.complete(request)
        if stream:
            self._send_events(_anthropic.render_stream(result))
        else:
            self._send_json(200, _anthropic.render_message(result))

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _json_body(self) -> Any:
        raw = self._read_body()
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise bad_request(f"The request body is not valid JSON: {exc}") from exc

    def _send_json(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode()
        self.send_response(status, HTTPStatus(status).phrase)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_events(self, events: Iterator[str]) -> None:
        payload = list(events)  # rendered before the status line, so a failure can still be a 500
        self.close_connection = True  # the stream ends when the connection closes
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        for event in payload:
            self.wfile.write(event.encode())
            self.wfile.flush()


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 256  # many concurrent clients connect at once in tests and benchmarks

    def __init__(self, address: tuple[str, int], simulator: Simulator) -> None:
        super().__init__(address, _Handler)
        self.simulator = simulator

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (a timeout it chose) is not an error worth printing."""
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class SandboxServer:
    """A running sandbox. ``with serve(scenario) as sb:`` starts one on an ephemeral loopback port."""

    def __init__(self, scenario: Scenario, *, seed: int = 0, host: str = "127.0.0.1", port: int = 0) -> None:
        self.scenario = scenario
        self.seed = seed
        self._simulator = Simulator(scenario, seed=seed)
        self._http = _HTTPServer((host, port), self._simulator)
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return str(self._http.server_address[0])

    @property
    def port(self) -> int:
        return int(self._http.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """For ``openai.OpenAI(base_url=...)`` and ``OPENAI_BASE_URL``."""
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """For ``anthropic.Anthropic(base_url=...)``, which appends ``/v1/messages`` itself."""
        return self.url

    def request_count(self, model: str | None = None, goal: str | None = None) -> int:
        """Requests served so far, optionally for one model and/or goal; malformed requests are not counted."""
        return self._simulator.request_count(model=model, goal=goal)

    def start(self) -> SandboxServer:
        """Serve in a daemon thread; returns at once."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve_in_thread, name="kalibr-sandbox", daemon=True)
            self._thread.start()
        return self

    def _serve_in_thread(self) -> None:
        self._http.serve_forever(poll_interval=0.02)  # short, so stop() returns quickly

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted."""
        self._http.serve_forever()

    def stop(self) -> None:
        if self._thread is not None:
            self._http.shutdown()
            self._thread.join()
            self._thread = None
        self._http.server_close()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


def serve(
    scenario: Scenario | str | Path = "demo", *, seed: int = 0, host: str = "127.0.0.1", port: int = 0
) -> SandboxServer:
    """A sandbox for ``scenario`` (a ``Scenario``, a builtin name, or a file), started when entered::

    with serve(builtin_scenario("demo"), seed=0) as sb:
        client = openai.OpenAI(base_url=sb.openai_base_url, api_key="anything")
    """
    return SandboxServer(resolve_scenario(scenario), seed=seed, host=host, port=port)
