"""Postfix's delivery results read from the systemd journal, as on a Debian 12
without rsyslog: real journal files written by systemd-journal-remote from journal
export format, read back by the real journalctl (``--file``); a real store. Also
which source `smtpeter deliveries` picks (deliveries.source auto)."""

from __future__ import annotations

import logging
import os
import shutil
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from smtpeter import config
from smtpeter.deliveries import journal, reader
from smtpeter.store.sqlite import SQLiteStore
from tests.unit.test_deliveries_store import _line, _results
from tests.unit.test_deliveries_store import store as store

JOURNAL_REMOTE = "/lib/systemd/systemd-journal-remote"
QID = "4B2C3D1E0F"
BOOT = "0123456789abcdef0123456789abcdef"
# 2026-12-01T10:00:00Z in microseconds: entry n is logged n seconds later.
T0 = int(datetime(2026, 12, 1, 10, tzinfo=UTC).timestamp()) * 1_000_000

pytestmark = pytest.mark.skipif(
    shutil.which("journalctl") is None or not os.access(JOURNAL_REMOTE, os.X_OK),
    reason="needs journalctl and systemd-journal-remote (package systemd-journal-remote)",
)

Fields = Sequence[tuple[str, str | bytes]]


def _message(to: str, status: str, dsn: str, reply: str, qid: str = QID) -> str:
    """A result as Postfix logs it, without the syslog header (journald's MESSAGE)."""
    return _line(qid, to, status, dsn, reply).split(": ", 1)[1].rstrip("\n")


def postfix(message: str | bytes, program: str = "postfix/smtp") -> Fields:
    """An entry as journald stores what a Postfix daemon sends to /dev/log."""
    comm = program.rsplit("/", 1)[-1]
    return [("_COMM", comm), ("SYSLOG_IDENTIFIER", program), ("PRIORITY", "6"),
            ("MESSAGE", message)]  # fmt: skip


def _export(fields: Fields) -> bytes:
    """One entry in journal export format; values with a line break (or bytes) in
    its binary form."""
    out = b""
    for name, value in fields:
        data = value.encode() if isinstance(value, str) else value
        if isinstance(value, bytes) or b"\n" in data:
            out += name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += name.encode() + b"=" + data + b"\n"
    return out + b"\n"


class Journal:
    """A journal file that entries are appended to, as journald would."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0

    def write(self, *entries: Fields) -> None:
        blob = b""
        for fields in entries:
            self.count += 1
            stamp = [("__REALTIME_TIMESTAMP", str(T0 + self.count * 1_000_000)),
                     ("__MONOTONIC_TIMESTAMP", str(self.count)), ("_BOOT_ID", BOOT)]  # fmt: skip
            blob += _export([*stamp, *fields])
        subprocess.run(
            [JOURNAL_REMOTE, f"--output={self.path}", "-"],
            input=blob,
            check=True,
            capture_output=True,
            timeout=60,
        )

    def source(
        self, *, from_start: bool = True, journalctl: str = "journalctl"
    ) -> journal.JournalSource:
        return journal.JournalSource(files=[str(self.path)], from_start=from_start,
                                     journalctl=journalctl)  # fmt: skip


@pytest.fixture
def jf(tmp_path: Path) -> Journal:
    return Journal(tmp_path / "system.journal")


SENT = _message("ann@example.org", "sent", "2.0.0", "250 2.0.0 Ok: queued as 9A8B7C")
BOUNCED = _message("bob@example.net", "bounced", "5.1.1", "550 5.1.1 User unknown")
DEFERRED = _message("bob@example.net", "deferred", "4.4.1", "connect to mx: timed out")


def _again(store: SQLiteStore, jf: Journal, *, from_start: bool = True) -> reader.Counts:
    """One `smtpeter deliveries --journal --once`, as after a restart (a new store)."""
    return journal.run(SQLiteStore(store.path), jf.source(from_start=from_start), once=True)


def test_results_are_recorded_once_across_restarts(store: SQLiteStore, jf: Journal) -> None:
    """Each recipient's result in the journal is recorded once with the time journald
    received it; a restart records nothing again and goes on with what was logged since."""
    jf.write(
        postfix(f"{QID}: from=<b@bounces.shop.test>, size=912, nrcpt=2 (queue active)",
                "postfix/qmgr"),
        postfix(SENT),
        postfix(BOUNCED, "postfix-out/relay/smtp"),
        # The MX's own mail: not a message of ours.
        postfix(_message("carl@example.com", "sent", "2.0.0", "250 Ok", "77AA88BB99")),
    )  # fmt: skip
    counts = journal.run(store, jf.source(), once=True)
    assert (counts.lines, counts.results, counts.recorded) == (4, 3, 2)
    got = _results(store)
    assert [(t, r, d["dsn"], d["reply"]) for t, r, d in got] == [
        ("delivered", "ann@example.org", "2.0.0", "250 2.0.0 Ok: queued as 9A8B7C"),
        ("failed", "bob@example.net", "5.1.1", "550 5.1.1 User unknown"),
    ]
    times = [e.occurred_at for e in reversed(store.events(message="u1"))]
    assert times == ["2026-12-01T10:00:02.000000Z", "2026-12-01T10:00:03.000000Z"]
    assert store.delivery_cursor("journal:" + str(jf.path)) is not None
    assert _again(store, jf).recorded == 0
    jf.write(postfix(DEFERRED))
    again = _again(store, jf)
    assert (again.lines, again.recorded) == (1, 1)
    assert [t for t, _, _ in _results(store)] == ["delivered", "failed", "deferred"]


def test_a_first_start_begins_at_the_journals_end(
    store: SQLiteStore, jf: Journal, caplog: pytest.LogCaptureFixture
) -> None:
    """Started for the first time on a journal with months of history, the reader
    records none of it, says so, and records what Postfix logs from then on, even
    while it was stopped."""
    jf.write(postfix(SENT))
    with caplog.at_level(logging.INFO, logger="smtpeter.deliveries"):
        assert journal.run(store, jf.source(from_start=False), once=True).recorded == 0
    said = [r.getMessage() for r in caplog.records if r.name == "smtpeter.deliveries"]
    assert said == [
        f"reading delivery results from the journal files {jf.path}, from its end "
        "(--from-start reads what it has)"
    ]
    jf.write(postfix(BOUNCED))
    assert _again(store, jf, from_start=False).recorded == 1
    assert [t for t, _, _ in _results(store)] == ["failed"]


def test_a_first_start_on_a_journal_without_postfix_reads_what_comes(
    store: SQLiteStore, jf: Journal
) -> None:
    """A journal with no Postfix entry yet: the first result Postfix logs is recorded."""
    jf.write([("_COMM", "cron"), ("SYSLOG_IDENTIFIER", "CRON"), ("MESSAGE", "session opened")])
    assert journal.run(store, jf.source(from_start=False), once=True).lines == 0
    jf.write(postfix(SENT))
    assert _again(store, jf, from_start=False).recorded == 1


@pytest.mark.parametrize(
    "fields",
    [
        # A message with a line break: Postfix never logs one.
        postfix(SENT + "\nsecond line"),
        postfix("first line\n" + SENT),
        # MESSAGE given twice (journald keeps both).
        [*postfix(SENT), ("MESSAGE", "4B2C3D1E0F: removed")],
        # No syslog tag.
        [("_COMM", "smtp"), ("MESSAGE", SENT)],
        # Not text: journald keeps it as bytes, and it says nothing once decoded.
        postfix(b"\xff\xfe\x00\x01"),
    ],
    ids=["break-after", "break-before", "twice", "no-tag", "binary"],
)
def test_an_odd_entry_is_passed_over(store: SQLiteStore, jf: Journal, fields: Fields) -> None:
    """An entry that is not one line of Postfix text records nothing, and the reader
    goes on past it to the next result."""
    jf.write(fields, postfix(BOUNCED))
    counts = journal.run(store, jf.source(), once=True)
    assert (counts.lines, counts.recorded) == (2, 1)
    assert [(t, r) for t, r, _ in _results(store)] == [("failed", "bob@example.net")]


def test_a_result_with_bytes_that_are_not_utf8_is_recorded(store: SQLiteStore, jf: Journal) -> None:
    """A remote reply with a byte that is not UTF-8 (journald keeps the message as
    bytes) is recorded with that byte replaced, as the file source does."""
    jf.write(postfix(SENT.replace("queued as", "queued \xe9").encode("latin-1")))
    assert journal.run(store, jf.source(), once=True).recorded == 1
    [(_, _, detail)] = _results(store)
    assert detail["reply"] == "250 2.0.0 Ok: queued \ufffd 9A8B7C"


@pytest.mark.parametrize(
    "fields",
    [
        # Another program that calls itself smtp, or a user's logger forging a tag.
        [("_COMM", "smtp"), ("SYSLOG_IDENTIFIER", "smtp"), ("MESSAGE", SENT)],
        [("_COMM", "smtp"), ("SYSLOG_IDENTIFIER", "postfix/lmtp"), ("MESSAGE", SENT)],
        [("_COMM", "logger"), ("SYSLOG_IDENTIFIER", "postfix/smtp"), ("MESSAGE", SENT)],
        [("_COMM", "python3"), ("SYSLOG_IDENTIFIER", "postfix/smtp"), ("MESSAGE", SENT)],
        # Postfix's, but no delivery agent: a result-like line is no result.
        postfix(SENT, "postfix/smtpd"),
        postfix(SENT, "postfix/cleanup"),
    ],
    ids=["untagged", "other-agent", "logger", "python", "smtpd", "cleanup"],
)
def test_an_entry_of_another_program_is_not_a_result(
    store: SQLiteStore, jf: Journal, fields: Fields
) -> None:
    """Only Postfix's delivery agents' entries count: a result written into the
    journal by any other program is not recorded."""
    jf.write(fields)
    assert journal.run(store, jf.source(), once=True).recorded == 0
    assert _results(store) == []


@pytest.mark.parametrize(
    "program", ["postfix/smtp", "postfix/lmtp", "postfix-out/smtp", "postfix/relay/smtp",
                "postfix/local", "postfix/virtual", "postfix/pipe", "postfix/error"],
)  # fmt: skip
def test_every_delivery_agent_of_every_instance_counts(
    store: SQLiteStore, jf: Journal, program: str
) -> None:
    """The results of each delivery agent, of the default instance, a second one
    (postfix-out) or a master.cf service with its own syslog_name, are recorded."""
    jf.write(postfix(SENT, program))
    assert journal.run(store, jf.source(), once=True).recorded == 1


def test_an_expiry_logged_by_the_queue_manager_fails_the_deferred(
    store: SQLiteStore, jf: Journal
) -> None:
    """qmgr's 'returned to sender' line fails each recipient still deferred."""
    jf.write(
        postfix(SENT),
        postfix(DEFERRED),
        postfix(f"{QID}: from=<b@bounces.shop.test>, status=expired, returned to sender",
                "postfix/qmgr"),
    )  # fmt: skip
    journal.run(store, jf.source(), once=True)
    got = [(t, r, d.get("reason")) for t, r, d in _results(store)]
    assert got[-1] == ("failed", "bob@example.net", "expired")


def test_a_following_reader_records_new_entries_and_stops_when_told(
    store: SQLiteStore, jf: Journal
) -> None:
    """A reader left running (journalctl --follow) records what Postfix logs while
    it runs, and stops soon after it is told to, leaving no journalctl behind."""
    jf.write(postfix(SENT))
    stop = threading.Event()
    got: list[reader.Counts] = []
    thread = threading.Thread(target=lambda: got.append(journal.run(store, jf.source(), stop=stop)))

    def until(done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 15
        while not done() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert done()

    thread.start()
    try:
        until(lambda: len(_results(store)) == 1)
        jf.write(postfix(BOUNCED))
        until(lambda: len(_results(store)) == 2)
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    assert [(c.lines, c.recorded) for c in got] == [(2, 2)]
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert f"--file={jf.path}" not in ps


def test_missing_journalctl_is_a_clear_error(
    store: SQLiteStore, jf: Journal, tmp_path: Path
) -> None:
    """Without journalctl the reader stops with an error naming it."""
    jf.write(postfix(SENT))
    missing = str(tmp_path / "no" / "journalctl")
    for from_start in (True, False):
        with pytest.raises(journal.JournalError, match=rf"cannot run {missing}: No such file"):
            journal.run(store, jf.source(from_start=from_start, journalctl=missing), once=True)


@pytest.mark.parametrize("once", [True, False], ids=["once", "follow"])
def test_journalctl_failing_is_a_clear_error(
    store: SQLiteStore, tmp_path: Path, once: bool
) -> None:
    """journalctl exiting with an error (here: journal files it cannot open) stops
    the reader, once or following, with journalctl's status and its own words."""
    source = journal.JournalSource(files=[str(tmp_path / "gone.journal")], from_start=True)
    with pytest.raises(journal.JournalError) as e:
        journal.run(store, source, once=once, stop=threading.Event())
    assert str(e.value).startswith("journalctl exited with status 1: ")
    assert "No such file or directory" in str(e.value)


def test_a_stored_cursor_journalctl_refuses_is_a_clear_error(
    store: SQLiteStore, jf: Journal
) -> None:
    """A position in the store that is no journal cursor stops the reader with
    journalctl's complaint, rather than reading the journal again from its start."""
    jf.write(postfix(SENT))
    store.record_deliveries([], jf.source().name, "not a cursor")
    with pytest.raises(journal.JournalError, match="status 1: Failed to seek to cursor"):
        journal.run(store, jf.source(), once=True)
    assert _results(store) == []


def _config(tmp_path: Path, store: SQLiteStore, source: str | None = None) -> Path:
    conf = tmp_path / "smtpeter.yaml"
    text = f"store:\n  sqlite_path: {store.path}\n"
    if source is not None:
        text += f"deliveries:\n  source: {source}\n"
    conf.write_text(text)
    return conf


def _cli(conf: Path, *args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [sys.executable, "-m", "smtpeter", "--config", str(conf), "deliveries", *args],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip


def test_the_command_reads_journal_files_and_says_so(
    store: SQLiteStore, jf: Journal, tmp_path: Path
) -> None:
    """`smtpeter deliveries --journal-file F --from-start --once` records the results
    in F and logs which source it read and why."""
    jf.write(postfix(SENT))
    proc = _cli(_config(tmp_path, store), "--journal-file", str(jf.path), "--from-start", "--once")
    assert proc.returncode == 0, proc.stderr
    assert f"deliveries: reading the journal files {jf.path} (--journal)" in proc.stderr
    assert [t for t, _, _ in _results(store)] == ["delivered"]


def test_the_command_without_journalctl_exits_69(
    store: SQLiteStore, jf: Journal, tmp_path: Path
) -> None:
    """`smtpeter deliveries --journal` on a machine without journalctl logs why and
    exits 69 (EX_UNAVAILABLE), so systemd shows the unit failed."""
    (tmp_path / "bin").mkdir()
    proc = _cli(_config(tmp_path, store), "--journal", "--once", path=str(tmp_path / "bin"))
    assert proc.returncode == 69, proc.stderr
    assert "deliveries: cannot read the journal: cannot run journalctl: No such file" in proc.stderr


def test_the_command_follows_the_file_the_config_names(store: SQLiteStore, tmp_path: Path) -> None:
    """deliveries.source naming a log file makes `smtpeter deliveries` read that file,
    and the log says the config chose it."""
    log = tmp_path / "postfix.log"
    log.write_text(_line(QID, "ann@example.org", "sent", "2.0.0", "250 Ok"))
    proc = _cli(_config(tmp_path, store, str(log)), "--once")
    assert proc.returncode == 0, proc.stderr
    assert f"deliveries: reading {log} (deliveries.source names it)" in proc.stderr
    assert [t for t, _, _ in _results(store)] == ["delivered"]


def _main_cf(tmp_path: Path, maillog_file: str | None) -> str:
    directory = tmp_path / "postfix"
    directory.mkdir()
    text = "" if maillog_file is None else f"maillog_file = {maillog_file}\n"
    (directory / "main.cf").write_text(text)
    (directory / "master.cf").write_text("")
    return str(directory)


@pytest.mark.skipif(shutil.which("postconf") is None, reason="needs Postfix's postconf")
@pytest.mark.parametrize(
    "mail_log,maillog_file,want",
    [
        (True, "/var/log/postfix.log", "mail.log"),
        (False, "/var/log/postfix.log", "/var/log/postfix.log"),
        (False, None, None),
        (False, "/dev/stdout", None),
    ],
    ids=["rsyslog", "maillog_file", "journal", "maillog-stdout"],
)
def test_auto_picks_mail_log_then_maillog_file_then_the_journal(
    tmp_path: Path, mail_log: bool, maillog_file: str | None, want: str | None
) -> None:
    """deliveries.source auto reads rsyslog's mail.log when there is one, else the
    file Postfix's maillog_file names, else the journal, and says why."""
    log = tmp_path / "mail.log"
    if mail_log:
        log.write_text("")
    choice = reader.choose("auto", mail_log=str(log),
                           postfix_config_dir=_main_cf(tmp_path, maillog_file))  # fmt: skip
    assert choice.path == (str(log) if want == "mail.log" else want)
    assert choice.journal == (want is None)
    if want is None:
        assert choice.why.startswith(f"deliveries.source auto: no {log}, and Postfix's")
    else:
        assert choice.why.startswith("deliveries.source auto: ")


def test_auto_without_postconf_reads_the_journal(tmp_path: Path) -> None:
    """Without Postfix's postconf (or when it fails) auto goes on to the journal."""
    choice = reader.choose("auto", mail_log=str(tmp_path / "mail.log"),
                           postconf=str(tmp_path / "postconf"))  # fmt: skip
    assert choice.journal


@pytest.mark.parametrize(
    "setting,path", [("journal", None), ("/var/log/postfix.log", "/var/log/postfix.log")]
)
def test_a_source_named_in_the_config_is_used_as_it_is(setting: str, path: str | None) -> None:
    """deliveries.source journal or a path is taken as it is, whatever exists."""
    assert reader.choose(setting, mail_log="/").path == path


@pytest.mark.parametrize("value", ["auto", "journal", "/var/log/postfix.log"])
def test_the_config_accepts_the_source_settings(value: str) -> None:
    """deliveries.source takes auto, journal or an absolute path; auto by default."""
    assert config.parse(None, "x").deliveries.source == "auto"
    assert config.parse({"deliveries": {"source": value}}, "x").deliveries.source == value


@pytest.mark.parametrize("value", ["mail.log", "", "syslog", 3])
def test_the_config_refuses_other_sources(value: object) -> None:
    """A relative path or another word for deliveries.source stops the daemon at start
    with an error naming the setting."""
    with pytest.raises(config.ConfigError, match=r"deliveries\.source"):
        config.parse({"deliveries": {"source": value}}, "x")
