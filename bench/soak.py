"""Soak: many messages through the whole relay while its daemons are killed and restarted.

Usage: python bench/soak.py [--messages 10000] [--kill-every 1000] [--clients 8] [--keep]
(as root, with Postfix installed; not part of CI: 10,000 messages take several minutes)

It starts a private stack (smtpeter.local.stack.LocalStack, as bench/relay.py does:
Postfix on loopback, our auth daemon, milter and tracker, Postfix's smtp-sink writing
one file per message), creates a login with every feature on (inlinecss, trackclicks,
trackopens, trackbounces) and sends --messages small HTML newsletters, each with a
unique Message-ID marker, from --clients concurrent smtplib clients (STARTTLS, AUTH
PLAIN, --per-session messages a session). Every --kill-every accepted messages one
daemon, in turn authd, milter, tracker, is killed with SIGKILL (its whole process
group: the milter and the tracker are pre-forked, a supervisor and its workers) and
started again at once.

The clients behave as an MTA does, not as an application library: a 4xx reply, a
dropped connection or a server that does not offer AUTH is retried after a short
backoff (0.2 s doubling to 2 s), at most --max-attempts times; a 5xx is final. A
"recipient" thread reads every delivered message, counts its marker and, unless
--no-opens, fetches its open pixel from the tracker (so that the tracker's store
writes compete with the milter's, and the tracker's kills hit live traffic).

At the end it waits for Postfix's queue to drain and prints: sent, 250s, 4xx retried
(by reply code), drops retried, delivered, duplicates (a marker delivered more than
once), lost (a marker accepted with 250 but never delivered), msg/s, the kills with
each daemon's time to come back, and what the daemons logged (store lock retries,
temporary failures). Exit status 0 when nothing was lost, duplicated or given up.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import email
import email.policy
import http.client
import os
import re
import shutil
import signal
import smtplib
import ssl
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.relay import Bench, start_bench, stop_bench  # noqa: E402
from smtpeter.features import FeatureSet  # noqa: E402
from smtpeter.local.stack import LocalStack, StackError  # noqa: E402
from smtpeter.store import StoreError, open_store  # noqa: E402
from tests import mimedata  # noqa: E402

SENDER = "soak@example.com"
RECIPIENT = "rcpt@example.org"
VICTIMS = ("authd", "milter", "tracker")
MARKER = re.compile(rb"^Message-ID: <soak-(\d+)@bench\.example>", re.M | re.I)
PIXEL = re.compile(r"https?://[^/\"'\s]+(/o/[A-Za-z0-9_.=-]+\.gif)")
HTML = (
    "<!DOCTYPE html>\n<html>\n<head>\n<style>\n"
    "p { color: #202124; font-size: 15px; }\n"
    "a { color: #1a73e8; }\n"
    "@media only screen and (max-width: 600px) { p { font-size: 13px !important; } }\n"
    "</style>\n</head>\n<body>\n"
    '<p>This week: <a href="https://news.example.com/a/1">the news</a> and'
    ' <a href="https://news.example.com/a/2?ref=mail">more</a>.</p>\n'
    "</body>\n</html>\n"
)
BACKOFF_FIRST = 0.2
BACKOFF_MAX = 2.0


class Retry(Exception):
    """A temporary failure: the client tries the message again."""

    def __init__(self, why: str, code: int | None = None, phase: str = "") -> None:
        super().__init__(why)
        self.code = code
        self.phase = phase


class Final(Exception):
    """A permanent failure (5xx): the message is given up."""


def message_template() -> tuple[bytes, bytes]:
    """(head, tail): head + the marker number + tail is a whole message."""
    raw = mimedata.alternative(html=HTML).raw
    head, body = raw.split(b"\r\n\r\n", 1)
    lines = [h for h in head.split(b"\r\n") if not h.lower().startswith(b"message-id:")]
    return b"Message-ID: <soak-", b"@bench.example>\r\n" + b"\r\n".join(lines) + b"\r\n\r\n" + body


@dataclass
class Tally:
    """What the clients saw; every field is updated under ``lock``."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    next_marker: int = 0
    accepted: collections.Counter[int] = field(default_factory=collections.Counter)
    retried_4xx: collections.Counter[str] = field(default_factory=collections.Counter)
    retried_drop: collections.Counter[str] = field(default_factory=collections.Counter)
    retried_noauth: int = 0
    # The first reason seen for each kind of retry, for the report.
    examples: dict[str, str] = field(default_factory=dict)
    # Markers whose connection dropped after the message was sent, before the reply:
    # the client cannot know whether it was queued (the classic SMTP duplicate).
    ambiguous: set[int] = field(default_factory=set)
    given_up: dict[int, str] = field(default_factory=dict)
    first_send: float = 0.0
    last_accept: float = 0.0
    # Set when the run is interrupted: the clients stop.
    abort: threading.Event = field(default_factory=threading.Event)

    def take(self, total: int) -> int | None:
        with self.lock:
            if self.next_marker >= total or self.abort.is_set():
                return None
            self.next_marker += 1
            if not self.first_send:
                self.first_send = time.monotonic()
            return self.next_marker - 1

    @property
    def accepted_total(self) -> int:
        return sum(self.accepted.values())


class Client:
    """One SMTP client: a session reused for --per-session messages, reopened on any error."""

    def __init__(self, opts: argparse.Namespace, port: int, login: tuple[str, str]) -> None:
        self.opts = opts
        self.port = port
        self.login = login
        self.context = ssl.create_default_context(cafile=opts.cafile)
        self.session: smtplib.SMTP | None = None
        self.in_session = 0
        self.phase = ""  # where in the session it is, for the report

    def close(self) -> None:
        if self.session is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self.session.quit()
            with contextlib.suppress(OSError):
                self.session.close()
        self.session = None

    def _abort(self) -> None:
        if self.session is not None:
            with contextlib.suppress(OSError):
                self.session.close()
        self.session = None

    def _open(self) -> smtplib.SMTP:
        self.phase = "connect"
        s = smtplib.SMTP("127.0.0.1", self.port, timeout=self.opts.socket_timeout)
        try:
            self.phase = "EHLO"
            _expect(s.ehlo("soak.example.net"), self.phase)
            self.phase = "STARTTLS"
            _expect(s.starttls(context=self.context), self.phase)
            self.phase = "EHLO after STARTTLS"
            _expect(s.ehlo("soak.example.net"), self.phase)
            if not s.has_extn("auth"):
                # smtpd could not reach the auth daemon when it built its EHLO reply.
                raise Retry("AUTH not offered", phase="no AUTH")
            self.phase = "AUTH"
            s.login(*self.login)
        except BaseException:
            with contextlib.suppress(OSError):
                s.close()
            raise
        self.in_session = 0
        return s

    def send_once(self, data: bytes) -> None:
        """Send one message; raises Retry or Final unless it got 250."""
        try:
            if self.session is None:
                self.session = self._open()
            s = self.session
            self.phase = "MAIL"
            _expect(s.mail(SENDER), self.phase)
            self.phase = "RCPT"
            _expect(s.rcpt(RECIPIENT), self.phase)
            # smtplib's data() raises SMTPDataError when DATA gets no 354, and returns
            # the reply to the message's final dot.
            self.phase = "DATA"
            code, text = s.data(data)
            self.phase = "end of data"
            if code != 250:
                raise _reply_error(code, text, self.phase)
        except (Retry, Final):
            self._abort()
            raise
        # (smtplib's exceptions are OSErrors: the most specific first.)
        except smtplib.SMTPResponseException as e:  # e.g. STARTTLS refused with 454
            self._abort()
            raise _reply_error(e.smtp_code, e.smtp_error, self.phase) from None
        except smtplib.SMTPServerDisconnected as e:
            self._abort()
            raise Retry(f"connection lost: {e}", phase=self.phase) from None
        except smtplib.SMTPException as e:  # e.g. STARTTLS not offered: retry, and say so
            self._abort()
            raise Retry(f"{type(e).__name__}: {e}", phase=f"{self.phase} (other)") from None
        except OSError as e:
            self._abort()
            raise Retry(f"connection lost: {e}", phase=self.phase) from None
        self.in_session += 1
        if self.in_session >= self.opts.per_session:
            self.close()


def _expect(reply: tuple[int, bytes], phase: str) -> None:
    code, text = reply
    if not 200 <= code < 300:
        raise _reply_error(code, text, phase)


def _reply_error(code: int, text: bytes | str, phase: str) -> Retry | Final:
    words = text.decode(errors="replace") if isinstance(text, bytes) else text
    why = f"{phase}: {code} {words[:160]}"
    return Retry(why, code, phase) if 400 <= code < 500 else Final(why)


def client_thread(
    opts: argparse.Namespace,
    port: int,
    login: tuple[str, str],
    template: tuple[bytes, bytes],
    tally: Tally,
    deadline: float,
) -> None:
    client = Client(opts, port, login)
    head, tail = template
    try:
        while (marker := tally.take(opts.messages)) is not None:
            data = head + str(marker).encode() + tail
            backoff = BACKOFF_FIRST
            for attempt in range(1, opts.max_attempts + 1):
                if not _attempt(client, data, marker, attempt, tally, opts, deadline):
                    break
                if tally.abort.wait(backoff):
                    return
                backoff = min(backoff * 2, BACKOFF_MAX)
    finally:
        client.close()


def _attempt(
    client: Client,
    data: bytes,
    marker: int,
    attempt: int,
    tally: Tally,
    opts: argparse.Namespace,
    deadline: float,
) -> bool:
    """Try to send one message once; True if it should be tried again."""
    try:
        client.send_once(data)
    except Final as e:
        with tally.lock:
            tally.given_up[marker] = str(e)
        return False
    except Retry as e:
        with tally.lock:
            if e.code is not None:
                kind = f"{e.code} at {e.phase}"
                tally.retried_4xx[kind] += 1
            elif e.phase == "no AUTH":
                kind = "no AUTH"
                tally.retried_noauth += 1
            else:
                kind = f"drop at {e.phase}"
                tally.retried_drop[e.phase] += 1
                if e.phase == "DATA":  # perhaps after the final dot: queued or not?
                    tally.ambiguous.add(marker)
            tally.examples.setdefault(kind, str(e))
            if attempt == opts.max_attempts or time.monotonic() > deadline:
                tally.given_up[marker] = f"after {attempt} attempts: {e}"
                return False
        return True
    except Exception as e:  # noqa: BLE001 (a bug in the client must not stop the run)
        client.close()
        with tally.lock:
            tally.given_up[marker] = f"client error: {type(e).__name__}: {e}"
        return False
    with tally.lock:
        tally.accepted[marker] += 1
        tally.last_accept = time.monotonic()
    return False


# -- killing daemons --------------------------------------------------------------------


@dataclass
class Kill:
    component: str
    at: int  # messages accepted when it was killed
    back_after: float  # seconds from SIGKILL until it answered again
    error: str | None = None


def kill_group(stack: LocalStack, component: str, timeout: float = 15.0) -> None:
    """SIGKILL a daemon's whole process group (it was started in a session of its own,
    so its pid is the group id) and wait until no process of the group is left."""
    pid = stack.pid(component)
    if pid is None:
        raise StackError(f"{component} is not running")
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.pid(component)  # reaps the leader, our child, once it is a zombie
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
    raise StackError(f"{component}: process group {pid} still alive {timeout:.0f} s after SIGKILL")


def chaos_thread(
    stack: LocalStack,
    opts: argparse.Namespace,
    tally: Tally,
    kills: list[Kill],
    done: threading.Event,
) -> None:
    """Kill one daemon (in turn) every --kill-every accepted messages; start it again."""
    if opts.kill_every <= 0:
        return
    next_at = opts.kill_every
    turn = 0
    while not done.is_set() and next_at < opts.messages:
        if tally.accepted_total < next_at:
            done.wait(0.05)
            continue
        component = VICTIMS[turn % len(VICTIMS)]
        turn += 1
        started, at = time.monotonic(), tally.accepted_total
        error = None
        try:
            kill_group(stack, component)
            stack.start_component(component)
        except (OSError, StackError) as e:
            error = f"{type(e).__name__}: {e}"
        kills.append(Kill(component, at, time.monotonic() - started, error))
        print(
            f"  killed {component:<7} at {at:>6} accepted;"
            f" back after {kills[-1].back_after:.2f} s" + (f"  ERROR {error}" if error else ""),
            flush=True,
        )
        next_at += opts.kill_every


# -- the recipient: what was delivered ----------------------------------------------------


@dataclass
class Delivered:
    lock: threading.Lock = field(default_factory=threading.Lock)
    markers: collections.Counter[int] = field(default_factory=collections.Counter)
    unmarked: int = 0
    seen: set[str] = field(default_factory=set)
    pixels: collections.deque[tuple[str, int]] = field(default_factory=collections.deque)
    opens_ok: int = 0
    opens_failed: int = 0


def scan(stack: LocalStack, delivered: Delivered, want_pixels: bool) -> int:
    """Read the delivered messages not read yet; returns how many were new."""
    new_dir = stack.maildir / "new"
    try:
        names = os.listdir(new_dir)
    except FileNotFoundError:
        return 0
    fresh = [n for n in names if n not in delivered.seen]
    for name in fresh:
        try:
            data = (new_dir / name).read_bytes()
        except FileNotFoundError:
            continue
        if not data.endswith(b"\n"):
            continue  # smtp-sink may still be writing it: read it next time
        delivered.seen.add(name)
        m = MARKER.search(data)
        pixel = _pixel(data) if want_pixels else None
        with delivered.lock:
            if m is None:
                delivered.unmarked += 1
            else:
                delivered.markers[int(m.group(1))] += 1
            if pixel is not None:
                delivered.pixels.append((pixel, 0))
    return len(fresh)


def _pixel(data: bytes) -> str | None:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    for part in msg.walk():
        if part.get_content_type() == "text/html":
            html = part.get_content()
            m = PIXEL.search(html) if isinstance(html, str) else None
            if m is not None:
                return m.group(1)
    return None


def open_pixels(port: int, delivered: Delivered, timeout: float, tries: int = 5) -> None:
    """Fetch the queued open pixels. One that fails (the tracker is down) is tried
    again on a later round, at most ``tries`` times, and ends this round."""
    while True:
        with delivered.lock:
            if not delivered.pixels:
                return
            path, failed = delivered.pixels.popleft()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            conn.request("GET", path, headers={"User-Agent": "smtpeter-soak"})
            ok = conn.getresponse().status == 200
        except OSError:
            ok = False
        finally:
            conn.close()
        with delivered.lock:
            if ok:
                delivered.opens_ok += 1
            elif failed + 1 < tries:
                delivered.pixels.append((path, failed + 1))
                return
            else:
                delivered.opens_failed += 1


def recipient_thread(
    stack: LocalStack, opts: argparse.Namespace, delivered: Delivered, done: threading.Event
) -> None:
    while not done.is_set():
        scan(stack, delivered, opts.opens)
        open_pixels(opts.tracker_port, delivered, opts.socket_timeout)
        done.wait(0.5)


def drain(stack: LocalStack, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stack.queue_empty():
            return True
        stack.flush()
        time.sleep(1.0)
    return stack.queue_empty()


# -- the report ---------------------------------------------------------------------------


def log_counts(stack: LocalStack) -> dict[str, int]:
    """Lines the daemons and Postfix logged that matter here."""
    patterns = {
        "store lock waits (store retried)": (("authd", "milter", "tracker"), "waited for a lock"),
        "store gave up (StoreError)": (("authd", "milter", "tracker"), "gave up after"),
        "milter temporary failures": (("milter",), "temporary failure"),
        "tracker events lost at stop": (("tracker",), "events not written"),
        "postfix could not reach the milter": (("postfix",), "connect to Milter service"),
        "postfix could not reach authd": (("postfix",), "SASL: Connect"),
    }
    counts = {}
    for label, (components, needle) in patterns.items():
        n = 0
        for component in components:
            with contextlib.suppress(FileNotFoundError):
                text = stack.log_file(component).read_text(errors="replace")
                n += sum(1 for line in text.splitlines() if needle in line)
        counts[label] = n
    return counts


def store_records(stack: LocalStack, limit: int) -> tuple[collections.Counter[int], int] | None:
    """Per marker, how many message records the milter wrote; and the open events."""
    try:
        store = open_store(stack.config().store, create=False)
    except StoreError as e:
        print(f"warning: cannot read the store: {e}", file=sys.stderr)
        return None
    try:
        records: collections.Counter[int] = collections.Counter()
        for m in store.messages(limit=limit):
            found = re.fullmatch(r"<?soak-(\d+)@bench\.example>?", m.message_id or "")
            if found:
                records[int(found.group(1))] += 1
        opens = len(store.events(type="open", limit=limit))
    finally:
        store.close()
    return records, opens


def report(
    opts: argparse.Namespace,
    tally: Tally,
    delivered: Delivered,
    kills: list[Kill],
    stack: LocalStack,
    drained: bool,
) -> bool:
    accepted = set(tally.accepted)
    got = delivered.markers
    duplicates = sorted(m for m, n in got.items() if n > 1)
    lost = sorted(accepted - set(got))
    unexpected = sorted(set(got) - accepted)  # delivered, though the client saw no 250
    seconds = max(tally.last_accept - tally.first_send, 1e-9)
    print()
    print(f"sent          {tally.next_marker} messages ({opts.clients} clients)")
    print(f"250s          {tally.accepted_total}")
    retried_4xx = sum(tally.retried_4xx.values())
    print(
        f"4xx retried   {retried_4xx}"
        + (
            f"  ({', '.join(f'{k}: {v}' for k, v in tally.retried_4xx.most_common())})"
            if retried_4xx
            else ""
        )
    )
    drops = sum(tally.retried_drop.values())
    print(
        f"drops retried {drops}"
        + (
            f"  ({', '.join(f'at {k}: {v}' for k, v in tally.retried_drop.most_common())})"
            if drops
            else ""
        )
    )
    print(f"no AUTH in EHLO, retried {tally.retried_noauth}")
    for kind, why in sorted(tally.examples.items()):
        print(f"    e.g. {kind}: {why}")
    print(f"given up      {len(tally.given_up)}")
    for marker, why in sorted(tally.given_up.items())[:10]:
        print(f"    soak-{marker}: {why}")
    print(f"delivered     {sum(got.values())} ({len(got)} distinct markers)")
    print(f"duplicates    {len(duplicates)}" + (f"  e.g. {duplicates[:10]}" if duplicates else ""))
    print(f"lost          {len(lost)}" + (f"  e.g. {lost[:10]}" if lost else ""))
    if unexpected:
        print(f"delivered without a 250 to the client: {len(unexpected)}  e.g. {unexpected[:10]}")
    if delivered.unmarked:
        print(f"delivered without a marker: {delivered.unmarked}")
    ambiguous_dups = [m for m in duplicates if m in tally.ambiguous]
    if duplicates:
        print(
            f"  of the duplicates, {len(ambiguous_dups)} followed a connection lost after the data"
        )
    print(
        f"msg/s         {tally.accepted_total / seconds:.1f}"
        f" ({tally.accepted_total} in {seconds:.1f} s, first send to last 250)"
    )
    print(f"queue drained {'yes' if drained else 'NO'}")
    by_component: dict[str, list[float]] = collections.defaultdict(list)
    for k in kills:
        by_component[k.component].append(k.back_after)
    print(
        f"kills         {len(kills)}: "
        + ", ".join(
            f"{c} x{len(v)} (back after {min(v):.1f}-{max(v):.1f} s)"
            for c, v in by_component.items()
        )
    )
    failed_kills = [k for k in kills if k.error]
    for k in failed_kills:
        print(f"    kill of {k.component} at {k.at}: {k.error}")
    if opts.opens:
        print(f"opens fetched {delivered.opens_ok} (failed {delivered.opens_failed})")
    records = store_records(stack, limit=opts.messages * 3)
    if records is not None:
        recorded, open_events = records
        twice = sum(1 for n in recorded.values() if n > 1)
        unrecorded = len(set(got) - set(recorded))
        extra = len(set(recorded) - set(got))
        print(
            f"store         {sum(recorded.values())} message records; {twice} markers"
            f" recorded more than once, {unrecorded} delivered but not recorded,"
            f" {extra} recorded but not delivered"
        )
        if opts.opens:
            print(
                f"              {open_events} open events (of {delivered.opens_ok} opens answered)"
            )
    print("daemon logs:  " + "; ".join(f"{k} {v}" for k, v in log_counts(stack).items()))
    return not lost and not duplicates and not tally.given_up and drained and not failed_kills


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n", 2)[2],
        epilog="Run as root, with Postfix installed, from the repository root with the "
        "project's virtualenv. Not part of CI. Figures: bench/README.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--messages", type=int, default=10000, help="messages to send, N (default %(default)s)")
    add(
        "--kill-every",
        type=int,
        default=1000,
        help="SIGKILL one daemon (authd, milter, tracker in turn) and restart it every this "
        "many accepted messages, K; 0: never (default %(default)s)",
    )
    add("--clients", type=int, default=8, help="concurrent SMTP clients (default %(default)s)")
    add("--per-session", type=int, default=20, help="messages a session (default %(default)s)")
    add(
        "--max-attempts",
        type=int,
        default=30,
        help="tries of one message before it is given up (default %(default)s)",
    )
    add(
        "--no-opens",
        dest="opens",
        action="store_false",
        help="do not fetch the open pixels of delivered messages (default: fetch them)",
    )
    add("--socket-timeout", type=float, default=30.0, help="seconds (default %(default)s)")
    add(
        "--run-timeout",
        type=float,
        default=3600.0,
        help="seconds the sending may take; then the clients give up (default %(default)s)",
    )
    add(
        "--drain-timeout",
        type=float,
        default=600.0,
        help="seconds to wait for Postfix's queue to empty (default %(default)s)",
    )
    add("--workdir", type=Path, default=Path("/tmp"), help="where the stack lives (default /tmp)")
    add("--keep", action="store_true", help="keep the stack's directory: logs, Maildir, store")
    opts = parser.parse_args()
    if os.geteuid() != 0 or shutil.which("postfix") is None:
        print("run as root with Postfix installed (it starts a private Postfix)", file=sys.stderr)
        return 2
    if opts.messages < 1 or opts.clients < 1 or opts.per_session < 1 or opts.max_attempts < 1:
        parser.error("--messages, --clients, --per-session and --max-attempts must be >= 1")

    everything = FeatureSet(inlinecss=True, trackclicks=True, trackopens=True, trackbounces=True)
    print("starting the stack ...", flush=True)
    bench: Bench = start_bench(
        "soak", opts.workdir, {"tracker": {"workers": 2}}, {"soak": everything}
    )
    stack = bench.stack
    ok = False
    try:
        opts.cafile = str(stack.cert_file)
        opts.tracker_port = stack.ports.tracker
        port = stack.ports.listener("587")
        print(
            f"stack in {stack.root}; {opts.messages} messages, {opts.clients} clients,"
            f" a kill every {opts.kill_every} accepted",
            flush=True,
        )
        tally, delivered = Tally(), Delivered()
        kills: list[Kill] = []
        done = threading.Event()
        template = message_template()
        deadline = time.monotonic() + opts.run_timeout
        helpers = [
            threading.Thread(
                target=chaos_thread, args=(stack, opts, tally, kills, done), daemon=True
            ),
            threading.Thread(
                target=recipient_thread, args=(stack, opts, delivered, done), daemon=True
            ),
        ]
        clients = [
            threading.Thread(
                target=client_thread,
                args=(opts, port, bench.logins["soak"], template, tally, deadline),
                name=f"client-{i}",
                daemon=True,
            )
            for i in range(opts.clients)
        ]
        for t in helpers + clients:
            t.start()
        last_print = time.monotonic()
        while any(t.is_alive() for t in clients):
            try:
                time.sleep(0.5)
            except KeyboardInterrupt:
                tally.abort.set()
                done.set()
                raise
            if time.monotonic() - last_print >= 15:
                last_print = time.monotonic()
                print(
                    f"  {tally.accepted_total} accepted,"
                    f" {sum(delivered.markers.values())} delivered",
                    flush=True,
                )
        done.set()
        for t in helpers:
            t.join()
        print("sending done; waiting for the queue to drain ...", flush=True)
        drained = drain(stack, opts.drain_timeout)
        while scan(stack, delivered, opts.opens):
            pass
        for _ in range(20):
            open_pixels(opts.tracker_port, delivered, opts.socket_timeout)
            if not delivered.pixels:
                break
            time.sleep(0.5)
        time.sleep(2.0)  # the tracker writes its events in batches
        ok = report(opts, tally, delivered, kills, stack, drained)
    finally:
        stop_bench(bench, opts.keep)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
