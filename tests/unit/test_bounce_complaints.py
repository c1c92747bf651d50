"""Complaints: an RFC 5965 feedback report to a return path becomes one complaint
event for the original message and recipient (never a bounce), recorded and
forwarded once; a report naming someone the message never went to records nothing.
The store, the signing keys and sendmail (a shell script) are real."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from smtpeter.bounces.complaints import read_complaint
from smtpeter.bounces.processor import EX_OK, process
from smtpeter.store import MessageRecord, Store
from tests.unit.test_bounce_detect import dsn, fixture_bytes
from tests.unit.test_bounce_processor import SENDER, UID, make_config, return_path, sent
from tests.unit.test_bounce_processor import good_sendmail as good_sendmail
from tests.unit.test_bounce_processor import store as store
from tests.unit.test_bounce_processor_mutants import path_for

ARF = fixture_bytes("arf-abuse.eml")


def test_a_feedback_report_is_one_complaint_and_never_a_bounce(
    tmp_path: Path, store: Store, good_sendmail: Path
) -> None:
    """The abuse report becomes a complaint for the recipient it names, with the
    feedback type and reporting MTA; no bounce is counted; the sender gets the report."""
    cfg = make_config(tmp_path, good_sendmail)
    outcome = process(ARF, return_path(store, cfg), cfg, bounce_id="Q7", store=store)
    assert outcome.status == EX_OK, outcome.what
    assert "detector=complaint events=gone@example.org:complaint" in outcome.what
    [event] = store.events(message=UID)
    assert (event.type, event.recipient) == ("complaint", "gone@example.org")
    assert event.detail["feedback_type"] == "abuse"
    assert event.detail["reporting_mta"] == "mail.example.net"
    assert event.detail["queue_id"] == "Q7"
    assert store.events(message=UID, type="bounce") == []
    assert sum(int(str(row["bounces"])) for row in store.stats(login="alice")) == 0
    assert [(argv[-1], message) for argv, message in sent(tmp_path)] == [(SENDER, ARF)]


def test_the_same_report_delivered_twice_is_one_complaint(
    tmp_path: Path, store: Store, good_sendmail: Path
) -> None:
    """A feedback loop that delivers its report again (another queue id) adds nothing
    and forwards nothing again."""
    cfg = make_config(tmp_path, good_sendmail)
    for queue_id in ("Q1", "Q2"):
        assert (
            process(ARF, return_path(store, cfg), cfg, bounce_id=queue_id, store=store).status == 0
        )
    assert len(store.events(message=UID, type="complaint")) == 1
    assert len(sent(tmp_path)) == 1


def test_a_redacted_recipient_is_the_messages_only_one(
    tmp_path: Path, store: Store, good_sendmail: Path
) -> None:
    """Providers often leave Original-Rcpt-To out: for a message with one recipient the
    complaint is that recipient's; for one with several, the message's alone."""
    redacted = ARF.replace(b"Original-Rcpt-To: <gone@example.org>\n", b"")
    assert read_complaint(redacted) is not None
    cfg = make_config(tmp_path, good_sendmail)
    store.record_message(
        MessageRecord(
            queue_id="4XyZ5", message_id=None, login="alice", envelope_sender="",
            recipients=("solo@example.org",), features=("trackbounces",),
            size_before=1, size_after=1, uid="solo0message0000",
        )
    )  # fmt: skip
    assert process(redacted, path_for(store, cfg, "solo0message0000"), cfg, store=store).status == 0
    [solo] = store.events(message="solo0message0000")
    assert (solo.type, solo.recipient) == ("complaint", "solo@example.org")
    assert process(redacted, return_path(store, cfg), cfg, store=store).status == 0
    [several] = store.events(message=UID, type="complaint")
    assert several.recipient is None


def test_a_report_for_someone_the_message_never_went_to_records_nothing(
    tmp_path: Path, store: Store, good_sendmail: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Complaint poisoning: a report naming another address is dropped with a log line."""
    cfg = make_config(tmp_path, good_sendmail)
    stranger = ARF.replace(
        b"Original-Rcpt-To: <gone@example.org>", b"Original-Rcpt-To: <x@evil.example>"
    )
    with caplog.at_level(logging.WARNING, logger="smtpeter.bounce"):
        outcome = process(stranger, return_path(store, cfg), cfg, store=store)
    assert outcome.status == EX_OK and "events=none" in outcome.what
    assert store.events(message=UID) == []
    assert (
        f"bounce for message {UID} names x@evil.example, which it was never sent to" in caplog.text
    )


@pytest.mark.parametrize(
    "raw",
    [
        dsn("Reporting-MTA: dns; mx.example.org\n\nFinal-Recipient: rfc822; a@example.org\n"
            "Action: failed\nStatus: 5.1.1\n"),
        b"Subject: about feedback-report\n\nContent-Type: message/feedback-report\n",
        ARF.replace(b"report-type=feedback-report", b"report-type=delivery-status"),
        ARF.replace(b"message/feedback-report", b"text/plain"),
        b"",
        b"\x00\xff\r\n\r\n\x80garbage",
        ARF[: len(ARF) // 3],
    ],
    ids=["dsn", "plain-text", "other-report-type", "no-report-part", "empty", "garbage", "cut"],
)  # fmt: skip
def test_anything_else_is_no_complaint(raw: bytes) -> None:
    """Only a feedback-report report with its report part is a complaint; anything else,
    however broken, is not (and never raises)."""
    assert read_complaint(raw) is None


# -- reports sent to bounces.feedback_address ---------------------------------------

FBL = "fbl@bounces.example.com"


def to_fbl(arf: bytes, mail_from: bytes) -> bytes:
    """The fixture report as a feedback loop sends it to the registered address, with
    ``mail_from`` as its Original-Mail-From (b"" leaves the field out)."""
    arf = arf.replace(b"To: <b+token@bounces.example.com>", f"To: <{FBL}>".encode())
    field = b"Original-Mail-From: <b+token@bounces.example.com>\n"
    return arf.replace(field, b"Original-Mail-From: <" + mail_from + b">\n" if mail_from else b"")


@pytest.mark.parametrize("where", ["original-mail-from", "return-path"])
def test_a_report_to_the_feedback_address_finds_the_message_by_its_return_path(
    tmp_path: Path, store: Store, good_sendmail: Path, where: str
) -> None:
    """A provider's loop sends to the registered address, not to the return path: the
    signed return path in the report (its Original-Mail-From, or the returned message's
    Return-Path) names the message; the complaint is recorded and suppresses the
    recipient, and the report is not forwarded to the sender."""
    cfg = make_config(tmp_path, good_sendmail, feedback_address=FBL.upper())
    path = return_path(store, cfg).encode()
    if where == "original-mail-from":
        raw = to_fbl(ARF, path)
    else:
        raw = to_fbl(ARF, b"").replace(
            b"From: <shop@example.com>\n",
            b"Return-Path: <" + path + b">\nFrom: <shop@example.com>\n",
        )
    outcome = process(raw, FBL, cfg, bounce_id="F1", store=store)
    assert outcome.status == EX_OK, outcome.what
    [event] = store.events(message=UID)
    assert (event.type, event.recipient, event.detail["feedback_type"]) == (
        "complaint", "gone@example.org", "abuse",
    )  # fmt: skip
    entry = store.suppression("alice", "gone@example.org")
    assert entry is not None and entry.reason == "complaint"
    assert sent(tmp_path) == []
    # Delivered again: nothing more.
    assert process(raw, FBL, cfg, bounce_id="F2", store=store).status == EX_OK
    assert len(store.events(message=UID)) == 1


def test_a_report_without_a_return_path_finds_the_message_by_its_message_id(
    tmp_path: Path, store: Store, good_sendmail: Path
) -> None:
    """Mail sent without trackbounces has no signed return path: the returned message's
    Message-ID names it; of two messages with that Message-ID, the one sent to the
    recipient the report names."""
    cfg = make_config(tmp_path, good_sendmail, feedback_address=FBL)
    for login, recipient, uid in (
        ("alice", "other@example.org", "other0message000"),
        ("bob", "<Gone@example.org>", "right0message000"),
    ):
        store.record_message(
            MessageRecord(
                queue_id=f"Q{uid[:5]}", message_id="<8787KJKJ3K4J3K4J3K4J3.mail@example.com>",
                login=login, envelope_sender=SENDER, recipients=(recipient,), features=(),
                size_before=1, size_after=1, uid=uid,
            )
        )  # fmt: skip
    outcome = process(to_fbl(ARF, b"owner@example.com"), FBL, cfg, store=store)
    assert outcome.status == EX_OK, outcome.what
    assert [(e.type, e.recipient) for e in store.events(message="right0message000")] == [
        ("complaint", "gone@example.org")
    ]
    assert store.events(message="other0message000") == []
    assert store.suppression("bob", "gone@example.org") is not None
    assert store.suppression("alice", "gone@example.org") is None


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (dsn("Reporting-MTA: dns; mx.example.org\n\nFinal-Recipient: rfc822; gone@example.org\n"
             "Action: failed\nStatus: 5.1.1\n"), "is no feedback report"),
        (to_fbl(ARF, b"").replace(b"<8787KJKJ3K4J3K4J3K4J3.mail@example.com>",
                                  b"<unknown@example.com>"),
         "no message with Message-ID <unknown@example.com>"),
        (to_fbl(ARF, b"b+forged0token@bounces.example.com"), "tampered, unknown or expired"),
        (to_fbl(ARF, b"").replace(b"Message-ID: <8787KJKJ3K4J3K4J3K4J3.mail@example.com>\n", b""),
         "names no message of ours"),
    ],
    ids=["a-bounce", "unknown-message-id", "forged-return-path", "nothing-to-go-by"],
)  # fmt: skip
def test_what_the_feedback_address_drops(
    tmp_path: Path, store: Store, good_sendmail: Path, raw: bytes, why: str
) -> None:
    """A bounce sent to the feedback address, a report about a message we do not know,
    or one with a forged return path: dropped (exit 0) with the reason, nothing
    recorded, nothing forwarded."""
    cfg = make_config(tmp_path, good_sendmail, feedback_address=FBL)
    outcome = process(raw, FBL, cfg, store=store)
    assert outcome.status == EX_OK and outcome.what.startswith("dropped: ")
    assert why in outcome.what
    assert store.events(message=UID) == [] and sent(tmp_path) == []


def test_without_a_feedback_address_a_report_to_it_is_not_ours(
    tmp_path: Path, store: Store, good_sendmail: Path
) -> None:
    """Not configured (the default): mail to that address is no return path of ours."""
    cfg = make_config(tmp_path, good_sendmail)
    outcome = process(to_fbl(ARF, return_path(store, cfg).encode()), FBL, cfg, store=store)
    assert outcome.what == f"dropped: {FBL} is not a return path of ours"
    assert store.events(message=UID) == []
