"""Events leave the HTTP path through an in-memory queue and one writer thread.

A click must be answered whatever the store is doing, so :meth:`EventWriter.put` only
appends to a bounded queue and returns. One background thread writes the queue in
batches (one transaction each) at most ``flush_seconds`` apart. When the store fails,
the batch goes back to the head of the queue and is retried with exponential backoff;
once the queue holds ``queue_max`` events the oldest are dropped, counted and logged.
:meth:`EventWriter.close` writes whatever is left, so a clean shutdown loses nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from smtpeter.events import Event
from smtpeter.store import StoreError

log = logging.getLogger("smtpeter.tracker.events")

# Largest batch written in one transaction: keeps a transaction (and the write lock
# other processes wait on) short even after an outage.
BATCH_MAX = 5000
# Seconds between two log lines about dropped events.
_DROP_LOG_INTERVAL = 10.0


class EventWriter:
    def __init__(
        self,
        record: Callable[[list[Event]], None],
        *,
        flush_seconds: float = 0.5,
        queue_max: int = 100000,
        retry_max: float = 30.0,
        name: str = "smtpeter-events",
    ) -> None:
        """``record`` writes one batch in one transaction (``store.record_events``)."""
        self._record = record
        self._flush_seconds = flush_seconds
        self._queue_max = queue_max
        self._retry_max = retry_max
        self._queue: deque[Event] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._closing = False
        self._flush_requested = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = False
        self._drops_unlogged = 0
        self._drop_logged_at = 0.0
        # Counters and state for /healthz and the logs.
        self.written = 0
        self.dropped = 0
        self.last_error: str | None = None

    # -- the HTTP side ------------------------------------------------------------

    def put(self, event: Event) -> None:
        """Queue one event; never blocks on the store, never raises."""
        with self._cond:
            self._queue.append(event)
            if len(self._queue) > self._queue_max:
                self._queue.popleft()
                self._count_drops(1)

    @property
    def depth(self) -> int:
        return len(self._queue)

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    def flush_now(self) -> None:
        """Wake the writer thread now instead of at the end of its period."""
        with self._cond:
            self._flush_requested = True
            self._cond.notify()

    def close(self, timeout: float = 30.0) -> bool:
        """Write every queued event and stop the thread; True if nothing was left.

        While the store keeps failing the writer retries until ``timeout``; what is
        still queued then is logged as lost (a daemon cannot wait forever on SIGTERM).
        """
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._started:
            self._thread.join(timeout)
        else:
            self._drain_once()
        left = len(self._queue)
        if left:
            log.error(
                "stopping with %d events not written to the store (%s)",
                left,
                self.last_error or "writer still busy",
            )
        return left == 0

    # -- the writer thread --------------------------------------------------------

    def _count_drops(self, n: int) -> None:
        # Called with the lock held.
        self.dropped += n
        self._drops_unlogged += n
        now = time.monotonic()
        if now - self._drop_logged_at >= _DROP_LOG_INTERVAL:
            log.error(
                "event queue full (%d): dropped the %d oldest events (%d in all); store: %s",
                self._queue_max,
                self._drops_unlogged,
                self.dropped,
                self.last_error or "slow",
            )
            self._drops_unlogged = 0
            self._drop_logged_at = now

    def _take(self) -> list[Event]:
        with self._cond:
            n = min(len(self._queue), BATCH_MAX)
            return [self._queue.popleft() for _ in range(n)]

    def _give_back(self, batch: list[Event]) -> None:
        with self._cond:
            self._queue.extendleft(reversed(batch))
            excess = len(self._queue) - self._queue_max
            if excess > 0:
                for _ in range(excess):
                    self._queue.popleft()
                self._count_drops(excess)

    def _drain_once(self) -> bool:
        """Write the queue in batches; False when the store failed."""
        while True:
            batch = self._take()
            if not batch:
                return True
            try:
                self._record(batch)
            except StoreError as e:
                self._failed(batch, str(e))
                return False
            except Exception as e:
                # A bug must not kill the only writer thread: keep the events, log it.
                log.exception("writing %d events failed unexpectedly", len(batch))
                self._failed(batch, f"{type(e).__name__}: {e}")
                return False
            self.written += len(batch)
            if self.last_error is not None:
                log.warning("store answers again; writing the events queued meanwhile")
                self.last_error = None

    def _failed(self, batch: list[Event], error: str) -> None:
        self._give_back(batch)
        if error != self.last_error:
            log.error(
                "cannot write %d events (%d queued), will retry: %s",
                len(batch),
                len(self._queue),
                error,
            )
        self.last_error = error

    def _run(self) -> None:
        delay = self._flush_seconds
        deadline = time.monotonic() + delay
        ok = True
        while True:
            with self._cond:
                # After a failure, even a close or a flush request waits for the backoff.
                while not (ok and (self._closing or self._flush_requested)):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                self._flush_requested = False
                closing = self._closing
            ok = self._drain_once()
            if closing and ok:
                return
            delay = self._flush_seconds if ok else min(max(delay, 0.05) * 2, self._retry_max)
            deadline = time.monotonic() + delay
