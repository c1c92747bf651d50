"""Delivery results read from the log into the store, at the edges the first tests
leave open: a batch boundary, a reader stopped from outside, a store that cannot be
written for a while; and log lines whose status, recipient or reply must come out
exactly as Postfix wrote them."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from smtpeter.deliveries import reader
from smtpeter.deliveries.logline import MAX_LINE, DeliveryResult, Expiry, parse, parse_message
from smtpeter.store import StoreError
from smtpeter.store.sqlite import SQLiteStore
from tests.unit.test_deliveries_store import _line, _results
from tests.unit.test_deliveries_store import store as store
from tests.unit.test_store_busy import locked

QID = "4B2C3D1E0F"


def _sent(n: int) -> str:
    return _line(QID, "ann@example.org", "sent", "2.0.0", f"250 2.0.0 Ok: queued as A{n}", n % 60)


@pytest.mark.parametrize("n", [reader.BATCH_MAX - 1, reader.BATCH_MAX, reader.BATCH_MAX + 1])
def test_results_across_a_batch_boundary_are_recorded_once(
    store: SQLiteStore, tmp_path: Path, n: int
) -> None:
    """A log of a full batch or more is recorded whole, and a restart records none of
    it again but goes on with the next line written."""
    log = tmp_path / "mail.log"
    log.write_text("".join(_sent(i) for i in range(n)))
    counts = reader.run(store, str(log), once=True)
    assert (counts.lines, counts.results, counts.recorded) == (n, n, n)
    assert len(_results(store)) == n
    assert store.delivery_cursor(reader.source_of(str(log))) is not None
    assert reader.run(SQLiteStore(store.path), str(log), once=True).recorded == 0
    with log.open("a") as f:
        f.write(_sent(n))
    again = reader.run(SQLiteStore(store.path), str(log), once=True)
    assert (again.lines, again.recorded) == (1, 1)
    replies = sorted(d["reply"] for _, _, d in _results(store))
    assert replies == sorted(f"250 2.0.0 Ok: queued as A{i}" for i in range(n + 1))


def test_lines_that_are_no_result_still_move_the_cursor(store: SQLiteStore, tmp_path: Path) -> None:
    """A log read to its end with no result in it is not read again at the next start."""
    log = tmp_path / "mail.log"
    log.write_text(
        "2026-12-01T10:00:00.000001+00:00 relay postfix/qmgr[900]: 4B2C3D1E0F: removed\n"
    )
    assert reader.run(store, str(log), once=True).lines == 1
    assert store.delivery_cursor(reader.source_of(str(log))) is not None
    assert reader.run(SQLiteStore(store.path), str(log), once=True).lines == 0


def test_the_cursor_is_kept_per_log_file(store: SQLiteStore, tmp_path: Path) -> None:
    """Each log file's position is kept under its own path."""
    assert reader.source_of("/var/log/mail.log") == "file:/var/log/mail.log"
    log = tmp_path / "mail.log"
    log.write_text(_sent(1))
    reader.run(store, str(log), once=True)
    assert store.delivery_cursor(f"file:{log}") is not None
    assert store.delivery_cursor(f"file:{tmp_path / 'other.log'}") is None


def test_a_following_reader_records_new_lines_and_stops_when_told(
    store: SQLiteStore, tmp_path: Path
) -> None:
    """A reader left running records the lines written while it runs, and returns
    soon after it is told to stop."""
    log = tmp_path / "mail.log"
    log.write_text(_sent(0))
    stop = threading.Event()
    got: list[reader.Counts] = []
    thread = threading.Thread(target=lambda: got.append(reader.run(store, str(log), stop=stop)))
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while len(_results(store)) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        with log.open("a") as f:
            f.write(_sent(1))
        while len(_results(store)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_results(store)) == 2
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()
    assert [(c.lines, c.results, c.recorded) for c in got] == [(2, 2, 2)]


def test_a_one_shot_read_of_a_locked_store_fails(store: SQLiteStore, tmp_path: Path) -> None:
    """`smtpeter deliveries --once` on a store locked by another process fails with
    the store's error, and records nothing."""
    log = tmp_path / "mail.log"
    log.write_text(_sent(0))
    busy = SQLiteStore(store.path, busy_timeout=0.05, retry_seconds=0.2)
    with locked(busy, 30), pytest.raises(StoreError):
        reader.run(busy, str(log), once=True)
    assert _results(store) == []


def test_a_following_reader_waits_out_a_locked_store(
    store: SQLiteStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A following reader whose store is locked for a while says so, waiting longer
    after each failure (from half a second again once it could write), and records
    each result once when the lock goes, from the last recorded line."""
    log = tmp_path / "mail.log"
    log.write_text(_sent(0))
    busy = SQLiteStore(store.path, busy_timeout=0.05, retry_seconds=0.2)
    stop = threading.Event()
    got: list[reader.Counts] = []
    thread = threading.Thread(target=lambda: got.append(reader.run(busy, str(log), stop=stop)))

    def waits() -> list[str]:
        pattern = (
            rf"(.+); reading {re.escape(str(log))} again from the last recorded line in (\d+) s"
        )
        found = []
        for r in caplog.records:
            if r.name == "smtpeter.deliveries" and r.levelno == logging.ERROR:
                m = re.fullmatch(pattern, r.getMessage())
                assert m is not None and "lock" in m[1], r.getMessage()
                found.append(m[2])
        return found

    def until(done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 15
        while not done() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert done()

    try:
        with caplog.at_level(logging.INFO, logger="smtpeter.deliveries"), locked(busy, 60):
            thread.start()
            until(lambda: len(waits()) >= 3)
            with log.open("a") as f:
                f.write(_sent(1))
            assert _results(store) == []
        until(lambda: len(_results(store)) == 2)
        assert waits()[:3] == ["0", "1", "2"]
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="smtpeter.deliveries"), locked(busy, 60):
            with log.open("a") as f:
                f.write(_sent(2))
            until(lambda: len(waits()) >= 1)
        until(lambda: len(_results(store)) == 3)
        assert waits()[0] == "0"
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    replies = [d["reply"] for _, _, d in _results(store)]
    assert replies == [f"250 2.0.0 Ok: queued as A{i}" for i in range(3)]
    assert got and got[0].recorded == 3


@pytest.mark.parametrize("again", [False, True], ids=["first-start", "restart"])
def test_the_first_start_says_it_reads_the_log_from_its_start(
    store: SQLiteStore, tmp_path: Path, caplog: pytest.LogCaptureFixture, again: bool
) -> None:
    """The operator is told when the reader starts a log from its first line (no
    cursor yet), and not when it goes on from a recorded one."""
    log = tmp_path / "mail.log"
    log.write_text(_sent(0))
    if again:
        reader.run(store, str(log), once=True)
    with caplog.at_level(logging.INFO, logger="smtpeter.deliveries"):
        reader.run(store, str(log), once=True)
    said = [r.getMessage() for r in caplog.records if r.name == "smtpeter.deliveries"]
    assert said == ([] if again else [f"reading delivery results from {log}, from its start"])


# One result as Postfix's smtp client logs it, without the syslog header.
MESSAGE = (
    "3F2A1B4C5D: to=<ann@example.org>, relay=mx.example.org[192.0.2.1]:25, delay=1.2, "
    "delays=0.05/0.01/0.6/0.52, dsn=5.1.1, status=bounced (host mx.example.org[192.0.2.1] "
    "said: 550 5.1.1 <ann@example.org>: Recipient address rejected)"
)
KIRITIMATI = timezone(timedelta(hours=14))


def test_a_header_without_year_read_without_now_uses_the_clock() -> None:
    """A traditional syslog line parsed without a reference time gets this year's (or
    last year's) time, not an error."""
    result = parse(f"May  1 10:00:00 mail postfix/smtp[1]: {MESSAGE}", tz=UTC)
    assert isinstance(result, DeliveryResult) and result.logged_at is not None
    year = int(result.logged_at[:4])
    assert result.logged_at[4:] == "-05-01T10:00:00.000000Z"
    assert year in (datetime.now(UTC).year, datetime.now(UTC).year - 1)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        # In Kiritimati (UTC+14) it is already Jan 1 14:30 when UTC has 00:30: a Jan 2
        # line up to a day ahead of that is from this year, not the last.
        ("Jan  2 13:00:00", "2025-01-01T23:00:00.000000Z"),
        ("Jan  2 14:30:00", "2025-01-02T00:30:00.000000Z"),
        ("Jan  2 14:30:01", "2024-01-02T00:30:01.000000Z"),
    ],
)
def test_the_year_is_guessed_in_the_log_s_zone_not_the_machine_s(
    header: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A header without a year is placed by the wall clock of the zone it was written
    in, whatever zone the reading machine is in; exactly a day ahead still counts as
    this year."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        now = datetime(2025, 1, 1, 0, 30, tzinfo=UTC)
        result = parse(f"{header} mail postfix/smtp[1]: {MESSAGE}", now=now, tz=KIRITIMATI)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert isinstance(result, DeliveryResult)
    assert result.logged_at == expected


@pytest.mark.parametrize(
    "logged_at",
    [None, datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-5)))],
    ids=["none", "out-of-range"],
)
def test_a_journald_message_without_a_usable_time_has_none(logged_at: datetime | None) -> None:
    """A journald message with no time, or one past what can be written in UTC, gives
    its result with no time (None), not an empty one."""
    result = parse_message(MESSAGE, program="postfix/smtp", logged_at=logged_at)
    assert isinstance(result, DeliveryResult) and result.status == "failed"
    assert result.logged_at is None
    expiry = parse_message(
        "3F2A1B4C5D: from=<b@shop.test>, status=expired, returned to sender", logged_at=logged_at
    )
    assert isinstance(expiry, Expiry) and expiry.logged_at is None


def test_a_journald_reply_over_two_lines_is_kept_whole() -> None:
    """A journald message whose reply holds a line break (journald keeps it) still
    gives the result, with the reply as logged."""
    reply = "host mx.example.org[192.0.2.1] said: 550-5.1.1 No such user\n550 5.1.1 Try again"
    result = parse_message(MESSAGE.rsplit(" (", 1)[0] + f" ({reply})", program="postfix/smtp")
    assert isinstance(result, DeliveryResult)
    assert (result.recipient, result.status, result.reply) == ("ann@example.org", "failed", reply)


def test_times_are_utc_whatever_the_machine_s_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    """A line's time is stored in UTC also when the reading machine is in another zone."""
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        result = parse(f"2024-05-01T10:00:00.123456+02:00 mail postfix/smtp[1]: {MESSAGE}")
        journald = parse_message(MESSAGE, logged_at=datetime(2024, 5, 1, 8, 0, tzinfo=UTC))
    finally:
        monkeypatch.undo()
        time.tzset()
    assert isinstance(result, DeliveryResult)
    assert result.logged_at == "2024-05-01T08:00:00.123456Z"
    assert isinstance(journald, DeliveryResult)
    assert journald.logged_at == "2024-05-01T08:00:00.000000Z"


def _of_length(header: str, n: int) -> str:
    """MESSAGE with its reply padded so that header + message is n characters."""
    head, reply = MESSAGE[:-1], ")"
    return header + head + "x" * (n - len(header) - len(head) - len(reply)) + reply


@pytest.mark.parametrize("header", ["", "2024-05-01T10:00:00+02:00 mail postfix/smtp[1]: "])
def test_a_line_of_the_longest_length_is_still_read(header: str) -> None:
    """A result line of exactly the longest length Postfix can log is read; one more
    character and it is not."""
    longest = _of_length(header, MAX_LINE)
    assert len(longest) == MAX_LINE
    result = parse(longest)
    assert isinstance(result, DeliveryResult) and result.recipient == "ann@example.org"
    assert parse(_of_length(header, MAX_LINE + 1)) is None
    if not header:
        assert isinstance(parse_message(longest), DeliveryResult)
        assert parse_message(_of_length(header, MAX_LINE + 1)) is None


@pytest.mark.parametrize("end", ["\n", "\r\n"])
def test_a_journald_message_with_a_line_break_at_its_end_is_read(end: str) -> None:
    """A journald message that keeps its final line break is still the result."""
    result = parse_message(MESSAGE + end, program="postfix/smtp")
    assert isinstance(result, DeliveryResult)
    assert result.status == "failed"
    assert result.reply.endswith("<ann@example.org>: Recipient address rejected")


def test_a_recipient_quoting_a_fake_result_cannot_forge_the_status() -> None:
    """A recipient address whose quoted local part imitates a successful delivery is
    read as the whole address, with the status Postfix really logged."""
    fake = '"x>, relay=a, delay=1, delays=1/1/1/1, dsn=2.0.0, status=sent (y"@example.org'
    line = (
        f"2024-05-01T10:00:00+02:00 mail postfix/smtp[1]: 3F2A1B4C5D: to=<{fake}>, "
        "relay=mx.example.org[192.0.2.1]:25, delay=1.2, delays=0.05/0.01/0.6/0.52, "
        "dsn=5.1.1, status=bounced (550 5.1.1 User unknown)"
    )
    result = parse(line)
    assert isinstance(result, DeliveryResult)
    assert (result.recipient, result.status, result.dsn) == (fake, "failed", "5.1.1")
    assert result.reply == "550 5.1.1 User unknown"


def test_three_batches_are_all_counted(store: SQLiteStore, tmp_path: Path) -> None:
    """A log of more than two batches of results reports every event it recorded."""
    log = tmp_path / "mail.log"
    n = 2 * reader.BATCH_MAX + 1
    log.write_text("".join(_sent(i) for i in range(n)))
    counts = reader.run(store, str(log), once=True)
    assert (counts.lines, counts.results, counts.recorded) == (n, n, n)
