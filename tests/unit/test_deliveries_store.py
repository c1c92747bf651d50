"""Postfix's delivery results read from a real log file into the store: each recipient
of a message the milter recorded gets its delivered, deferred (numbered) and failed
events, once, across restarts of the reader; the MX's other mail is left out."""

from __future__ import annotations

from pathlib import Path

import pytest

from smtpeter.deliveries import reader
from smtpeter.store import MessageRecord
from smtpeter.store.sqlite import SQLiteStore


def _line(qid: str, to: str, status: str, dsn: str, reply: str, second: int = 0) -> str:
    relay = "none" if status == "deferred" else "mx.example.net[198.51.100.7]:25"
    return (
        f"2026-12-01T10:00:{second:02d}.000001+00:00 relay postfix/smtp[4712]: {qid}: "
        f"to=<{to}>, relay={relay}, delay=0.8, delays=0.02/0/0.41/0.4, dsn={dsn}, "
        f"status={status} ({reply})\n"
    )


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    store = SQLiteStore(str(tmp_path / "smtpeter.db"))
    store.record_message(
        MessageRecord(
            queue_id="4B2C3D1E0F", message_id="<n1@shop.test>", login="shop",
            envelope_sender="b@bounces.shop.test",
            recipients=("ann@example.org", "bob@example.net"), features=(), size_before=1,
            size_after=1, uid="u1",
        )
    )  # fmt: skip
    return store


def _results(store: SQLiteStore) -> list[tuple[str, str | None, dict[str, str]]]:
    return [(e.type, e.recipient, e.detail) for e in reversed(store.events(message="u1"))]


def test_each_recipient_gets_its_result_once_across_restarts(
    store: SQLiteStore, tmp_path: Path
) -> None:
    """A delivered and a refused recipient are recorded with the reply, DSN status and
    relay; reading the log again (a restart) records nothing twice, and the lines
    written later are read from where it stopped."""
    log = tmp_path / "mail.log"
    log.write_text(
        "2026-12-01T10:00:00.000001+00:00 relay postfix/qmgr[900]: 4B2C3D1E0F: "
        "from=<b@bounces.shop.test>, size=912, nrcpt=2 (queue active)\n"
        + _line("4B2C3D1E0F", "ann@example.org", "sent", "2.0.0",
                "250 2.0.0 Ok: queued as 9A8B7C", 1)
        + _line("4B2C3D1E0F", "bob@example.net", "bounced", "5.1.1",
                "host mx.example.net[198.51.100.7] said: 550 5.1.1 User unknown", 2)
        # The MX's own mail: not a message of ours.
        + _line("77AA88BB99", "carl@example.com", "sent", "2.0.0", "250 Ok", 3)
    )  # fmt: skip
    counts = reader.run(store, str(log), once=True)
    assert (counts.lines, counts.results, counts.recorded) == (4, 3, 2)
    (delivered, failed) = _results(store)
    assert delivered[:2] == ("delivered", "ann@example.org")
    assert delivered[2]["dsn"] == "2.0.0" and delivered[2]["reply"].startswith("250 2.0.0 Ok")
    assert delivered[2]["relay"] == "mx.example.net[198.51.100.7]:25"
    assert failed[:2] == ("failed", "bob@example.net") and failed[2]["dsn"] == "5.1.1"
    assert store.events(message="u1")[0].occurred_at == "2026-12-01T10:00:02.000001Z"
    assert reader.run(SQLiteStore(store.path), str(log), once=True).recorded == 0
    with log.open("a") as f:
        f.write(_line("4B2C3D1E0F", "ann@example.org", "sent", "2.0.0", "250 again", 9))
    assert reader.run(SQLiteStore(store.path), str(log), once=True).recorded == 1
    assert len(_results(store)) == 3


def test_deferrals_are_numbered_and_an_expiry_fails_the_deferred(
    store: SQLiteStore, tmp_path: Path
) -> None:
    """Each deferral of a recipient carries its attempt number, counted across runs of
    the reader; when the message expires, the recipient still deferred fails (the
    delivered one does not)."""
    log = tmp_path / "mail.log"
    reply = "connect to mx.example.net[198.51.100.7]:25: Connection timed out"
    log.write_text(
        _line("4B2C3D1E0F", "bob@example.net", "deferred", "4.4.1", reply, 1)
        + _line("4B2C3D1E0F", "ann@example.org", "sent", "2.0.0", "250 Ok", 2)
    )
    reader.run(store, str(log), once=True)
    with log.open("a") as f:
        f.write(_line("4B2C3D1E0F", "bob@example.net", "deferred", "4.4.1", reply, 5))
        f.write("2026-12-06T10:00:00.000001+00:00 relay postfix/qmgr[900]: 4B2C3D1E0F: "
                "from=<b@bounces.shop.test>, status=expired, returned to sender\n")  # fmt: skip
    reader.run(store, str(log), once=True)
    got = [(t, r, d.get("attempt"), d.get("reason")) for t, r, d in _results(store)]
    assert got == [
        ("deferred", "bob@example.net", "1", None),
        ("delivered", "ann@example.org", None, None),
        ("deferred", "bob@example.net", "2", None),
        ("failed", "bob@example.net", None, "expired"),
    ]
    assert [e.type for e in store.events(type="failed")] == ["failed"]
