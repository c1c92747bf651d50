"""The suppression list, the bounce processor, bounce reasons and complaints: what the
third round of mutation testing (scripts/mutation) found unchecked.

What gets an address suppressed and what the 550 at RCPT then says (its enhanced code
and its text, for every kind of entry), how addresses are compared, and what the
bounce processor records, suppresses and forwards. Real SQLite store, real signing
keys, the milter through pymilter's TestCtx."""

from __future__ import annotations

import logging
import re
import sys
import time
from pathlib import Path

import Milter
import pytest

from smtpeter import suppression
from smtpeter.bounces.complaints import read_complaint
from smtpeter.bounces.detect import detect
from smtpeter.bounces.processor import EX_OK, identity, process
from smtpeter.bounces.reasons import judge
from smtpeter.bounces.report import Failure
from smtpeter.events import Event
from smtpeter.relay.milter import RelayContext
from smtpeter.store import MessageRecord, Store, Suppression
from smtpeter.suppression import refusal
from tests.unit.test_bounce_complaints import ARF, FBL, to_fbl
from tests.unit.test_bounce_detect import dsn
from tests.unit.test_bounce_processor import DSN, SENDER, UID, make_config, return_path, script
from tests.unit.test_bounce_processor import store as store
from tests.unit.test_bounce_processor_mutants import far_from_utc as far_from_utc
from tests.unit.test_bounce_processor_mutants import path_for
from tests.unit.test_milter_testctx import relay as relay
from tests.unit.test_suppression import add_message, rcpts, report

DAY = "2026-11-30T08:00:00.0Z"


def entry(reason: str, status: str | None, address: str = "a@example.org") -> Suppression:
    return Suppression("shop", address, reason, status, "u1", DAY)


def bounce(recipient: str | None, **detail: str) -> Event:
    return Event("bounce", "msg0000000000001", DAY, recipient=recipient, detail=detail)


# -- suppression.apply -------------------------------------------------------------------


def test_an_event_without_a_recipient_does_not_stop_the_ones_after_it(store: Store) -> None:
    """A complaint whose recipient was redacted, then a hard bounce: the bounce's
    address is still suppressed."""
    events = [
        Event("complaint", "msg0000000000001", DAY, detail={"feedback_type": "abuse"}),
        bounce("gone@example.org", kind="hard", reason="user-unknown", status="5.1.1"),
    ]
    added = suppression.apply(store, "alice", events, 3)
    assert added == ["gone@example.org (user-unknown)"]
    assert [(e.address, e.reason) for e in store.suppressions()] == [
        ("gone@example.org", "user-unknown")
    ]


def test_a_hard_bounce_stored_without_a_reason_suppresses_as_other(store: Store) -> None:
    """An event with no reason (events of an older version) is suppressed with the
    reason "other", which the RCPT refusal reads as a hard bounce."""
    events = [bounce("Gone@Example.org", kind="hard", status="5.0.0")]
    assert suppression.apply(store, "alice", events, 3) == ["gone@example.org (other)"]
    found = store.suppression("alice", "gone@example.org")
    assert found is not None and (found.reason, found.status) == ("other", "5.0.0")
    assert refusal(found)[2].startswith(
        "<gone@example.org>: suppressed for login alice after a hard bounce (5.0.0 other)"
    )


def test_a_soft_bounce_limit_of_1_suppresses_at_the_first_full_mailbox(
    tmp_path: Path, store: Store
) -> None:
    """soft_bounce_limit 1: one message bouncing with a full mailbox suppresses it."""
    cfg = make_config(tmp_path, tmp_path / "no-sendmail", forward=False, soft_bounce_limit=1)
    add_message(store, "soft1message0001", ("full@example.org",), "alice")
    raw = report("full@example.org", "4.2.2", "452 4.2.2 Over quota")
    assert process(raw, path_for(store, cfg, "soft1message0001"), cfg, store=store).status == EX_OK
    found = store.suppression("alice", "full@example.org")
    assert found is not None and (found.reason, found.status) == (
        "soft-bounces: mailbox-full",
        "4.2.2",
    )


# -- suppression.refusal -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "status", "expected"),
    [
        ("soft-bounces: mailbox-disabled", "4.2.1",
         "550 5.2.1 after repeated soft bounces (4.2.1 mailbox disabled)"),
        ("soft-bounces: mailbox-disabled", "5.2.1",
         "550 5.2.1 after repeated soft bounces (5.2.1 mailbox disabled)"),
        ("soft-bounces: mailbox-full", None,
         "550 5.2.2 after repeated soft bounces (mailbox full)"),
        ("soft-bounces: mailbox-full", "2.0.0",
         "550 5.2.2 after repeated soft bounces (2.0.0 mailbox full)"),
        ("user-unknown", None, "550 5.1.1 after a hard bounce (user unknown)"),
        ("host-unknown", None, "550 5.1.1 after a hard bounce (host unknown)"),
        ("not-accepted", None, "550 5.1.1 after a hard bounce (not accepted)"),
        ("other", None, "550 5.1.1 after a hard bounce (other)"),
        ("not-accepted", "5.1.10", "550 5.1.10 after a hard bounce (5.1.10 not accepted)"),
        ("manual", None, "550 5.7.1 after being added to the list (manual)"),
    ],
    ids=["disabled-4xx", "disabled-5xx", "soft-no-status", "soft-odd-status",
         "hard-no-status", "host-no-status", "null-mx-no-status", "other-no-status",
         "null-mx", "manual"],
)  # fmt: skip
def test_the_refusal_code_and_cause_for_every_kind_of_entry(
    reason: str, status: str | None, expected: str
) -> None:
    """The enhanced code follows the entry's status (made permanent), or the cause's
    own code without one; the text never shows a status that is not there."""
    code, enhanced, text = refusal(entry(reason, status))
    prefix = "<a@example.org>: suppressed for login shop "
    assert text.startswith(prefix) and text.endswith(" on 2026-11-30")
    assert f"{code} {enhanced} {text.removeprefix(prefix)}" == f"{expected} on 2026-11-30"


def test_a_refusal_text_is_at_most_400_characters() -> None:
    """A reply of 401 characters (a long reason an administrator gave) is cut to 400
    ending in "..."; one of exactly 400 is kept whole."""
    base = refusal(entry("", None))[2]
    exact = refusal(entry("r" * (400 - len(base)), None))[2]
    assert len(exact) == 400 and exact.endswith(") on 2026-11-30")
    long = refusal(entry("r" * (401 - len(base)), None))[2]
    assert len(long) == 400 and long.endswith(") on 2026-1...")


# -- addresses.key -------------------------------------------------------------------------


def test_an_address_starting_or_ending_in_x_keeps_its_letters(
    store: Store, relay: RelayContext
) -> None:
    """<Xavier@example.orgX> is stored, found and refused as xavier@example.orgx."""
    assert store.suppress("alice", "<Xavier@Example.ORGX>", "user-unknown", status="5.1.1")
    assert [e.address for e in store.suppressions()] == ["xavier@example.orgx"]
    relay.store.suppress("plain", "<Xena@Example.org>", "user-unknown", status="5.1.1")
    [(rc, reply)] = rcpts(relay, "plain", "XENA@example.org")
    assert rc == Milter.REJECT and "<xena@example.org>: suppressed" in str(reply)


# -- complaints --------------------------------------------------------------------------


def arf(original_rcpt_to: str | None) -> bytes:
    """The fixture's abuse report with another Original-Rcpt-To (None: left out)."""
    field = b"Original-Rcpt-To: <gone@example.org>\n"
    value = b"" if original_rcpt_to is None else f"Original-Rcpt-To: {original_rcpt_to}\n".encode()
    assert field in ARF
    return ARF.replace(field, value)


@pytest.mark.parametrize(
    ("written", "recipient"),
    [
        ("rfc822; gone@example.org", "gone@example.org"),
        ("RFC822;Gone@Example.org", "gone@example.org"),
        ("rfc822; <gone@example.org>", "gone@example.org"),
        ("<Xavier@example.org>", "xavier@example.org"),
        ("rfc822; Xavier@example.orgX", "xavier@example.orgx"),
        ("redacted", None),
        ("Gone User <gone@example.org>", None),
        (None, None),
    ],
    ids=["typed", "typed-no-space", "typed-brackets", "x-bracketed", "x-typed", "redacted",
         "display-name", "left-out"],
)  # fmt: skip
def test_the_reported_recipient_in_every_form_a_feedback_loop_writes_it(
    written: str | None, recipient: str | None
) -> None:
    """Original-Rcpt-To with or without its rfc822 type and angle brackets is the bare,
    lower-cased address; a redacted value or one that is no bare address names no one."""
    complaint = read_complaint(arf(written))
    assert complaint is not None and complaint.feedback_type == "abuse"
    assert complaint.recipient == recipient


def test_a_redacted_complaint_suppresses_the_only_recipient_and_no_one_of_several(
    tmp_path: Path, store: Store
) -> None:
    """A report without its recipient suppresses the message's one recipient; for a
    message to two, it suppresses neither (it cannot tell which complained)."""
    cfg = make_config(tmp_path, tmp_path / "no-sendmail", forward=False)
    add_message(store, "solo0message0000", ("Solo@Example.org",), "alice")
    add_message(store, "pair0message0000", ("one@example.org", "two@example.org"), "alice")
    solo = process(arf("redacted"), path_for(store, cfg, "solo0message0000"), cfg, store=store)
    assert solo.status == EX_OK and "events=solo@example.org:complaint" in solo.what
    pair = process(arf(None), path_for(store, cfg, "pair0message0000"), cfg, store=store)
    assert pair.status == EX_OK and "events=-:complaint" in pair.what
    [event] = store.events(message="pair0message0000")
    assert (event.type, event.recipient) == ("complaint", None)
    assert [(e.address, e.reason) for e in store.suppressions()] == [
        ("solo@example.org", "complaint")
    ]


def test_two_recipients_complaining_of_one_message_are_two_complaints(
    tmp_path: Path, store: Store
) -> None:
    """Two recipients at one provider report the same message (the same Arrival-Date):
    each report is a complaint of its own, and both are suppressed; each report
    delivered again adds nothing."""
    cfg = make_config(tmp_path, tmp_path / "no-sendmail", forward=False)
    reports = [arf("<gone@example.org>"), arf("<full@example.org>"), arf(None)]
    for raw in reports + reports:
        assert process(raw, return_path(store, cfg), cfg, store=store).status == EX_OK
    complaints = store.events(message=UID, type="complaint")
    assert sorted(str(e.recipient) for e in complaints) == [
        "None", "full@example.org", "gone@example.org",
    ]  # fmt: skip
    assert len({e.detail["bounce_id"] for e in complaints}) == 3
    assert sorted(e.address for e in store.suppressions()) == [
        "full@example.org", "gone@example.org",
    ]  # fmt: skip


def test_a_complaint_event_keeps_what_the_report_says(tmp_path: Path, store: Store) -> None:
    """Feedback type, reporting MTA, the provider's User-Agent, the bounce's queue id
    and the report's identity are stored with the complaint."""
    cfg = make_config(tmp_path, tmp_path / "no-sendmail", forward=False)
    assert process(ARF, return_path(store, cfg), cfg, bounce_id="Q7", store=store).status == 0
    [event] = store.events(message=UID)
    assert event.detail == {
        "feedback_type": "abuse",
        "bounce_id": event.detail["bounce_id"],
        "reporting_mta": "mail.example.net",
        "user_agent": "SomeGenerator/1.0",
        "queue_id": "Q7",
    }
    assert re.fullmatch(r"[0-9a-f]{32}", event.detail["bounce_id"])


# -- the processor ----------------------------------------------------------------------


def test_a_bounce_delivered_again_after_the_time_zone_changed_is_still_the_same(
    tmp_path: Path, store: Store, far_from_utc: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bounce's identity reads its Arrival-Date as a UTC instant: delivered again
    once the machine's time zone is another, it is recognised and recorded once."""
    cfg = make_config(tmp_path, tmp_path / "no-sendmail", forward=False)
    raw = report("gone@example.org", "5.1.1", "550 5.1.1 User unknown")
    assert process(raw, return_path(store, cfg), cfg, store=store).status == EX_OK
    monkeypatch.setenv("TZ", "UTC0")
    time.tzset()
    again = process(raw, return_path(store, cfg), cfg, store=store)
    assert again.status == EX_OK and "(delivered again)" in again.what
    assert len(store.events(message=UID, type="bounce")) == 1


def test_a_report_with_8bit_fields_is_still_a_complaint(tmp_path: Path, store: Store) -> None:
    """A UTF-8 User-Agent and an internationalised recipient (SMTPUTF8) in the report:
    the complaint is recorded with them read as UTF-8, and the recipient suppressed
    (the email package had given those fields as Header objects, and the report was
    dropped as no complaint); bytes that are not UTF-8 read as replacement characters."""
    cfg = make_config(tmp_path, tmp_path / "no-sendmail", forward=False)
    add_message(store, "utf8message00000", ("jörg@example.org",), "alice")
    raw = arf("<Jörg@example.org>").replace(
        b"User-Agent: SomeGenerator/1.0", "User-Agent: Générateur/1.0".encode()
    )
    outcome = process(raw, path_for(store, cfg, "utf8message00000"), cfg, store=store)
    assert outcome.status == EX_OK and "detector=complaint" in outcome.what, outcome.what
    [event] = store.events(message="utf8message00000")
    assert (event.type, event.recipient, event.detail["user_agent"]) == (
        "complaint", "jörg@example.org", "Générateur/1.0",
    )  # fmt: skip
    assert [e.address for e in store.suppressions()] == ["jörg@example.org"]
    latin1 = read_complaint(ARF.replace(b"SomeGenerator/1.0", b"G\xe9n\xe9rateur/1.0"))
    assert latin1 is not None and latin1.user_agent == "G\ufffdn\ufffdrateur/1.0"


def test_the_fields_of_a_report_as_it_gives_them(tmp_path: Path) -> None:
    """Feedback type (lower-cased, at most 64 characters, "other" without one), reporting
    MTA without its type (none when absent or empty), User-Agent and Arrival-Date
    unfolded, the User-Agent cut to 200 characters."""
    base = read_complaint(ARF)
    assert base is not None
    assert (base.feedback_type, base.reporting_mta, base.user_agent, base.arrival_date) == (
        "abuse", "mail.example.net", "SomeGenerator/1.0", "Thu, 8 Mar 2026 14:00:00 EDT",
    )  # fmt: skip
    folded = ARF.replace(b"Feedback-Type: abuse", b"Feedback-Type: " + b"F" * 70)
    folded = folded.replace(b"Reporting-MTA: dns; mail.example.net", b"Reporting-MTA: dns;mx;b")
    folded = folded.replace(b"User-Agent: SomeGenerator/1.0", b"User-Agent: Some\n  " + b"u" * 300)
    folded = folded.replace(b"Arrival-Date: Thu, 8 Mar", b"Arrival-Date: Thu,\n 8  Mar")
    c = read_complaint(folded)
    assert c is not None and (c.feedback_type, c.reporting_mta, c.arrival_date) == (
        "f" * 64, "mx;b", "Thu, 8 Mar 2026 14:00:00 EDT",
    )  # fmt: skip
    assert c.user_agent == ("Some " + "u" * 300)[:200]
    bare = ARF.replace(b"Feedback-Type: abuse\n", b"").replace(
        b"User-Agent: SomeGenerator/1.0\n", b""
    )
    bare = bare.replace(b"Arrival-Date: Thu, 8 Mar 2026 14:00:00 EDT\n", b"")
    for mta, expected in [(b"", None), (b"Reporting-MTA: dns;\n", None),
                          (b"Reporting-MTA: mail.example.net\n", "mail.example.net")]:  # fmt: skip
        c = read_complaint(bare.replace(b"Reporting-MTA: dns; mail.example.net\n", mta))
        assert c is not None
        assert (c.feedback_type, c.reporting_mta, c.user_agent, c.arrival_date) == (
            "other", expected, None, None,
        )  # fmt: skip


BARE = (
    "Reporting-MTA: dns; mx.example.org\n\n"
    "Final-Recipient: rfc822; gone@example.org\nAction: failed\nStatus: 5.1.1\n"
)


def key(raw: bytes) -> str:
    return identity(raw, UID, detect(raw).failures)


def test_a_bounce_without_arrival_date_is_told_by_its_own_date_wherever_it_stands() -> None:
    """Two bounces with the same body told apart by their Date, also when it is the
    first header; a Date line in the body is no Date of the bounce's own; 8-bit bytes
    in a Date do not stop it."""
    body = dsn(BARE)
    monday = b"Date: Mon, 30 Nov 2026 10:00:00 +0000\n" + body
    tuesday = b"Date: Tue, 1 Dec 2026 10:00:00 +0000\n" + body
    assert key(monday) != key(tuesday)
    quoting = dsn(BARE).replace(b"See the report.", b"See the report.\nDate: Mon, 30 Nov 2026")
    assert key(quoting) != key(quoting.replace(b"See the report.", b"See below."))
    odd = b"Date: Mon, 30 Nov 2026 10:00:00 +0000 (\xe9t\xe9)\n" + body
    assert re.fullmatch(r"[0-9a-f]{32}", key(odd))
    arrival = dsn(BARE.replace("\n\n", "\nArrival-Date: Mon, 30 Nov 2026 \xe9\n\n", 1))
    assert re.fullmatch(r"[0-9a-f]{32}", key(arrival))


@pytest.mark.parametrize(
    "raw",
    [b"From: MAILER-DAEMON@mx.example.org\nSubject: Undelivered Mail",
     b"Subject: Mail delivery failed\nDate: Mon, 30 Nov 2026 10:00:00 +0000\n"],
    ids=["headers-only", "headers-only-with-date"],
)  # fmt: skip
def test_a_bounce_that_is_headers_only_is_processed(
    tmp_path: Path, store: Store, raw: bytes
) -> None:
    """No blank line, no body: nothing recorded, exit 0 (never a crash that Postfix
    would retry for ever)."""
    cfg = make_config(tmp_path, tmp_path / "no-sendmail", forward=False)
    outcome = process(raw, return_path(store, cfg), cfg, store=store)
    assert outcome.status == EX_OK and outcome.what.endswith("events=none"), outcome.what
    assert store.events(message=UID) == []


def test_the_log_names_each_stranger_and_each_suppression_exactly(
    tmp_path: Path, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """One warning per reported recipient the message never went to, one line per
    address suppressed, with the login and the message."""
    cfg = make_config(tmp_path, tmp_path / "no-sendmail", forward=False)
    raw = report("gone@example.org", "5.1.1", "550 5.1.1 User unknown").replace(
        b"Final-Recipient",
        b"Final-Recipient: rfc822; x@evil.example\nAction: failed\n"
        b"Status: 5.1.1\n\nFinal-Recipient",
        1,
    )
    with caplog.at_level(logging.INFO, logger="smtpeter.bounce"):
        assert process(raw, return_path(store, cfg), cfg, store=store).status == EX_OK
    assert caplog.messages == [
        f"bounce for message {UID} names x@evil.example, which it was never sent to: not recorded",
        f"suppressed gone@example.org (user-unknown) for login alice after a bounce or"
        f" complaint of message {UID}",
    ]


def test_a_store_fault_after_forwarding_is_logged_and_not_retried(
    tmp_path: Path, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """The store fails between the forward and its mark (here: sendmail takes the
    bounce, then the table is gone): exit 0, as forwarded, and an error line naming
    the bounce, the message and the fault (a retry would forward it twice)."""
    moved = "ALTER TABLE bounce_reports RENAME TO away"
    sendmail = script(
        tmp_path,
        "sendmail-then-fault",
        f'cat >/dev/null\n{sys.executable} -c "import sqlite3; '
        f"sqlite3.connect('{store.path}').execute('{moved}')\"\n",
    )
    cfg = make_config(tmp_path, sendmail)
    with caplog.at_level(logging.ERROR, logger="smtpeter.bounce"):
        outcome = process(DSN, return_path(store, cfg), cfg, store=store)
    assert outcome.status == EX_OK and outcome.what.endswith(f"; forwarded to {SENDER}")
    [event] = store.events(message=UID)
    [line] = caplog.messages
    prefix = f"bounce {event.detail['bounce_id']} of message {UID}: could not mark it forwarded: "
    assert line.startswith(prefix) and "bounce_reports" in line.removeprefix(prefix), line


RETURNED = b"Content-Type: message/rfc822\nContent-Disposition: inline\n\n"
MESSAGE_ID = "<8787KJKJ3K4J3K4J3K4J3.mail@example.com>"


@pytest.mark.parametrize(
    "third_part",
    [b"Content-Type: message/global\n\n",
     b"Content-Type: message/global-headers\n\n",
     b"Content-Type: text/rfc822-headers\n\n",
     b"Content-Type: text/rfc822-headers\n\n\n",
     b"Content-Type: text/rfc822-headers\n\nX-Mailer: shop 1.0\n"],
    ids=["global", "global-headers", "rfc822-headers", "rfc822-headers-blank-line-first",
         "rfc822-headers-x-first"],
)  # fmt: skip
def test_the_returned_message_is_read_in_every_form_of_the_third_part(third_part: bytes) -> None:
    """The returned message (RFC 6533 message/global) or only its headers (text/rfc822-
    headers, message/global-headers), even after a blank line: its Message-ID and
    Return-Path are what a report to the feedback address is matched by."""
    assert RETURNED in ARF
    raw = ARF.replace(RETURNED, third_part + b"Return-Path: <b+tok@bounces.example.com>\n")
    complaint = read_complaint(raw)
    assert complaint is not None
    assert (complaint.message_id, complaint.return_paths) == (
        MESSAGE_ID, ("b+token@bounces.example.com", "b+tok@bounces.example.com"),
    )  # fmt: skip


def sent_with_message_id(store: Store, uid: str, recipients: tuple[str, ...]) -> None:
    store.record_message(
        MessageRecord(
            queue_id="4XyZ7", message_id=MESSAGE_ID, login="alice", envelope_sender=SENDER,
            recipients=recipients, features=(), size_before=1, size_after=1, uid=uid,
        )
    )  # fmt: skip


def test_a_report_to_the_feedback_address_matched_by_message_id_says_what_it_found(
    tmp_path: Path, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """One message with the Message-ID but not to the recipient named: it is that
    message's, and the stranger is logged, not recorded; two messages and no recipient
    to choose by: dropped, saying how many; a bounce sent there: dropped, saying so."""
    cfg = make_config(tmp_path, tmp_path / "no-sendmail", feedback_address=FBL)
    sent_with_message_id(store, "byid0message0001", ("ann@example.org",))
    with caplog.at_level(logging.WARNING, logger="smtpeter.bounce"):
        outcome = process(to_fbl(ARF, b""), FBL, cfg, store=store)
    assert outcome.status == EX_OK and "events=none" in outcome.what, outcome.what
    assert not outcome.what.startswith("dropped")
    assert caplog.messages == [
        "bounce for message byid0message0001 names gone@example.org, which it was never"
        " sent to: not recorded"
    ]
    sent_with_message_id(store, "byid0message0002", ("bob@example.org",))
    redacted = to_fbl(arf(None), b"")
    outcome = process(redacted, FBL, cfg, store=store)
    assert outcome.what == (
        f"dropped: feedback report to the feedback address: 2 messages with Message-ID {MESSAGE_ID}"
    )
    assert store.events(message="byid0message0001") == []
    assert store.events(message="byid0message0002") == []
    bounce_to_fbl = process(DSN, FBL.upper(), cfg, store=store)
    assert (
        bounce_to_fbl.what
        == f"dropped: mail to the feedback address {FBL.upper()} is no feedback report"
    )


def test_a_report_without_the_returned_message_is_still_a_complaint() -> None:
    """Some loops send only the first two parts: the complaint is read, with no
    Message-ID and only the report's own Original-Mail-From to go by."""
    start = ARF.index(b"--part1_13d.2e68ed54_boundary\nContent-Type: message/rfc822")
    raw = ARF[:start] + b"--part1_13d.2e68ed54_boundary--\n"
    complaint = read_complaint(raw)
    assert complaint is not None and complaint.recipient == "gone@example.org"
    assert (complaint.message_id, complaint.return_paths) == (
        None, ("b+token@bounces.example.com",),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("status", "diagnostic", "kind", "reason"),
    [("5.1.7", "553 5.1.7 <shop@example.com>: user unknown", "soft", "sender-rejected"),
     ("4.1.1", "550 user unknown", "soft", "user-unknown"),
     ("5.1.1", "550 user unknown", "hard", "user-unknown")],
    ids=["sender-by-code", "unknown-user-under-4xx", "unknown-user-under-5xx"],
)  # fmt: skip
def test_a_failure_is_judged_by_its_own_status(
    status: str, diagnostic: str | None, kind: str, reason: str
) -> None:
    """x.1.7 is the sender refused, whatever the reply adds; an unknown user is hard
    only under 5.x.x."""
    judged = judge(Failure("a@example.org", status, "hard", diagnostic, None, None))
    assert (judged.kind, judged.reason) == (kind, reason)
