"""The store (sqlite.py, maintenance.py, upkeep.py): what mutation testing found
unchecked, asserted through the store's API as the CLI and the daemons read it back:
every login flag, messages without a login, a message's events for one login, an
upgraded store's first and last rows (ids 1), the backfill's and retention's batches
and the counts they return, the day a window starts on, the defaults an operator
relies on, and upkeep's cutoff in UTC."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from smtpeter.events import Event
from smtpeter.store import StoreError, upkeep
from smtpeter.store.sqlite import SQLiteStore
from tests.unit.test_store_api import _login, _record
from tests.unit.test_store_api import store as store
from tests.unit.test_store_busy import seconds_to_give_up
from tests.unit.test_store_upkeep import old_store

CUT = "2026-11-05T00:00:00.000000Z"


def _day(day: str, login: str | None, messages: int, opens: int = 0, clicks: int = 0,
         bounces: int = 0, delivered: int = 0, deferred: int = 0) -> dict[str, object]:  # fmt: skip
    """One row of stats() as the CLI prints it."""
    return {"login": login or "-", "day": day, "messages": messages, "unique_opens": opens,
            "unique_clicks": clicks, "bounces": bounces, "delivered": delivered,
            "deferred": deferred}  # fmt: skip


def _schema4(
    path: Path,
    messages: list[tuple[str, str | None, str]],
    events: list[tuple[str, str, str, dict[str, str]]],
) -> None:
    """A store of schema 4 (before the counters) holding exactly these messages (uid,
    login, created_at) and events (type, uid, occurred_at, detail), ids from 1."""
    old_store(path, 0, 1)
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM events")
    conn.executemany(
        "INSERT INTO messages (uid, queue_id, login, envelope_sender, recipients, features,"
        " size_before, size_after, created_at) VALUES (?, ?, ?, 's@example.com',"
        " '[\"r@example.org\"]', '[]', 1, 1, ?)",
        [(uid, f"Q{uid}", login, at) for uid, login, at in messages],
    )
    conn.executemany(
        "INSERT INTO events (type, message_uid, occurred_at, detail) VALUES (?, ?, ?, ?)",
        [(t, uid, at, json.dumps(detail)) for t, uid, at, detail in events],
    )
    conn.commit()
    conn.close()


def _backfill_status(store: SQLiteStore) -> dict[str, object]:
    """upkeep_status() but for the index of a message's events (tested on its own)."""
    status = store.upkeep_status()
    return {k: status[k] for k in ("backfill_messages_through_id", "backfill_events_through_id",
                                   "pruned_before")}  # fmt: skip


def _status(messages: str | None, events: str | None, pruned: str | None) -> dict[str, object]:
    return {
        "backfill_messages_through_id": messages,
        "backfill_events_through_id": events,
        "pruned_before": pruned,
    }


# -- logins and messages read back ---------------------------------------------


@pytest.mark.parametrize("feature", ["inlinecss", "trackclicks", "trackopens", "trackbounces"])
def test_each_feature_flag_reads_back_on_its_own(store: SQLiteStore, feature: str) -> None:
    """A login with one feature switched on reads back with that one on and the others off."""
    store.create_login(_login("shop", **{feature: True}))
    for got in (store.get_login("shop"), store.list_logins()[0]):
        assert got is not None
        assert got.features.enabled() == [feature]
    updated = store.update_login("shop", features={feature: False})
    assert updated.features.enabled() == []
    assert store.update_login("shop", features={feature: True}).features.enabled() == [feature]


def test_a_message_without_a_login_after_its_events_is_recorded(store: SQLiteStore) -> None:
    """A message sent without a login whose click another node stored first is still
    recorded and counted under "-", with the click."""
    store.record_events([Event("click", "u1", "2026-11-02T08:00:00Z")])
    store.record_message(_record(1, login=None, created_at="2026-11-02T07:00:00.000000Z"))
    assert [m.uid for m in store.messages()] == ["u1"]
    assert store.stats() == [_day("2026-11-02", None, 1, clicks=1)]
    (click,) = store.events(message="u1")
    assert (click.type, click.login) == ("click", None)


def test_a_message_s_events_are_filtered_by_login(store: SQLiteStore) -> None:
    """events --message with --login gives the message's events only for its own login."""
    store.record_messages([_record(1), _record(2, login="news")])
    store.record_events([Event("open", "u1", "2026-11-02T08:00:00Z"),
                         Event("open", "u2", "2026-11-02T08:00:01Z")])  # fmt: skip
    assert [e.message_uid for e in store.events(message="u1", login="shop")] == ["u1"]
    assert store.events(message="u1", login="news") == []
    assert [e.login for e in store.events(message="<2@t>", login="news")] == ["news"]
    assert [e.message_uid for e in store.events(message="Q1")] == ["u1"]


# -- an upgraded store: its backfill and the readers meanwhile ------------------


def test_an_upgraded_store_with_one_message_and_one_event(tmp_path: Path) -> None:
    """The smallest upgraded store (one message, one bounce, ids 1): it is counted,
    found by login and its bounce known before, during and after the backfill, and
    upkeep status shows what is left at each step."""
    path = tmp_path / "old.db"
    _schema4(
        path,
        [("u1", "shop", "2026-11-02T10:00:00.000000Z")],
        [("bounce", "u1", "2026-11-02T11:00:00.000000Z", {"bounce_id": "QOLD"})],
    )
    store = SQLiteStore(str(path))
    counted = [_day("2026-11-02", "shop", 1, bounces=1)]
    bounce = [Event("bounce", "u1", "2026-11-03T00:00:00Z", detail={"bounce_id": "QOLD"})]
    steps = [_status("1", "1", None), _status(None, "1", None), _status(None, None, None)]
    for n, status in enumerate(steps):
        assert _backfill_status(store) == status, n
        assert store.backfill_pending() is (n < 2), n
        assert store.stats() == counted, n
        assert store.stats(login="shop", since="2026-11-02T09:00:00Z") == counted, n
        assert [e.type for e in store.events(login="shop")] == ["bounce"], n
        assert not store.record_bounce("u1", "QOLD", bounce), n
        assert store.backfill_step(batch=10) == (1 if n < 2 else 0), n
    assert len(store.events(message="u1")) == 1


def test_an_upgraded_store_with_one_message_and_no_events(tmp_path: Path) -> None:
    """An upgraded store whose only row is message 1 has a backfill pending until
    that message is counted, and stats count it all along."""
    path = tmp_path / "old.db"
    _schema4(path, [("u1", None, "2026-11-02T10:00:00.000000Z")], [])
    store = SQLiteStore(str(path))
    assert _backfill_status(store) == _status("1", None, None)
    assert store.backfill_pending()
    assert store.stats() == [_day("2026-11-02", None, 1)]
    assert store.backfill_step() == 1
    assert not store.backfill_pending()
    assert store.stats() == [_day("2026-11-02", None, 1)]


def test_the_backfill_goes_down_to_id_1_in_its_batches(tmp_path: Path) -> None:
    """The backfill counts messages a batch at a time and events five batches at a
    time, each step returning the rows it covered, down to the row with id 1; then
    nothing is left and every row is counted and found by login."""
    path = tmp_path / "old.db"
    days = ["2026-11-01", "2026-11-02", "2026-11-03"]
    _schema4(
        path,
        [(f"u{i}", "shop", f"{d}T10:00:00.000000Z") for i, d in enumerate(days, start=1)],
        [("open", f"u{1 + i % 3}", f"2026-11-04T00:00:0{i}.000000Z", {}) for i in range(6)],
    )
    store = SQLiteStore(str(path))
    assert _backfill_status(store) == _status("3", "6", None)
    assert store.backfill_step(batch=2) == 2
    assert _backfill_status(store) == _status("1", "6", None)
    assert store.backfill_step(batch=2) == 1
    assert _backfill_status(store) == _status(None, "6", None)
    assert store.backfill_step(batch=1) == 5
    assert _backfill_status(store) == _status(None, "1", None)
    assert store.backfill_pending()
    assert store.backfill_step(batch=1) == 1
    assert _backfill_status(store) == _status(None, None, None)
    assert not store.backfill_pending()
    assert store.backfill_step(batch=1) == 0
    assert store.stats() == [_day(d, "shop", 1, opens=1) for d in days]
    assert len(store.events(login="shop")) == 6


def test_backfill_and_prune_steps_default_to_their_documented_batches(tmp_path: Path) -> None:
    """Called without a batch, a backfill step counts 2000 messages and a prune step
    deletes 1000 (the sizes the short write lock was measured with)."""
    path = tmp_path / "old.db"
    _schema4(path, [(f"u{i}", "shop", "2026-11-01T10:00:00.000000Z") for i in range(2001)], [])
    store = SQLiteStore(str(path))
    assert store.backfill_step() == 2000
    assert store.backfill_step() == 1
    assert [store.prune_step(CUT) for _ in range(4)] == [1000, 1000, 1, 0]
    assert store.stats() == [_day("2026-11-01", "shop", 2001)]


# -- retention ------------------------------------------------------------------


def test_prune_steps_return_the_rows_they_deleted(tmp_path: Path) -> None:
    """Each prune step says how many rows it deleted: old messages with their events,
    then old events of unknown messages ten batches at a time, and pruned_before
    never moves back."""
    store = SQLiteStore(str(tmp_path / "s.db"))
    old = [_record(i) for i in range(3)]  # 2026-11-01
    store.record_messages([*old, _record(9, created_at="2026-11-10T10:00:00.000000Z")])
    store.record_events([Event(t, f"u{i}", "2026-11-01T11:00:00Z")
                         for i in range(3) for t in ("open", "click")])  # fmt: skip
    store.record_events([Event("open", "gone", f"2026-11-01T12:00:{s:02d}Z") for s in range(25)])
    assert store.prune_step(CUT, batch=10) == 3 + 6
    assert store.prune_step(CUT, batch=2) == 20
    assert store.prune_step(CUT, batch=2) == 5
    assert store.prune_step(CUT, batch=2) == 0
    assert [m.uid for m in store.messages()] == ["u9"] and store.events() == []
    assert _backfill_status(store) == _status(None, None, CUT)
    assert store.prune_step("2026-11-03T00:00:00.000000Z") == 0
    assert store.upkeep_status()["pruned_before"] == CUT
    assert store.stats() == [_day("2026-11-01", "shop", 3, 3, 3), _day("2026-11-10", "shop", 1)]


def test_old_bounce_identities_are_pruned_in_batches(store: SQLiteStore) -> None:
    """With no old messages or events left, prune steps delete the bounce identities
    recorded before the cutoff, ten batches at a time; a pruned bounce may then be
    recorded again."""
    for k in range(25):
        assert store.record_bounce("x1", f"QB{k}", [])
    future = "2999-01-01T00:00:00.000000Z"
    assert [store.prune_step(future, batch=2) for _ in range(3)] == [20, 5, 0]
    assert store.record_bounce("x1", "QB0", [])


def test_a_window_starting_where_retention_pruned_counts_only_what_is_kept(
    store: SQLiteStore,
) -> None:
    """stats --since the very time retention pruned to counts that day's kept messages
    only; a window starting earlier that day gives the day whole from the counters;
    a window inside a day is followed by every later day."""
    store.record_messages([
        _record(1, created_at="2026-11-05T06:00:00.000000Z"),
        _record(2, created_at="2026-11-05T18:00:00.000000Z"),
        _record(3, created_at="2026-11-06T09:00:00.000000Z"),
        _record(4, created_at="2026-11-07T09:00:00.000000Z"),
    ])  # fmt: skip
    noon = "2026-11-05T12:00:00.000000Z"
    later = [_day("2026-11-06", "shop", 1), _day("2026-11-07", "shop", 1)]
    assert store.stats(since="2026-11-05T19:00:00Z") == later
    assert store.stats(since="2026-11-06T08:00:00Z") == later
    while store.prune_step(noon):
        pass
    assert store.stats(since=noon) == [_day("2026-11-05", "shop", 1), *later]
    assert store.stats(since="2026-11-05T11:00:00.000000Z") == [
        _day("2026-11-05", "shop", 2),
        *later,
    ]
    assert store.stats(since="2026-11-05T19:00:00Z") == later


# -- what an operator relies on without configuring it --------------------------


def test_a_relative_store_path_creates_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bare file name makes the store in the working directory and no other file
    or directory there."""
    monkeypatch.chdir(tmp_path)
    SQLiteStore("smtpeter.db").close()
    assert set(os.listdir(tmp_path)) <= {"smtpeter.db", "smtpeter.db-wal", "smtpeter.db-shm"}


def _garbage(path: str) -> None:
    Path(path).write_bytes(b"this is not an SQLite database\n" * 200)
    for suffix in ("-wal", "-shm"):
        Path(path + suffix).unlink(missing_ok=True)


@pytest.mark.parametrize(
    ("operation", "call"),
    [
        ("open", lambda s: SQLiteStore(s.path)),
        ("read", lambda s: s.schema_version()),
        ("backfill check", lambda s: s.backfill_pending()),
        ("suppression add", lambda s: s.suppress("shop", "a@example.org", "user-unknown")),
        ("soft bounce count", lambda s: s.count_soft_bounce("shop", "a@example.org", "m1", "x")),
        ("suppression lookup", lambda s: s.suppression("shop", "a@example.org")),
        ("suppression list", lambda s: s.suppressions()),
        ("suppression remove", lambda s: s.unsuppress("shop", "a@example.org")),
        ("bounce lookup", lambda s: s.bounce_forwarded("m1", "a@example.org")),
        ("bounce forwarded", lambda s: s.mark_bounce_forwarded("m1", "a@example.org")),
    ],
    ids=[
        "open",
        "read",
        "backfill-check",
        "suppress",
        "soft-bounce",
        "lookup",
        "list",
        "unsuppress",
        "forwarded?",
        "forward",
    ],
)
def test_a_store_file_that_is_not_a_database_says_which_operation_failed(
    store: SQLiteStore, operation: str, call: Callable[[SQLiteStore], object]
) -> None:
    """A store file overwritten with something else: the error names the store, the
    operation and SQLite's reason."""
    store.close()
    _garbage(store.path)
    with pytest.raises(StoreError) as caught:
        call(store)
    assert str(caught.value).startswith(f"store {store.path}: {operation} failed: ")
    assert "not a database" in str(caught.value)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create files for another user")
def test_a_store_root_makes_for_uid_1_belongs_to_uid_1(tmp_path: Path) -> None:
    """Any service user but root gets the store root creates in its directory (uid 1,
    daemon, too)."""
    service = tmp_path / "svc"
    service.mkdir()
    os.chown(service, 1, 1)
    SQLiteStore(str(service / "smtpeter.db")).close()
    info = os.stat(service / "smtpeter.db")
    assert (info.st_uid, info.st_gid) == (1, 1)


@pytest.mark.parametrize(
    ("retry_seconds", "low", "high"),
    [(None, 4.8, 5.8), (0.0, 0.9, 1.6)],
    ids=["retry-default-5s", "busy-timeout-default-1s"],
)
def test_a_locked_store_waits_the_default_budget(
    tmp_path: Path, retry_seconds: float | None, low: float, high: float
) -> None:
    """Opened without settings, a store gives up on a lock after 5 s of retries; with
    retries off, each statement waits the default busy timeout of 1 s."""
    path = str(tmp_path / "smtpeter.db")
    store = SQLiteStore(path) if retry_seconds is None else SQLiteStore(path, retry_seconds=0)
    took = seconds_to_give_up(store, 10.0)
    assert low < took < high, took


# -- upkeep ---------------------------------------------------------------------


def test_upkeep_defaults_batch_500_pause_short_and_progress_every_10_s(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With its defaults upkeep backfills 500 messages a step with a short pause, and
    a job of a few seconds prints no progress lines (they come every 10 s)."""
    path = tmp_path / "old.db"
    _schema4(path, [(f"u{i}", "shop", "2026-11-01T10:00:00.000000Z") for i in range(1200)], [])
    store = SQLiteStore(str(path))
    with caplog.at_level(logging.INFO, logger="smtpeter.store.upkeep"):
        started = time.monotonic()
        assert upkeep.run(store, retention_days=0).backfilled == 1200
        took = time.monotonic() - started
    assert took < 2.5, took
    assert not [r for r in caplog.records if "so far" in r.getMessage()]
    _schema4(tmp_path / "again.db", [(f"u{i}", None, "2026-11-01") for i in range(1200)], [])
    monkeypatch.setattr(upkeep, "_PROGRESS_EVERY", 0.0)
    monkeypatch.setattr(upkeep, "STEP_TARGET", 1000.0)  # every step quick: each twice the last
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="smtpeter.store.upkeep"):
        upkeep.run(SQLiteStore(str(tmp_path / "again.db")), retention_days=0)
    progress = [r.getMessage() for r in caplog.records if "so far" in r.getMessage()]
    assert progress == ["backfill: 500 rows so far", "backfill: 1200 rows so far"]


def test_upkeep_prunes_a_day_of_retention_in_its_batches(
    store: SQLiteStore, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """retention_days 1 prunes what is older than a day, a batch per step, and says
    how far it got."""
    old = [_record(i, created_at="2026-11-05T10:00:00.000000Z") for i in range(30)]
    store.record_messages([*old, _record(99, created_at="2026-11-05T23:00:00.000000Z")])
    monkeypatch.setattr(upkeep, "_PROGRESS_EVERY", 0.0)
    monkeypatch.setattr(upkeep, "STEP_TARGET", 0.0)  # every step slow: each half the last
    with caplog.at_level(logging.INFO, logger="smtpeter.store.upkeep"):
        done = upkeep.run(
            store, retention_days=1, batch=10, now=datetime(2026, 11, 6, 12, tzinfo=UTC)
        )
    assert done.pruned == 30
    assert [m.uid for m in store.messages()] == ["u99"]
    lines = [r.getMessage() for r in caplog.records]
    # Steps of 10, 5, 2, then 1 (a sixteenth of 10, rounded up to one row) each.
    steps = [10, 5, 2, *[1] * 13]
    assert lines[:16] == [f"prune: {sum(steps[: n + 1])} rows so far" for n in range(16)]
    assert lines[16] == (
        f"store {store.path}: pruned 30 rows older than 2026-11-05T12:00:00.000000Z"
        " (1 days); stats keep their counts"
    )


def test_upkeep_cuts_off_in_utc_whatever_the_local_zone(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a given time, retention counts back from the current UTC time: on a
    host 5:30 ahead of UTC a message 23 hours old is kept, one 25 hours old goes."""
    now = datetime.now(UTC)
    stamp = "%Y-%m-%dT%H:%M:%S.%fZ"
    store.record_messages([
        _record(1, created_at=(now - timedelta(hours=23)).strftime(stamp)),
        _record(2, created_at=(now - timedelta(hours=25)).strftime(stamp)),
    ])  # fmt: skip
    monkeypatch.setenv("TZ", "XST-5:30")
    time.tzset()
    try:
        done = upkeep.run(store, retention_days=1)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert done.pruned == 1
    assert [m.uid for m in store.messages()] == ["u1"]
