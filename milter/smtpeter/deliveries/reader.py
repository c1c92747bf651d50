"""`smtpeter deliveries`: Postfix's delivery results, read from its log file as they
are written, recorded as delivered, deferred and failed events of the messages the
milter recorded.

Each batch of results is recorded with the log's cursor after its last line, in one
transaction (``store.record_deliveries``): stopped or crashed anywhere, the reader
resumes after the last line it recorded, so a result is never recorded twice nor
skipped. When the store cannot be written, the batch is kept and the reader goes back
to the recorded cursor once it can.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from smtpeter.deliveries.follow import FileFollower
from smtpeter.deliveries.logline import DeliveryResult, Expiry, parse
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


def source_of(path: str) -> str:
    """The name a log file's cursor is kept under in the store."""
    return f"file:{path}"


def read_once(store: Store, follower: FileFollower, source: str, counts: Counts) -> None:
    """Record every complete line the log has now, a batch at a time; StoreError when
    the store fails (what was recorded before stays recorded, with its cursor)."""
    pending: list[DeliveryResult | Expiry] = []
    cursor: str | None = None
    for line, cursor in follower.lines():
        counts.lines += 1
        result = parse(line)
        if result is not None:
            pending.append(result)
            counts.results += 1
        if len(pending) >= BATCH_MAX:
            counts.recorded += store.record_deliveries(pending, source, cursor)
            pending, cursor = [], None
    if cursor is not None:
        counts.recorded += store.record_deliveries(pending, source, cursor)


def run(
    store: Store, path: str, *, once: bool = False, stop: threading.Event | None = None
) -> Counts:
    """Follow ``path`` until ``stop`` is set (with ``once``, read what is there and
    return). The counts of lines read, results found and events recorded."""
    stop = stop or threading.Event()
    source = source_of(path)
    counts = Counts()
    backoff = POLL_SECONDS
    while True:
        cursor = store.delivery_cursor(source)
        if cursor is None:
            log.info("reading delivery results from %s, from its start", path)
        with FileFollower(path, cursor, poll=POLL_SECONDS) as follower:
            try:
                while True:
                    read_once(store, follower, source, counts)
                    backoff = POLL_SECONDS
                    if once or stop.wait(POLL_SECONDS):
                        return counts
            except StoreError as e:
                if once:
                    raise
                log.error("%s; reading %s again from the last recorded line in %.0f s",
                          e, path, backoff)  # fmt: skip
        if stop.wait(backoff):
            return counts
        backoff = min(backoff * 2, RETRY_MAX)
