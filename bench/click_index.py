"""Why click writes miss 40,000 events/s on a 10M-event store, and what would reach it
(issue 17): the by-message index's key, measured on a bare SQLite table of the store's
shape.

    python bench/click_index.py --workdir /var/tmp          # 1M messages, 10M events
    python bench/click_index.py --messages 100000           # 1M events, quicker

Builds one database (``--workdir``/click-index.db, kept for another run with
``--keep``) with ``--messages`` messages and ten events each, in two tables of the
events table's columns, each with the (type, occurred_at) index of the store:

- ``uid``: the by-message index of the store today, (message_uid, type), keyed by the
  message's random uid;
- ``seq``: the same index keyed by the message's sequence number (messages.id), which
  grows with time.

Then it writes clicks (20,000 a round, 3 rounds after one warm-up, the median) on
the newest 50,000 messages, where the clicks of a busy relay go, in transactions of
500 and 5,000 rows (the tracker writer's largest), into each table; and, for the
``deferred`` design, into ``seq`` with its by-message index dropped, followed by one
sorted bulk insert of the new rows' (message seq, event id) pairs into a WITHOUT
ROWID table that stands for the index (rounds of 20,000, 100,000 and 200,000
clicks). Printed: events/s of the appends alone, events/s with the bulk step, and
the bulk step's own seconds (the time it holds the write lock). No triggers: these
are the index's costs alone (the store's triggers add about 20%).
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
COLUMNS = "type, occurred_at, message_uid, message_seq, url, user_agent, client_ip"
Row = tuple[str, str, str, int, str, str, str]


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def build(conn: sqlite3.Connection, messages: int) -> None:
    conn.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY, uid TEXT UNIQUE)")
    conn.execute("BEGIN")
    conn.execute(
        "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < ?)"
        " INSERT INTO messages SELECT n, lower(hex(randomblob(10))) FROM s",
        (messages,),
    )
    conn.execute("COMMIT")
    for table in ("uid", "seq", "deferred"):
        conn.execute(
            f"CREATE TABLE events_{table} (id INTEGER PRIMARY KEY, type TEXT, occurred_at TEXT,"
            " message_uid TEXT, message_seq INTEGER, url TEXT, user_agent TEXT, client_ip TEXT)"
        )
        conn.execute("BEGIN")
        conn.execute(
            f"WITH RECURSIVE s(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM s WHERE n < ?)"
            f" INSERT INTO events_{table} ({COLUMNS})"
            " SELECT 'open', '2026-11-01T00:00:00.000000Z', m.uid, m.id,"
            " 'https://www.example.com/x', ?, '203.0.113.9'"
            " FROM s JOIN messages m ON m.id = s.n / 10 + 1",
            (messages * 10 - 1, UA),
        )
        conn.execute("COMMIT")
        conn.execute(f"CREATE INDEX events_{table}_tt ON events_{table} (type, occurred_at)")
    conn.execute("CREATE INDEX events_uid_msg ON events_uid (message_uid, type)")
    conn.execute("CREATE INDEX events_seq_msg ON events_seq (message_seq, type)")
    conn.execute(
        "CREATE TABLE message_events (message_seq INTEGER, event_id INTEGER,"
        " PRIMARY KEY (message_seq, event_id)) WITHOUT ROWID"
    )
    conn.execute("BEGIN")
    conn.execute(
        "INSERT INTO message_events SELECT message_seq, id FROM events_deferred"
        " ORDER BY message_seq, id"
    )
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def clicks(recent: Sequence[tuple[int, str]], n: int, rng: random.Random) -> list[Row]:
    return [
        ("click", "2026-12-01T10:00:00.000000Z", uid, seq, "https://www.example.com/y", UA,
         "203.0.113.9")
        for seq, uid in (rng.choice(recent) for _ in range(n))
    ]  # fmt: skip


def append(conn: sqlite3.Connection, table: str, rows: list[Row], size: int) -> float:
    """Seconds to write ``rows`` in transactions of ``size``."""
    started = time.perf_counter()
    for i in range(0, len(rows), size):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            f"INSERT INTO events_{table} ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows[i : i + size],
        )
        conn.execute("COMMIT")
    return time.perf_counter() - started


def deferred(conn: sqlite3.Connection, rows: list[Row]) -> tuple[float, float, float]:
    """Appends (transactions of 5,000), then the bulk index step: (appends/s, events/s
    all in, the bulk step's seconds)."""
    top = conn.execute("SELECT MAX(id) FROM events_deferred").fetchone()[0]
    appended = append(conn, "deferred", rows, 5000)
    started = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(
        "INSERT INTO message_events SELECT message_seq, id FROM events_deferred WHERE id > ?"
        " ORDER BY message_seq, id",
        (top,),
    )
    conn.execute("COMMIT")
    bulk = time.perf_counter() - started
    return len(rows) / appended, len(rows) / (appended + bulk), bulk


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000, help="ten events each")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--keep", action="store_true", help="keep the database for next time")
    args = parser.parse_args(argv)
    path = args.workdir / "click-index.db"
    fresh = not path.exists()
    conn = connect(path)
    if fresh:
        started = time.monotonic()
        build(conn, args.messages)
        print(f"built {args.messages * 10:,} events in {time.monotonic() - started:.0f} s")
    newest = conn.execute("SELECT MAX(id) FROM messages").fetchone()[0]
    recent = conn.execute("SELECT id, uid FROM messages WHERE id > ?", (newest - 50000,)).fetchall()
    rng = random.Random(17)
    print("index keyed by      transaction  events/s (median of 3)")
    for size in (500, 5000):
        for table in ("uid", "seq"):
            append(conn, table, clicks(recent, 20000, rng), size)
            rates = [20000 / append(conn, table, clicks(recent, 20000, rng), size) for _ in "123"]
            print(f"{table:<19} {size:>11,}  {statistics.median(rates):,.0f}")
    print("deferred index: clicks a round, appends/s, events/s with the bulk step, bulk s")
    for n in (20000, 100000, 200000):
        deferred(conn, clicks(recent, n, rng))
        runs = [deferred(conn, clicks(recent, n, rng)) for _ in "123"]
        a, b, c = (statistics.median(r[i] for r in runs) for i in range(3))
        print(f"{n:>8,}  {a:,.0f}  {b:,.0f}  {c:.2f}")
    conn.close()
    if not args.keep:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
