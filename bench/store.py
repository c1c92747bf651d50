"""The store at scale: a SQLite store filled to N events through the store's API, then
the commands users run, timed as subprocesses of the real CLI, and the click-write rate.

    python bench/store.py                       # 1,000,000 events
    python bench/store.py --events 10000000 --workdir /var/tmp/bench

Shapes: 20 logins with Zipf-like volume (login k sends in proportion to 1/k), 60 days
of messages, about 9.75 events a message (opens, clicks, delays, auto-replies, and a
bounce per bounced recipient), each event within two days of its message. Messages
go in with record_messages in batches of 2,000, events with record_events in batches,
in time order, as the daemons would write them. Each command runs once untimed (page cache), then 3
times; the table gives the median. Click writes: record_events batches of 500 clicks
on existing messages, 3 runs of 20 batches, median events/s.

Run it against another checkout with PYTHONPATH=/that/checkout/milter; the smtpeter
it imports (and the CLI subprocesses inherit) is printed first.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import smtpeter
from smtpeter.config import StoreConfig
from smtpeter.events import Event, EventType
from smtpeter.store import MessageRecord, Store, open_store

LOGINS = [f"tenant{k:02d}" for k in range(1, 21)]
DAYS = 60
EVENTS_PER_MESSAGE = 9.75
ROUNDS = 3
UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
# Kinds of events other than bounces, by weight.
KINDS: tuple[EventType, ...] = ("open", "click", "delay", "autoreply")
KIND_WEIGHTS = (0.58, 0.34, 0.05, 0.03)
BOUNCE_RATE = 0.04  # share of messages that bounce, once per recipient


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def fill(store: Store, total: int, rng: random.Random, now: datetime) -> list[str]:
    """Fill the store to ``total`` events; return the Message-IDs in creation order."""
    weights = [1 / k for k in range(1, len(LOGINS) + 1)]
    n_messages = round(total / EVENTS_PER_MESSAGE)
    start = now - timedelta(days=DAYS)
    span = (now - start).total_seconds()
    offsets = sorted(rng.random() * span for _ in range(n_messages))
    logins = rng.choices(LOGINS, weights, k=n_messages)
    message_ids: list[str] = []
    batch: list[MessageRecord] = []
    pending: list[tuple[str, Event]] = []
    left = total
    for i, (offset, login) in enumerate(zip(offsets, logins, strict=True)):
        created = start + timedelta(seconds=offset)
        uid = f"u{i:09d}{rng.getrandbits(32):08x}"
        message_id = f"<{i}.{rng.getrandbits(48):012x}@{login}.example.com>"
        recipients = tuple(
            f"r{rng.randrange(10**6)}@example.org" for _ in range(rng.choice((1, 1, 1, 2)))
        )
        batch.append(
            MessageRecord(
                queue_id=f"4X{rng.getrandbits(40):010X}",
                message_id=message_id,
                login=login,
                envelope_sender=f"news@{login}.example.com",
                recipients=recipients,
                features=("trackopens", "trackclicks", "trackbounces"),
                size_before=48_000,
                size_after=51_000,
                created_at=_iso(created),
                uid=uid,
            )
        )
        if len(batch) >= 2000:
            store.record_messages(batch)
            batch.clear()
        message_ids.append(message_id)
        if i == n_messages - 1:
            k = left
        else:
            k = min(left, max(0, round(rng.gauss(EVENTS_PER_MESSAGE, 4.0))))
        left -= k
        bounced = rng.random() < BOUNCE_RATE
        for j in range(k):
            when = created + timedelta(seconds=rng.random() * 2 * 86400)
            when = min(when, now)
            if bounced and j < len(recipients):
                e = Event(
                    "bounce",
                    uid,
                    _iso(when),
                    recipient=recipients[j],
                    detail={"kind": "hard", "status": "5.1.1", "bounce_id": f"b{i}.{j}"},
                )
            else:
                kind = rng.choices(KINDS, KIND_WEIGHTS)[0]
                url = (
                    f"https://www.{login}.example.com/p/{rng.randrange(50)}"
                    if kind == "click"
                    else None
                )
                e = Event(kind, uid, _iso(when), url=url, user_agent=UA, client_ip="198.51.100.7")
            pending.append((e.occurred_at, e))
        if len(pending) >= 200_000 or i == n_messages - 1:
            store.record_messages(batch)  # before any of their events
            batch.clear()
            # Events written in time order; the ones not yet due wait for later messages.
            pending.sort(key=lambda p: p[0])
            cut = len(pending) if i == n_messages - 1 else len(pending) // 2
            due = [e for _, e in pending[:cut]]
            del pending[:cut]
            for b in range(0, len(due), 5000):
                store.record_events(due[b : b + 5000])
    return message_ids


def run_cli(conf: Path, args: list[str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "smtpeter", "--config", str(conf), *args],
        capture_output=True,
        text=True,
        timeout=900,
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"smtpeter {' '.join(args)} failed: {result.stderr}")
    return elapsed


def click_rate(
    store: Store,
    rng: random.Random,
    uids: list[str],
    now: datetime,
    size: int = 500,
    total: int = 100_000,
) -> float:
    """Clicks written per second, sustained: ``total`` clicks in batches of ``size``,
    then whatever the writers left unindexed in message_events indexed, inside the
    time (the indexing the writers do as they go is in it already)."""
    batches = [
        [
            Event(
                "click",
                rng.choice(uids),
                _iso(now),
                url="https://www.example.com/x",
                user_agent=UA,
                client_ip="203.0.113.9",
            )
            for _ in range(size)
        ]
        for _ in range(total // size)
    ]
    # A version before message_events (PYTHONPATH to an older checkout) has none.
    index_step = getattr(store, "index_step", lambda: 0)
    started = time.perf_counter()
    for batch in batches:
        store.record_events(batch)
    while index_step():
        pass
    return total / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--workdir", help="where the store goes (default: a temp directory)")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--keep", action="store_true", help="keep the store afterwards")
    parser.add_argument(
        "--store", metavar="DB", help="time an existing store filled by an earlier --keep run"
    )
    ns = parser.parse_args()
    print(f"smtpeter from {os.path.dirname(smtpeter.__file__)}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="smtpeter-store-", dir=ns.workdir))
    try:
        db = Path(ns.store) if ns.store else workdir / "smtpeter.db"
        conf = workdir / "smtpeter.yaml"
        conf.write_text(f"store:\n  sqlite_path: {db}\n")
        store = open_store(StoreConfig(sqlite_path=str(db)))
        rng = random.Random(ns.seed)
        now = datetime.now(UTC)
        started = time.perf_counter()
        if ns.store:
            message_ids = [m.message_id or "" for m in store.messages(limit=200_000)]
            newest = store.events(limit=1)
            total = (newest[0].id or 0) if newest else 0
            print(f"reusing {db}: {total:,} events", flush=True)
        else:
            message_ids = fill(store, ns.events, rng, now)
            total = ns.events
            print(
                f"filled {ns.events:,} events, {len(message_ids):,} messages in "
                f"{time.perf_counter() - started:.0f} s",
                flush=True,
            )
        probe = message_ids[len(message_ids) // 2]
        deep = total // 2
        commands: list[tuple[str, list[str]]] = [
            ("baseline: `config check` (start-up and imports, no query)", ["config", "check"]),
            ("`stats --since 30d --json`", ["stats", "--since", "30d", "--json"]),
            ("`stats --login L --since 7d`", ["stats", "--login", LOGINS[0], "--since", "7d"]),
            ("`events --login L --json`", ["events", "--login", LOGINS[0], "--json"]),
            ("`events --login L20 --json`", ["events", "--login", LOGINS[-1], "--json"]),
            ("`events --json` (a page deep in)", ["events", "--json", "--before", str(deep)]),
            ("`events --message <Message-ID>`", ["events", "--message", probe]),
            ("`events --type bounce --since 1d`", ["events", "--type", "bounce", "--since", "1d"]),
        ]
        rows: list[tuple[str, str]] = []
        baseline = 0.0
        for name, args in commands:
            run_cli(conf, args)
            took = statistics.median(run_cli(conf, args) for _ in range(ROUNDS))
            baseline = baseline or took
            value = f"{took:.2f} s" + (
                f" (baseline + {took - baseline:.2f} s)" if args != commands[0][1] else ""
            )
            rows.append((name, value))
            print(f"{name}: {value}", flush=True)
        # A bounce's store work, as the bounce processor does it: find the message by
        # its uid, then record the bounce unless its identity is known (once new, once
        # a duplicate), on messages all over the store.
        sample = [m.uid for m in store.messages(limit=200_000)[::4000] if m.uid]
        took_ms: list[float] = []
        for n, uid in enumerate(sample):
            for _ in range(2):
                started = time.perf_counter()
                (message,) = store.messages(uid=uid, limit=1)
                store.record_bounce(
                    uid,
                    f"BENCH{n}",
                    [Event("bounce", uid, _iso(now), recipient=message.recipients[0],
                           detail={"kind": "hard", "status": "5.1.1", "bounce_id": f"BENCH{n}"})],
                )  # fmt: skip
                took_ms.append((time.perf_counter() - started) * 1000)
        rows.append(
            (
                "a bounce's store work (message lookup + record once)",
                f"median {statistics.median(took_ms):.2f} ms, max {max(took_ms):.2f} ms",
            )
        )
        print(f"bounce store work: {rows[-1][1]}", flush=True)
        # Clicks on the messages of the last few days, as a newsletter's readers do.
        uids = [m.uid for m in store.messages(limit=50_000) if m.uid]
        click_rate(store, rng, uids, now)
        rate = statistics.median(click_rate(store, rng, uids, now) for _ in range(ROUNDS))
        rows.append(("click writes (batches of 500)", f"{rate:,.0f} events/s"))
        print(f"click writes: {rate:,.0f} events/s", flush=True)
        big = statistics.median(click_rate(store, rng, uids, now, size=5000) for _ in range(ROUNDS))
        rows.append(("click writes (batches of 5,000, the writer's most)", f"{big:,.0f} events/s"))
        print(f"click writes, batches of 5000: {big:,.0f} events/s", flush=True)
        store.close()
        print(f"\n| command | {total:,} events |\n|---|---|")
        for name, value in rows:
            print(f"| {name} | {value} |")
    finally:
        if ns.keep or ns.store:
            print(f"store kept in {db}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
