"""End-to-end throughput of the relay: a private Postfix, our auth daemon and milter, a sink.

Usage: python bench/relay.py [--quick] [--rounds N] [--out DIR]   (as root)

Part 1, messages per second: 20 concurrent STARTTLS + AUTH PLAIN sessions, several
messages each, send the ~45 KB multipart/alternative newsletter; a run's time goes from
the first send until every message is in the sink's Maildir/new. Configurations:

  a    Postfix without our milter (the baseline)
  b    our milter, a login with no feature on
  c1   inlinecss on, inliner css-inline (the default)
  c2   inlinecss on, inliner premailer
  c3   inlinecss (css-inline), trackclicks and trackopens on

Part 2, sessions per second: 20 concurrent sessions of connect, STARTTLS, (AUTH), one
small message, QUIT; a run's time goes from the first connect until the last QUIT was
answered (every message is then waited for in the Maildir, outside the timing).

  i    TLS without AUTH (an extra listener that relays for 127.0.0.0/8; milter on)
  ii   TLS + AUTH, credential cache on (the default)
  iii  TLS + AUTH, credential cache off (auth.cache_ttl: 0)

Configurations run round-robin (the order rotated each round) after one untimed
warm-up run each, so a noisy neighbour spreads over all of them; medians are quoted,
with ratios to the baseline of the same benchmark run.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import multiprocessing
import multiprocessing.synchronize
import os
import queue
import re
import resource
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

from smtpeter import logins
from smtpeter.features import FeatureSet
from smtpeter.local.stack import LocalStack, Ports, StackError, free_port
from smtpeter.logins import Login
from smtpeter.store import open_store

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests import mimedata  # noqa: E402 (the test builders live outside the package)

SENDER = "bench@example.com"
RECIPIENT = "rcpt@example.org"
# A fixed-width Message-ID, so each message gets a unique one by cheap byte splicing.
MSGID_WIDTH = 24


class SMTPFailure(Exception):
    """An unexpected reply; the run that got it is reported as failed."""


# -- the load generator: a minimal blocking SMTP client ------------------------------


class Session:
    """One SMTP session over a plain socket, upgraded with STARTTLS.

    Raw sockets rather than smtplib: no per-message dot-stuffing or header work in the
    client (the message is stuffed once), so the client spends little CPU per message.
    """

    def __init__(self, port: int, context: ssl.SSLContext, timeout: float) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock: socket.socket = raw
        self.buf = b""
        try:
            self.expect(220)
            self.command(b"EHLO bench.example.net", 250)
            self.command(b"STARTTLS", 220)
            self.sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
            self.command(b"EHLO bench.example.net", 250)
        except BaseException:
            self.sock.close()
            raise

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise SMTPFailure("connection closed by the server")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def expect(self, code: int) -> None:
        while True:
            line = self._line()
            if len(line) < 3 or line[3:4] != b"-":
                break
        if not line.startswith(str(code).encode()):
            raise SMTPFailure(f"expected {code}, got {line[:200]!r}")

    def command(self, line: bytes, code: int) -> None:
        self.sock.sendall(line + b"\r\n")
        self.expect(code)

    def auth_plain(self, user: str, password: str) -> None:
        token = base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode())
        self.command(b"AUTH PLAIN " + token, 235)

    def send(self, stuffed: bytes) -> None:
        """Send one message, already dot-stuffed and ending in CRLF.CRLF."""
        self.command(f"MAIL FROM:<{SENDER}>".encode(), 250)
        self.command(f"RCPT TO:<{RECIPIENT}>".encode(), 250)
        self.command(b"DATA", 354)
        self.sock.sendall(stuffed)
        self.expect(250)

    def quit(self) -> None:
        self.command(b"QUIT", 221)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def prepare_message(raw: bytes) -> tuple[bytes, bytes]:
    """(head, tail): head + a MSGID_WIDTH id + tail is a dot-stuffed DATA payload."""
    head, body = raw.split(b"\r\n\r\n", 1)
    # (The builders' Message-ID headers fit on one line: no continuation is left behind.)
    lines = [h for h in head.split(b"\r\n") if not h.lower().startswith(b"message-id:")]
    data = b"\r\n".join(lines) + b"\r\n\r\n" + body
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    stuffed = re.sub(rb"(?m)^\.", b"..", data) + b".\r\n"
    return b"Message-ID: <", b"@bench.example>\r\n" + stuffed


@dataclass(frozen=True)
class Job:
    """What every client thread of one run does."""

    port: int
    cafile: str
    login: tuple[str, str] | None  # None: no AUTH
    message: tuple[bytes, bytes]  # from prepare_message
    per_session: int  # messages per session (1: part 2's short sessions)
    preconnect: bool  # open the first session before the clock starts
    timeout: float  # per socket operation
    deadline: float  # time.monotonic() after which threads stop sending


@dataclass
class ThreadResult:
    accepted: int = 0
    sessions: int = 0
    start: float = 0.0
    end: float = 0.0
    error: str | None = None


def _client_thread(
    job: Job,
    count: int,
    tag: str,
    context: ssl.SSLContext,
    ready: multiprocessing.synchronize.Barrier,
    go: multiprocessing.synchronize.Event,
    result: ThreadResult,
) -> None:
    session: Session | None = None
    head, tail = job.message

    def open_session() -> Session:
        s = Session(job.port, context, job.timeout)
        try:
            if job.login is not None:
                s.auth_plain(*job.login)
        except BaseException:
            s.close()
            raise
        result.sessions += 1
        return s

    try:
        if job.preconnect:
            session = open_session()
        ready.wait(job.timeout)
        if not go.wait(job.timeout):
            raise SMTPFailure("never told to start")
        result.start = time.monotonic()
        sent = 0
        while sent < count:
            if time.monotonic() > job.deadline:
                raise SMTPFailure(f"run deadline passed after {sent} of {count} messages")
            if session is None:
                session = open_session()
            for _ in range(min(job.per_session, count - sent)):
                msgid = f"{tag}.{sent}".ljust(MSGID_WIDTH, "x").encode()
                session.send(head + msgid + tail)
                sent += 1
                result.accepted += 1
            session.quit()
            session.close()
            session = None
    except (OSError, SMTPFailure, threading.BrokenBarrierError) as e:
        result.error = f"{type(e).__name__}: {e}"
        with contextlib.suppress(threading.BrokenBarrierError):
            ready.abort()
    finally:
        if session is not None:
            session.close()
        result.end = time.monotonic()


def _client_process(
    job: Job,
    counts: list[int],
    name: str,
    ready: multiprocessing.synchronize.Barrier,
    go: multiprocessing.synchronize.Event,
    out: Queue[tuple[list[ThreadResult], float]],
) -> None:
    """One load-generator process: a few threads, each running its share of sessions."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    context = ssl.create_default_context(cafile=job.cafile)
    results = [ThreadResult() for _ in counts]
    threads = [
        threading.Thread(
            target=_client_thread,
            args=(job, n, f"{name}t{i}", context, ready, go, results[i]),
            daemon=True,
        )
        for i, n in enumerate(counts)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(1.0, job.deadline - time.monotonic() + job.timeout))
    for t, r in zip(threads, results, strict=True):
        if t.is_alive() and r.error is None:
            r.error = "thread did not finish"
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    out.put((results, cpu))


# -- the system under test -----------------------------------------------------------


@dataclass
class Bench:
    """One stack and the logins the configurations running on it use."""

    label: str
    stack: LocalStack
    logins: dict[str, tuple[str, str]] = field(default_factory=dict)
    plain_port: int | None = None


def start_bench(
    label: str,
    workdir: Path,
    settings: dict[str, Any],
    login_features: dict[str, FeatureSet],
    *,
    with_milter: bool = True,
    plain_listener: bool = False,
    fast_sink: bool = True,
) -> Bench:
    root = Path(tempfile.mkdtemp(prefix=f"smtpeter-bench-{label}-", dir=workdir))
    root.chmod(0o755)  # Postfix's smtpd (user postfix) must reach the sockets inside
    plain_port = free_port() if plain_listener else None
    extra = (
        f"127.0.0.1:{plain_port} inet n - n - - smtpd -o smtpd_sender_restrictions="
        " -o smtpd_relay_restrictions=permit_mynetworks,reject -o mynetworks=127.0.0.0/8"
        # TLS is set per listener (the instance's main.cf leaves smtpd without it).
        " -o smtpd_tls_security_level=may -o smtpd_tls_cert_file=$smtpeter_tls_cert_file"
        " -o smtpd_tls_key_file=$smtpeter_tls_key_file"
        if plain_port is not None
        else ""
    )
    stack = LocalStack(
        root=root,
        ports=Ports(
            smtp=free_port(), submission=free_port(), sink=free_port(), tracker=free_port()
        ),
        listeners=("587",),  # the one the benchmark sends to
        settings=settings,
        with_milter=with_milter,
        extra_services=extra,
        fast_sink=fast_sink,
    )
    bench = Bench(label, stack, plain_port=plain_port)
    try:
        stack.start()
        store = open_store(stack.config().store)
        try:
            for config, features in login_features.items():
                name, password = f"bench-{config}", logins.generate_password()
                store.create_login(Login(name, logins.hash_password(password), True, features))
                bench.logins[config] = (name, password)
        finally:
            store.close()
    except BaseException:
        stop_bench(bench, keep=False)
        raise
    return bench


def stop_bench(bench: Bench, keep: bool) -> None:
    try:
        bench.stack.stop()
    except (OSError, StackError, subprocess.SubprocessError) as e:
        print(f"warning: stopping stack {bench.label}: {e}", file=sys.stderr)
    if keep:
        print(f"stack {bench.label} kept in {bench.stack.root}")
    else:
        shutil.rmtree(bench.stack.root, ignore_errors=True)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _process_tree_cpu(pid: int) -> float:
    """CPU seconds used so far by a process and its live descendants (from /proc)."""
    total = 0.0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except (OSError, IndexError, ValueError):
            continue
        todo += [int(c) for c in children]
    return total


def components_cpu(stack: LocalStack) -> dict[str, float]:
    """CPU seconds used so far by our sink, auth daemon and milter (with its workers)."""
    used = {}
    for component in ("sink", "authd", "milter"):
        pid = stack.pid(component)
        used[component] = _process_tree_cpu(pid) if pid is not None else 0.0
    return used


def delivered_count(stack: LocalStack) -> int:
    try:
        return len(os.listdir(stack.maildir / "new"))
    except FileNotFoundError:
        return 0


def drain(stack: LocalStack, timeout: float) -> bool:
    """Wait (bounded) for Postfix's queue to empty, then empty the Maildir."""
    deadline = time.monotonic() + timeout
    empty = stack.queue_empty()
    while not empty and time.monotonic() < deadline:
        stack.flush()
        time.sleep(0.2)
        empty = stack.queue_empty()
    for sub in ("new", "tmp"):
        with contextlib.suppress(FileNotFoundError), os.scandir(stack.maildir / sub) as it:
            for entry in it:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
    return empty


# -- one timed run -------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    key: str
    part: int
    title: str
    bench: str  # Bench.label
    messages: int
    login: bool = True
    plain: bool = False  # the no-AUTH listener


@dataclass
class Run:
    config: str
    round: int
    ok: bool
    rate: float  # msg/s (part 1) or sessions/s (part 2); 0 when not ok
    seconds: float
    messages: int
    delivered: int
    delivery_seconds: float
    client_cpu: float  # CPU seconds the load generator used
    # CPU seconds our sink, auth daemon and milter used during the run (to the last delivery)
    components_cpu: dict[str, float] = field(default_factory=dict)
    error: str | None = None


def run_once(config: Config, bench: Bench, round_no: int, opts: argparse.Namespace) -> Run:
    stack = bench.stack
    if not drain(stack, 30.0):
        print(f"  warning: {config.key}: queue not empty before the run", file=sys.stderr)
    clients, threads_each = opts.procs, opts.threads
    sessions = clients * threads_each
    total = config.messages
    shares = [total // sessions + (1 if i < total % sessions else 0) for i in range(sessions)]
    part1 = config.part == 1
    port = bench.plain_port if config.plain else stack.ports.submission
    assert port is not None
    job = Job(
        port=port,
        cafile=str(stack.cert_file),
        login=bench.logins[config.key] if config.login else None,
        message=opts.newsletter if part1 else opts.small,
        per_session=opts.per_session if part1 else 1,
        preconnect=part1,
        timeout=opts.socket_timeout,
        deadline=time.monotonic() + opts.run_timeout,
    )
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Barrier(sessions + 1)
    go = ctx.Event()
    out: Queue[tuple[list[ThreadResult], float]] = ctx.Queue()
    procs = [
        ctx.Process(
            target=_client_process,
            args=(
                job,
                shares[p * threads_each : (p + 1) * threads_each],
                f"r{round_no}p{p}",
                ready,
                go,
                out,
            ),
            daemon=True,
        )
        for p in range(clients)
    ]
    for p in procs:
        p.start()
    cpu_before: dict[str, float] = {}
    cpu_after: dict[str, float] = {}
    results: list[ThreadResult] = []
    cpu = 0.0
    gathered = 0
    error: str | None = None
    t0 = t_end = time.monotonic()
    try:
        try:
            ready.wait(opts.socket_timeout + 5)
        except threading.BrokenBarrierError:
            error = "a client could not connect before the start"
        cpu_before = components_cpu(stack)
        t0 = time.monotonic()
        go.set()
        target = total
        seen = 0
        reached: float | None = None
        # Part 1 stops the clock when the last message lands; part 2 when the last
        # client is done. Either way every message is waited for, up to the deadline.
        while time.monotonic() < job.deadline + opts.socket_timeout:
            with contextlib.suppress(queue.Empty):
                while gathered < clients:
                    res, used = out.get_nowait()
                    results += res
                    cpu += used
                    gathered += 1
            if gathered == clients:
                target = sum(r.accepted for r in results)
            seen = delivered_count(stack)
            if seen >= target and reached is None:
                reached = time.monotonic()
                cpu_after = components_cpu(stack)
            if reached is not None and gathered == clients:
                break
            if gathered == clients and any(r.error for r in results) and seen >= target:
                break
            time.sleep(0.005)
        else:
            error = error or f"timed out: {seen} of {target} delivered"
        t_delivered = (reached or time.monotonic()) - t0
        if part1:
            t_end = t0 + t_delivered
        else:
            t_end = max((r.end for r in results), default=time.monotonic())
    finally:
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.terminate()
                p.join(5)
    errors = [r.error for r in results if r.error]
    if errors:
        error = error or f"{len(errors)} client error(s), first: {errors[0]}"
    if gathered < clients:
        error = error or f"only {gathered} of {clients} client processes reported"
    seconds = max(t_end - t0, 1e-9)
    accepted = sum(r.accepted for r in results)
    delivered = delivered_count(stack)
    ok = error is None and accepted == total and delivered >= total
    if not ok and error is None:
        error = f"{accepted} accepted, {delivered} delivered of {total}"
    return Run(
        config=config.key,
        round=round_no,
        ok=ok,
        rate=total / seconds if ok else 0.0,
        seconds=seconds,
        messages=total,
        delivered=delivered,
        delivery_seconds=t_delivered,
        client_cpu=cpu,
        components_cpu={k: cpu_after[k] - cpu_before.get(k, 0.0) for k in cpu_after},
        error=error,
    )


# -- the benchmark -------------------------------------------------------------------


def configs(opts: argparse.Namespace) -> list[Config]:
    n, slow, sessions = opts.messages, max(opts.messages // 3, 20), opts.sessions
    return [
        Config("a", 1, "Postfix, no milter (baseline)", "plain", n),
        Config("b", 1, "milter, no feature", "css", n),
        Config("c1", 1, "inlinecss, css-inline", "css", n),
        Config("c2", 1, "inlinecss, premailer", "premailer", slow),
        Config("c3", 1, "inlinecss + trackclicks + trackopens", "css", n),
        Config("i", 2, "TLS, no AUTH (baseline)", "css", sessions, login=False, plain=True),
        Config("ii", 2, "TLS + AUTH, cache on", "css", sessions),
        Config("iii", 2, "TLS + AUTH, cache off", "nocache", sessions),
    ]


@contextlib.contextmanager
def benches(opts: argparse.Namespace) -> Iterator[dict[str, Bench]]:
    none, inline = FeatureSet(), FeatureSet(inlinecss=True)
    everything = FeatureSet(inlinecss=True, trackclicks=True, trackopens=True)
    started: dict[str, Bench] = {}
    try:
        specs: list[tuple[str, dict[str, Any], dict[str, FeatureSet], bool, bool]] = [
            ("plain", {}, {"a": none}, False, False),
            ("css", {"features": {"inliner": "css-inline"}},
             {"b": none, "c1": inline, "c3": everything, "ii": none}, True, True),
            ("premailer", {"features": {"inliner": "premailer"}}, {"c2": inline}, True, False),
            ("nocache", {"auth": {"cache_ttl": 0}}, {"iii": none}, True, False),
        ]  # fmt: skip
        for label, settings, features, milter, plain in specs:
            print(f"starting stack {label} ...", flush=True)
            started[label] = start_bench(
                label,
                opts.workdir,
                settings,
                features,
                with_milter=milter,
                plain_listener=plain,
                fast_sink=not opts.python_sink,
            )
        yield started
    finally:
        for bench in started.values():
            stop_bench(bench, opts.keep)


def milter_ms(bench: Bench) -> dict[str, float]:
    """Median per-message milter time (the log's ms=) by login, over the whole run."""
    samples: dict[str, list[float]] = {}
    try:
        text = bench.stack.log_file("milter").read_text(errors="replace")
    except FileNotFoundError:
        return {}
    for m in re.finditer(r"login=(\S+) accepted: .* ms=([0-9.]+)", text):
        samples.setdefault(m.group(1), []).append(float(m.group(2)))
    return {login: statistics.median(v) for login, v in samples.items()}


def summarise(
    runs: list[Run], cfgs: list[Config], baselines: dict[int, str]
) -> list[dict[str, Any]]:
    rows = []
    for c in cfgs:
        mine = [r for r in runs if r.config == c.key and r.ok]
        base = [r for r in runs if r.config == baselines[c.part] and r.ok]
        median = statistics.median(r.rate for r in mine) if mine else 0.0
        base_median = statistics.median(r.rate for r in base) if base else 0.0
        by_round = {r.round: r.rate for r in base}
        paired = [r.rate / by_round[r.round] for r in mine if r.round in by_round]
        wall = max(sum(r.seconds for r in mine), 1e-9)
        cpu = sum(r.client_cpu for r in mine) / wall
        delivery_wall = max(sum(r.delivery_seconds for r in mine), 1e-9)
        parts = {
            k: sum(r.components_cpu.get(k, 0.0) for r in mine) / delivery_wall
            for k in ("sink", "authd", "milter")
        }
        rows.append(
            {
                "config": c.key,
                "title": c.title,
                "part": c.part,
                "unit": "msg/s" if c.part == 1 else "sessions/s",
                "runs": len(mine),
                "failed": sum(1 for r in runs if r.config == c.key and not r.ok),
                "median": median,
                "min": min((r.rate for r in mine), default=0.0),
                "max": max((r.rate for r in mine), default=0.0),
                "ratio": median / base_median if base_median else 0.0,
                "paired_ratio": statistics.median(paired) if paired else 0.0,
                "client_cores": cpu,
                "sink_cores": parts["sink"],
                "authd_cores": parts["authd"],
                "milter_cores": parts["milter"],
            }
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| config | what | runs | median | min-max | ratio | paired ratio "
        "| CPU (cores): client / sink / authd / milter |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['title']} | {r['runs']}"
            + (f" ({r['failed']} failed)" if r["failed"] else "")
            + f" | {r['median']:.1f} {r['unit']} | {r['min']:.0f}-{r['max']:.0f}"
            f" | {r['ratio']:.2f} | {r['paired_ratio']:.2f} | {r['client_cores']:.2f}"
            f" / {r['sink_cores']:.2f} / {r['authd_cores']:.2f} / {r['milter_cores']:.2f} |"
        )
    return "\n".join(lines)


TARGETS = (("b", 0.9), ("c1", 0.5), ("c3", 0.4), ("ii", 0.9))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: few messages, 1 round")
    parser.add_argument("--rounds", type=int, help="timed runs per configuration (default 5)")
    parser.add_argument("--messages", type=int, help="messages per part-1 run (default 600)")
    parser.add_argument("--sessions", type=int, help="sessions per part-2 run (default 400)")
    parser.add_argument("--procs", type=int, default=4, help="client processes (default 4)")
    parser.add_argument("--threads", type=int, default=5, help="threads per process (default 5)")
    parser.add_argument("--per-session", type=int, default=10, help="part-1 messages a session")
    parser.add_argument("--only", help="comma-separated configurations to run (default all)")
    parser.add_argument("--run-timeout", type=float, default=90.0, help="seconds a run may take")
    parser.add_argument("--socket-timeout", type=float, default=20.0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp"), help="where stacks live")
    parser.add_argument("--out", type=Path, help="also write the results as JSON into DIR")
    parser.add_argument("--keep", action="store_true", help="keep the stacks' directories")
    parser.add_argument(
        "--python-sink",
        action="store_true",
        help="deliver to our Python Maildir sink instead of Postfix's smtp-sink",
    )
    opts = parser.parse_args()
    if opts.quick:
        opts.rounds = opts.rounds or 1
        opts.messages = opts.messages or 200
        opts.sessions = opts.sessions or 100
        opts.run_timeout = min(opts.run_timeout, 40.0)
    opts.rounds = max(opts.rounds or 5, 1)
    opts.messages = opts.messages or 600
    opts.sessions = opts.sessions or 400
    if os.geteuid() != 0 or shutil.which("postfix") is None:
        print("run as root with Postfix installed (it starts a private Postfix)", file=sys.stderr)
        return 2

    raw = mimedata.alternative().raw
    opts.newsletter = prepare_message(raw)
    opts.small = prepare_message(
        b"From: <bench@example.com>\r\nTo: <rcpt@example.org>\r\nSubject: ping\r\n"
        b"Date: Mon, 6 May 2024 09:00:00 +0200\r\nMessage-ID: <x@x>\r\n\r\n"
        b"A small message.\r\n"
    )
    cfgs = configs(opts)
    if opts.only:
        wanted = set(opts.only.split(","))
        cfgs = [c for c in cfgs if c.key in wanted or c.key in ("a", "i")]
    baselines = {1: "a", 2: "i"}
    started = time.monotonic()
    print(
        f"newsletter message {len(raw) / 1024:.1f} KiB; {opts.procs} client processes x "
        f"{opts.threads} threads = {opts.procs * opts.threads} sessions; {opts.rounds} round(s);"
        f" {os.cpu_count()} CPUs",
        flush=True,
    )
    runs: list[Run] = []
    ms: dict[str, dict[str, float]] = {}
    with benches(opts) as stacks:
        print(f"stacks up in {time.monotonic() - started:.0f} s; warming up", flush=True)
        for c in cfgs:
            warm = Config(c.key, c.part, c.title, c.bench, min(c.messages, 60), c.login, c.plain)
            r = run_once(warm, stacks[c.bench], 0, opts)
            print(f"  warm-up {c.key:<4} {r.rate:7.1f}" + (f"  {r.error}" if r.error else ""))
        for rnd in range(1, opts.rounds + 1):
            shift = (rnd - 1) % len(cfgs)
            order = cfgs[shift:] + cfgs[:shift]
            for c in order:
                r = run_once(c, stacks[c.bench], rnd, opts)
                runs.append(r)
                unit = "msg/s" if c.part == 1 else "sessions/s"
                print(
                    f"  round {rnd} {c.key:<4} {r.rate:7.1f} {unit:<10} {r.messages} in "
                    f"{r.seconds:.2f} s, client CPU {r.client_cpu / r.seconds:.2f} cores"
                    + (f"  FAILED: {r.error}" if not r.ok else ""),
                    flush=True,
                )
        for label, bench in stacks.items():
            ms[label] = milter_ms(bench)
    rows = summarise(runs, cfgs, baselines)
    print()
    print(table(rows))
    print()
    by_key = {r["config"]: r for r in rows}
    for key, goal in TARGETS:
        if key in by_key:
            ratio = by_key[key]["ratio"]
            verdict = "met" if ratio >= goal else "NOT met"
            base = baselines[by_key[key]["part"]]
            print(f"target {key} >= {goal} x {base}: {ratio:.2f} ({verdict})")
    print("milter time per message (median of the log's ms=, by login):")
    for label, per_login in ms.items():
        for login, value in sorted(per_login.items()):
            print(f"  {label:<10} {login:<16} {value:7.1f} ms")
    elapsed = time.monotonic() - started
    print(f"total {elapsed:.0f} s")
    if opts.out is not None:
        opts.out.mkdir(parents=True, exist_ok=True)
        path = opts.out / f"relay-{time.strftime('%Y%m%d-%H%M%S')}.json"
        report = {
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "cpus": os.cpu_count(),
            "options": {
                k: v for k, v in vars(opts).items() if isinstance(v, int | float | str | bool)
            },
            "summary": rows,
            "runs": [asdict(r) for r in runs],
            "milter_ms": ms,
            "seconds": elapsed,
        }
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"results written to {path}")
    return 0 if all(r.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
