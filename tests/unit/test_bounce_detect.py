"""Bounce detection: a table of bounce messages and what each must yield.

The fixtures live in tests/data/bounces/ (their origins are in its README.md). Each
is read as stored and with its line endings swapped (LF <-> CRLF): both must give
the same report.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from smtpeter.bounces.detect import Failure, Report, detect

BOUNCES = Path(__file__).parent.parent / "data" / "bounces"

NONE = Report((), False, "none", None)

# file: (detector, is_dsn, original Message-ID, [(recipient, kind, status), ...]); the
# kind is the final one, judged by the reason (a 5.2.2 full mailbox is soft).
Expected = tuple[str, bool, str | None, list[tuple[str, str, str | None]]]
TABLE: dict[str, Expected] = {
    "postfix-dsn-hard.eml": ("dsn", True, "<newsletter-42.1@news.example.com>",
                             [("nobody@example.net", "hard", "5.1.1")]),
    "postfix-dsn-expired.eml": ("dsn", True, "<newsletter-42.2@news.example.com>",
                                [("ann@slow.example.org", "soft", "4.4.1")]),
    "postfix-delay.eml": ("dsn", True, "<newsletter-42.3@news.example.com>",
                          [("bob@grey.example.org", "delay", "4.7.1")]),
    "exim-dsn.eml": ("dsn", True, "<newsletter-42.4@news.example.com>",
                     [("gone@example.org", "hard", "5.1.1")]),
    "exim-plain.eml": ("exim", False, "<newsletter-42.5@news.example.com>",
                       [("carol@example.net", "soft", "5.2.1"),
                        ("dave@down.example.net", "soft", None)]),
    "exim-delay.eml": ("exim", False, None, [("erin@busy.example.net", "delay", "4.2.2")]),
    "qmail.eml": ("qmail", False, "<newsletter-42.6@news.example.com>",
                  [("frank@example.com.invalid", "hard", "5.1.2"),
                   ("grace@example.net", "hard", "5.1.1")]),
    "sendmail-dsn.eml": ("dsn", True, "<newsletter-42.7@news.example.com>",
                         [("ghost@example.org", "hard", "5.1.1")]),
    "sendmail-plain.eml": ("sendmail", False, "<newsletter-42.8@news.example.com>",
                           [("henry@old.example.org", "hard", "5.1.1")]),
    "postfix-plain.eml": ("postfix", False, "<newsletter-42.9@news.example.com>",
                          [("ivy@example.net", "hard", "5.1.1")]),
    "office365-dsn.eml": ("dsn", True, "<newsletter-42.10@news.example.com>",
                          [("j.doe@contoso.example", "hard", "5.1.10")]),
    "gmail-dsn.eml": ("dsn", True, "<newsletter-42.11@news.example.com>",
                      [("no.such.user@example.net", "hard", "5.1.1")]),
    "gmail-plain.eml": ("gmail", False, "<newsletter-42.12@news.example.com>",
                        [("jack@example.net", "hard", "5.1.1")]),
    "yahoo.eml": ("yahoo", False, "<newsletter-42.13@news.example.com>",
                  [("kim@example.net", "hard", "5.1.1")]),
    "vacation.eml": ("autoreply", False, "<newsletter-42.14@news.example.com>",
                     [("Jane.Roe@example.org", "autoreply", None)]),
    "outlook-autoreply.eml": ("autoreply", False, "<newsletter-42.15@news.example.com>",
                              [("lena.schmidt@fabrikam.example", "autoreply", None)]),
    "dsn-multi.eml": ("dsn", True, "<newsletter-42.16@news.example.com>",
                      [("Lara.Alias@example.org", "hard", "5.0.0")]),
    "dsn-relayed.eml": ("dsn", True, None, []),
    "global-dsn.eml": ("dsn", True, "<newsletter-42.17@news.example.com>",
                       [("j\u00f6rg@b\u00fccher.example", "hard", "5.1.1")]),
    "exchange-plain.eml": ("exchange", False, "<newsletter-42.18@news.example.com>",
                           [("nina.patel@tailspin.example", "hard", "5.1.1"),
                            ("oscar@tailspin.example", "soft", "5.2.2")]),
    "generic.eml": ("generic", False, "<newsletter-42.19@news.example.com>",
                    [("paul@example.net", "hard", "5.1.1")]),
    "human-reply.eml": ("none", False, None, []),
    "smtp32-attempts.eml": ("smtp32", False, "<newsletter-42.20@news.example.com>",
                            [("rita@slow.example.net", "soft", None)]),
    "smtp32-invalid.eml": ("smtp32", False, "<newsletter-42.21@news.example.com>",
                           [("sam@example.org", "hard", None)]),
    "exchange2003.eml": ("exchange-legacy", False, "<newsletter-42.22@news.example.com>",
                         [("tom@contoso.example", "hard", None),
                          ("uma@contoso.example", "hard", None)]),
    "dsn-action-error.eml": ("dsn", True, "<newsletter-42.23@news.example.com>",
                             [("vic@example.net", "soft", "5.0.0")]),
    "exim-wrapped.eml": ("exim", False, "<newsletter-42.24@news.example.com>",
                         [("wendy@example.de", "hard", "5.1.1")]),
    "qmail-like.eml": ("qmail-like", False, "<newsletter-42.25@news.example.com>",
                       [("xavier@example.net", "soft", None),
                        ("yvonne@example.net", "hard", "5.1.1")]),
    "listing-mailenable.eml": ("listing", False, "<newsletter-42.26@news.example.com>",
                               [("zoe@example.net", "hard", "5.0.0")]),
    "listing-warning.eml": ("listing", False, "<newsletter-42.27@news.example.com>",
                            [("Abe@example.org", "delay", None)]),
    # A feedback report is no bounce (read by bounces/complaints.py, never here).
    "arf-abuse.eml": ("none", False, None, []),
}  # fmt: skip


def fixture_bytes(name: str) -> bytes:
    return (BOUNCES / name).read_bytes()


def swap_line_endings(raw: bytes) -> bytes:
    if b"\r\n" in raw:
        return raw.replace(b"\r\n", b"\n")
    return raw.replace(b"\n", b"\r\n")


def test_every_fixture_is_in_the_table() -> None:
    assert sorted(p.name for p in BOUNCES.glob("*.eml")) == sorted(TABLE)


def test_fixtures_use_both_line_endings() -> None:
    crlf = [name for name in TABLE if b"\r\n" in fixture_bytes(name)]
    assert crlf and len(crlf) < len(TABLE)


@pytest.mark.parametrize("swap", [False, True], ids=["as-stored", "swapped-eol"])
@pytest.mark.parametrize("name", sorted(TABLE))
def test_table(name: str, swap: bool) -> None:
    raw = fixture_bytes(name)
    if swap:
        raw = swap_line_endings(raw)
    detector, is_dsn, original, failures = TABLE[name]
    report = detect(raw)
    assert report.detector == detector
    assert report.is_dsn is is_dsn
    assert report.original_message_id == original
    got = [(f.recipient, f.kind, f.status) for f in report.failures]
    assert got == failures


def test_dsn_fields_in_detail() -> None:
    (failure,) = detect(fixture_bytes("postfix-dsn-hard.eml")).failures
    assert failure == Failure(
        recipient="nobody@example.net",
        status="5.1.1",
        kind="hard",
        diagnostic="smtp; 550 5.1.1 <nobody@example.net>: Recipient address rejected: "
        "User unknown in local recipient table",
        reporting_mta="relay.example.com",
        remote_mta="mx.example.net",
        reason="user-unknown",
    )


def test_remote_mta_comment_and_trailing_dot_are_dropped() -> None:
    (failure,) = detect(fixture_bytes("gmail-dsn.eml")).failures
    assert failure.remote_mta == "mx.example.net"
    assert failure.reporting_mta == "googlemail.com"
    assert failure.diagnostic is not None and "\n" not in failure.diagnostic


def dsn(status_part: str, *, report: bool = True, headers: str = "") -> bytes:
    ctype = (
        "multipart/report; report-type=delivery-status; boundary=BB"
        if report
        else "multipart/mixed; boundary=BB"
    )
    return (
        "From: MAILER-DAEMON@mx.example.org\nTo: b+x@bounce.example.com\n"
        f"Subject: Undelivered Mail Returned to Sender\n{headers}"
        f"MIME-Version: 1.0\nContent-Type: {ctype}\n\n"
        "--BB\nContent-Type: text/plain\n\nSee the report.\n\n"
        f"--BB\nContent-Type: message/delivery-status\n\n{status_part}\n--BB--\n"
    ).encode()


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ("Final-Recipient: rfc822; a@x.example\nAction: failed\nStatus: 5.1.1",
         ("a@x.example", "hard", "5.1.1")),
        ("Final-Recipient: rfc822; a@x.example\nAction: failed\nStatus: 5.7.1 (refused)",
         ("a@x.example", "soft", "5.7.1")),
        ("Final-Recipient: rfc822; a@x.example\nAction: failed\n"
         "Diagnostic-Code: smtp; 554 5.7.1 Rejected", ("a@x.example", "soft", "5.7.1")),
        ("Final-Recipient: rfc822; a@x.example\nAction: failed\n"
         "Diagnostic-Code: smtp; 452 Too many recipients", ("a@x.example", "soft", "4.0.0")),
        ("Final-Recipient: rfc822; a@x.example\nAction: failed",
         ("a@x.example", "unknown", None)),
        ("Final-Recipient: rfc822; a@x.example\nAction: failed\nStatus: 2.0.0",
         ("a@x.example", "unknown", "2.0.0")),
        ("Final-Recipient: rfc822; a@x.example\nAction: delayed\nStatus: 4.4.7",
         ("a@x.example", "delay", "4.4.7")),
        ("final-recipient:RFC822;<A@X.Example.>\naction:FAILED\nstatus:5.1.1",
         ("A@x.example", "hard", "5.1.1")),
        ("Final-Recipient:\n rfc822;\n\ta@x.example\nAction:\n failed\nStatus: 5.1.1",
         ("a@x.example", "hard", "5.1.1")),
        ("Final-Recipient: a@x.example\nAction: failed\nStatus: 5.1.1",
         ("a@x.example", "hard", "5.1.1")),
        ("Final-Recipient: utf-8; \\x{65E5}\\x{672C}@x.example\nAction: failed\nStatus: 5.1.1",
         ("\u65e5\u672c@x.example", "hard", "5.1.1")),
    ],
)  # fmt: skip
def test_dsn_fields(fields: str, expected: tuple[str, str, str | None]) -> None:
    report = detect(dsn("Reporting-MTA: dns; mx.example.org\n\n" + fields + "\n"))
    assert report.detector == "dsn"
    assert [(f.recipient, f.kind, f.status) for f in report.failures] == [expected]


def test_dsn_recipients_without_blank_lines_between_them() -> None:
    report = detect(
        dsn(
            "Reporting-MTA: dns; mx.example.org\n\n"
            "Final-Recipient: rfc822; a@x.example\nAction: failed\nStatus: 5.1.1\n"
            "Final-Recipient: rfc822; b@x.example\nAction: delivered\nStatus: 2.0.0\n"
            "Final-Recipient: rfc822; c@x.example\nAction: failed\nStatus: 4.4.1\n"
        )
    )
    assert [(f.recipient, f.kind) for f in report.failures] == [
        ("a@x.example", "hard"),
        ("c@x.example", "soft"),
    ]


@pytest.mark.parametrize("packed", [False, True], ids=["blank-lines", "packed"])
def test_original_recipient_after_final_recipient_is_the_same_recipient(packed: bool) -> None:
    """Amazon SES writes Action first and Original-Recipient after Final-Recipient: each
    record is still one recipient with its status, blank lines between them or not."""
    sep = "" if packed else "\n"
    report = detect(
        dsn(
            "Reporting-MTA: dns; inbound-smtp.us-west-2.amazonaws.com\n\n"
            "Action: failed\nFinal-Recipient: rfc822; a@x.example\n"
            "Original-Recipient: rfc822; a@x.example\n"
            f"Diagnostic-Code: smtp; 550 5.1.1 Mailbox does not exist\nStatus: 5.1.1\n{sep}"
            "Original-Recipient: rfc822; b@x.example\nFinal-Recipient: rfc822; b@x.example\n"
            "Action: failed\nStatus: 5.2.2\n"
        )
    )
    assert [(f.recipient, f.kind, f.status, f.reason) for f in report.failures] == [
        ("a@x.example", "hard", "5.1.1", "user-unknown"),
        ("b@x.example", "soft", "5.2.2", "mailbox-full"),
    ]


def test_delivery_status_in_a_mislabelled_container_is_read_but_not_a_dsn() -> None:
    report = detect(
        dsn("Final-Recipient: rfc822; a@x.example\nAction: failed\nStatus: 5.1.1\n", report=False)
    )
    assert report.detector == "dsn" and not report.is_dsn
    assert [f.recipient for f in report.failures] == ["a@x.example"]


@pytest.mark.parametrize(
    "fields",
    [
        "Final-Recipient: x400; /C=XX/S=Nobody/\nAction: failed\nStatus: 5.1.1",
        "Final-Recipient: rfc822; not an address\nAction: failed\nStatus: 5.1.1",
        "Final-Recipient: rfc822; @x.example\nAction: failed\nStatus: 5.1.1",
        "Final-Recipient: rfc822; a@\nAction: failed\nStatus: 5.1.1",
        "Final-Recipient: rfc822; a@x.example\nAction: expanded\nStatus: 2.0.0",
        "Final-Recipient: rfc822; a@x.example\nAction: relayed\nStatus: 2.0.0",
    ],
)
def test_dsn_records_that_yield_no_failure(fields: str) -> None:
    assert detect(dsn(fields + "\n")).failures == ()


def test_a_bounce_with_auto_submitted_is_not_an_autoreply() -> None:
    report = detect(
        dsn(
            "Final-Recipient: rfc822; a@x.example\nAction: failed\nStatus: 5.1.1\n",
            headers="Auto-Submitted: auto-replied\n",
        )
    )
    assert report.detector == "dsn"


@pytest.mark.parametrize(
    "headers",
    [
        "Subject: Out of Office: Our May newsletter\n",
        "Subject: Automatic reply: Our May newsletter\n",
        "Subject: Abwesenheitsnotiz: Our May newsletter\n",
        "Subject: =?utf-8?q?R=C3=A9ponse_automatique=3A_hello?=\n",
        "Subject: John Smith is out of the office.\n",
        "Subject: Hello\nAuto-Submitted: auto-replied\n",
        "Subject: Hello\nX-Autoreply: yes\n",
        "Subject: Hello\nPrecedence: auto_reply\n",
    ],
)
def test_autoreply_signals(headers: str) -> None:
    raw = f"From: Ann <ann@x.example>\nTo: b+x@bounce.example.com\n{headers}\nAway.\n".encode()
    report = detect(raw)
    assert report.detector == "autoreply"
    assert report.failures == (
        Failure("ann@x.example", None, "autoreply", report.failures[0].diagnostic, None, None),
    )


def test_autoreply_without_a_usable_sender_has_no_failures() -> None:
    report = detect(b"From: undisclosed\nSubject: Out of office\n\nAway.\n")
    assert report == Report((), False, "autoreply", None)


@pytest.mark.parametrize(
    "headers",
    [
        "Subject: Hello\nAuto-Submitted: auto-generated\n",  # a notification, not a reply
        "Subject: Re: your offer\nPrecedence: bulk\n",
        "Subject: About the office party\n",
    ],
)
def test_not_autoreplies(headers: str) -> None:
    raw = f"From: ann@x.example\n{headers}\nHi there, 550 <a@x.example> rejected\n".encode()
    assert detect(raw) == NONE


def test_generic_needs_a_bounce_like_sender_or_subject() -> None:
    body = "\n550 5.1.1 <a@x.example>: no such user\n"
    assert detect(f"From: ann@x.example\nSubject: hi\n{body}".encode()) == NONE
    report = detect(f"From: MAILER-DAEMON@x.example\nSubject: hi\n{body}".encode())
    assert report.detector == "generic"
    assert [(f.recipient, f.kind, f.status) for f in report.failures] == [
        ("a@x.example", "hard", "5.1.1")
    ]


def test_generic_ignores_4xx_sender_lines_and_our_own_address() -> None:
    raw = (
        b"From: postmaster@x.example\nTo: b+t@bounce.example.com\nSubject: Undeliverable\n\n"
        b"451 4.3.0 <a@x.example> try later\n"
        b"553 5.1.8 <news@example.com>: Sender address rejected\n"
        b"550 5.7.1 <b+t@bounce.example.com> refused\n"
    )
    assert detect(raw) == NONE


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\n\n\n",
        b"\r\n",
        b"\x00" * 100,
        bytes(range(256)) * 64,
        b"garbage without headers",
        b"Subject: \xff\xfe\xfd\n\n\xff\xfe",
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=X\n\n--X\n",
        b'Content-Type: multipart/report; boundary="\n\n',
        b"Content-Type: message/delivery-status\n\nFinal-Recipient: rfc822;\nAction: failed\n",
        b"Content-Type: multipart/mixed; boundary=A\n\n--A\nContent-Type: text/plain;"
        b" charset=no-such-charset\nContent-Transfer-Encoding: base64\n\n!!!notbase64\n--A--\n",
        b"From: =?utf-8?b?invalid?= <\xc3\x28@\xa0\xa1>\nSubject: =?x-bogus?q?=ZZ?=\n\nhi\n",
    ],
)
def test_garbage_gives_nothing(raw: bytes, caplog: pytest.LogCaptureFixture) -> None:
    assert detect(raw) == NONE
    assert not caplog.records


def test_parser_failure_is_caught_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    # The email package recurses once per nesting level; deep enough, it raises
    # RecursionError, which detect() turns into "nothing found" and a warning.
    depth = 5000
    head = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n" % (i, i) for i in range(depth)
    )
    report = detect(b"From: MAILER-DAEMON@x.example\n" + head + b"Content-Type: text/plain\n\nx\n")
    assert report == NONE
    assert [r.levelname for r in caplog.records] == ["WARNING"]


def test_non_utf8_bounce_text_is_read() -> None:
    raw = (
        b"From: MAILER-DAEMON@x.example\nSubject: failure notice\n"
        b"Content-Type: text/plain; charset=iso-8859-1\n\n"
        b"Hi. This is the qmail-send program at x.example.\n\n"
        b"<m\xfcller@x.example>:\nSorry, no mailbox here by that name. (#5.1.1)\n"
    )
    report = detect(raw)
    assert [(f.recipient, f.status) for f in report.failures] == [
        ("m\u00fcller@x.example", "5.1.1")
    ]


def nested(depth: int) -> bytes:
    head = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n" % (i, i) for i in range(depth)
    )
    leaf = b"Content-Type: text/plain\n\n550 5.1.1 <a@x.example> unknown\n"
    return b"From: MAILER-DAEMON@x.example\nSubject: Undeliverable\n" + head + leaf


def test_nesting_is_walked_to_a_cap() -> None:
    assert detect(nested(8)).detector == "generic"
    assert detect(nested(40)) == NONE  # deeper than MAX_DEPTH: not read


def test_huge_messages_are_cheap() -> None:
    hard = fixture_bytes("postfix-dsn-hard.eml")
    boundary = b"--4VdNqs0k7Mz9sRW.1715674867/relay.example.com--"
    # A DSN whose returned message carries a large attachment.
    big_original = hard.replace(boundary, b"x" * 30_000_000 + b"\n" + boundary)
    # Pathological text: one endless line, thousands of unclosed tags, long runs.
    nasty = [
        b"From: MAILER-DAEMON@x.example\nSubject: Undeliverable\n\n" + b"550 " * 2_000_000,
        b"From: MAILER-DAEMON@x.example\nSubject: Undeliverable\n\n550 " + b"a" * 3_000_000,
        b"Content-Type: text/html\nFrom: postmaster@x.example\n\n" + b"<script<" * 400_000,
        b"From: MAILER-DAEMON@x.example\n\nThis is the qmail-send program at " + b"-" * 2_000_000,
        b"From: MAILER-DAEMON@x.example\n\n" + b"\n" * 2_000_000 + b"-" * 500_000,
        b"Subject: x\n\nThe following addresses had permanent fatal errors -----\n"
        + b" " * 2_000_000,
    ]
    started = time.monotonic()
    report = detect(big_original)
    for raw in nasty:
        detect(raw)
    assert time.monotonic() - started < 10
    assert [f.recipient for f in report.failures] == ["nobody@example.net"]


def mutations(raw: bytes, rng: random.Random, count: int) -> list[bytes]:
    out = [raw[: rng.randrange(len(raw))] for _ in range(count // 2)]
    for _ in range(count - len(out)):
        data = bytearray(raw)
        for _ in range(rng.randrange(1, 20)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        out.append(bytes(data))
    return out


@pytest.mark.parametrize("name", sorted(TABLE))
def test_mutated_fixtures_never_raise(name: str, caplog: pytest.LogCaptureFixture) -> None:
    rng = random.Random(name)
    for raw in mutations(fixture_bytes(name), rng, 60):
        report = detect(raw)
        assert isinstance(report, Report)
        for failure in report.failures:
            assert "@" in failure.recipient and failure.recipient == failure.recipient.strip()
    # Not even through detect()'s last-resort handler: the detectors cope on their own.
    assert not caplog.records


def test_postfix_success_report_text_is_not_a_failure() -> None:
    raw = (
        b"From: MAILER-DAEMON@gw.example.org (Mail Delivery System)\n"
        b"Subject: Successful Mail Delivery Report\n\n"
        b"This is the mail system at host gw.example.org.\n\n"
        b"Your message was successfully delivered to the destination(s)\nlisted below.\n\n"
        b"<sam@example.org>: delivery via legacy.example.org[192.0.2.60]:25: 250 2.0.0 Ok\n"
    )
    assert detect(raw) == NONE


def test_a_recipient_reported_twice_counts_once() -> None:
    report = detect(
        dsn(
            "Final-Recipient: rfc822; a@x.example\nAction: failed\nStatus: 5.1.1\n\n"
            "Final-Recipient: rfc822; a@X.EXAMPLE\nAction: failed\nStatus: 5.2.2\n"
        )
    )
    assert [(f.recipient, f.status) for f in report.failures] == [("a@x.example", "5.1.1")]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("Your message did not reach some or all of the intended recipients.\n\n"
         "Did not reach the following recipient: <xena@example.org>\n", ["xena@example.org"]),
        ("Your message\n\n  To: yuri@example.org\n\ndid not reach the following "
         "recipient(s):\n\nyuri@example.org on Wed, 15 May 2024 10:02:11 +0200\n"
         "    The recipient name is not recognized\n", ["yuri@example.org"]),
        # The original's To line, before the heading, is never taken for a recipient.
        ("  To: zed@example.org\n\ndid not reach the following recipient(s):\n\n", []),
    ],
    ids=["one-line", "listing", "heading-only"],
)  # fmt: skip
def test_legacy_exchange_ndrs(body: str, expected: list[str]) -> None:
    """Exchange 5.5 to 2003: the one-line and the listing forms; nothing else."""
    raw = (
        "From: System Administrator <postmaster@contoso.example>\n"
        f"Subject: Undeliverable: hello\n\n{body}"
    ).encode()
    report = detect(raw)
    assert [f.recipient for f in report.failures] == expected
    assert report.detector == ("exchange-legacy" if expected else "none")


def test_smtp32_lines_need_its_x_mailer() -> None:
    """ "undeliverable to ADDR" alone is no IMail bounce without IMail's X-Mailer."""
    body = b"Subject: hi\n\nundeliverable to ann@example.org\n"
    assert detect(body).failures == ()
    imail = (
        b"X-Mailer: <SMTP32 v8.22>\nSubject: Undeliverable Mail\n\n"
        b"undeliverable  to ann@example.org\n"
    )
    [failure] = detect(imail).failures
    # Failed, but no reply says why: soft (hard takes a reason that the address is dead).
    assert (failure.recipient, failure.kind) == ("ann@example.org", "soft")


def test_qmail_paragraphs_need_a_bounce_and_a_marker() -> None:
    """The qmail-like fallback reads nothing from a message that does not say it is a
    bounce, or that has no qmail-style marker line."""
    raw = fixture_bytes("qmail-like.eml")
    person = raw.replace(b"mailer-daemon@", b"xavier.friend@").replace(
        b"Subject: failure notice", b"Subject: re: newsletter"
    )
    assert detect(person).failures == ()
    unmarked = raw.replace(b"--- Below this line is a copy of the message.", b"Thanks.")
    assert detect(unmarked).failures == ()


def test_a_listing_needs_a_bounce_and_lone_addresses() -> None:
    """A heading in a person's mail is no bounce; nor is a heading followed by prose
    that merely mentions an address."""
    person = (
        b"From: Ann <ann@example.org>\nSubject: minutes\n\n"
        b"The following recipients did not receive this message:\n\nbob@example.org\n"
    )
    assert detect(person).failures == ()
    prose = (
        b"From: MAILER-DAEMON@mx.example.org\nSubject: Undeliverable\n\n"
        b"The following recipients did not receive this message:\n\n"
        b"Please write to help@example.org for assistance.\n"
    )
    assert detect(prose).failures == ()


BOUNCE_HEAD = "From: MAILER-DAEMON@mx.example.net\nSubject: Undeliverable mail\n\n"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("User's mailbox is full: <ann@example.net>\nUnable to deliver mail.\n",
         [("ann@example.net", "soft", None)]),
        ("Sent <<< RCPT TO:<bob@example.be>\nReceived >>> 550 5.1.1 unknown user.\n"
         "Unable to deliver message to <bob@example.be>\n",
         [("bob@example.be", "hard", "5.1.1")]),
        ("carl@example.net - no such user here.\n", [("carl@example.net", "hard", None)]),
        (" Local mailbox dora@example.ru is unavailable: user not found\n",
         [("dora@example.ru", "hard", None)]),
        ("The following message, addressed to 'eve@example.uk', failed because it has not"
         " been collected after 30 days\n", [("eve@example.uk", "unknown", None)]),
    ],
    ids=["mailbox-full", "rcpt-then-reply", "mdaemon", "mail-ru", "quoted"],
)  # fmt: skip
def test_one_line_phrases(body: str, expected: list[tuple[str, str, str | None]]) -> None:
    """The address and the phrase on one line, no code: read, the kind decided by the
    reason (a full mailbox soft, an unknown user hard; unknown when the phrase names
    none) or by the refusal on the next line."""
    report = detect((BOUNCE_HEAD + body).encode())
    assert report.detector == "phrases"
    assert [(f.recipient, f.kind, f.status) for f in report.failures] == expected


def test_one_line_phrases_need_a_bounce() -> None:
    """The same phrase in a person's mail is no bounce."""
    raw = b"From: Ann <ann@example.org>\nSubject: hi\n\nIntended recipient: bob@example.org\n"
    assert detect(raw).failures == ()


def test_a_reason_run_on_into_the_domain_is_cut_off() -> None:
    """Sendmail-style "addr...User unknown" without a space gives the address, not
    "addr...user" (which the processor would drop as never sent to)."""
    raw = (BOUNCE_HEAD + "\t* [sub@earthlink.example]: 550 sub@earthlink.example...User"
           " account is overquota\n").encode()  # fmt: skip
    assert [f.recipient for f in detect(raw).failures] == ["sub@earthlink.example"]


@pytest.mark.parametrize(
    "body",
    [
        # Exim
        "This message was created automatically by mail delivery software.\n\n"
        "A message that you sent could not be delivered to one or more of its\n"
        "recipients. This is a permanent error. The following address(es) failed:\n\n"
        "  real@mail.example.net\n    (generated from alias@example.org)\n"
        "    550 5.1.1 <real@mail.example.net>: User unknown\n",
        # Postfix, pre-DSN
        "This is the mail system at host mx.example.org.\n\n"
        "<real@mail.example.net> (expanded from <alias@example.org>): host\n"
        "    mail.example.net[192.0.2.5] said: 550 5.1.1 User unknown\n",
        # Sendmail, pre-DSN
        "   ----- The following addresses had permanent fatal errors -----\n"
        "<real@mail.example.net>\n    (reason: 550 5.1.1 User unknown)\n"
        "    (expanded from: <alias@example.org>)\n",
    ],
    ids=["exim", "postfix", "sendmail"],
)
def test_the_alias_a_failed_address_was_expanded_from_is_kept(body: str) -> None:
    """A bounce of an alias's target names the alias too: it is kept as the original,
    the address the message was sent to."""
    raw = (BOUNCE_HEAD + body).encode()
    [failure] = detect(raw).failures
    assert (failure.recipient, failure.original, failure.kind) == (
        "real@mail.example.net",
        "alias@example.org",
        "hard",
    )


def test_office_365_address_with_its_mailto_link() -> None:
    """Office 365's text part writes "addr<mailto:addr>": the address is read."""
    raw = (
        BOUNCE_HEAD + "Delivery has failed to these recipients or groups:\n\n"
        "ann@contoso.example<mailto:ann@contoso.example>\n"
        "The email address you entered couldn't be found.\n\n"
        "Diagnostic information for administrators:\n\nGenerating server: BN1PR.example\n\n"
        "ann@contoso.example\nRemote Server returned '550 5.1.10 RESOLVER.ADR.RecipientNotFound'\n"
    ).encode()
    [failure] = detect(raw).failures
    assert (failure.recipient, failure.status, failure.kind) == (
        "ann@contoso.example", "5.1.10", "hard",
    )  # fmt: skip


def test_a_dsn_recipient_without_a_domain_is_kept_as_its_local_part() -> None:
    """ "rfc822; dave" (a local delivery's report) gives "dave", for the processor to
    match against the message's recipients; a non-rfc822 type gives nothing."""
    report = dsn("Reporting-MTA: dns; mx.example.org\n\n"
                 "Final-Recipient: rfc822; dave\nAction: failed\nStatus: 5.1.1\n")  # fmt: skip
    assert [(f.recipient, f.kind) for f in detect(report).failures] == [("dave", "hard")]
    x400 = dsn("Reporting-MTA: dns; mx.example.org\n\n"
               "Final-Recipient: x400; dave\nAction: failed\nStatus: 5.1.1\n")  # fmt: skip
    assert detect(x400).failures == ()


def test_a_dsn_wrapped_in_a_message_part_is_read() -> None:
    """A gateway that wraps every message (a disclaimer, then the DSN as a
    message/rfc822 part) does not hide the DSN; the returned original of a plain bounce
    is still never read for failures."""
    inner = dsn(
        "Reporting-MTA: dns; mx.example.org\n\n"
        "Final-Recipient: rfc822; fay@example.org\nAction: failed\nStatus: 5.1.1\n"
    )
    wrapped = (
        b"From: gateway@example.org\nSubject: Undelivered Mail\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="w"\n\n--w\nContent-Type: text/plain\n\n'
        b"This e-mail is confidential.\n--w\nContent-Type: message/rfc822\n\n"
        + inner
        + b"\n--w--\n"
    )
    report = detect(wrapped)
    assert (report.detector, [f.recipient for f in report.failures]) == ("dsn", ["fay@example.org"])
    returned = wrapped.replace(b"multipart/report", b"multipart/mixed")
    assert detect(returned).failures == ()


GROUPS = (
    "From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>\n"
    "X-Failed-Recipients: news-list@googlegroups.com\n"
    "Subject: Delivery Status Notification (Failure)\n"
    "Content-Type: text/plain; charset=UTF-8\n\n"
    "Die Gruppe news-list existiert vielleicht nicht, oder Sie haben keine Berechtigung,\n"
    "Nachrichten an sie zu senden.\n\n----- Original message -----\n\n"
    "Message-ID: <orig1@example.com>\n"
)


def test_x_failed_recipients_alone_is_a_soft_failure_of_a_bounce() -> None:
    """A bounce whose text no detector reads (Google Groups in the sender's language)
    still names its failed address in X-Failed-Recipients: a soft failure with no status
    and no reason of its own; from a person, the header means nothing."""
    report = detect(GROUPS.encode())
    assert report.detector == "failed-recipients"
    assert report.original_message_id == "<orig1@example.com>"
    assert [(f.recipient, f.kind, f.status, f.reason) for f in report.failures] == [
        ("news-list@googlegroups.com", "soft", None, "other")
    ]
    person = GROUPS.replace("Mail Delivery Subsystem <mailer-daemon@googlemail.com>",
                            "Ann <ann@example.org>").replace("Delivery Status Notification "
                                                             "(Failure)", "hello")  # fmt: skip
    assert detect(person.encode()).failures == ()


RENAMED_POSTFIX = (
    "From: MAILER-DAEMON@mail1.example.com (Mail Delivery System)\n"
    "Subject: Undelivered Mail Returned to Sender\n\n"
    "This is the Keftamail program at host mail1.example.com.\n\n"
    "I'm sorry to have to inform you that the message returned\n"
    "below could not be delivered to one or more destinations.\n\n"
    "\t\t\tThe Keftamail program\n\n"
    "<ann@example.net>: permission denied. Command output: Mail quota\n    exceeded.\n"
)


def test_an_old_postfix_under_another_mail_name_is_read() -> None:
    """Older Postfix greets with its mail_name, which sites rename ("This is the
    Keftamail program at host ..."): read as Postfix when its apology follows, and not
    from the greeting alone."""
    report = detect(RENAMED_POSTFIX.encode())
    assert report.detector == "postfix"
    assert [(f.recipient, f.kind, f.reason) for f in report.failures] == [
        ("ann@example.net", "soft", "mailbox-full")
    ]
    greeting_only = RENAMED_POSTFIX.replace("I'm sorry to have to inform you that", "Note:")
    assert detect(greeting_only.encode()).detector != "postfix"
