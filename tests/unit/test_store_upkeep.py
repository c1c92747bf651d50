"""The store at scale, kept right: the per-day counters against a recount, an older
store upgraded in place while a writer keeps writing, events a page at a time, the
retention that prunes rows but keeps the counts, and a bounce recorded once."""

from __future__ import annotations

import json
import logging
import random
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from smtpeter.events import Event
from smtpeter.store import MessageRecord, Store, upkeep
from smtpeter.store.migrations import MIGRATIONS
from smtpeter.store.sqlite import SQLiteStore
from tests.unit.test_store_stats_recount import DAYS, LOGINS, TYPES, _time, recount


def _message(i: int, rng: random.Random, uid: str | None) -> MessageRecord:
    return MessageRecord(
        queue_id=f"Q{i:05X}", message_id=f"<{i}@gen.test>",
        login=rng.choices(LOGINS, weights=(8, 4, 2, 1, 1))[0], envelope_sender="s@example.com",
        recipients=tuple(f"r{j}@example.org" for j in range(rng.choice((1, 2)))),
        features=(), size_before=1, size_after=1, created_at=_time(rng, rng.choice(DAYS)), uid=uid,
    )  # fmt: skip


def _events_for(uid: str, rng: random.Random) -> list[Event]:
    return [
        Event(rng.choice(TYPES), uid, _time(rng, rng.choice(DAYS)))
        for _ in range(rng.choice((0, 1, 2, 4, 7)))
    ]


def old_store(path: Path, n: int, seed: int) -> tuple[list[MessageRecord], list[Event]]:
    """A store of schema 4 (before the counters), filled with the SQL that version ran."""
    rng = random.Random(seed)
    conn = sqlite3.connect(path)
    for script in MIGRATIONS[:4]:
        conn.executescript(script)
    conn.execute("PRAGMA user_version = 4")
    messages = [_message(i, rng, None if i % 29 == 0 else f"u{i}") for i in range(n)]
    events = [e for m in messages if m.uid for e in _events_for(m.uid, rng)]
    events += [Event("bounce", f"gone{k}", _time(rng, DAYS[0])) for k in range(20)]
    rng.shuffle(events)
    conn.executemany(
        "INSERT INTO messages (uid, queue_id, message_id, login, envelope_sender, recipients,"
        " features, size_before, size_after, created_at) VALUES (?, ?, ?, ?, ?, ?, '[]', 1, 1, ?)",
        [
            (m.uid, m.queue_id, m.message_id, m.login, m.envelope_sender,
             json.dumps(m.recipients), m.created_at)
            for m in messages
        ],
    )  # fmt: skip
    conn.executemany(
        "INSERT INTO events (type, occurred_at, message_uid, detail) VALUES (?, ?, ?, ?)",
        [(e.type, e.occurred_at, e.message_uid, json.dumps(e.detail)) for e in events],
    )
    conn.commit()
    conn.close()
    return messages, events


def _pages(store: Store, **filters: object) -> list[int]:
    """Every event id the filters select, read a page of 7 at a time with the cursor."""
    ids: list[int] = []
    before: int | None = None
    while True:
        page = store.events(**filters, before=before, limit=7)  # type: ignore[arg-type]
        ids += [e.id for e in page if e.id is not None]
        if len(page) < 7:
            return ids
        before = page[-1].id


def _all_ids(store: Store, **filters: object) -> list[int]:
    return [e.id for e in store.events(**filters, limit=10**9) if e.id is not None]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "since", [None, "2026-11-03", "2026-11-03T07:12:00.000000Z", "2026-11-08T23:59:00Z"]
)
def test_an_upgraded_store_counts_the_same_before_during_and_after_its_backfill(
    tmp_path: Path, since: str | None
) -> None:
    """An older store's stats equal a recount right after the upgrade (counted live),
    after half of the backfill, and once the counters hold everything."""
    messages, events = old_store(tmp_path / "old.db", 1500, 5)
    store = SQLiteStore(str(tmp_path / "old.db"))
    assert store.backfill_pending()
    for login in (None, "news"):
        assert store.stats(login=login, since=since) == recount(messages, events, login, since)
    for _ in range(3):
        assert store.backfill_step(batch=200) == 200
    assert store.stats(since=since) == recount(messages, events, None, since)
    done = upkeep.run(store, retention_days=0, batch=200, pause=0)
    assert done.backfilled == 1500 - 600 + len(events)
    assert not store.backfill_pending()
    for login in (None, "news", "nobody"):
        assert store.stats(login=login, since=since) == recount(messages, events, login, since)


def test_events_a_page_at_a_time_whatever_the_filter_and_the_backfill(tmp_path: Path) -> None:
    """Paging with the cursor gives every selected event exactly once, newest first,
    through the upgrade's fallback and through the new indexes alike."""
    messages, events = old_store(tmp_path / "old.db", 400, 8)
    store = SQLiteStore(str(tmp_path / "old.db"))
    login_of = {m.uid: m.login for m in messages if m.uid}
    recorded = list(reversed(events))  # ids follow the order they were written
    selections: list[dict[str, str]] = [
        {}, {"login": "shop"}, {"type": "click"}, {"login": "bank", "type": "open"},
        {"since": "2026-11-05"}, {"type": "bounce", "since": "2026-11-05"},
    ]  # fmt: skip
    for phase in ("before backfill", "after backfill"):
        for filters in selections:
            got = _pages(store, **filters)
            assert got == _all_ids(store, **filters), (phase, filters)
            assert got == sorted(got, reverse=True)
            want = [
                e
                for e in recorded
                if ("login" not in filters or login_of.get(e.message_uid) == filters["login"])
                and ("type" not in filters or e.type == filters["type"])
                and ("since" not in filters or e.occurred_at >= str(filters["since"]))
            ]
            page = store.events(**filters, limit=10**9)  # type: ignore[arg-type]
            assert [(e.type, e.occurred_at, e.message_uid) for e in page] == [
                (e.type, e.occurred_at, e.message_uid) for e in want
            ], (phase, filters)
        upkeep.run(store, retention_days=0, batch=50, pause=0)


def test_the_backfill_leaves_a_busy_writer_waiting_milliseconds(tmp_path: Path) -> None:
    """While the backfill works through an older store, a writer recording a message
    and its events every few milliseconds is never held up for long, and the
    counters then match a recount of everything, the writer's rows included."""
    path = tmp_path / "old.db"
    messages, events = old_store(path, 12000, 11)
    store = SQLiteStore(str(path))
    writer = SQLiteStore(str(path))
    rng = random.Random(3)
    waits: list[float] = []
    stop = threading.Event()

    def write() -> None:
        i = 100_000
        while not stop.is_set():
            m = _message(i, rng, f"w{i}")
            click = Event("click", f"u{rng.randrange(12000)}", _time(rng, DAYS[3]))
            evs = [*_events_for(f"w{i}", rng), click]
            started = time.monotonic()
            writer.record_message(m)
            writer.record_events(evs)
            waits.append(time.monotonic() - started)
            messages.append(m)
            events.extend(evs)
            i += 1
            time.sleep(0.002)

    thread = threading.Thread(target=write)
    thread.start()
    try:
        done = upkeep.run(store, retention_days=0, batch=2000, pause=0.005)
    finally:
        stop.set()
        thread.join()
    assert done.backfilled >= 12000 and len(waits) > 20
    assert max(waits) < 0.5, sorted(waits)[-5:]
    assert done.longest_step < 0.5
    assert store.stats() == recount(messages, events, None, None)


def test_events_that_come_before_their_message_are_counted_and_found_by_login(
    tmp_path: Path,
) -> None:
    """Another node's tracker may store a click before this node stores the message:
    the click still counts in stats and shows under the message's login."""
    store = SQLiteStore(str(tmp_path / "s.db"))
    store.record_events([Event("click", "u1", "2026-11-02T08:00:00Z"),
                         Event("bounce", "u1", "2026-11-02T09:00:00Z")])  # fmt: skip
    m = _message(1, random.Random(1), "u1")
    store.record_message(m)
    store.record_events([Event("click", "u1", "2026-11-02T10:00:00Z")])
    (row,) = store.stats()
    assert (row["messages"], row["unique_clicks"], row["bounces"]) == (1, 1, 1)
    assert [e.type for e in store.events(login=m.login)] == ["click", "bounce", "click"]


@pytest.mark.parametrize("index_lag", [0, 40], ids=["tail", "indexed"])
def test_retention_prunes_rows_and_keeps_the_counts(tmp_path: Path, index_lag: int) -> None:
    """Pruning deletes the old messages with their events (also from events --login),
    whether indexed by message yet or not, old events of unknown messages, and stats
    stay as they were, a day inside the pruned range included."""
    store = SQLiteStore(str(tmp_path / "s.db"), index_lag=index_lag)
    rng = random.Random(4)
    messages = [_message(i, rng, f"u{i}") for i in range(600)]
    store.record_messages(messages)
    events = [e for m in messages for e in _events_for(str(m.uid), rng)]
    for b in range(0, len(events), 100):
        store.record_events(events[b : b + 100])
    store.record_events([Event("open", "nobody", "2026-11-01T01:00:00Z")])
    assert (int(str(store.upkeep_status()["events_not_indexed"])) < 140) == bool(index_lag)
    assert store.record_bounce("u1", "QB1", [Event("bounce", "u1", "2026-11-01T02:00:00Z")])
    stats = store.stats()
    partial = store.stats(since="2026-11-03T12:00:00Z")
    cutoff = "2026-11-05T00:00:00.000000Z"
    while store.prune_step(cutoff, batch=50):
        pass
    kept = {m.uid for m in messages if m.created_at >= cutoff}
    assert {m.uid for m in store.messages(limit=10**6)} == kept
    # Ids in the order written: the kept messages' events since the cutoff are there.
    assert sorted(e.id or 0 for e in store.events(limit=10**9)) == [
        i
        for i, e in enumerate(events, start=1)
        if e.message_uid in kept and e.occurred_at >= cutoff
    ]
    for login in LOGINS:
        if login is not None:
            assert {e.message_uid for e in store.events(login=login, limit=10**9)} <= kept
    assert store.stats() == stats
    # A window starting inside a pruned day takes that day whole from the counters.
    assert (
        store.stats(since="2026-11-03T12:00:00Z")
        == [r for r in stats if str(r["day"]) >= "2026-11-03"]
        != partial
    )
    assert store.upkeep_status()["pruned_before"] == cutoff
    # A bounce identity is kept by when it was recorded (now), not by its message.
    assert not store.record_bounce("u1", "QB1", [])


def test_upkeep_prunes_by_retention_days(tmp_path: Path) -> None:
    """store.retention_days counts back from now; 0 prunes nothing."""
    store = SQLiteStore(str(tmp_path / "s.db"))
    store.record_messages([_message(i, random.Random(i), f"u{i}") for i in range(50)])
    assert upkeep.run(store, retention_days=0).pruned == 0
    from datetime import UTC, datetime

    done = upkeep.run(store, retention_days=3, now=datetime(2026, 11, 8, tzinfo=UTC))
    assert done.pruned == 50 - len(store.messages(limit=1000))
    assert all(m.created_at >= "2026-11-05" for m in store.messages(limit=1000))
    assert store.messages(limit=1000)


def test_a_bounce_is_recorded_once_by_its_identity(tmp_path: Path) -> None:
    """The same bounce delivered again records nothing; after an upgrade, a bounce
    recorded by the older version is known before the backfill reaches it."""
    path = tmp_path / "old.db"
    old_store(path, 10, 1)
    conn = sqlite3.connect(path)
    conn.execute(
        "INSERT INTO events (type, occurred_at, message_uid, detail) VALUES"
        " ('bounce', '2026-11-02T00:00:00Z', 'u1', '{\"bounce_id\": \"QOLD\"}')"
    )
    conn.commit()
    conn.close()
    store = SQLiteStore(str(path))
    bounce = [Event("bounce", "u1", "2026-11-03T00:00:00Z", detail={"bounce_id": "QNEW"})]
    assert not store.record_bounce("u1", "QOLD", bounce)
    assert store.record_bounce("u1", "QNEW", bounce)
    assert not store.record_bounce("u1", "QNEW", bounce)
    assert not store.record_bounce("u1", "QOLD", bounce)
    upkeep.run(store, retention_days=0)
    assert not store.record_bounce("u1", "QOLD", bounce)
    assert store.record_bounce("u2", "QOLD", [])  # another message's bounce
    news = [e for e in store.events(message="u1") if e.detail.get("bounce_id") == "QNEW"]
    assert len(news) == 1


def test_a_daemon_of_the_previous_version_still_writing_is_counted(tmp_path: Path) -> None:
    """During a package upgrade a daemon of the previous version may write a few more
    rows with its own SQL after the store was migrated: its messages are counted and
    its bounces' identities known, as if the new version had written them."""
    path = tmp_path / "s.db"
    messages, events = old_store(path, 30, 2)
    store = SQLiteStore(str(path))
    rng = random.Random(9)
    late = _message(500, rng, "late1")
    old_writer = sqlite3.connect(path)
    old_writer.execute(
        "INSERT INTO messages (uid, queue_id, message_id, login, envelope_sender, recipients,"
        " features, size_before, size_after, created_at) VALUES (?, ?, ?, ?, ?, '[]', '[]',"
        " 1, 1, ?)",
        (late.uid, late.queue_id, late.message_id, late.login, late.envelope_sender,
         late.created_at),
    )  # fmt: skip
    bounce = Event("bounce", "late1", late.created_at, detail={"bounce_id": "QLATE"})
    old_writer.execute(
        "INSERT INTO events (type, occurred_at, message_uid, detail) VALUES (?, ?, ?, ?)",
        (bounce.type, bounce.occurred_at, bounce.message_uid, json.dumps(bounce.detail)),
    )
    old_writer.commit()
    old_writer.close()
    messages.append(late)
    events.append(bounce)
    upkeep.run(store, retention_days=0)
    assert store.stats() == recount(messages, events, None, None)
    assert not store.record_bounce("late1", "QLATE", [bounce])
    assert [e.message_uid for e in store.events(login=late.login) if e.type == "bounce"].count(
        "late1"
    ) == 1


def test_a_store_with_delivery_results_of_the_previous_version_counts_them(
    tmp_path: Path,
) -> None:
    """A store of schema 8 (delivery results recorded, no delivered and deferred
    columns yet) upgraded in place: stats count the results recorded before the
    upgrade and after it, equal to a recount."""
    from smtpeter.store import maintenance
    from smtpeter.store.migrations import INDEX_SWITCH

    path = tmp_path / "s.db"
    conn = sqlite3.connect(path)
    for script in MIGRATIONS[:8]:
        conn.executescript(script)
    conn.executescript(INDEX_SWITCH)  # a new store of schema 8 switched at once
    conn.execute("PRAGMA user_version = 8")
    rng = random.Random(8)
    messages = [_message(i, rng, f"u{i}") for i in range(300)]
    conn.executemany(
        "INSERT INTO messages (uid, queue_id, message_id, login, envelope_sender, recipients,"
        " features, size_before, size_after, created_at) VALUES (?, ?, ?, ?, ?, ?, '[]', 1, 1, ?)",
        [
            (m.uid, m.queue_id, m.message_id, m.login, m.envelope_sender,
             json.dumps(m.recipients), m.created_at)
            for m in messages
        ],
    )  # fmt: skip
    results = [
        Event(rng.choice(("delivered", "deferred", "failed", "open")), m.uid or "", m.created_at)
        for m in messages
        for _ in range(rng.choice((0, 1, 2, 3)))
    ]
    # Schema 8's own insert: the message's row id found by its uid.
    conn.executemany(
        "INSERT INTO events (type, occurred_at, message_uid, detail, message_id)"
        " SELECT ?1, ?2, ?3, '{}', (SELECT id FROM messages WHERE uid = ?3)",
        [(e.type, e.occurred_at, e.message_uid) for e in results],
    )
    conn.commit()
    conn.close()
    store = SQLiteStore(str(path))
    assert store.schema_version() == len(MIGRATIONS)
    expected = recount(messages, results, None, None)
    assert sum(int(str(r["delivered"])) for r in expected) > 50
    assert store.stats() == expected
    later = [Event("delivered", m.uid or "", m.created_at) for m in messages[:40]]
    store.record_events(later)
    assert store.stats() == recount(messages, results + later, None, None)
    for since in ("2026-11-03", "2026-11-04T13:00:00Z"):
        assert store.stats(since=since) == recount(messages, results + later, None, since)
    with store._use("check") as c:
        assert maintenance.switched(c)


def test_upkeep_says_what_it_did(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator's log: the backfill's start, progress and total, and what retention
    pruned, before when and for how many days, each naming the store."""
    path = tmp_path / "old.db"
    old_store(path, 300, 6)
    store = SQLiteStore(str(path))
    monkeypatch.setattr(upkeep, "_PROGRESS_EVERY", 0.0)
    monkeypatch.setattr(upkeep, "STEP_TARGET", 1000.0)  # every step quick: each twice the last
    from datetime import UTC, datetime

    with caplog.at_level(logging.INFO, logger="smtpeter.store.upkeep"):
        done = upkeep.run(store, retention_days=2, batch=100, now=datetime(2026, 11, 7, tzinfo=UTC))
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == f"store {path}: counting the rows stored before the upgrade"
    assert "backfill: 100 rows so far" in lines and "backfill: 300 rows so far" in lines
    assert f"store {path}: backfill done: {done.backfilled} rows" in lines
    assert done.pruned > 0
    assert lines[-1] == (
        f"store {path}: pruned {done.pruned} rows older than 2026-11-05T00:00:00.000000Z"
        " (2 days); stats keep their counts"
    )
    assert all(m.created_at >= "2026-11-05" for m in store.messages(limit=10**6))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="smtpeter.store.upkeep"):
        again = upkeep.run(store, retention_days=0)
    assert (again.backfilled, again.pruned, caplog.records) == (0, 0, [])


def test_the_writers_keep_the_unindexed_tail_short(tmp_path: Path) -> None:
    """Each writer whose batch leaves index_lag events or more above the watermark
    indexes them, so the tail readers read by id stays under index_lag plus one batch,
    and a message's events read the same from the tail and from the index."""
    store = SQLiteStore(str(tmp_path / "s.db"), index_lag=250)
    rng = random.Random(9)
    messages = [_message(i, rng, f"u{i}") for i in range(40)]
    store.record_messages(messages)
    lags = []
    for _ in range(31):
        store.record_events([Event("click", f"u{rng.randrange(40)}", _time(rng, DAYS[2]))
                             for _ in range(100)])  # fmt: skip
        lags.append(int(str(store.upkeep_status()["events_not_indexed"])))
    assert max(lags) < 250 and min(lags) < 100 and lags[-1] > 0, lags
    before = {m.uid: [e.id for e in store.events(message=m.queue_id)] for m in messages}
    assert store.index_step() == lags[-1] and store.index_step() == 0
    assert {m.uid: [e.id for e in store.events(message=m.queue_id)] for m in messages} == before
    assert sum(map(len, before.values())) == 3100


@pytest.mark.parametrize(
    ("seconds", "target", "expected"),
    [
        # Quick steps grow to four times the batch, no further.
        (0.0, 1.0, [100, 200, 400, 400, 400, 400]),
        # Steps over the target halve, down to a sixteenth of the batch.
        (0.05, 0.01, [100, 50, 25, 12, 6, 6]),
    ],
    ids=["quick", "slow"],
)
def test_upkeep_sizes_its_steps_by_how_long_they_hold_the_lock(
    monkeypatch: pytest.MonkeyPatch, seconds: float, target: float, expected: list[int]
) -> None:
    """A step that held the write lock too long makes the next one smaller, a quick one
    the next one bigger, within bounds; every row is still done."""
    monkeypatch.setattr(upkeep, "STEP_TARGET", target)
    sizes: list[int] = []

    def step(size: int) -> int:
        sizes.append(size)
        time.sleep(seconds)
        return size if len(sizes) < 6 else 0

    done = upkeep.Done()
    rows = upkeep._loop("test", step, 100, done, 0)
    assert sizes == expected
    assert rows == sum(expected[:5])
    assert done.longest_step >= seconds


def _schema7_with_events(path: str) -> None:
    """A store of schema 7 (before message_events): 20 messages, 60 events."""
    old = sqlite3.connect(path)
    for script in MIGRATIONS[:7]:
        old.executescript(script)
    old.execute("PRAGMA user_version = 7")
    old.executemany(
        "INSERT INTO messages (uid, queue_id, message_id, login, envelope_sender, recipients,"
        " features, size_before, size_after, created_at)"
        " VALUES (?, ?, ?, 'l', 's@example.com', '[]', '[]', 1, 1, '2026-11-01T10:00:00Z')",
        [(f"u{i}", f"Q{i}", f"<{i}@test>") for i in range(20)],
    )
    old.executemany(
        "INSERT INTO events (type, occurred_at, message_uid) VALUES ('open', ?, ?)",
        [(f"2026-11-01T12:00:{i:02d}Z", f"u{i % 20}") for i in range(60)],
    )
    old.commit()
    old.close()


@pytest.mark.parametrize("written", [3, 2001])
def test_the_switch_takes_in_what_writers_write_while_it_reads_the_old_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: int
) -> None:
    """Clicks keep coming while the switch reads the old index without the lock: a few
    are indexed under its lock and it switches; more than it takes there make it give
    way, and upkeep indexes them and switches on its next try. Either way every event
    of every message is read back, and the old index is gone."""
    from smtpeter.store import maintenance

    path = str(tmp_path / "old.db")
    _schema7_with_events(path)
    store = SQLiteStore(path)
    writer = SQLiteStore(path)  # a daemon started before the store was indexed
    while store.index_step(25):
        pass
    read = maintenance.read_old_index
    writes: list[int] = []

    def read_while_writing(conn: sqlite3.Connection) -> int:
        entries = read(conn)
        if not writes:  # the first read only
            writes.append(written)
            writer.record_events(
                [Event("click", "u3", "2026-11-01T13:00:00Z") for _ in range(written)]
            )
        return entries

    monkeypatch.setattr(maintenance, "read_old_index", read_while_writing)
    held = store.switch_index()
    if written <= 2000:
        assert held is not None
    else:
        assert held is None and store.upkeep_status()["message_events_read"] is False
        done = upkeep.run(store, retention_days=0, pause=0)
        assert done.indexed == written
    status = store.upkeep_status()
    assert (status["message_events_read"], status["events_not_indexed"]) == (True, 0)
    with store._use("check") as conn:
        assert not conn.execute(
            "SELECT 1 FROM sqlite_master WHERE name = 'events_message_type'"
        ).fetchone()
    assert len(store.events(message="u3", limit=10**6)) == 3 + written
    assert sum(len(store.events(message=f"u{i}", limit=10**6)) for i in range(20)) == 60 + written


def test_a_large_indexed_store_is_switched_by_upkeep_not_by_a_daemon_s_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening a large store whose events are all indexed (a daemon starting after an
    upkeep run was cut short before the switch) leaves the old index to upkeep, which
    reads it without the lock first; a small one switches at once."""
    from smtpeter.store import sqlite as sqlitemod

    path = str(tmp_path / "old.db")
    _schema7_with_events(path)
    store = SQLiteStore(path)
    while store.index_step(25):
        pass
    monkeypatch.setattr(sqlitemod, "SWITCH_AT_OPEN", 59)
    assert SQLiteStore(path).upkeep_status()["message_events_read"] is False
    upkeep.run(store, retention_days=0, pause=0)
    assert store.upkeep_status()["message_events_read"] is True
    small = str(tmp_path / "small.db")
    _schema7_with_events(small)
    first = SQLiteStore(small)
    while first.index_step(25):
        pass
    monkeypatch.setattr(sqlitemod, "SWITCH_AT_OPEN", 60)
    assert SQLiteStore(small).upkeep_status()["message_events_read"] is True
