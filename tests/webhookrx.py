"""A real webhook receiver for the tests: http.server on 127.0.0.1 in a thread, which
records every request (path, headers, exact body) and answers by its path:

- ``/ok...``: 200; ``/gone``: 404; ``/error``: 500;
- ``/redirect``: 302 to ``/ok-redirected`` (a client that follows it shows up there);
- ``/slow``: waits ``slow_seconds`` before answering 200;
- ``/trickle``: sends its status line a byte every 0.2 s;
- ``/flaky``: 503 to the first ``flaky_failures`` requests, then 200.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from smtpeter.webhooks import signing


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        data = json.loads(self.body)
        assert isinstance(data, dict)
        return data

    def signed_by(self, secret: str) -> bool:
        """The receiver's check, as the README shows it."""
        return signing.verify(secret, self.headers.get(signing.HEADER, ""), self.body)


class Receiver:
    def __init__(self, slow_seconds: float = 3.0, flaky_failures: int = 2) -> None:
        self.requests: list[Request] = []
        self.slow_seconds = slow_seconds
        self.flaky_failures = flaky_failures
        self._lock = threading.Lock()
        self._flaky_seen = 0
        self.changed = threading.Condition(self._lock)
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                request = Request(self.path, {k: v for k, v in self.headers.items()}, body)
                with receiver.changed:
                    receiver.requests.append(request)
                    receiver.changed.notify_all()
                # The client may give up (a timeout, or the dispatcher was killed).
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    receiver._answer(self)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _answer(self, h: http.server.BaseHTTPRequestHandler) -> None:
        path = h.path.split("?", 1)[0]
        if path == "/slow":
            time.sleep(self.slow_seconds)
        if path == "/trickle":
            for byte in b"HTTP/1.1 200 OK\r\n":
                try:
                    h.wfile.write(bytes([byte]))
                    h.wfile.flush()
                except OSError:
                    return
                time.sleep(0.2)
            return
        status = 200
        headers = {"Content-Length": "2", "Connection": "close"}
        if path == "/gone":
            status = 404
        elif path == "/error":
            status = 500
        elif path == "/redirect":
            status = 302
            headers["Location"] = self.url("/ok-redirected")
        elif path == "/flaky":
            with self._lock:
                self._flaky_seen += 1
                if self._flaky_seen <= self.flaky_failures:
                    status = 503
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(b"ok")

    def wait_for(self, count: int, path: str | None = None, timeout: float = 20) -> list[Request]:
        """The requests (to ``path``, if given) once there are ``count``, else as many as
        came within ``timeout``."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                found = [r for r in self.requests if path is None or r.path == path]
                left = deadline - time.monotonic()
                if len(found) >= count or left <= 0:
                    return found
                self.changed.wait(left)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
