"""`smtpeter store upkeep`: the upgrade's backfill and retention, run while the daemons
run (the package's smtpeter-upkeep.timer starts it hourly).

Each step is one short transaction (store/maintenance.py), sized to hold the write lock
about STEP_TARGET at most; between steps the job pauses at least as long as the step
took, so it holds the lock half the time at most and a daemon's write waits one step
at worst.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from smtpeter.store import Store

log = logging.getLogger("smtpeter.store.upkeep")

# Seconds between two progress lines of a long job.
_PROGRESS_EVERY = 10.0
# Seconds one step should hold the store's write lock at most (what a daemon's write
# may wait behind it).
STEP_TARGET = 0.2
# Tries at migration 8's switch in one run (see run()).
SWITCH_ATTEMPTS = 5


@dataclass
class Done:
    backfilled: int = 0
    indexed: int = 0
    pruned: int = 0
    longest_step: float = 0.0


def _loop(what: str, step: Callable[[int], int], batch: int, done: Done, pause: float) -> int:
    """Run ``step(size)`` until it does nothing, pausing between steps. The size starts
    at ``batch`` and follows the machine: halved after a step that held the write lock
    longer than STEP_TARGET, doubled after one under a quarter of it (between a
    sixteenth and four times ``batch``), so that a loaded machine or a cold cache
    lengthens the job, not the daemons' waits."""
    rows = 0
    size, low, high = batch, max(1, batch // 16), batch * 4
    said = time.monotonic()
    while True:
        started = time.monotonic()
        n = step(size)
        took = time.monotonic() - started
        done.longest_step = max(done.longest_step, took)
        if n == 0:
            return rows
        rows += n
        if took > STEP_TARGET:
            size = max(low, size // 2)
        elif took < STEP_TARGET / 4:
            size = min(high, size * 2)
        if time.monotonic() - said >= _PROGRESS_EVERY:
            log.info("%s: %d rows so far", what, rows)
            said = time.monotonic()
        time.sleep(max(pause, took))


def run(
    store: Store,
    *,
    retention_days: int,
    batch: int = 500,
    pause: float = 0.01,
    now: datetime | None = None,
) -> Done:
    """Finish any backfill, then prune what is older than ``retention_days`` (0: keep
    everything). Interrupted, it goes on where it was the next time."""
    done = Done()
    if store.backfill_pending():
        log.info("store %s: counting the rows stored before the upgrade", store.path)
        done.backfilled = _loop("backfill", store.backfill_step, batch, done, pause)
        log.info("store %s: backfill done: %d rows", store.path, done.backfilled)
    # The index of a message's events: on an upgraded store, every older event; then
    # the old by-uid index is dropped. Afterwards the writers keep it up to date, and
    # this takes what they left (at most one writer batch's worth).
    lag = store.upkeep_status()["events_not_indexed"]
    if lag:
        log.info("store %s: indexing %s events by their message", store.path, lag)
    done.indexed = _loop("index", store.index_step, 20 * batch, done, pause)
    if lag:
        log.info("store %s: index done: %d events", store.path, done.indexed)
    # Then the switch, once it can run: the writers may write more than it takes under
    # its lock while it reads the old index, so index again and retry a few times.
    for attempt in range(SWITCH_ATTEMPTS):
        held = store.switch_index()
        if held is not None:
            done.longest_step = max(done.longest_step, held)
            break
        if store.upkeep_status()["message_events_read"] or store.backfill_pending():
            break
        if attempt == SWITCH_ATTEMPTS - 1:
            log.warning(
                "store %s: the writers kept ahead of the index; the old index of events"
                " by message uid is dropped at the next run",
                store.path,
            )
            break
        done.indexed += _loop("index", store.index_step, 20 * batch, done, pause)
    if retention_days > 0:
        cutoff = (now or datetime.now(UTC)) - timedelta(days=retention_days)
        before = cutoff.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        done.pruned = _loop(
            "prune", lambda size: store.prune_step(before, size), batch, done, pause
        )
        if done.pruned:
            log.info(
                "store %s: pruned %d rows older than %s (%d days); stats keep their counts",
                store.path,
                done.pruned,
                before,
                retention_days,
            )
    return done
