"""Click redirects per second: the tracker writing events, against the same server
answering one static 302 with no store (the baseline), in the same run.

    python bench/tracker.py                   # 3 rounds of 5 s per configuration
    python bench/tracker.py --rounds 5 --duration 10 --connections 100

Both servers are ``smtpeter.tracker.server.run_workers`` (uvicorn, httptools, uvloop,
pre-forked workers on one socket), started once, on loopback. The load generator is
wrk (``apt-get install wrk``) with a Lua script cycling through distinct signed click
tokens (one message uid each), keep-alive connections. Each configuration gets one
untimed warm-up run, then rounds run both, order alternating; the table gives the
median req/s, p50/p99 latency, and the ratio tracker / baseline (median of the
medians and median of the per-round ratios). At the end the tracker is stopped
with SIGTERM and the events in the store are counted against the 302s wrk counted.
Every step is bounded in time; the whole run stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from smtpeter import config, logsetup
from smtpeter.store import open_store
from smtpeter.tracker.app import baseline_app
from smtpeter.tracker.keys import KeyRing
from smtpeter.tracker.server import listen, run_tracker, run_workers

URL = "https://www.example.org/landing/spring-sale?utm_source=newsletter&utm_medium=email&id={i}"
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"

LUA = """
local paths = {%(paths)s}
local n = #paths
local i = math.random(n)
local headers = {["User-Agent"] = "%(ua)s"}
request = function()
  i = i %% n + 1
  return wrk.format("GET", paths[i], headers)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests": %%d, "duration_us": %%d, "status": %%d, "connect": %%d,'
    .. ' "read": %%d, "write": %%d, "timeout": %%d, "p50_us": %%d, "p99_us": %%d}\\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass
class Run:
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"server on port {port} did not start") from None
            time.sleep(0.05)


def wrk(args: argparse.Namespace, port: int, script: Path, duration: float) -> Run:
    cmd = [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{duration:g}s",
        "--timeout",
        "5s",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}/",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30, check=True)
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    r = json.loads(line[len("RESULT ") :])
    errors = r["status"] + r["connect"] + r["read"] + r["write"] + r["timeout"]
    return Run(
        requests=r["requests"],
        seconds=r["duration_us"] / 1e6,
        errors=errors,
        p50_ms=r["p50_us"] / 1000,
        p99_ms=r["p99_us"] / 1000,
    )


def serve_baseline(port: int, workers: int) -> int:
    logsetup.setup("warning")
    return run_workers(listen("127.0.0.1", port), workers, lambda: (baseline_app(), lambda: None))


def serve_tracker(workdir: str, port: int, workers: int, access_log: bool) -> int:
    logsetup.setup("info")
    return run_tracker(tracker_config(workdir, port, workers, access_log))


def tracker_config(workdir: str, port: int, workers: int, access_log: bool = True) -> config.Config:
    return config.parse(
        {
            "store": {"sqlite_path": os.path.join(workdir, "smtpeter.db")},
            "tracker": {"listen_port": port, "workers": workers, "access_log": access_log},
        },
        "bench",
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=5.0, help="seconds per timed run")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--threads", type=int, default=1, help="wrk threads")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="server workers")
    p.add_argument("--tokens", type=int, default=5000, help="distinct click links")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument(
        "--no-access-log", action="store_true", help="tracker.access_log: false for the tracker"
    )
    p.add_argument("--serve-baseline", type=int, metavar="PORT", help=argparse.SUPPRESS)
    p.add_argument("--serve-tracker", type=int, metavar="PORT", help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve_baseline:
        return serve_baseline(args.serve_baseline, args.workers)
    if args.serve_tracker:
        return serve_tracker(args.workdir, args.serve_tracker, args.workers, not args.no_access_log)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")

    workdir = tempfile.mkdtemp(prefix="smtpeter-bench-tracker-")
    base_port, trk_port = free_port(), free_port()
    cfg = tracker_config(workdir, trk_port, args.workers)
    store = open_store(cfg.store)
    signer = KeyRing.from_config(store, cfg.tracker).signer()
    paths = [f"/c/{signer.sign('c', f'bench-{i}', URL.format(i=i))}" for i in range(args.tokens)]
    script = Path(workdir, "clicks.lua")
    script.write_text(LUA % {"paths": ",".join(f'"{p}"' for p in paths), "ua": USER_AGENT})

    me = [sys.executable, __file__, "--workers", str(args.workers)]
    if args.no_access_log:
        me.append("--no-access-log")
    log = open(os.path.join(workdir, "tracker.log"), "wb")  # noqa: SIM115
    procs = {
        "baseline": subprocess.Popen([*me, "--serve-baseline", str(base_port)]),
        "tracker": subprocess.Popen(
            [*me, "--serve-tracker", str(trk_port), "--workdir", workdir], stderr=log
        ),
    }
    ports = {"baseline": base_port, "tracker": trk_port}
    runs: dict[str, list[Run]] = {"baseline": [], "tracker": []}
    served = 0
    try:
        for name, proc in procs.items():
            wait_listening(ports[name], proc)
        for name in ports:
            warm = wrk(args, ports[name], script, args.warmup)
            if name == "tracker":
                served += warm.requests
        order = ["baseline", "tracker"]
        for r in range(args.rounds):
            for name in order if r % 2 == 0 else reversed(order):
                run = wrk(args, ports[name], script, args.duration)
                runs[name].append(run)
                if name == "tracker":
                    served += run.requests
                print(
                    f"round {r + 1} {name:8} {run.rate:8.0f} req/s"
                    f"  p50 {run.p50_ms:6.2f} ms  p99 {run.p99_ms:6.2f} ms  errors {run.errors}",
                    flush=True,
                )
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()

    events = len(store.events(limit=10**9))
    med = {n: statistics.median(x.rate for x in rs) for n, rs in runs.items()}
    paired = statistics.median(
        t.rate / b.rate for t, b in zip(runs["tracker"], runs["baseline"], strict=True)
    )
    print()
    print(
        f"{args.workers} server workers, wrk -t{args.threads} -c{args.connections}, "
        f"{args.rounds} rounds of {args.duration:g} s, {os.cpu_count()} CPUs"
    )
    print(f"| {'configuration':38} | req/s (median) | p50 ms | p99 ms | errors |")
    print(f"|{'-' * 40}|----------------|--------|--------|--------|")
    for name, label in (
        ("baseline", "(a) static 302, no store (baseline)"),
        ("tracker", "(b) tracker: verify, 302, event" + ("" if args.no_access_log else ", log")),
    ):
        rs = runs[name]
        print(
            f"| {label:38} | {med[name]:14.0f} | {statistics.median(x.p50_ms for x in rs):6.2f}"
            f" | {statistics.median(x.p99_ms for x in rs):6.2f} | {sum(x.errors for x in rs):6d} |"
        )
    print(f"\nratio tracker/baseline: {med['tracker'] / med['baseline']:.2f} (medians),")
    print(f"                        {paired:.2f} (median of per-round ratios)")
    # wrk counts the responses it read; requests in flight when a run ends are served
    # (and recorded) but not counted, at most one per connection per run.
    slack = args.connections * (args.rounds + 1)
    complete = served <= events <= served + slack
    print(
        f"events in the store after SIGTERM: {events} for {served} redirects counted by wrk"
        f" ({'complete' if complete else 'MISSING EVENTS'})"
    )
    if args.keep:
        print(f"work directory kept: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
