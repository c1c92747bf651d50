"""Delivery results, bounce reasons and per-tag counts as the store gives them back, at
the edges the first tests leave open: every detail Postfix logged, a result with no
time, an expiry after mixed outcomes, the MX's own mail in the middle of ours, the
error an operator reads when the store is locked, and the tag counts of one login."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from smtpeter.deliveries import reader
from smtpeter.deliveries.logline import DeliveryResult
from smtpeter.events import Event
from smtpeter.store import MessageRecord, StoreError
from smtpeter.store.sqlite import SQLiteStore
from tests.unit.test_deliveries_store import _line, _results
from tests.unit.test_deliveries_store import store as store
from tests.unit.test_store_busy import locked
from tests.unit.test_tags_metadata import tagged

QID = "4B2C3D1E0F"
WHEN = "2026-12-01T10:00:{:02d}.000001+00:00 relay postfix/smtp[4712]: "


def _read(store: SQLiteStore, log: Path, text: str) -> reader.Counts:
    """Append ``text`` to the log and let the reader record it."""
    with log.open("a") as f:
        f.write(text)
    return reader.run(store, str(log), once=True)


def test_a_result_keeps_every_detail_postfix_logged(store: SQLiteStore, tmp_path: Path) -> None:
    """Each delivery event carries the DSN, relay, delay, delays, reply and Postfix's
    own status word, and the original address when Postfix logged one (only then)."""
    log = tmp_path / "mail.log"
    _read(
        store,
        log,
        WHEN.format(1) + f"{QID}: to=<ann@example.org>, orig_to=<sales@example.org>,"
        " relay=mx.example.net[198.51.100.7]:25, delay=1.25, delays=0.02/0/0.41/0.82,"
        " dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 9A8B7C)\n"
        + _line(QID, "bob@example.net", "bounced", "5.1.1", "550 5.1.1 User unknown", 2),
    )
    assert _results(store) == [
        ("delivered", "ann@example.org", {
            "dsn": "2.0.0", "relay": "mx.example.net[198.51.100.7]:25", "delay": "1.25",
            "delays": "0.02/0/0.41/0.82", "reply": "250 2.0.0 Ok: queued as 9A8B7C",
            "postfix_status": "sent", "original_recipient": "sales@example.org",
        }),
        ("failed", "bob@example.net", {
            "dsn": "5.1.1", "relay": "mx.example.net[198.51.100.7]:25", "delay": "0.8",
            "delays": "0.02/0/0.41/0.4", "reply": "550 5.1.1 User unknown",
            "postfix_status": "bounced",
        }),
    ]  # fmt: skip


def test_a_result_without_a_time_is_recorded_at_the_time_it_is_read(store: SQLiteStore) -> None:
    """A result whose line had no usable time gets the time the store recorded it."""
    result = DeliveryResult(
        queue_id=QID, recipient="ann@example.org", original_recipient=None, status="delivered",
        postfix_status="sent", dsn="2.0.0", relay="local", delay=0.5, delays="0/0/0/0.5",
        reply="delivered to mailbox", agent="local", instance="postfix", logged_at=None,
    )  # fmt: skip
    before = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert store.record_deliveries([result], "journal:postfix", "c1") == 1
    after = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    (event,) = store.events(message="u1")
    assert event.type == "delivered" and before <= event.occurred_at <= after
    assert store.delivery_cursor("journal:postfix") == "c1"


@pytest.mark.parametrize(("forced", "word"), [(False, "expired"), (True, "force-expired")])
def test_an_expiry_fails_only_the_recipients_whose_last_try_was_deferred(
    store: SQLiteStore, tmp_path: Path, forced: bool, word: str
) -> None:
    """When the message expires (or is expired by postsuper -e), a recipient deferred
    and then delivered or bounced does not fail again; one still deferred fails, with
    Postfix's word for the expiry."""
    log = tmp_path / "mail.log"
    later = "connect to mx.example.net[198.51.100.7]:25: Connection timed out"
    _read(
        store,
        log,
        _line(QID, "ann@example.org", "deferred", "4.4.1", later, 1)
        + _line(QID, "bob@example.net", "deferred", "4.4.1", later, 2)
        + _line(QID, "cy@example.com", "deferred", "4.4.1", later, 3)
        + _line(QID, "ann@example.org", "sent", "2.0.0", "250 Ok", 4)
        + _line(QID, "bob@example.net", "bounced", "5.1.1", "550 No such user", 5)
        + "2026-12-06T10:00:00.000001+00:00 relay postfix/qmgr[900]: 4B2C3D1E0F: "
        f"from=<b@bounces.shop.test>, status={'force-expired' if forced else 'expired'},"
        " returned to sender\n",
    )
    expired = [(r, d) for t, r, d in _results(store)[5:]]
    assert expired == [("cy@example.com", {"postfix_status": word, "reason": "expired"})]
    assert [e.recipient for e in store.events(type="failed")] == [
        "cy@example.com",
        "bob@example.net",
    ]


def test_the_mx_s_own_mail_between_ours_does_not_stop_the_batch(
    store: SQLiteStore, tmp_path: Path
) -> None:
    """A result of a message the milter never saw, first in a batch, is skipped and
    the results of ours after it are still recorded."""
    log = tmp_path / "mail.log"
    counts = _read(
        store,
        log,
        _line("77AA88BB99", "carl@example.com", "sent", "2.0.0", "250 Ok", 1)
        + _line(QID, "ann@example.org", "sent", "2.0.0", "250 Ok", 2)
        + _line("77AA88BB99", "dee@example.com", "sent", "2.0.0", "250 Ok", 3)
        + _line(QID, "bob@example.net", "sent", "2.0.0", "250 Ok", 4),
    )
    assert (counts.results, counts.recorded) == (4, 2)
    assert [r for _, r, _ in _results(store)] == ["ann@example.org", "bob@example.net"]


def test_a_reused_queue_id_counts_for_the_newest_message(
    store: SQLiteStore, tmp_path: Path
) -> None:
    """Postfix reuses queue ids: a result goes to the newest message with that id."""
    store.record_message(
        MessageRecord(
            queue_id=QID, message_id="<n2@shop.test>", login="shop",
            envelope_sender="b@bounces.shop.test", recipients=("ann@example.org",),
            features=(), size_before=1, size_after=1, uid="u2",
        )
    )  # fmt: skip
    _read(store, tmp_path / "mail.log", _line(QID, "ann@example.org", "sent", "2.0.0", "250 Ok"))
    assert _results(store) == []
    assert [e.type for e in store.events(message="u2")] == ["delivered"]


@pytest.mark.parametrize(
    ("operation", "mode", "call"),
    [
        ("delivery record", "write", lambda s: s.record_deliveries([], "file:/x", "c")),
        ("delivery cursor", "exclusive", lambda s: s.delivery_cursor("file:/x")),
        ("bounce reasons", "exclusive", lambda s: s.bounce_reasons()),
        ("stats", "exclusive", lambda s: s.stats(tag="newsletter")),
    ],
)
def test_a_locked_store_s_error_names_what_failed(
    store: SQLiteStore, operation: str, mode: str, call: object
) -> None:
    """When the store stays locked, the error the operator reads (in the reader's log
    or the command's output) names the store and the operation that failed."""
    busy = SQLiteStore(store.path, busy_timeout=0.05, retry_seconds=0.2)
    assert callable(call)
    store.close()  # the holder's exclusive lock needs the file to itself
    with locked(busy, 30, mode), pytest.raises(StoreError) as raised:
        call(busy)
    assert str(raised.value).startswith(f"store {store.path}: {operation} failed: ")


def test_tag_stats_for_one_login(tmp_path: Path) -> None:
    """stats --tag --login counts only that login's messages with the tag; messages
    without a login are counted under "-"."""
    store = SQLiteStore(str(tmp_path / "s.db"))
    tagged(store, "m1", "shop", "2026-11-01", ("newsletter",))
    tagged(store, "m2", "news", "2026-11-01", ("newsletter",))
    store.record_message(
        MessageRecord(
            queue_id="Qm3", message_id="<m3@test>", login=None, envelope_sender="s@example.com",
            recipients=("r@example.org",), features=(), size_before=1, size_after=1,
            created_at="2026-11-02T10:00:00.000000Z", uid="m3", tags=("newsletter",),
        )
    )  # fmt: skip
    store.record_events([Event("open", "m2", "2026-11-03T10:00:00.000000Z")])
    row = {"day": "2026-11-01", "messages": 1, "unique_opens": 0, "unique_clicks": 0,
           "bounces": 0}  # fmt: skip

    def counts(login: str) -> list[dict[str, object]]:
        return [
            {k: r[k] for k in ("login", *row)} for r in store.stats(tag="newsletter", login=login)
        ]

    assert counts("news") == [{"login": "news", **row, "unique_opens": 1}]
    assert counts("shop") == [{"login": "shop", **row}]
    assert [(r["login"], r["day"]) for r in store.stats(tag="newsletter")] == [
        ("-", "2026-11-02"),
        ("news", "2026-11-01"),
        ("shop", "2026-11-01"),
    ]


def test_bounce_reasons_fall_back_to_the_type_and_a_dash(tmp_path: Path) -> None:
    """A bounce recorded without kind or reason is counted under its type and "-";
    a complaint without feedback type under "complaint" and "-"; --tag and --login
    together narrow to both."""
    store = SQLiteStore(str(tmp_path / "s.db"))
    tagged(store, "m1", "shop", "2026-11-01", ("newsletter",))
    tagged(store, "m2", "news", "2026-11-01", ("newsletter",))
    store.record_events(
        [
            Event("bounce", "m1", "2026-11-03T10:00:00.000000Z", recipient="a@example.org"),
            Event("complaint", "m1", "2026-11-03T10:00:01.000000Z", recipient="a@example.org"),
            Event("bounce", "m2", "2026-11-03T10:00:02.000000Z", recipient="b@example.org"),
        ]
    )
    assert store.bounce_reasons(tag="newsletter", login="shop") == [
        {"login": "shop", "type": "bounce", "kind": "bounce", "reason": "-", "events": 1,
         "recipients": 1},
        {"login": "shop", "type": "complaint", "kind": "complaint", "reason": "-", "events": 1,
         "recipients": 1},
    ]  # fmt: skip


def test_results_after_the_earlier_ones_were_indexed(store: SQLiteStore, tmp_path: Path) -> None:
    """Once store upkeep has indexed a message's earlier results, a new deferral is
    still numbered after them and an expiry still fails the recipient still deferred."""
    log = tmp_path / "mail.log"
    later = "connect to mx.example.net[198.51.100.7]:25: Connection timed out"
    _read(store, log, _line(QID, "bob@example.net", "deferred", "4.4.1", later, 1))
    while store.index_step():
        pass
    _read(store, log, _line(QID, "bob@example.net", "deferred", "4.4.1", later, 2))
    while store.index_step():
        pass
    _read(
        store,
        log,
        "2026-12-06T10:00:00.000001+00:00 relay postfix/qmgr[900]: 4B2C3D1E0F: "
        "from=<b@bounces.shop.test>, status=expired, returned to sender\n",
    )
    got = [(t, r, d.get("attempt")) for t, r, d in _results(store)]
    assert got == [
        ("deferred", "bob@example.net", "1"),
        ("deferred", "bob@example.net", "2"),
        ("failed", "bob@example.net", None),
    ]
