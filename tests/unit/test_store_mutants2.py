"""The store (sqlite.py), last part of what mutation testing found unchecked: the
suppression list and bounce forwarding (what an operator reads when those operations
fail, the refusal of a bad policy, the size of a page of `suppressions list`), and the
connection underneath every operation (lock waits, migrations, the connection's
settings), asserted through the store's API."""

from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path

import pytest

from smtpeter.logins import Login, LoginError
from smtpeter.store import StoreError
from smtpeter.store.sqlite import SQLiteStore
from tests.unit.test_store_api import store as store
from tests.unit.test_store_busy import _message, _store, locked

# -- the suppression list and bounce forwarding ------------------------------------------


@pytest.mark.parametrize("how", ["create", "update"])
def test_a_bad_suppression_policy_is_refused_naming_the_two_that_exist(
    store: SQLiteStore, how: str
) -> None:
    """`login create/set --suppression maybe` says exactly which policies there are."""
    with pytest.raises(LoginError) as caught:
        if how == "create":
            store.create_login(Login("shop", "x", suppression="maybe"))
        else:
            store.create_login(Login("shop", "x"))
            store.update_login("shop", suppression="maybe")
    assert str(caught.value) == "invalid suppression policy 'maybe': use refuse or off"


def test_the_suppression_list_shows_the_newest_1000_by_default(store: SQLiteStore) -> None:
    """A list of 1001 entries shows a page of the newest 1000 unless asked for more."""
    for i in range(1001):
        store.suppress("shop", f"r{i}@example.org", "user-unknown")
    everything = store.suppressions(limit=1001)
    assert len(everything) == 1001
    assert store.suppressions() == everything[:1000]
    assert store.suppressions(login="shop") == everything[:1000]


# -- the connection under every operation ------------------------------------------------


def test_a_busy_timeout_longer_than_the_budget_waits_out_a_short_lock_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With busy_timeout past the retry budget, a lock shorter than the budget is
    waited out in one busy wait (cut to the budget, not to nothing): the message is
    recorded and no lock warning is logged."""
    store = _store(tmp_path, busy_timeout=5.0, retry_seconds=1.5)
    caplog.set_level(logging.WARNING, logger="smtpeter.store")
    with locked(store, 0.3):
        store.record_message(_message(1))
    assert [m.queue_id for m in store.messages()] == ["Q1"]
    assert [r.getMessage() for r in caplog.records if r.name == "smtpeter.store"] == []


def test_a_suppression_added_during_a_lock_names_its_statement_when_it_waits_or_gives_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """While another process writes, adding a suppression waits and the operator's log
    line names the operation, the statement (INSERT, not the whole SQL), the attempts
    and the seconds it waited; past the budget, the error says the same."""
    store = _store(tmp_path, busy_timeout=0.05, retry_seconds=1.5)
    with locked(store, 5.0), pytest.raises(StoreError) as caught:
        started = time.monotonic()
        try:
            store.suppress("alice", "gone@example.org", "user-unknown")
        finally:
            took = time.monotonic() - started
    failed = re.fullmatch(
        rf"store {re.escape(store.path)}: suppression add failed: database is locked"
        r" \(INSERT: gave up after (\d+) attempts in (\d+\.\d\d) s\)",
        str(caught.value),
    )
    assert failed, str(caught.value)
    assert int(failed[1]) > 1 and 1.4 <= float(failed[2]) <= took + 0.01, (failed[2], took)
    caplog.set_level(logging.WARNING, logger="smtpeter.store")
    with locked(store, 0.3):
        started = time.monotonic()
        assert store.suppress("alice", "gone@example.org", "user-unknown")
        took = time.monotonic() - started
    [warning] = [r.getMessage() for r in caplog.records if r.name == "smtpeter.store"]
    waited = re.fullmatch(
        rf"store {re.escape(store.path)}: suppression add: INSERT waited for a lock"
        r" \(database is locked\): done after (\d+) attempts in (\d+\.\d\d) s",
        warning,
    )
    assert waited, warning
    assert int(waited[1]) > 1 and 0.05 <= float(waited[2]) <= took + 0.01, (waited[2], took)
    assert store.suppression("alice", "gone@example.org") is not None


def test_a_connection_opened_on_one_thread_serves_a_call_on_another(store: SQLiteStore) -> None:
    """libmilter runs a session's callbacks on different OS threads: a suppression
    added on one thread is read back on another through the same pooled connection."""
    added: list[bool] = []
    worker = threading.Thread(
        target=lambda: added.append(store.suppress("shop", "a@example.org", "complaint"))
    )
    worker.start()
    worker.join()
    assert added == [True]
    entry = store.suppression("shop", "a@example.org")
    assert entry is not None and entry.reason == "complaint"


def test_a_lock_outlasting_one_busy_wait_is_logged_even_when_the_second_try_succeeds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A lock that one busy wait does not cover but the next one does (two attempts)
    still tells the operator the store waited for a lock."""
    store = _store(tmp_path, busy_timeout=0.6, retry_seconds=5.0)
    caplog.set_level(logging.WARNING, logger="smtpeter.store")
    with locked(store, 0.9):
        store.record_message(_message(1))
    [warning] = [r.getMessage() for r in caplog.records if r.name == "smtpeter.store"]
    attempts = re.search(
        r"waited for a lock \(database is locked\): done after (\d+) attempts", warning
    )
    assert attempts and int(attempts[1]) >= 2, warning
    assert [m.queue_id for m in store.messages()] == ["Q1"]
