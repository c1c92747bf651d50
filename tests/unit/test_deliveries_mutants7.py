"""Following a log file at the edges the first tests leave open, with real files,
renames and truncations: several rotations at once, stray files next to the log, a
restart whose cursor's file is now a rotation or a copy, the cursor's own text, the
log lines an operator reads, and a follower that neither spins nor leaks descriptors."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from smtpeter.deliveries.follow import Cursor, FileFollower
from tests.unit.test_delivery_follow import append, read_until, texts
from tests.unit.test_delivery_follow import log as log

LOGGER = "smtpeter.deliveries"


def said(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[str]:
    """The follower's log lines at ``level`` or above."""
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= level]


def mtime(path: Path, seconds: int) -> None:
    """Set the file's modification time to ``seconds`` (an order of rotations)."""
    os.utime(path, ns=(seconds * 10**9, seconds * 10**9))


def open_fds_to(*paths: Path) -> list[str]:
    """This process's open descriptors that refer to one of ``paths``."""
    wanted = {str(p) for p in paths}
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target in wanted:
            found.append(target)
    return found


# -- the cursor -----------------------------------------------------------------------


def test_the_cursor_is_compact_json_with_a_16_digit_hash(log: Path) -> None:
    """The cursor stored with each line is the documented compact JSON, so one written
    by an earlier build (same form) still resumes where it was, with no warning."""
    append(log, "one\ntwo\n")
    st = log.stat()
    with FileFollower(log) as follower:
        cursor = read_until(follower, "one")
    head_hash = hashlib.sha256(b"one\n").hexdigest()[:16]
    place = f'"dev":{st.st_dev},"ino":{st.st_ino}'
    assert cursor == f'{{{place},"off":4,"hl":4,"hh":"{head_hash}"}}'
    stored = json.dumps(
        {"dev": st.st_dev, "ino": st.st_ino, "off": 4, "hl": 4, "hh": head_hash},
        separators=(",", ":"),
    )
    with FileFollower(log, stored) as again:
        assert texts(again) == ["two"]


@pytest.mark.parametrize("gone", [False, True], ids=["same-file", "file-compressed-since"])
def test_a_cursor_taken_before_any_line_resumes_quietly(
    log: Path, caplog: pytest.LogCaptureFixture, gone: bool
) -> None:
    """The cursor of a file that was still empty is a valid one: a restart from it
    reads every line from the start, and says nothing (nothing can have been lost),
    also when that file has since been rotated away."""
    log.touch()
    with FileFollower(log) as follower:
        assert texts(follower) == []
        cursor = follower.cursor
    assert cursor is not None and Cursor.decode(cursor) is not None
    if gone:  # renamed to a name that is never read, so the new file is a new inode
        log.rename(log.with_name("mail.log.1.gz"))
    append(log, "one\ntwo\n")
    with caplog.at_level(logging.INFO, LOGGER), FileFollower(log, cursor) as again:
        assert texts(again) == ["one", "two"]
    assert said(caplog) == []


@pytest.mark.parametrize(
    "text",
    [
        '{"dev":1,"ino":2,"off":3,"hl":0}',
        '{"dev":"1","ino":2,"off":3,"hl":0,"hh":"x"}',
        '{"dev":1,"ino":2,"off":-3,"hl":0,"hh":"x"}',
    ],
    ids=["no-hash", "a-number-as-text", "negative"],
)
def test_a_cursor_missing_a_part_is_not_one(text: str) -> None:
    """A cursor without its hash, or with a field that is no count, is refused whole."""
    assert Cursor.decode(text) is None


def test_an_ignored_cursor_is_quoted_in_the_warning(
    log: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The warning about a cursor that is none names the log and quotes the cursor's
    first 200 characters."""
    append(log, "one\n")
    bad = "not a cursor " + "x" * 300
    with caplog.at_level(logging.WARNING, LOGGER), FileFollower(log, bad) as follower:
        assert texts(follower) == ["one"]
    assert said(caplog) == [f"{log}: ignoring a cursor that is none: {bad[:200]!r}"]


# -- waiting --------------------------------------------------------------------------


def test_follow_without_a_stop_waits_a_fifth_of_a_second(log: Path) -> None:
    """follow() with no stop event and the default poll picks up a line written while
    it waits within about a fifth of a second."""
    append(log, "one\n")
    with FileFollower(log) as follower:
        lines = follower.follow()
        assert next(lines)[0] == "one"
        writer = threading.Timer(0.02, append, (log, "two\n"))
        started = time.monotonic()
        writer.start()
        assert next(lines)[0] == "two"
        took = time.monotonic() - started
        writer.join()
    assert took < 0.9


def test_an_idle_follower_does_not_spin(log: Path) -> None:
    """A follower with nothing new to read sleeps between its looks: half a second of
    waiting costs next to no CPU."""
    append(log, "one\n")
    stop = threading.Event()
    timer = threading.Timer(0.5, stop.set)
    with FileFollower(log, poll=0.1) as follower:
        cpu = time.thread_time()
        timer.start()
        seen = [line for line, _ in follower.follow(stop)]
        cpu = time.thread_time() - cpu
    timer.join()
    assert seen == ["one"]
    assert cpu < 0.1


def test_no_descriptor_is_left_open(log: Path) -> None:
    """The rotated file is closed once the follower moved on to the new one, and the
    follower holds no file after it is closed (closing twice is harmless)."""
    append(log, "one\n")
    rotated = log.with_name("mail.log.1")
    follower = FileFollower(log)
    assert texts(follower) == ["one"]
    log.rename(rotated)
    append(log, "two\n")
    assert texts(follower) == ["two"]
    assert open_fds_to(rotated) == []
    assert open_fds_to(log) == [str(log)]
    follower.close()
    follower.close()
    assert open_fds_to(log, rotated) == []


def test_a_directory_in_the_log_s_place_is_waited_out(log: Path) -> None:
    """When the name of the rotated log is taken by something that cannot be read,
    the follower waits (returns) instead of going round for ever, then reads the file
    once it is there."""
    append(log, "one\n")
    with FileFollower(log) as follower:
        assert texts(follower) == ["one"]
        log.rename(log.with_name("mail.log.1"))
        log.mkdir()
        (log / "x").write_text("x\n")
        done: list[list[str]] = []
        thread = threading.Thread(target=lambda: done.append(texts(follower)), daemon=True)
        thread.start()
        thread.join(10)
        assert done == [[]]
        shutil.rmtree(log)
        append(log, "two\n")
        assert texts(follower) == ["two"]


# -- reading --------------------------------------------------------------------------


def test_a_line_across_the_read_size_comes_whole(log: Path) -> None:
    """A log bigger than one read (1 MiB) gives every line whole, also the one that
    straddles two reads."""
    lines = [f"{i:06d} " + "y" * 92 for i in range(11000)]
    append(log, "".join(f"{line}\n" for line in lines))
    with FileFollower(log) as follower:
        assert texts(follower) == lines


@pytest.mark.parametrize("line", ["reply ends with blanks  \t", "ends in X", "XX", "a\x0b"])
def test_a_line_keeps_its_last_characters(log: Path, line: str) -> None:
    """Only the line end (LF or CRLF) is taken off a line, nothing else at its end."""
    append(log, f"{line}\r\n{line}\n")
    with FileFollower(log) as follower:
        assert texts(follower) == [line, line]


# -- rotations while running ----------------------------------------------------------


@pytest.mark.parametrize("stray", ["mail.log2", "mail.logXtra", "mail.log.2.gz"])
def test_a_stray_file_next_to_the_log_is_no_rotation(
    log: Path, caplog: pytest.LogCaptureFixture, stray: str
) -> None:
    """Another program's log named like ours, or a compressed rotation, is never read
    as the next part of the log, however new it is; a rotation raises no warning."""
    append(log, "one\n")
    with caplog.at_level(logging.WARNING, LOGGER), FileFollower(log) as follower:
        assert texts(follower) == ["one"]
        log.rename(log.with_name("mail.log.1"))
        mtime(log.with_name("mail.log.1"), 1000)
        other = log.with_name(stray)
        other.write_bytes(gzip.compress(b"zipped\n") if stray.endswith(".gz") else b"stray\n")
        mtime(other, 3000)
        append(log, "two\n")
        mtime(log, 2000)
        assert texts(follower) == ["two"]
        append(log, "three\n")
        assert texts(follower) == ["three"]
    assert said(caplog) == []


def test_a_named_pipe_next_to_the_log_is_never_opened(log: Path) -> None:
    """A named pipe named like a rotation (newer than the log) is not a file to read:
    the follower goes on in the new log instead of waiting on the pipe for ever."""
    append(log, "one\n")
    pipe = log.with_name("mail.log.pipe")
    with FileFollower(log) as follower:
        assert texts(follower) == ["one"]
        log.rename(log.with_name("mail.log.1"))
        mtime(log.with_name("mail.log.1"), 1000)
        os.mkfifo(pipe)
        mtime(pipe, 3000)
        append(log, "two\n")
        mtime(log, 2000)
        done: list[list[str]] = []
        thread = threading.Thread(target=lambda: done.append(texts(follower)), daemon=True)
        thread.start()
        thread.join(10)
        if thread.is_alive():  # blocked opening the pipe: let it go
            os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
            thread.join(5)
        assert done == [["two"]]


def test_a_backup_copy_with_the_same_time_is_not_read_again(log: Path) -> None:
    """A copy made with `cp -p` (same modification time) is not a newer rotation: after
    the rotation the follower goes on in the new file, without the copy's lines."""
    append(log, "one\ntwo\n")
    with FileFollower(log) as follower:
        assert texts(follower) == ["one", "two"]
        shutil.copy2(log, log.with_name("mail.log.bak"))
        assert log.stat().st_mtime_ns == log.with_name("mail.log.bak").stat().st_mtime_ns
        log.rename(log.with_name("mail.log.1"))
        append(log, "three\n")
        assert texts(follower) == ["three"]


def test_rotated_twice_before_the_new_file_exists(log: Path) -> None:
    """Rotated twice while running, the second time before the writer created the new
    file: the middle rotation is read after the old file, then the new file."""
    append(log, "one\n")
    first, second = log.with_name("mail.log.1"), log.with_name("mail.log.2")
    with FileFollower(log) as follower:
        assert texts(follower) == ["one"]
        log.rename(first)
        mtime(first, 1000)
        append(log, "two\n")
        mtime(log, 2000)
        first.rename(second)
        log.rename(first)
        assert texts(follower) == ["two"]
        append(log, "three\n")
        assert texts(follower) == ["three"]


def test_a_rewrite_during_a_read_is_read_in_the_same_pass(log: Path) -> None:
    """A file truncated and written again (longer) while the follower was handing out
    its last line is read again from its start in the same pass."""
    append(log, "one\n")
    with FileFollower(log) as follower:
        lines = follower.lines()
        assert next(lines)[0] == "one"
        with log.open("r+b") as fh:
            fh.write(b"ALPHA\nBETA\nGAMMA\n")
        assert [line for line, _ in lines] == ["ALPHA", "BETA", "GAMMA"]


def test_copytruncate_just_after_a_read_goes_on_in_the_copy(
    log: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """copytruncate right after the follower read everything: it says it goes on in
    the copy (naming both files), not that it reads the file again, and reads the
    new lines."""
    append(log, "one\ntwo\n")
    copy = log.with_name("mail.log.1")
    with caplog.at_level(logging.INFO, LOGGER), FileFollower(log) as follower:
        assert texts(follower) == ["one", "two"]
        shutil.copyfile(log, copy)
        os.truncate(log, 0)
        append(log, "three\n")
        assert texts(follower) == ["three"]
    assert said(caplog) == [f"{log} was truncated; reading the rest of its copy {copy}"]


def test_a_truncation_with_older_rotations_around_reads_again(
    log: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file emptied in place while older rotations (not copies of it) lie next to it
    is read again from its start, with exactly this warning."""
    log.with_name("mail.log.1").write_text("an older rotation, long enough\n" * 3)
    log.with_name("mail.log.2").write_text("x\n")
    append(log, "one\ntwo\n")
    with caplog.at_level(logging.WARNING, LOGGER), FileFollower(log) as follower:
        assert texts(follower) == ["one", "two"]
        os.truncate(log, 0)
        append(log, "three\n")
        assert texts(follower) == ["three"]
    assert said(caplog) == [f"{log} was truncated; reading it again from its start"]


def test_a_short_newer_file_is_not_taken_for_the_copy(log: Path) -> None:
    """After copytruncate, a newer file that starts with the same 256 bytes but is too
    short to hold the cursor is not the copy: the rest is read from the real one."""
    first = [f"line {i:02d} of the first part" for i in range(20)]
    append(log, "".join(f"{line}\n" for line in first))
    copy, short = log.with_name("mail.log.1"), log.with_name("mail.log.0")
    with FileFollower(log) as follower:
        assert texts(follower) == first
        append(log, "the rest\n")
        shutil.copyfile(log, copy)
        mtime(copy, 1000)
        short.write_bytes(log.read_bytes()[:300])
        mtime(short, 2000)
        os.truncate(log, 0)
        append(log, "new\n")
        got = texts(follower)
    assert got[0] == "the rest" and got[-1] == "new"


# -- restarts -------------------------------------------------------------------------


def test_a_restart_after_three_numbered_rotations_reads_them_in_order(
    log: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Rotated three times while stopped (mail.log.3 oldest, mail.log.1 newest, as
    logrotate numbers them): the rest of .3, then .2, .1 and the new file, with no
    warning."""
    append(log, "one\ntwo\n")
    with FileFollower(log) as follower:
        cursor = read_until(follower, "one")
    for n, text in enumerate(["three\n", "four\n", "five\n"], start=1):
        for k in range(n - 1, 0, -1):  # mail.log.k -> mail.log.k+1, the oldest first
            log.with_name(f"mail.log.{k}").rename(log.with_name(f"mail.log.{k + 1}"))
        mtime(log, 1000 * n)
        log.rename(log.with_name("mail.log.1"))
        append(log, text)
    mtime(log, 9000)
    with caplog.at_level(logging.WARNING, LOGGER), FileFollower(log, cursor) as again:
        assert texts(again) == ["two", "three", "four", "five"]
    assert said(caplog) == []


def test_compressed_rotations_do_not_hide_the_one_that_is_not(log: Path) -> None:
    """Among many compressed rotations, the uncompressed one holding the cursor is
    still found at a restart."""
    append(log, "a first line\nsecond\n")
    with FileFollower(log) as follower:
        cursor = read_until(follower, "a first line")
    for n in range(2, 40):
        log.with_name(f"mail.log.{n}.gz").write_bytes(gzip.compress(b"old\n"))
    log.rename(log.with_name("mail.log.1"))
    append(log, "third line, long\n")
    with FileFollower(log, cursor) as again:
        assert texts(again) == ["second", "third line, long"]


def test_a_restart_when_the_new_file_is_shorter_than_the_cursor(log: Path) -> None:
    """A cursor further on than the new file is long is still found in mail.log.1."""
    append(log, "a rather long first line\nsecond\n")
    with FileFollower(log) as follower:
        cursor = read_until(follower, "a rather long first line")
    log.rename(log.with_name("mail.log.1"))
    append(log, "x\n")
    with FileFollower(log, cursor) as again:
        assert texts(again) == ["second", "x"]


def test_a_restart_prefers_the_cursor_s_own_file_to_a_look_alike(
    log: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Rotated while stopped, with a new file that begins with the same line: the
    restart goes on in the cursor's own file (now mail.log.1), then reads the new one
    whole; nothing is lost and nothing said."""
    append(log, "one\ntwo\nthree\n")
    with FileFollower(log) as follower:
        cursor = read_until(follower, "one")
    log.rename(log.with_name("mail.log.1"))
    mtime(log.with_name("mail.log.1"), 1000)
    append(log, "one\nfour\n")
    mtime(log, 2000)
    with caplog.at_level(logging.INFO, LOGGER), FileFollower(log, cursor) as again:
        assert texts(again) == ["two", "three", "one", "four"]
    assert said(caplog) == []


def test_a_restart_after_copytruncate_names_the_copy(
    log: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A restart whose file was copytruncated says it resumes in the copy, naming it
    and the log."""
    append(log, "one\ntwo\n")
    copy = log.with_name("mail.log.1")
    with FileFollower(log) as follower:
        cursor = read_until(follower, "one")
    shutil.copyfile(log, copy)
    os.truncate(log, 0)
    append(log, "a line longer than the two before it\n")
    with caplog.at_level(logging.INFO, LOGGER), FileFollower(log, cursor) as again:
        assert texts(again) == ["two", "a line longer than the two before it"]
    assert said(caplog) == [f"{log}: resuming in {copy}, a copy of the file the cursor was in"]


def test_a_restart_after_copytruncate_with_an_older_backup_reads_nothing_twice(
    log: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two copies of the cursor's file lie next to the log (an older backup and
    logrotate's copytruncate copy): the restart goes on in the newest copy, so no line
    is read twice."""
    append(log, "one\ntwo\n")
    with FileFollower(log) as follower:
        cursor = read_until(follower, "one")
    backup, copy = log.with_name("mail.log.bak"), log.with_name("mail.log.1")
    append(log, "three\n")
    shutil.copyfile(log, backup)
    mtime(backup, 1000)
    append(log, "four\n")
    shutil.copyfile(log, copy)
    mtime(copy, 2000)
    os.truncate(log, 0)
    append(log, "a line longer than the ones before it\n")
    with caplog.at_level(logging.INFO, LOGGER), FileFollower(log, cursor) as again:
        got = texts(again)
    assert got == ["two", "three", "four", "a line longer than the ones before it"]
    assert said(caplog) == [f"{log}: resuming in {copy}, a copy of the file the cursor was in"]


def test_a_restart_after_a_first_empty_line_and_copytruncate(log: Path) -> None:
    """A cursor just after an empty first line (one byte of the file's start known)
    is still found in the copytruncate copy."""
    append(log, "\ntwo\n")
    with FileFollower(log) as follower:
        cursor = read_until(follower, "")
    shutil.copyfile(log, log.with_name("mail.log.1"))
    os.truncate(log, 0)
    append(log, "three and more\n")
    with FileFollower(log, cursor) as again:
        assert texts(again) == ["two", "three and more"]


def test_the_lost_file_warning_names_the_file_and_the_position(
    log: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """When the cursor's file is gone, the warning says which inode and offset were
    lost and which file is read from its start instead."""
    append(log, "one\ntwo\n")
    with FileFollower(log) as follower:
        cursor = read_until(follower, "one")
    ino = log.stat().st_ino
    log.with_name("mail.log.1.gz").write_bytes(gzip.compress(log.read_bytes()))
    log.unlink()
    append(log, "three\n")
    with caplog.at_level(logging.WARNING, LOGGER), FileFollower(log, cursor) as again:
        assert texts(again) == ["three"]
    assert said(caplog) == [
        f"{log}: the file the cursor was in (inode {ino}, offset 4) is gone (compressed,"
        f" rotated more than once or deleted): reading {log} from its start; the lines"
        " after the cursor in the lost file are not read"
    ]
