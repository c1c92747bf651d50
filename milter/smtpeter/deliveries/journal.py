"""Postfix's delivery results read from the systemd journal.

Debian 12 without rsyslog (its default since bookworm) has no /var/log/mail.log:
Postfix logs to syslog(3), journald takes it from /dev/log, and the journal is the
only place the results are. They are read with ``journalctl --output=json``, the tool
systemd maintains for it and which every systemd machine has. Not with the
python3-systemd bindings: they are not on PyPI as a wheel (building them needs
libsystemd-dev and a compiler, which our virtualenv build would then need too), and
journalctl's JSON output, cursor and follow mode are all we use.

Which entries are Postfix's. Postfix's syslog tag (SYSLOG_IDENTIFIER) is
``syslog_name/program`` (``mail_task.c``): ``postfix/smtp``, ``postfix/relay/smtp``
for a master.cf service with ``-o syslog_name=postfix/$service_name``, or
``postfix-out/smtp`` for a second instance (its syslog_name is the instance's
name). journalctl matches fields exactly, not by prefix, so the tags cannot be
named in advance. The program is also the process's name (``_COMM``, set by journald
from the kernel, not by the sender): journalctl is asked for the entries of the
processes that log results (:data:`AGENTS`: the delivery agents, and the queue
manager for expiries), and of those only the ones whose tag ends in ``/`` and that
process name are Postfix's. A MESSAGE with a line break, or that is not one text
(binary data journald keeps as bytes is read as UTF-8 with undecodable bytes
replaced, as the file source does), is no result either: Postfix never logs a
control character (``msg_syslog.c`` replaces them).

Each entry's MESSAGE goes through :func:`.logline.parse_message` with its
SYSLOG_IDENTIFIER as the program and its __REALTIME_TIMESTAMP (when journald
received it) as the time; its __CURSOR is the cursor the results are recorded with.
A restart goes on from it with ``--cursor``, passing over the cursor's own entry
when it comes first. Not with ``--after-cursor``: journalctl 252 (Debian 12) then
skips one entry after the cursor's position, assuming the cursor's entry matches
the filter, so after the cursor of another program's entry (the journal's end on a
first start) Postfix's next entry would be lost. The first start (no cursor recorded)
begins at the journal's end: the cursor of its last entry is recorded at once, so
what Postfix logs while the reader is stopped is read at its next start.
``from_start`` reads what the journal has instead. (A log file is read from its
first line on a first start: a file holds a rotation period; a journal can hold
months.)

journalctl missing, or exiting (a bad cursor, journal files it cannot read, killed):
:class:`JournalError`, with its exit status and what it wrote to stderr.
"""

from __future__ import annotations

import json
import logging
import os
import select
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import IO, Any

from smtpeter.deliveries import reader
from smtpeter.deliveries.logline import LogEvent, parse_message
from smtpeter.store import Store

log = logging.getLogger("smtpeter.deliveries")

JOURNALCTL = "journalctl"
# The programs whose lines are results: the delivery agents (error also runs as the
# retry service), and the queue managers, which log expiries.
AGENTS = ("smtp", "lmtp", "local", "virtual", "pipe", "error", "discard", "qmgr", "oqmgr")
FIELDS = ("MESSAGE", "SYSLOG_IDENTIFIER", "_COMM")
# Read this much of journalctl's output at a time.
CHUNK = 1 << 16
# Seconds journalctl gets to exit after SIGTERM before it is killed.
STOP_SECONDS = 5.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class JournalError(Exception):
    """journalctl could not be run, or stopped: the message says why."""


def source_of(files: Sequence[str] = (), directory: str | None = None) -> str:
    """The name the journal's cursor is kept under in the store: ``journal`` for this
    machine's journal, ``journal:<path>`` for journal files named on their own (a
    copied journal's cursors are not this machine's)."""
    if files:
        return "journal:" + ",".join(os.path.abspath(f) for f in files)
    if directory is not None:
        return f"journal:{os.path.abspath(directory)}"
    return "journal"


def command(
    cursor: str | None,
    *,
    follow: bool,
    files: Sequence[str] = (),
    directory: str | None = None,
    journalctl: str = JOURNALCTL,
    last: bool = False,
) -> list[str]:
    """The journalctl command line: Postfix's entries from ``cursor`` on (its own
    entry too, when it is Postfix's; None: from the start), as JSON; with ``follow``,
    waiting for more; with ``last``, only the journal's last entry (anyone's)."""
    args = [
        journalctl,
        "--output=json",
        # In full: by default JSON gives null for a field over 4096 bytes.
        "--all",
        "--no-pager",
        "--quiet",
        "--output-fields=" + ",".join(FIELDS),
    ]
    args += [f"--file={f}" for f in files]
    if directory is not None:
        args.append(f"--directory={directory}")
    if last:
        return [*args, "--lines=1"]
    if follow:
        # --follow alone starts with the last 10 entries.
        args += ["--follow", "--no-tail"]
    if cursor is not None:
        args.append(f"--cursor={cursor}")
    return args + [f"_COMM={agent}" for agent in AGENTS]


def same_entry(cursor: str, other: str) -> bool:
    """Whether two journal cursors name one entry: the same sequence number of the
    same journal (``s=`` and ``i=``), or else the same text."""
    fields = [dict(p.split("=", 1) for p in c.split(";") if "=" in p) for c in (cursor, other)]
    ids = [(f.get("s"), f.get("i")) for f in fields]
    if None in ids[0] or None in ids[1]:
        return cursor == other
    return ids[0] == ids[1]


def _text(value: Any) -> str | None:
    """A field's value as text: journald gives bytes that are not UTF-8 text as a list
    of numbers, a field given twice as a list of values (None: not one text)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(b, int) and 0 <= b < 256 for b in value):
        return bytes(value).decode("utf-8", "replace")
    return None


def entry_event(entry: dict[str, Any]) -> LogEvent | None:
    """The result in one journal entry (journalctl's JSON), None when it is none or
    not Postfix's."""
    message = _text(entry.get("MESSAGE"))
    program = _text(entry.get("SYSLOG_IDENTIFIER"))
    comm = _text(entry.get("_COMM"))
    if message is None or program is None or not comm or "\n" in message or "\r" in message:
        return None
    if not program.endswith(f"/{comm}"):
        return None
    logged_at = None
    stamp = entry.get("__REALTIME_TIMESTAMP")
    if isinstance(stamp, str) and stamp.isdigit():
        try:
            logged_at = _EPOCH + timedelta(microseconds=int(stamp))
        except OverflowError:
            logged_at = None
    return parse_message(message, program=program, logged_at=logged_at)


class JournalFollower:
    """journalctl run on Postfix's entries after ``cursor`` (None: from the start).
    :meth:`entries` yields what it has written so far; with ``follow`` it keeps
    running for more, else (``--once``) :meth:`entries` reads to its end."""

    def __init__(
        self,
        cursor: str | None,
        *,
        follow: bool,
        files: Sequence[str] = (),
        directory: str | None = None,
        journalctl: str = JOURNALCTL,
    ) -> None:
        self.follow = follow
        self._args = command(
            cursor, follow=follow, files=files, directory=directory, journalctl=journalctl
        )
        # Not a pipe: journalctl never blocks on it. Closed by close().
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self._buffer = b""
        self._done = False
        # The entry journalctl starts with when it is the cursor's own (--cursor).
        self._skip = cursor
        try:
            self._proc = subprocess.Popen(
                self._args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                close_fds=True,
            )
        except OSError as e:
            self._stderr.close()
            raise JournalError(f"cannot run {journalctl}: {e.strerror or e}") from None
        assert self._proc.stdout is not None
        self._out = self._proc.stdout.fileno()
        if follow:
            os.set_blocking(self._out, False)

    def entries(self) -> Iterator[tuple[LogEvent | None, str]]:
        """Each entry written so far (with ``follow``: without waiting), parsed, with
        its cursor. JournalError when journalctl has exited with an error (or at all,
        with ``follow``)."""
        while not self._done:
            *lines, self._buffer = self._buffer.split(b"\n")
            for line in lines:
                item = self._entry(line)
                if item is not None:
                    yield item
            chunk = self._read()
            if chunk is None:
                return
            if not chunk:
                self._ended()
                return
            self._buffer += chunk

    def _read(self) -> bytes | None:
        """More output (b"" at its end), or None when there is none yet."""
        if self.follow and not select.select([self._out], [], [], 0)[0]:
            return None
        try:
            return os.read(self._out, CHUNK)
        except BlockingIOError:
            return None

    def _entry(self, line: bytes) -> tuple[LogEvent | None, str] | None:
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        cursor = entry.get("__CURSOR") if isinstance(entry, dict) else None
        if not isinstance(cursor, str) or not cursor:
            if line.strip():
                log.warning("journalctl wrote a line that is no entry: %r", line[:200])
            return None
        assert isinstance(entry, dict)
        skip, self._skip = self._skip, None
        if skip is not None and same_entry(skip, cursor):
            return None
        return entry_event(entry), cursor

    def _ended(self) -> None:
        self._done = True
        status = self._proc.wait()
        if status == 0 and not self.follow:
            return
        raise JournalError(f"{self._args[0]} exited with status {status}"
                           f"{self._said()}")  # fmt: skip

    def _said(self) -> str:
        """What journalctl wrote to stderr, for an error message (': ...' or '')."""
        try:
            self._stderr.seek(0)
            text = self._stderr.read(4000).decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""
        return f": {' / '.join(text.splitlines())}" if text else ""

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._stderr.close()

    def __enter__(self) -> JournalFollower:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def last_cursor(
    files: Sequence[str] = (), directory: str | None = None, journalctl: str = JOURNALCTL
) -> str | None:
    """The cursor of the journal's last entry, None when it has none. Anyone's, not
    Postfix's: after a journal with no Postfix entry yet, a restart must not take
    Postfix's first entries for the journal's end."""
    args = command(None, follow=False, files=files, directory=directory,
                   journalctl=journalctl, last=True)  # fmt: skip
    try:
        proc = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, timeout=300)
    except OSError as e:
        raise JournalError(f"cannot run {journalctl}: {e.strerror or e}") from None
    except subprocess.TimeoutExpired:
        raise JournalError(f"{journalctl} found no end of the journal in 300 s") from None
    if proc.returncode != 0:
        said = " / ".join(proc.stderr.decode("utf-8", "replace").strip().splitlines())
        raise JournalError(f"{journalctl} exited with status {proc.returncode}"
                           + (f": {said}" if said else ""))  # fmt: skip
    cursor = None
    for line in proc.stdout.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("__CURSOR"), str):
            cursor = entry["__CURSOR"]
    return cursor


class JournalSource:
    """The journal as a :class:`.reader.Source`: this machine's, or the journal files
    ``files`` or the directory ``directory`` (a copied journal, tests)."""

    def __init__(
        self,
        *,
        files: Sequence[str] = (),
        directory: str | None = None,
        from_start: bool = False,
        journalctl: str = JOURNALCTL,
    ) -> None:
        self.files = tuple(files)
        self.directory = directory
        self.from_start = from_start
        self.journalctl = journalctl
        self.name = source_of(self.files, directory)
        if self.files:
            self.label = "the journal files " + ", ".join(self.files)
        elif directory is not None:
            self.label = f"the journal in {directory}"
        else:
            self.label = "the journal"

    def start(self) -> str | None:
        if self.from_start:
            log.info("reading delivery results from %s, from its start", self.label)
            return None
        cursor = last_cursor(self.files, self.directory, self.journalctl)
        log.info("reading delivery results from %s, from its end "
                 "(--from-start reads what it has)", self.label)  # fmt: skip
        return cursor

    def open(self, cursor: str | None, *, once: bool) -> JournalFollower:
        return JournalFollower(cursor, follow=not once, files=self.files,
                               directory=self.directory, journalctl=self.journalctl)  # fmt: skip


def run(
    store: Store,
    source: JournalSource,
    *,
    once: bool = False,
    stop: threading.Event | None = None,
) -> reader.Counts:
    """Follow the journal until ``stop`` is set (with ``once``, read what it has and
    return); JournalError when journalctl cannot run or stops."""
    return reader.run_source(store, source, once=once, stop=stop)
