"""The store's hot queries are served by indexes: EXPLAIN QUERY PLAN of the statements
the store really runs (captured with a trace callback) shows no full scan of messages
or events."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from smtpeter.events import Event
from smtpeter.store import MessageRecord, Store, upkeep
from smtpeter.store.migrations import MIGRATIONS
from smtpeter.store.sqlite import SQLiteStore


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = SQLiteStore(str(tmp_path / "smtpeter.db"))
    for i in range(50):
        store.record_message(
            MessageRecord(
                queue_id=f"Q{i}", message_id=f"<{i}@test>", login=f"l{i % 3}",
                envelope_sender="s@example.com", recipients=("r@example.org",), features=(),
                size_before=1, size_after=1, created_at=f"2026-11-{1 + i % 9:02d}T10:00:00Z",
                uid=f"u{i}",
            )
        )  # fmt: skip
        store.record_events(
            [Event(t, f"u{i}", f"2026-11-{1 + i % 9:02d}T12:00:00Z") for t in ("open", "bounce")]
        )
    return store


def plans(store: Store, call: Callable[[], object]) -> list[str]:
    """The query plan of each SELECT that ``call`` makes the store run."""
    statements: list[str] = []
    with store._use("plan") as conn:
        conn.set_trace_callback(statements.append)
    try:
        call()
    finally:
        with store._use("plan") as conn:
            conn.set_trace_callback(None)
    reader = sqlite3.connect(store.path)
    found = []
    for sql in statements:
        if sql.lstrip().upper().startswith(("SELECT", "WITH")):
            rows = reader.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall()
            found.append("\n".join(r[3] for r in rows))
    reader.close()
    assert found, statements
    return found


def full_scans(plan: str) -> list[str]:
    """Lines reading a whole table of messages or events (as itself or an alias)."""
    tables = {"messages", "events", "m", "e", "m2"}
    return [
        line for line in plan.splitlines() if line.startswith("SCAN ") and line.split()[1] in tables
    ]


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.stats(since="2026-11-05T00:00:00Z"),
        lambda s: s.stats(login="l1", since="2026-11-05T00:00:00Z"),
        lambda s: s.events(message="<7@test>"),
        lambda s: s.events(message="Q7"),
        lambda s: s.events(message="u7"),
        lambda s: s.events(message="u7", type="bounce"),
        lambda s: s.events(type="bounce", since="2026-11-05T00:00:00Z"),
    ],
    ids=["stats-since", "stats-login-since", "events-message-id", "events-queue-id",
         "events-uid", "events-uid-type", "events-type-since"],
)  # fmt: skip
def test_served_by_indexes(store: Store, call: Callable[[Store], object]) -> None:
    for plan in plans(store, lambda: call(store)):
        assert not full_scans(plan), plan
        assert "INDEX" in plan or "PRIMARY KEY" in plan, plan


def test_events_of_a_message_are_read_by_message_events(store: Store) -> None:
    """events --message resolves the message by each of its names through its own index,
    then reads its events' ids by message_events, orphan_events and the tail of events
    above the watermark (by id): no index keyed by the random uid."""
    (plan,) = [
        p for p in plans(store, lambda: store.events(message="<7@test>", type="bounce"))
        if "store_state" not in p
    ]  # fmt: skip
    assert "SEARCH messages USING INDEX messages_message_id (message_id=?)" in plan, plan
    assert "SEARCH messages USING INDEX messages_queue_id (queue_id=?)" in plan, plan
    assert "SEARCH me USING PRIMARY KEY (message_id=?)" in plan, plan
    assert "SEARCH orphan_events USING PRIMARY KEY (message_uid=?)" in plan, plan
    assert "SEARCH events USING INTEGER PRIMARY KEY (rowid>?)" in plan, plan
    assert "events_message_type" not in plan, plan


def _old_schema(path: str, version: int) -> sqlite3.Connection:
    old = sqlite3.connect(path)
    for script in MIGRATIONS[:version]:
        old.executescript(script)
    old.execute(f"PRAGMA user_version = {version}")
    return old


def _indexes(path: str) -> set[str]:
    conn = sqlite3.connect(path)
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    conn.close()
    return names


def test_a_store_of_the_previous_version_gets_the_indexes(tmp_path: Path) -> None:
    """An older store with no events yet is upgraded straight to the new reads."""
    path = str(tmp_path / "old.db")
    _old_schema(path, 3).close()
    store = SQLiteStore(path)
    assert store.schema_version() == len(MIGRATIONS)
    assert "events_message_type" not in _indexes(path)
    store.record_message(
        MessageRecord(
            queue_id="Q1", message_id="<1@test>", login="l", envelope_sender="s@example.com",
            recipients=("r@example.org",), features=(), size_before=1, size_after=1,
            created_at="2026-11-01T10:00:00Z", uid="u1",
        )
    )  # fmt: skip
    store.record_events([Event("bounce", "u1", "2026-11-01T11:00:00Z")])
    assert [e.type for e in store.events(message="Q1")] == ["bounce"]
    assert store.stats()[0]["bounces"] == 1
    plan = "\n".join(plans(store, lambda: store.events(message="<1@test>")))
    assert "messages_message_id" in plan and "SEARCH me USING PRIMARY KEY" in plan, plan


def test_an_upgraded_store_reads_the_old_index_until_message_events_caught_up(
    tmp_path: Path,
) -> None:
    """A store of schema 7 with events keeps reading a message's events by the old
    index (message_events is empty); upkeep indexes them in batches, then drops the old
    index, and every message's events read the same before and after."""
    path = str(tmp_path / "old.db")
    old = _old_schema(path, 7)
    old.executemany(
        "INSERT INTO messages (uid, queue_id, message_id, login, envelope_sender, recipients,"
        " features, size_before, size_after, created_at)"
        " VALUES (?, ?, ?, 'l', 's@example.com', '[]', '[]', 1, 1, '2026-11-01T10:00:00Z')",
        [(f"u{i}", f"Q{i}", f"<{i}@test>") for i in range(30)],
    )
    # Events of 31 uids: the last one's message is not in the store.
    old.executemany(
        "INSERT INTO events (type, occurred_at, message_uid) VALUES (?, ?, ?)",
        [(("open", "click", "bounce")[i % 3], "2026-11-01T12:00:00Z", f"u{i % 31}")
         for i in range(200)],
    )  # fmt: skip
    old.commit()
    old.close()
    store = SQLiteStore(path)
    assert "events_message_type" in _indexes(path)
    before = {i: [e.id for e in store.events(message=f"u{i}")] for i in range(31)}
    assert sum(map(len, before.values())) == 200 and before[30]
    plan = "\n".join(plans(store, lambda: store.events(message="<3@test>")))
    assert "events_message_type" in plan and "SEARCH me " not in plan, plan
    assert store.index_step(batch=70) == 70
    assert store.upkeep_status()["events_not_indexed"] == 130
    assert [e.id for e in store.events(message="u3")] == before[3]
    done = upkeep.run(store, retention_days=0, batch=50, pause=0)
    assert done.indexed == 130
    assert "events_message_type" not in _indexes(path)
    assert store.upkeep_status()["message_events_read"] is True
    assert {i: [e.id for e in store.events(message=f"u{i}")] for i in range(31)} == before
    plan = "\n".join(plans(store, lambda: store.events(message="<3@test>")))
    assert "events_message_type" not in plan and "SEARCH me USING PRIMARY KEY" in plan, plan


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.events(),
        lambda s: s.events(before=30),
        lambda s: s.events(login="l1"),
        lambda s: s.events(login="l1", before=30, type="open"),
        lambda s: s.events(type="open"),
    ],
    ids=["newest", "page", "login", "login-page-type", "type"],
)  # fmt: skip
def test_a_page_of_events_is_read_in_order_not_sorted(
    store: Store, call: Callable[[Store], object]
) -> None:
    """A page of events is read newest first straight off an index (the table's own
    ids, or event_logins for a login): nothing gathered and sorted, however many."""
    (plan,) = [p for p in plans(store, lambda: call(store)) if "store_state" not in p]
    assert "TEMP B-TREE" not in plan, plan
    assert "events_type_time" not in plan, plan


def test_a_login_s_events_come_from_event_logins(store: Store) -> None:
    """events --login reads the login's entries of event_logins by primary key, then
    each event by its id."""
    (plan,) = [p for p in plans(store, lambda: store.events(login="l1")) if "store_state" not in p]
    assert "SEARCH l USING PRIMARY KEY (login=?)" in plan, plan
    assert "SEARCH e USING INTEGER PRIMARY KEY (rowid=?)" in plan, plan


def test_stats_read_the_daily_counters(store: Store) -> None:
    """stats over whole days read daily_stats alone, by its keys."""
    for call in (lambda: store.stats(), lambda: store.stats(login="l1", since="2026-11-03")):
        found = [p for p in plans(store, call) if "store_state" not in p]
        assert found and all("daily_stats" in p and "messages" not in p for p in found), found


def test_a_delivery_result_reads_only_its_own_message_s_results(store: Store) -> None:
    """Recording a deferral (which counts the message's earlier attempts) and an expiry
    (which reads each recipient's last result) reads that message's events by
    message_events and the tail, not every delivery result of the store by type."""
    from smtpeter.deliveries.logline import parse

    store.record_message(
        MessageRecord(
            queue_id="4F2A1B3C7D", message_id="<d@test>", login="l1",
            envelope_sender="s@example.com", recipients=("r@example.org",), features=(),
            size_before=1, size_after=1, created_at="2026-11-09T09:00:00Z", uid="ud",
        )
    )  # fmt: skip
    lines = [
        "2026-11-09T10:00:00.000000+00:00 mx postfix/smtp[1]: 4F2A1B3C7D: to=<r@example.org>,"
        " relay=mx.example.org[192.0.2.1]:25, delay=1, delays=0/0/1/0, dsn=4.2.0,"
        " status=deferred (host mx.example.org[192.0.2.1] said: 450 4.2.0 try later)",
        "2026-11-09T11:00:00.000000+00:00 mx postfix/qmgr[2]: 4F2A1B3C7D: from=<s@example.com>,"
        " status=expired, returned to sender",
    ]
    results = [r for r in map(parse, lines) if r is not None]
    assert len(results) == 2
    found = [
        p
        for p in plans(store, lambda: store.record_deliveries(results, "file:x", "c"))
        if "SEARCH me " in p
    ]
    assert len(found) == 2, found
    for plan in found:
        assert "SEARCH me USING PRIMARY KEY (message_id=?)" in plan, plan
        assert "SEARCH events USING INTEGER PRIMARY KEY (rowid>?)" in plan, plan
        assert "events_type_time" not in plan, plan
    assert [e.type for e in store.events(message="ud")] == ["failed", "deferred"]
