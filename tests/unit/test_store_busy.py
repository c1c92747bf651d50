"""The store rides out a locked database: a real second process holds the lock (no
mock of sqlite), the store's operations wait and retry, and succeed once the lock
is gone; a lock that outlives ``store.retry_seconds`` gives StoreError after about
that long, never much later."""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from smtpeter.events import Event
from smtpeter.features import FeatureSet
from smtpeter.logins import Login
from smtpeter.store import MessageRecord, Store, StoreError
from smtpeter.store.sqlite import SQLiteStore

# The holder: opens the database, takes the lock, says so, holds it for the given
# seconds or until a line arrives on its stdin, lets go.
# "write" is BEGIN IMMEDIATE (writers wait, readers go on: WAL); "exclusive" is
# BEGIN EXCLUSIVE in exclusive locking mode, which shuts out readers too.
HOLDER = """
import select, sqlite3, sys
path, mode, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
db = sqlite3.connect(path, isolation_level=None, timeout=2)
if mode == "exclusive":
    db.execute("PRAGMA locking_mode=EXCLUSIVE")
    db.execute("BEGIN EXCLUSIVE")
    db.execute("SELECT count(*) FROM logins").fetchone()
    db.execute("UPDATE logins SET updated_at = updated_at")
else:
    db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
select.select([sys.stdin], [], [], seconds)
db.execute("COMMIT")
db.close()
print("released", flush=True)
"""

HOLD = 1.0


@contextmanager
def locked(store: Store, seconds: float, mode: str = "write") -> Iterator[float]:
    """A separate process holds the lock for ``seconds`` (at most: it lets go when the
    block ends); yields when it was taken."""
    if mode == "exclusive":
        # Exclusive locking mode in WAL needs the database to itself: the store's
        # pooled connections go (the operation under test opens a new one).
        store.close()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, store.path, mode, str(seconds)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdin is not None and holder.stdout is not None
        assert holder.stdout.readline() == "locked\n"
        yield time.monotonic()
        with contextlib.suppress(BrokenPipeError):  # it may have let go already
            holder.stdin.write("go\n")
            holder.stdin.close()
        assert holder.wait(seconds + 20) == 0
        assert holder.stdout.read() == "released\n"
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def _store(tmp_path: Path, *, busy_timeout: float, retry_seconds: float) -> Store:
    store = SQLiteStore(
        str(tmp_path / "smtpeter.db"), busy_timeout=busy_timeout, retry_seconds=retry_seconds
    )
    store.create_login(Login(name="alice", password_hash="x", features=FeatureSet()))
    return store


def _message(n: int) -> MessageRecord:
    return MessageRecord(
        queue_id=f"Q{n}",
        message_id=f"<m{n}@example.com>",
        login="alice",
        envelope_sender="alice@example.com",
        recipients=("bob@example.net",),
        features=(),
        size_before=100,
        size_after=100,
        uid=f"uid-{n}",
    )


def _event(n: int) -> Event:
    return Event(
        type="open",
        occurred_at=f"2026-01-01T00:00:{n:02d}.000000Z",
        message_uid=f"uid-{n}",
        user_agent="test",
        client_ip="192.0.2.1",
    )


# (operation, lock mode that blocks it, run it, it took effect)
OPERATIONS: dict[str, tuple[str, Callable[[Store], object], Callable[[Store], bool]]] = {
    "record_message": (
        "write",
        lambda s: s.record_message(_message(1)),
        lambda s: [m.queue_id for m in s.messages()] == ["Q1"],
    ),
    "record_events": (
        "write",
        lambda s: s.record_events([_event(1), _event(2)]),
        lambda s: len(s.events()) == 2,
    ),
    "get_login": (
        "exclusive",
        lambda s: s.get_login("alice"),
        lambda s: True,
    ),
}


@pytest.mark.parametrize("busy_timeout", [0.05, 0.4], ids=["busy-0.05s", "busy-0.4s"])
@pytest.mark.parametrize("op", OPERATIONS)
def test_operation_waits_out_a_lock_and_succeeds(
    tmp_path: Path, op: str, busy_timeout: float, caplog: pytest.LogCaptureFixture
) -> None:
    """The lock lasts longer than one busy wait, so the store has to retry."""
    mode, run, took_effect = OPERATIONS[op]
    store = _store(tmp_path, busy_timeout=busy_timeout, retry_seconds=5.0)
    caplog.set_level(logging.WARNING, logger="smtpeter.store")
    with locked(store, HOLD, mode) as since:
        result = run(store)
        waited = time.monotonic() - since
    assert HOLD - 0.2 < waited < HOLD + 1.0, waited
    if op == "get_login":
        assert isinstance(result, Login) and result.name == "alice"
    assert took_effect(store)
    warnings = [r.getMessage() for r in caplog.records if r.name == "smtpeter.store"]
    assert len(warnings) == 1, warnings
    assert "waited for a lock (database is locked)" in warnings[0]
    assert str(tmp_path / "smtpeter.db") in warnings[0]
    name = {"record_message": "message record", "record_events": "event record"}
    assert f": {name.get(op, 'login lookup')}: " in warnings[0]


def test_begin_immediate_is_retried(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """record_events opens its own transaction: the BEGIN is what waits."""
    store = _store(tmp_path, busy_timeout=0.05, retry_seconds=5.0)
    caplog.set_level(logging.WARNING, logger="smtpeter.store")
    with locked(store, HOLD):
        store.record_events([_event(1)])
    assert any(": event record: BEGIN waited" in r.getMessage() for r in caplog.records)
    assert len(store.events()) == 1


def test_no_warning_when_nothing_waited(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = _store(tmp_path, busy_timeout=0.05, retry_seconds=5.0)
    caplog.set_level(logging.WARNING, logger="smtpeter.store")
    store.record_message(_message(1))
    store.record_events([_event(1)])
    assert store.get_login("alice") is not None
    assert [r for r in caplog.records if r.name == "smtpeter.store"] == []


# A busy timeout longer than the budget is cut down to the budget.
@pytest.mark.parametrize("busy_timeout", [0.05, 5.0], ids=["busy-0.05s", "busy-5s"])
@pytest.mark.parametrize("op", OPERATIONS)
def test_lock_outliving_the_budget_gives_store_error_after_the_budget(
    tmp_path: Path, op: str, busy_timeout: float
) -> None:
    mode, run, _ = OPERATIONS[op]
    budget = 0.6
    store = _store(tmp_path, busy_timeout=busy_timeout, retry_seconds=budget)
    with locked(store, 3.0, mode):
        started = time.monotonic()
        with pytest.raises(StoreError) as failure:
            run(store)
        took = time.monotonic() - started
    assert budget - 0.05 < took < budget + 0.5, took
    assert "database is locked" in str(failure.value)
    assert "gave up after" in str(failure.value)
    # The store works again once the lock is gone.
    run(store)


def test_zero_retry_seconds_waits_only_the_busy_timeout(tmp_path: Path) -> None:
    store = _store(tmp_path, busy_timeout=0.2, retry_seconds=0)
    with locked(store, 2.0):
        started = time.monotonic()
        with pytest.raises(StoreError, match="database is locked"):
            store.record_message(_message(1))
        took = time.monotonic() - started
    assert 0.15 < took < 0.7, took


def seconds_to_give_up(store: Store, hold: float) -> float:
    """How long recording a message takes to fail with "database is locked" while
    another process holds the write lock for ``hold`` seconds."""
    with locked(store, hold):
        started = time.monotonic()
        with pytest.raises(StoreError, match="database is locked"):
            store.record_message(_message(1))
        return time.monotonic() - started
