"""Following a log file across rotations and restarts, with real files, renames and
truncations: each line comes once, none is skipped, a restart from the cursor stored
with a line goes on with the next one."""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import threading
from pathlib import Path

import pytest

from smtpeter.deliveries.follow import Cursor, FileFollower


def append(path: Path, text: str | bytes) -> None:
    data = text.encode() if isinstance(text, str) else text
    with path.open("ab") as fh:
        fh.write(data)


def texts(follower: FileFollower) -> list[str]:
    return [line for line, _ in follower.lines()]


def read_until(follower: FileFollower, last: str) -> str:
    """The cursor after the line ``last``, read from ``follower``."""
    for line, cursor in follower.lines():
        if line == last:
            return cursor
    raise AssertionError(f"no line {last!r}")


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "mail.log"


def test_complete_lines_only(log: Path) -> None:
    """A last line without its newline is held back until the newline arrives."""
    append(log, "one\ntwo\npar")
    with FileFollower(log) as follower:
        assert texts(follower) == ["one", "two"]
        assert texts(follower) == []
        append(log, "tial\n")
        assert texts(follower) == ["partial"]


def test_restart_goes_on_after_the_stored_line(log: Path) -> None:
    """A follower started from the cursor of a line yields the lines after it, once."""
    append(log, "one\ntwo\nthree\n")
    with FileFollower(log) as follower:
        cursor = read_until(follower, "one")
    with FileFollower(log, cursor) as again:
        assert texts(again) == ["two", "three"]
        assert texts(again) == []


def test_rename_and_create(log: Path) -> None:
    """After logrotate's rename and create, the old file is read to its end (while the
    writer still writes it), then the new one from its start."""
    append(log, "one\n")
    with FileFollower(log) as follower:
        assert texts(follower) == ["one"]
        log.rename(log.with_name("mail.log.1"))
        log.touch()
        append(log.with_name("mail.log.1"), "two\n")  # not reopened yet
        assert texts(follower) == ["two"]
        append(log.with_name("mail.log.1"), "three\n")
        append(log, "four\n")  # reopened after postrotate
        assert texts(follower) == ["three", "four"]
        append(log, "five\n")
        assert texts(follower) == ["five"]


def test_rotated_file_last_line_without_newline(log: Path) -> None:
    """A rotated file's last line that never got its newline is still yielded."""
    append(log, "one\ntorn")
    with FileFollower(log) as follower:
        assert texts(follower) == ["one"]
        log.rename(log.with_name("mail.log.1"))
        append(log, "two\n")
        assert texts(follower) == ["torn", "two"]


def test_copytruncate(log: Path) -> None:
    """After copytruncate, the rest of the copy is read, then the file from its start."""
    append(log, "one\n")
    with FileFollower(log) as follower:
        assert texts(follower) == ["one"]
        append(log, "two\n")
        shutil.copyfile(log, log.with_name("mail.log.1"))
        os.truncate(log, 0)
        append(log, "three\n")
        assert texts(follower) == ["two", "three"]


def test_truncated_without_copy(log: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A file emptied in place is read again from its start, with a warning."""
    append(log, "one\ntwo\n")
    with FileFollower(log) as follower:
        assert texts(follower) == ["one", "two"]
        os.truncate(log, 0)
        append(log, "three\n")
        with caplog.at_level(logging.WARNING, "smtpeter.deliveries"):
            assert texts(follower) == ["three"]
    assert f"{log} was truncated" in caplog.text


def test_rewritten_in_place_past_the_offset(log: Path) -> None:
    """A file truncated and refilled past the offset is noticed by its first bytes."""
    append(log, "one\n")
    with FileFollower(log) as follower:
        assert texts(follower) == ["one"]
        os.truncate(log, 0)
        append(log, "alpha\nbeta\n")
        assert texts(follower) == ["alpha", "beta"]


def test_missing_file_is_waited_for(log: Path) -> None:
    """A file that is not there yet, or gone for a while, is waited for."""
    with FileFollower(log) as follower:
        assert texts(follower) == []
        assert follower.cursor is None
        append(log, "one\n")
        assert texts(follower) == ["one"]
        log.rename(log.with_name("mail.log.1"))
        assert texts(follower) == []
        append(log, "two\n")
        assert texts(follower) == ["two"]


def test_restart_with_cursor_in_rotated_file(log: Path) -> None:
    """A cursor whose file was rotated while stopped resumes in mail.log.1, then the
    new mail.log."""
    append(log, "one\ntwo\n")
    with FileFollower(log) as follower:
        cursor = read_until(follower, "one")
    append(log, "three\n")
    log.rename(log.with_name("mail.log.1"))
    append(log, "four\n")
    with FileFollower(log, cursor) as again:
        assert texts(again) == ["two", "three", "four"]


def test_restart_after_two_uncompressed_rotations(log: Path) -> None:
    """Rotated twice while stopped and not compressed: each rotation is read in turn."""
    append(log, "one\ntwo\n")
    with FileFollower(log) as follower:
        cursor = read_until(follower, "one")
    first, second = log.with_name("mail.log.1"), log.with_name("mail.log.2")
    log.rename(first)
    append(log, "three\n")
    os.utime(first, ns=(10**18, 10**18))
    os.utime(log, ns=(2 * 10**18, 2 * 10**18))
    first.rename(second)
    log.rename(first)
    append(log, "four\n")
    with FileFollower(log, cursor) as again:
        assert texts(again) == ["two", "three", "four"]


def test_restart_after_copytruncate(log: Path) -> None:
    """A cursor in a file copytruncated while stopped resumes in the copy."""
    append(log, "one\ntwo\n")
    with FileFollower(log) as follower:
        cursor = read_until(follower, "one")
    shutil.copyfile(log, log.with_name("mail.log.1"))
    os.truncate(log, 0)
    append(log, "a much longer line than the two before it\n")
    with FileFollower(log, cursor) as again:
        assert texts(again) == ["two", "a much longer line than the two before it"]


def test_restart_after_compression_warns(log: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A cursor in a file compressed while stopped cannot be followed: a warning names
    the file, and the current file is read from its start."""
    append(log, "one\ntwo\n")
    with FileFollower(log) as follower:
        cursor = read_until(follower, "one")
    rotated = log.with_name("mail.log.1.gz")
    rotated.write_bytes(gzip.compress(log.read_bytes()))
    log.unlink()
    append(log, "three\n")
    with (
        caplog.at_level(logging.WARNING, "smtpeter.deliveries"),
        FileFollower(log, cursor) as again,
    ):
        assert texts(again) == ["three"]
    assert str(log) in caplog.text and "is gone" in caplog.text


def test_same_inode_other_contents(log: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A cursor is not trusted in a file that kept its inode but not its first bytes."""
    append(log, "one\ntwo\n")
    with FileFollower(log) as follower:
        cursor = read_until(follower, "one")
    with log.open("r+b") as fh:
        fh.write(b"ONE\nTWO\n")
    with (
        caplog.at_level(logging.WARNING, "smtpeter.deliveries"),
        FileFollower(log, cursor) as again,
    ):
        assert texts(again) == ["ONE", "TWO"]
    assert "is gone" in caplog.text


@pytest.mark.parametrize(
    "cursor", ["", "not json", "[]", '{"dev":1}', '{"dev":1,"ino":2,"off":3,"hl":9,"hh":"x"}']
)
def test_bad_cursor_starts_over(log: Path, cursor: str, caplog: pytest.LogCaptureFixture) -> None:
    """A cursor that is none is ignored with a warning; the file is read from its start."""
    append(log, "one\n")
    with (
        caplog.at_level(logging.WARNING, "smtpeter.deliveries"),
        FileFollower(log, cursor) as follower,
    ):
        assert texts(follower) == ["one"]
    assert "ignoring a cursor" in caplog.text


def test_cursor_is_short_and_round_trips(log: Path) -> None:
    """The cursor is a short text that names the file and the offset after the line."""
    append(log, "one\ntwo\n")
    with FileFollower(log) as follower:
        cursor = read_until(follower, "one")
    decoded = Cursor.decode(cursor)
    assert decoded is not None
    assert (decoded.ino, decoded.offset, decoded.head_len) == (log.stat().st_ino, 4, 4)
    assert decoded.encode() == cursor and len(cursor) < 120


def test_undecodable_bytes_are_replaced(log: Path) -> None:
    """Bytes that are not UTF-8 become U+FFFD; a CRLF line end loses its CR."""
    append(log, b"caf\xe9\r\n")
    with FileFollower(log) as follower:
        assert texts(follower) == ["caf\ufffd"]


def test_follow_waits_for_lines_until_stopped(log: Path) -> None:
    """follow() yields a line written later, and ends when told to stop."""
    append(log, "one\n")
    stop = threading.Event()
    writer = threading.Timer(0.05, append, (log, "two\n"))
    writer.start()
    seen = []
    with FileFollower(log, poll=0.01) as follower:
        for line, _ in follower.follow(stop):
            seen.append(line)
            if line == "two":
                stop.set()
    writer.join()
    assert seen == ["one", "two"]
