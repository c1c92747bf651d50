"""The event writer: a bounded queue and one thread writing batches, against fake stores
whose failures and delays the tests control."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from smtpeter import config
from smtpeter.events import Event
from smtpeter.store import StoreError, open_store
from smtpeter.tracker.writer import BATCH_MAX, EventWriter


def ev(i: int) -> Event:
    return Event(type="click", message_uid=f"u{i}", occurred_at=f"2026-01-01T00:00:{i:02d}Z")


class FakeStore:
    def __init__(self) -> None:
        self.batches: list[list[Event]] = []
        self.failing: str | None = None
        self.gate = threading.Event()
        self.gate.set()
        self.calls = 0

    def record(self, events: list[Event]) -> None:
        self.calls += 1
        self.gate.wait()
        if self.failing is not None:
            raise StoreError(self.failing)
        self.batches.append(list(events))

    @property
    def written(self) -> list[str]:
        return [e.message_uid for b in self.batches for e in b]


def wait_for(cond: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_events_are_written_in_batches_in_order() -> None:
    store = FakeStore()
    w = EventWriter(store.record, flush_seconds=0.2)
    w.start()
    for i in range(50):
        w.put(ev(i))
    wait_for(lambda: len(store.written) == 50)
    # All 50 were queued within one period: one transaction.
    assert len(store.batches) == 1
    assert store.written == [f"u{i}" for i in range(50)]
    assert w.close()
    assert w.written == 50


def test_large_backlog_is_split_into_bounded_batches() -> None:
    store = FakeStore()
    w = EventWriter(store.record, flush_seconds=10)
    for i in range(BATCH_MAX * 2 + 7):
        w.put(ev(i % 60))
    w.start()
    assert w.close()
    assert [len(b) for b in store.batches] == [BATCH_MAX, BATCH_MAX, 7]


def test_put_never_blocks_while_the_store_hangs() -> None:
    store = FakeStore()
    store.gate.clear()
    w = EventWriter(store.record, flush_seconds=0.01)
    w.start()
    w.put(ev(0))
    wait_for(lambda: store.calls == 1)  # the writer is stuck inside the store
    started = time.monotonic()
    for i in range(1, 10001):
        w.put(ev(i % 60))
    assert time.monotonic() - started < 1.0
    assert w.depth == 10000
    store.gate.set()
    assert w.close()
    assert len(store.written) == 10001


def test_failures_keep_the_events_and_retry_with_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FakeStore()
    store.failing = "store /x: event record failed: database is locked"
    w = EventWriter(store.record, flush_seconds=0.01, retry_max=0.2)
    w.start()
    for i in range(5):
        w.put(ev(i))
    time.sleep(0.6)
    # Backoff: 0.02, 0.04, 0.08, 0.16, 0.2... a handful of attempts, not hundreds.
    assert 2 <= store.calls <= 10
    assert w.depth == 5
    assert w.last_error is not None and "database is locked" in w.last_error
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    # One line per distinct cause, naming it.
    assert len(errors) == 1
    assert "database is locked" in errors[0].getMessage()
    w.put(ev(5))
    store.failing = None
    wait_for(lambda: len(store.written) == 6)
    assert store.written == [f"u{i}" for i in range(6)]
    assert w.last_error is None
    assert w.close()


def test_full_queue_drops_the_oldest_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    store = FakeStore()
    store.failing = "down"
    w = EventWriter(store.record, flush_seconds=0.01, queue_max=10, retry_max=0.05)
    w.start()
    for i in range(25):
        w.put(ev(i))
    time.sleep(0.1)
    assert w.depth == 10
    assert w.dropped == 15
    drops = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert drops and drops[0].levelno == logging.ERROR
    store.failing = None
    assert w.close()
    assert store.written == [f"u{i}" for i in range(15, 25)]


def test_unexpected_errors_do_not_kill_the_writer(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []
    written: list[Event] = []

    def record(events: list[Event]) -> None:
        calls.append(len(events))
        if len(calls) == 1:
            raise RuntimeError("bug")
        written.extend(events)

    w = EventWriter(record, flush_seconds=0.01)
    w.start()
    w.put(ev(1))
    wait_for(lambda: len(written) == 1)
    assert any("unexpectedly" in r.getMessage() for r in caplog.records)
    assert w.close()


def test_close_flushes_everything_at_once() -> None:
    store = FakeStore()
    w = EventWriter(store.record, flush_seconds=3600)
    w.start()
    for i in range(100):
        w.put(ev(i % 60))
    started = time.monotonic()
    assert w.close()
    assert time.monotonic() - started < 1.0
    assert len(store.written) == 100
    # Closing twice is harmless.
    assert w.close()


def test_close_without_start_writes_inline() -> None:
    store = FakeStore()
    w = EventWriter(store.record)
    w.put(ev(1))
    assert w.close()
    assert store.written == ["u1"]


def test_close_gives_up_after_its_timeout_when_the_store_stays_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FakeStore()
    store.failing = "down"
    w = EventWriter(store.record, flush_seconds=0.01, retry_max=0.05)
    w.start()
    for i in range(3):
        w.put(ev(i))
    started = time.monotonic()
    assert not w.close(timeout=0.3)
    assert time.monotonic() - started < 1.0
    assert any("3 events not written" in r.getMessage() for r in caplog.records)


def test_with_a_real_store(tmp_path: Path) -> None:
    cfg = config.parse({"store": {"sqlite_path": str(tmp_path / "s.db")}}, "test")
    store = open_store(cfg.store)
    w = EventWriter(store.record_events, flush_seconds=0.01)
    w.start()
    for i in range(10):
        w.put(ev(i))
    assert w.close()
    # Written in the order they were put (events() is newest first).
    assert [e.message_uid for e in store.events()] == [f"u{i}" for i in reversed(range(10))]
