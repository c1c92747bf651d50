"""`smtpeter deliveries`: Postfix's delivery results, read from its log as they are
written (a log file, or the journal: :mod:`.journal`), recorded as delivered, deferred
and failed events of the messages the milter recorded.

Each batch of results is recorded with the source's cursor after its last entry, in
one transaction (``store.record_deliveries``): stopped or crashed anywhere, the reader
resumes after the last entry it recorded, so a result is never recorded twice nor
skipped. When the store cannot be written, the batch is kept and the reader goes back
to the recorded cursor once it can.

:func:`run_source` is that loop for any :class:`Source`; :func:`run` runs it on a log
file, :func:`smtpeter.deliveries.journal.run` on the journal.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from smtpeter.deliveries.follow import FileFollower
from smtpeter.deliveries.logline import LogEvent, parse
from smtpeter.store import Store, StoreError

log = logging.getLogger("smtpeter.deliveries")

# Results recorded in one transaction at most.
BATCH_MAX = 500
# Seconds between two looks at the log when nothing is new, and the longest wait
# before trying a store that failed again.
POLL_SECONDS = 0.5
RETRY_MAX = 30.0


@dataclass
class Counts:
    lines: int = 0
    results: int = 0
    recorded: int = 0


class Reader(Protocol):
    """An open source: each entry it has now (a log line, a journal entry), parsed
    (None for an entry that is no result), with the cursor just after it."""

    def entries(self) -> Iterator[tuple[LogEvent | None, str]]: ...

    def close(self) -> None: ...


class Source(Protocol):
    """Where results come from: ``name`` keeps its cursor in the store, ``label``
    names it in log lines."""

    name: str
    label: str

    def start(self) -> str | None:
        """Where to begin on a first start (no cursor recorded yet): a cursor, or
        None for the source's start. Says which in the log."""
        ...

    def open(self, cursor: str | None, *, once: bool) -> Reader:
        """The source from ``cursor`` (None: from its start); with ``once``, only what
        it has now."""
        ...


# rsyslog's mail log on Debian.
MAIL_LOG = "/var/log/mail.log"


@dataclass(frozen=True)
class Choice:
    """The source `smtpeter deliveries` reads: the journal, or the log file ``path``;
    ``why`` says why, for the log."""

    path: str | None
    why: str

    @property
    def journal(self) -> bool:
        return self.path is None


def maillog_file(postconf: str = "postconf", config_dir: str | None = None) -> str | None:
    """Postfix's maillog_file (``postconf -h maillog_file``), None when it is not set
    or postconf cannot tell."""
    args = [postconf, *(["-c", config_dir] if config_dir else []), "-h", "maillog_file"]
    try:
        proc = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = proc.stdout.decode("utf-8", "replace").strip()
    return value if proc.returncode == 0 and value else None


def choose(
    setting: str,
    *,
    mail_log: str = MAIL_LOG,
    postconf: str = "postconf",
    postfix_config_dir: str | None = None,
) -> Choice:
    """The source for ``deliveries.source``: ``journal``, a file's path, or ``auto``:
    ``mail_log`` if it exists, else the file Postfix's maillog_file names (one under
    /dev, such as /dev/stdout, is no file to follow), else the journal."""
    if setting == "journal":
        return Choice(None, "deliveries.source is journal")
    if setting != "auto":
        return Choice(setting, "deliveries.source names it")
    if os.path.exists(mail_log):
        return Choice(mail_log, f"deliveries.source auto: {mail_log} exists")
    named = maillog_file(postconf, postfix_config_dir)
    if named is not None and not named.startswith("/dev/"):
        return Choice(named, f"deliveries.source auto: no {mail_log}, Postfix's maillog_file"
                             " names it")  # fmt: skip
    why = "it is not set" if named is None else f"it is {named}"
    return Choice(None, f"deliveries.source auto: no {mail_log}, and Postfix's maillog_file"
                        f" names no file ({why})")  # fmt: skip


def source_of(path: str) -> str:
    """The name a log file's cursor is kept under in the store."""
    return f"file:{path}"


class _FileReader:
    def __init__(self, path: str, cursor: str | None) -> None:
        self._follower = FileFollower(path, cursor, poll=POLL_SECONDS)

    def entries(self) -> Iterator[tuple[LogEvent | None, str]]:
        for line, cursor in self._follower.lines():
            yield parse(line), cursor

    def close(self) -> None:
        self._follower.close()


class FileSource:
    """A log file, followed across rotations (:class:`.follow.FileFollower`); a first
    start reads it from its first line."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.name = source_of(path)
        self.label = path

    def start(self) -> str | None:
        log.info("reading delivery results from %s, from its start", self.path)
        return None

    def open(self, cursor: str | None, *, once: bool) -> Reader:
        return _FileReader(self.path, cursor)


def read_once(
    store: Store, entries: Iterable[tuple[LogEvent | None, str]], source: str, counts: Counts
) -> None:
    """Record every entry there is now, a batch at a time; StoreError when the store
    fails (what was recorded before stays recorded, with its cursor)."""
    pending: list[LogEvent] = []
    cursor: str | None = None
    for result, cursor in entries:
        counts.lines += 1
        if result is not None:
            pending.append(result)
            counts.results += 1
        if len(pending) >= BATCH_MAX:
            counts.recorded += store.record_deliveries(pending, source, cursor)
            pending, cursor = [], None
    if cursor is not None:
        counts.recorded += store.record_deliveries(pending, source, cursor)


def run_source(
    store: Store, source: Source, *, once: bool = False, stop: threading.Event | None = None
) -> Counts:
    """Follow ``source`` until ``stop`` is set (with ``once``, read what is there and
    return). The counts of entries read, results found and events recorded. Errors of
    the source itself (e.g. :class:`.journal.JournalError`) are raised."""
    stop = stop or threading.Event()
    counts = Counts()
    backoff = POLL_SECONDS
    while True:
        try:
            cursor = store.delivery_cursor(source.name)
            if cursor is None:
                cursor = source.start()
                if cursor is not None:
                    store.record_deliveries([], source.name, cursor)
            reader = source.open(cursor, once=once)
            try:
                while True:
                    read_once(store, reader.entries(), source.name, counts)
                    backoff = POLL_SECONDS
                    if once or stop.wait(POLL_SECONDS):
                        return counts
            finally:
                reader.close()
        except StoreError as e:
            if once:
                raise
            log.error("%s; reading %s again from the last recorded line in %.0f s",
                      e, source.label, backoff)  # fmt: skip
        if stop.wait(backoff):
            return counts
        backoff = min(backoff * 2, RETRY_MAX)


def run(
    store: Store, path: str, *, once: bool = False, stop: threading.Event | None = None
) -> Counts:
    """Follow the log file ``path`` until ``stop`` is set (with ``once``, read what
    is there and return). The counts of lines read, results found and events recorded."""
    return run_source(store, FileSource(path), once=once, stop=stop)
