"""Migration 8's index of a message's events, filled behind the writers and switched
to once it has caught up: an upgraded store never loses or doubles a message's
events, its stats or a login's events on the way, whatever is left of the upgrade's
backfill."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from smtpeter.events import Event
from smtpeter.store import MessageRecord, upkeep
from smtpeter.store.maintenance import statements
from smtpeter.store.sqlite import SQLiteStore
from tests.unit.test_store_plans import _indexes, _old_schema

DAY = "2026-11-01"


def _old_store(path: str, version: int, messages: int, events: list[tuple[str, str]]) -> None:
    """A store of schema ``version`` with ``messages`` messages u0.. (login l0/l1) and
    the (type, uid) events given, written as that version wrote them."""
    old = _old_schema(path, version)
    old.executemany(
        "INSERT INTO messages (uid, queue_id, message_id, login, envelope_sender, recipients,"
        " features, size_before, size_after, created_at)"
        f" VALUES (?, ?, ?, ?, 's@example.com', '[]', '[]', 1, 1, '{DAY}T10:00:00Z')",
        [(f"u{i}", f"Q{i}", f"<{i}@test>", f"l{i % 2}") for i in range(messages)],
    )
    old.executemany(
        f"INSERT INTO events (type, occurred_at, message_uid) VALUES (?, '{DAY}T12:00:00Z', ?)",
        events,
    )
    old.commit()
    old.close()


def _each_message(store: SQLiteStore, uids: list[str]) -> dict[str, list[tuple[int | None, str]]]:
    return {u: [(e.id, e.type) for e in store.events(message=u)] for u in uids}


def _totals(store: SQLiteStore) -> tuple[int, int, int, int]:
    rows = store.stats()
    return (
        sum(int(str(r["messages"])) for r in rows),
        sum(int(str(r["unique_opens"])) for r in rows),
        sum(int(str(r["unique_clicks"])) for r in rows),
        sum(int(str(r["bounces"])) for r in rows),
    )


def _index_all(store: SQLiteStore, batch: int) -> list[int]:
    done = []
    while n := store.index_step(batch):
        done.append(n)
    return done


EVENTS = [(("open", "click", "bounce", "open")[i % 4], f"u{i % 7}") for i in range(40)]


@pytest.mark.parametrize("left", ["messages", "events"])
def test_the_switch_waits_for_the_upgrade_s_backfill(tmp_path: Path, left: str) -> None:
    """A store upgraded from before the backfill keeps reading the old index while its
    backfill (messages, then events) is not done, even with every event indexed: stats,
    a login's events and a message's events stay right, before and after the switch."""
    path = str(tmp_path / "old.db")
    _old_store(path, 4, 6, EVENTS)
    store = SQLiteStore(path)
    status = store.upkeep_status()
    assert status["backfill_messages_through_id"] is not None
    assert status["message_events_read"] is False
    uids = [f"u{i}" for i in range(7)]
    before = _each_message(store, uids)
    totals = _totals(store)
    logins = {x: [e.id for e in store.events(login=x, limit=1000)] for x in ("l0", "l1")}
    if left == "events":
        while store.upkeep_status()["backfill_messages_through_id"] is not None:
            store.backfill_step(2)
        assert store.upkeep_status()["backfill_events_through_id"] is not None
    assert sum(_index_all(store, 15)) == 40
    status = store.upkeep_status()
    assert (status["events_not_indexed"], status["message_events_read"]) == (0, False)
    assert "events_message_type" in _indexes(path)
    assert _each_message(store, uids) == before and _totals(store) == totals
    upkeep.run(store, retention_days=0, batch=3, pause=0)
    assert store.upkeep_status()["message_events_read"] is True
    assert "events_message_type" not in _indexes(path)
    assert _each_message(store, uids) == before and _totals(store) == totals
    assert {x: [e.id for e in store.events(login=x, limit=1000)] for x in ("l0", "l1")} == logins
    assert sum(map(len, before.values())) == 40 and before["u6"]


@pytest.mark.parametrize("orphan", [True, False], ids=["orphan", "of-a-message"])
def test_a_single_unindexed_event_keeps_its_message(tmp_path: Path, orphan: bool) -> None:
    """An upgraded store whose only event is not indexed yet (its message here or
    not) does not switch before it is, and the event stays its message's after
    upkeep and after more events come."""
    path = str(tmp_path / "old.db")
    _old_store(path, 7, 0 if orphan else 1, [("open", "u0")])
    store = SQLiteStore(path)
    status = store.upkeep_status()
    assert (status["events_not_indexed"], status["message_events_read"]) == (1, False)
    assert [e.type for e in store.events(message="u0")] == ["open"]
    assert upkeep.run(store, retention_days=0, pause=0).indexed == 1
    assert store.upkeep_status()["message_events_read"] is True
    store.record_events([Event("click", "u0", f"{DAY}T13:00:00Z")])
    assert store.index_step() == 1
    assert [e.type for e in store.events(message="u0")] == ["click", "open"]


def test_a_new_store_reads_by_message_events_from_its_first_event(tmp_path: Path) -> None:
    """A new store switches at once; its writers index behind themselves from the
    first event on, so every event of every message is read, before and after it is
    indexed (also after an upkeep run before the first), and the backlog count is
    exact."""
    store = SQLiteStore(str(tmp_path / "s.db"), index_lag=5)
    status = store.upkeep_status()
    assert (status["events_not_indexed"], status["message_events_read"]) == (0, True)
    # `store upkeep` run before the first event covers none.
    assert store.index_step() == 0
    assert upkeep.run(store, retention_days=0, pause=0).indexed == 0
    for i in range(3):
        store.record_message(
            MessageRecord(
                queue_id=f"Q{i}", message_id=f"<{i}@test>", login="l", envelope_sender="s@x.test",
                recipients=("r@example.org",), features=(), size_before=1, size_after=1,
                created_at=f"{DAY}T10:00:00Z", uid=f"u{i}",
            )
        )  # fmt: skip
    lags = []
    ids: dict[str, list[int]] = {"u0": [], "u1": [], "u2": [], "gone": []}
    for n in range(12):
        uid = ("u0", "u1", "u2", "gone")[n % 4]
        store.record_events([Event("open", uid, f"{DAY}T12:00:{n:02d}Z")])
        ids[uid].insert(0, n + 1)
        lags.append(store.upkeep_status()["events_not_indexed"])
        assert {u: [e.id for e in store.events(message=u)] for u in ids} == ids
    # Indexed in a batch of its own each time the backlog reaches 5.
    assert lags == [1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1, 2]
    assert _index_all(store, 1) == [1, 1] and store.upkeep_status()["events_not_indexed"] == 0
    assert {u: [e.id for e in store.events(message=u)] for u in ids} == ids


def test_index_steps_cover_each_event_once_in_batches(tmp_path: Path) -> None:
    """Indexing an upgraded store goes a batch at a time, each step saying how many
    events it covered, and the backlog shrinks by as much."""
    path = str(tmp_path / "old.db")
    _old_store(path, 7, 7, EVENTS)
    store = SQLiteStore(path)
    lags = [store.upkeep_status()["events_not_indexed"]]
    steps = []
    while n := store.index_step(12):
        steps.append(n)
        lags.append(store.upkeep_status()["events_not_indexed"])
    assert (steps, lags) == ([12, 12, 12, 4], [40, 28, 16, 4, 0])
    # The switch is a step of its own, once everything is indexed.
    assert store.upkeep_status()["message_events_read"] is False
    held = store.switch_index()
    assert held is not None and held >= 0
    assert store.upkeep_status()["message_events_read"] is True
    assert store.switch_index() is None


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (
            "CREATE TABLE a (x);\nCREATE TABLE b (y)",
            ["CREATE TABLE a (x);", "\nCREATE TABLE b (y);"],
        ),
        ("CREATE TABLE a (x);;\n ;\n", ["CREATE TABLE a (x);"]),
        ("  \n", []),
        ("INSERT INTO a VALUES (';');", ["INSERT INTO a VALUES (';');"]),
    ],
    ids=["last-without-semicolon", "empty-statements", "blank", "quoted-semicolon"],
)
def test_a_migration_script_splits_into_its_statements(script: str, expected: list[str]) -> None:
    """A migration script runs as exactly its statements, the last one too when it
    has no closing semicolon; empty ones and blank text are not run."""
    got = list(statements(script))
    assert got == expected
    conn = sqlite3.connect(":memory:")
    for statement in got:
        assert sqlite3.complete_statement(statement)
    conn.close()


def test_an_upgrade_with_messages_and_no_events_waits_for_their_count(tmp_path: Path) -> None:
    """A store upgraded from before the backfill with messages but no events yet does
    not switch before those messages are counted: its stats stay right meanwhile."""
    path = str(tmp_path / "old.db")
    _old_store(path, 4, 3, [])
    store = SQLiteStore(path)
    status = store.upkeep_status()
    assert status["backfill_messages_through_id"] is not None
    assert status["backfill_events_through_id"] is None
    assert status["message_events_read"] is False
    store.record_events([Event("open", "u0", f"{DAY}T12:00:00Z")])
    assert _totals(store) == (3, 1, 0, 0)
    assert _index_all(store, 10) == [1]
    assert store.upkeep_status()["message_events_read"] is False
    assert _totals(store) == (3, 1, 0, 0)
    upkeep.run(store, retention_days=0, pause=0)
    assert store.upkeep_status()["message_events_read"] is True
    assert _totals(store) == (3, 1, 0, 0)
    assert [e.type for e in store.events(message="u0")] == ["open"]
