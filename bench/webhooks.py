"""Webhook dispatch: events a second to a local receiver, and the delay from an event
being recorded to its POST arriving (issue 11).

    python bench/webhooks.py [--events 5000] [--rate 200] [--seconds 10]

A store in a temporary directory with one login and one endpoint on a loopback HTTP
receiver (ThreadingHTTPServer, HTTP/1.1, 204 to every POST), the real dispatcher
(`smtpeter webhooks dispatch` as its own process, the package's defaults but
allow_private_targets), and:

- drain: ``--events`` clicks recorded first (one transaction each 500), then the
  dispatcher started: events a second from its first POST to its last;
- live: the dispatcher running, a click recorded every 1/``--rate`` s for ``--seconds``:
  the delay from each event's commit to its POST's arrival (median, p99, max);
- baseline: the same bodies POSTed to the same receiver by plain http.client loops,
  one keep-alive connection per thread, as many threads as the dispatcher's
  max_in_flight: what receiver and loopback allow here. The drain is quoted against it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from smtpeter.config import WebhooksConfig
from smtpeter.events import Event
from smtpeter.store import MessageRecord
from smtpeter.store.sqlite import SQLiteStore


class Receiver:
    """A loopback endpoint that answers 204 and keeps each event id's arrival time."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                when = time.time()
                event_id = self.headers.get("X-Smtpeter-Event-Id") or str(len(body))
                with receiver.lock:
                    receiver.arrived.setdefault(event_id, when)
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.arrived) >= n:
                    return True
            time.sleep(0.01)
        return False


def baseline(port: int, bodies: list[bytes], threads: int) -> float:
    """POSTs a second by plain http.client loops over keep-alive connections."""
    chunks = [bodies[i::threads] for i in range(threads)]

    def post(chunk: list[bytes]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for n, body in enumerate(chunk):
            headers = {"Content-Type": "application/json", "X-Smtpeter-Event-Id": f"b{n}"}
            conn.request("POST", "/", body=body, headers=headers)
            conn.getresponse().read()
        conn.close()

    workers = [threading.Thread(target=post, args=(c,)) for c in chunks]
    started = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return len(bodies) / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5000, help="events of the drain")
    parser.add_argument("--rate", type=float, default=200.0, help="live events a second")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long the live part")
    ns = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="smtpeter-webhooks-bench-"))
    receiver = Receiver()
    config = work / "smtpeter.yaml"
    config.write_text(
        f"store:\n  sqlite_path: {work / 'smtpeter.db'}\n"
        "webhooks:\n  allow_private_targets: true\n  poll_seconds: 1.0\n"
    )
    store = SQLiteStore(str(work / "smtpeter.db"))
    smtpeter = [sys.executable, "-m", "smtpeter", "--config", str(config)]
    subprocess.run(
        [*smtpeter, "login", "create", "bench", "--trackclicks", "--json"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [*smtpeter, "webhooks", "add", "bench", "--url", f"http://127.0.0.1:{receiver.port}/h",
         "--events", "click", "--json"],
        check=True, capture_output=True,
    )  # fmt: skip
    store.record_messages(
        [
            MessageRecord(
                queue_id=f"Q{i:05X}", message_id=f"<{i}@bench>", login="bench",
                envelope_sender="s@example.com", recipients=("r@example.org",), features=(),
                size_before=1, size_after=1, created_at="2026-12-02T10:00:00.000000Z",
                uid=f"u{i}",
            )
            for i in range(1000)
        ]
    )  # fmt: skip

    def clicks(n: int, offset: int) -> list[Event]:
        return [
            Event("click", f"u{(offset + i) % 1000}", "2026-12-02T10:00:01.000000Z",
                  url="https://www.example.com/landing")
            for i in range(n)
        ]  # fmt: skip

    for b in range(0, ns.events, 500):
        store.record_events(clicks(min(500, ns.events - b), b))
    # Its log to a file: a pipe nobody reads would fill and stop it.
    log = (work / "dispatcher.log").open("w")
    dispatcher = subprocess.Popen([*smtpeter, "webhooks", "dispatch"], stderr=log)
    try:
        if not receiver.wait_for(1, 60):
            print("the dispatcher POSTed nothing in 60 s", file=sys.stderr)
            return 1
        if not receiver.wait_for(ns.events, 600):
            print(f"only {len(receiver.arrived)} of {ns.events} arrived", file=sys.stderr)
            return 1
        times = sorted(receiver.arrived.values())
        drain = (ns.events - 1) / (times[-1] - times[0])
        # Live: one event at a time, its commit time kept.
        committed: dict[int, float] = {}
        first_live = ns.events
        n_live = int(ns.rate * ns.seconds)
        for i in range(n_live):
            store.record_events(clicks(1, i))
            committed[first_live + i + 1] = time.time()
            time.sleep(1 / ns.rate)
        if not receiver.wait_for(ns.events + n_live, 120):
            print(f"only {len(receiver.arrived)} of {ns.events + n_live}", file=sys.stderr)
            return 1
        # The event ids are the store's: 1..events, then the live ones.
        delays = sorted(
            receiver.arrived[str(event_id)] - when
            for event_id, when in committed.items()
            if str(event_id) in receiver.arrived
        )
    finally:
        dispatcher.terminate()
        dispatcher.wait(30)
    bodies = [json.dumps({"id": i, "pad": "x" * 400}).encode() for i in range(3000)]
    base = baseline(receiver.port, bodies, WebhooksConfig().max_in_flight)
    print(f"drain: {ns.events} events, {drain:,.0f}/s")
    print(f"baseline (http.client, {WebhooksConfig().max_in_flight} connections): {base:,.0f}/s")
    print(f"drain / baseline: {drain / base:.2f}")
    print(
        f"live, {n_live} events at {ns.rate:g}/s: event to POST median"
        f" {statistics.median(delays) * 1000:.0f} ms, p99"
        f" {delays[len(delays) * 99 // 100] * 1000:.0f} ms, max {delays[-1] * 1000:.0f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
