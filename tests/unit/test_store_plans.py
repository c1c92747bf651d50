"""The store's hot queries are served by indexes: EXPLAIN QUERY PLAN of the statements
the store really runs (captured with a trace callback) shows no full scan of messages
or events."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from smtpeter.events import Event
from smtpeter.store import MessageRecord, Store
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


def test_events_of_a_message_are_read_by_its_uid(store: Store) -> None:
    (plan,) = plans(store, lambda: store.events(message="<7@test>", type="bounce"))
    assert "SEARCH messages USING INDEX messages_message_id (message_id=?)" in plan, plan
    assert "SEARCH messages USING INDEX messages_queue_id (queue_id=?)" in plan, plan
    assert "USING COVERING INDEX events_message_type" in plan or (
        "USING INDEX events_message_type (message_uid=? AND type=?)" in plan
    ), plan


def test_a_store_of_the_previous_version_gets_the_indexes(tmp_path: Path) -> None:
    path = str(tmp_path / "old.db")
    old = sqlite3.connect(path)
    for script in MIGRATIONS[:3]:
        old.executescript(script)
    old.execute("PRAGMA user_version = 3")
    old.close()
    store = SQLiteStore(path)
    assert store.schema_version() == len(MIGRATIONS)
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
    (plan,) = plans(store, lambda: store.events(message="<1@test>"))
    assert "messages_message_id" in plan and "events_message_type" in plan, plan


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
