"""An older store upgraded in place while a writer keeps writing: the schema step on
open, stats counted live before the backfill, the backfill and the index of a
message's events (`smtpeter store upkeep`, its last step the switch that drops the
old index) with a click written every 5 ms meanwhile, then stats from the counters.

    # a store of the previous schema, from an older checkout's own bench:
    git worktree add /var/tmp/old 84c6ad2
    (cd /var/tmp/old && PYTHONPATH=milter python bench/store.py --events 1000000 --keep)
    python bench/store_upgrade.py /tmp/smtpeter-store-*/smtpeter.db

The store given is copied first (to --copy), so it can be upgraded again.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Callable

from smtpeter.events import Event
from smtpeter.store import upkeep
from smtpeter.store.sqlite import SQLiteStore


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store", help="a store of an older schema (it is not changed)")
    parser.add_argument("--copy", default="/var/tmp/smtpeter-upgrade.db", help="the copy upgraded")
    parser.add_argument("--batch", type=int, default=500, help="backfill batch (upkeep's default)")
    ns = parser.parse_args()
    shutil.copy(ns.store, ns.copy)
    # Written out now: otherwise the first checkpoint's fsync writes the whole copy,
    # seconds of the write lock no store that was not just copied would see.
    os.sync()
    started = time.perf_counter()
    store = SQLiteStore(ns.copy)
    print(f"open with the schema step: {time.perf_counter() - started:.2f} s", flush=True)
    started = time.perf_counter()
    live = store.stats()
    print(f"stats, counted live before the backfill: {time.perf_counter() - started:.2f} s")
    writer = SQLiteStore(ns.copy)
    uids = [m.uid for m in writer.messages(limit=20_000) if m.uid]
    waits: list[float] = []
    stop = threading.Event()

    def write() -> None:
        rng = random.Random(1)
        while not stop.is_set():
            click = Event(
                "click", rng.choice(uids), "2026-12-01T10:00:00.000000Z", url="https://x/"
            )
            began = time.perf_counter()
            writer.record_events([click])
            waits.append(time.perf_counter() - began)
            time.sleep(0.005)

    # Each step timed (the store's own methods wrapped): the steps hold the write lock
    # for their whole call; the switch reports its own time under the lock (before it,
    # it reads the old index without the lock).
    steps: dict[str, list[float]] = {"backfill": [], "index": [], "prune": []}

    def timed(name: str, step: Callable[..., int]) -> Callable[..., int]:
        def run(*args: object) -> int:
            began = time.perf_counter()
            n = step(*args)
            steps[name].append(time.perf_counter() - began)
            return n

        return run

    store.backfill_step = timed("backfill", store.backfill_step)  # type: ignore[method-assign]
    store.index_step = timed("index", store.index_step)  # type: ignore[method-assign]
    switch_index = store.switch_index
    switched: list[float | None] = []

    def switch() -> float | None:
        began = time.perf_counter()
        held = switch_index()
        print(f"switch: {time.perf_counter() - began:.2f} s, the write lock held {held} s")
        switched.append(held)
        return held

    store.switch_index = switch  # type: ignore[method-assign]
    thread = threading.Thread(target=write)
    thread.start()
    started = time.perf_counter()
    try:
        done = upkeep.run(store, retention_days=0, batch=ns.batch)
    finally:
        stop.set()
        thread.join()
    took = time.perf_counter() - started
    print(
        f"backfill: {done.backfilled:,} rows, index of a message's events: {done.indexed:,}"
        f" events, in {took:.1f} s; longest step {done.longest_step * 1000:.0f} ms"
    )
    for name, times in steps.items():
        if times:
            times.sort()
            print(
                f"{name} steps: {len(times)}, median {statistics.median(times) * 1000:.0f} ms,"
                f" p99 {times[len(times) * 99 // 100] * 1000:.0f} ms, max {times[-1] * 1000:.0f} ms"
            )
    waits.sort()
    print(
        f"a click write meanwhile ({len(waits)} of them): median "
        f"{statistics.median(waits) * 1000:.1f} ms, p99 {waits[len(waits) * 99 // 100] * 1000:.0f}"
        f" ms, max {waits[-1] * 1000:.0f} ms"
    )
    started = time.perf_counter()
    after = store.stats()
    print(f"stats from the counters: {time.perf_counter() - started:.3f} s")

    # The writer's clicks came in meanwhile, so compare the columns clicks leave alone.
    def fixed(rows: list[dict[str, object]]) -> list[tuple[object, ...]]:
        return [
            (r["login"], r["day"], r["messages"], r["unique_opens"], r["bounces"]) for r in rows
        ]

    same = fixed(live) == fixed(after)
    print(f"messages, opens and bounces the same as counted live: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
