"""Hard or soft by what real servers write, beyond the after-DATA rule: Exchange
Online's directory check, rate limits, recipient preferences, a name server's bad
reply, a softened status code; and the reasons some formats give outside the fields
a detector read before (OpenSMTPD's DSN text, MXLogic's one-line Exim list, an Exim
relay's own greeting, Active!Hunter's transcript, "Technical details:")."""

from __future__ import annotations

import pytest

from smtpeter.bounces.detect import detect
from smtpeter.bounces.reasons import kind_of, reason_of
from tests.unit.test_bounce_detect import dsn


@pytest.mark.parametrize(
    ("status", "diagnostic", "reason", "kind"),
    [
        # Exchange Online's directory-based edge blocking: no such recipient.
        ("5.4.1", "smtp; 550 5.4.1 <ann@contoso.example>: Recipient address rejected: Access"
         " denied. AS(201806281) [BN8NAM11FT066.eop-nam11.prod.protection.outlook.com]",
         "user-unknown", "hard"),
        # Postfix's access map says the same words with 5.7.1: a policy.
        ("5.7.1", "smtp; 554 5.7.1 <ann@example.ch>: Recipient address rejected: Access denied",
         "policy", "soft"),
        ("5.1.1", "smtp; 550 5.1.1 <ann@example.com> - 192.0.2.222 has sent to too many"
         " recipients this hour. IB607", "policy", "soft"),
        ("4.5.3", "smtp; 452 4.5.3 Too many recipients", "policy", "soft"),
        ("5.1.1", "smtp; 550 5.1.1 RCP-P2 http://postmaster.facebook.com/response_codes#rcp"
         " Refused due to recipient preferences", "content-rejected", "soft"),
        ("5.4.4", "X-Postfix; Name service error for name=example.org type=MX: Malformed or"
         " unexpected name server reply", "network-error", "soft"),
        # A real "Host not found" still says the domain does not exist.
        ("5.4.4", "X-Postfix; Host or domain name not found. Name service error for"
         " name=nowhere.example type=A: Host not found", "host-unknown", "hard"),
    ],
    ids=["dbeb", "access-map", "rate", "too-many", "preferences", "malformed-dns", "nxdomain"],
)  # fmt: skip
def test_reason_and_kind_of_real_replies(
    status: str, diagnostic: str, reason: str, kind: str
) -> None:
    """Microsoft's 5.4.1 Access denied is hard; rate limits, preferences, DNS faults soft."""
    assert reason_of(status, diagnostic) == reason
    assert kind_of(reason_of(status, diagnostic), status) == kind


def record(status: str, diagnostic: str | None) -> bytes:
    code = f"Diagnostic-Code: smtp; {diagnostic}\n" if diagnostic else ""
    return dsn(
        "Reporting-MTA: dns; mx.example.org\n\nFinal-Recipient: rfc822; ann@example.fr\n"
        f"Action: failed\nStatus: {status}\n{code}"
    )


@pytest.mark.parametrize(
    ("status", "diagnostic", "expected"),
    [
        ("4.5.0", "550 5.5.0 Service refuse. Veuillez essayer plus tard.", "5.5.0"),
        ("4.1.1", "550 5.1.1 <ann@example.fr>: Recipient address rejected: User unknown", "5.1.1"),
        ("4.0.0", "554 Blocked - see https://example.net/bl", "4.0.0"),
        ("4.4.1", "550 5.5.0 Service refuse.", "4.4.1"),
    ],
    ids=["softened", "softened-user", "no-enhanced-code", "different-detail"],
)  # fmt: skip
def test_a_permanent_reply_softened_by_the_reporter(
    status: str, diagnostic: str, expected: str
) -> None:
    """A Status softened from the remote's own 5.x.y code reports 5.x.y; others unchanged."""
    [failure] = detect(record(status, diagnostic)).failures
    assert failure.status == expected


OPENSMTPD = """\
From: MAILER-DAEMON@mx.example.jp
To: b+x@bounce.example.com
Subject: Delivery status notification: error
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="BB"

--BB
Content-Type: text/plain; charset=us-ascii

    Hi!

    This is the MAILER-DAEMON, please DO NOT REPLY to this email.

    An error has occurred while attempting to deliver a message for
    the following list of recipients:

nobody@example.net: 550 5.1.1 <nobody@example.net>: Recipient address rejected: User unknown
full@example.net: 552 5.2.2 <full@example.net>: Recipient address rejected: Mailbox full
postmaster@nowhere.example: Domain does not exist

    Below is a copy of the original message:

--BB
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.jp

Final-Recipient: rfc822; nobody@example.net
Action: failed
Status: 5.0.0

Final-Recipient: rfc822; full@example.net
Action: failed
Status: 5.0.0

Final-Recipient: rfc822; postmaster@nowhere.example
Action: failed
Status: 5.0.0

--BB--
"""


def test_opensmtpd_reasons_come_from_its_text() -> None:
    """OpenSMTPD's per-recipient text lines decide hard or soft when its DSN has no reason."""
    got = [(f.recipient, f.status, f.kind, f.reason) for f in detect(OPENSMTPD.encode()).failures]
    assert got == [
        ("nobody@example.net", "5.1.1", "hard", "user-unknown"),
        ("full@example.net", "5.2.2", "soft", "mailbox-full"),
        ("postmaster@nowhere.example", "5.0.0", "hard", "host-unknown"),
    ]


EXIM = """\
From: Mail Delivery System <MAILER-DAEMON@relay.example.net>
To: b+x@bounce.example.com
Subject: Mail delivery failed
X-Failed-Recipients: ann@example.co.jp

This message was created automatically by {who}.

A message that you have sent could not be delivered to one or more
recipients.  This is a permanent error.  The following address failed:

{entry}

Included is a copy of the message header:
"""


@pytest.mark.parametrize(
    ("who", "entry"),
    [
        ("mail delivery software",
         "  <ann@example.co.jp>: 550 5.1.1 <ann@example.co.jp>: Recipient address rejected:"
         " User unknown in local recipient table"),
        ("the SMTP relay on relay.example.net",
         "  ann@example.co.jp\n    SMTP error from remote mail server after RCPT"
         " TO:<ann@example.co.jp>:\n    host 192.0.2.22 [192.0.2.22]: 550 5.1.1"
         " <ann@example.co.jp>:\n    Recipient address rejected: User unknown"),
    ],
    ids=["mxlogic-one-line", "relay-greeting"],
)  # fmt: skip
def test_exim_variants_give_their_reply(who: str, entry: str) -> None:
    """MXLogic's one-line list and a self-named Exim relay give a hard 5.1.1, not soft."""
    [failure] = detect(EXIM.format(who=who, entry=entry).encode()).failures
    assert (failure.recipient, failure.status, failure.kind) == (
        "ann@example.co.jp",
        "5.1.1",
        "hard",
    )


ACTIVE_HUNTER = """\
From: MAILER-DAEMON@ah.example.net
To: b+x@bounce.example.com
Subject: Returned mail: see transcript for details

The original message was received at Thu, 29 Apr 2026 23:34:45 +0900
from example.co.jp

  ----- The following addresses had permanent fatal errors -----

>>> ann@example.org <ann@example.org>

  ----- Transcript of session follows -----
550 sorry, no mailbox here by that name (#5.1.1 - chkusr)
"""


def test_active_hunter_transcript_reply_is_the_reason() -> None:
    """Active!Hunter's bare transcript reply makes its one recipient a hard 5.1.1."""
    [failure] = detect(ACTIVE_HUNTER.encode()).failures
    assert (failure.recipient, failure.status, failure.kind) == ("ann@example.org", "5.1.1", "hard")


TECHNICAL = """\
From: postmaster@gw.example.com
To: b+x@bounce.example.com
Subject: Delivery Status Notification (Failure)

      This is an automatically generated Delivery Status Notification.

Delivery to the following recipients failed permanently:

   * ann@example.com


                             Technical details:

SMTP:RCPT host 192.0.2.8: 553 5.3.0 <ann@example.com>... No such user here
"""


def test_technical_details_under_the_list_are_the_reason() -> None:
    """The "Technical details:" under a one-address list make it a hard unknown user."""
    [failure] = detect(TECHNICAL.encode()).failures
    assert (failure.status, failure.kind, failure.reason) == ("5.3.0", "hard", "user-unknown")


GMAIL = """\
From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: b+x@bounce.example.com
Subject: Delivery Status Notification (Failure)
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="BB"

--BB
Content-Type: text/plain; charset=UTF-8

** {heading} **

Your message wasn't delivered to ann@example.it because {why}. Check for typos or
unnecessary spaces and try again.

--BB
Content-Type: message/delivery-status

Reporting-MTA: dns; googlemail.com

Final-Recipient: rfc822; ann@example.it
Action: failed
Status: 5.0.0

--BB--
"""


@pytest.mark.parametrize(
    ("heading", "why", "reason"),
    [
        ("Address not found", "the address couldn't be found", "user-unknown"),
        ("Domain not found", "the domain example.it couldn't be found", "host-unknown"),
    ],
)
def test_gmail_sentence_is_the_reason_of_a_dsn_without_diagnostic(
    heading: str, why: str, reason: str
) -> None:
    """Gmail's "address (domain) couldn't be found" makes its reason-less DSN hard."""
    [failure] = detect(GMAIL.format(heading=heading, why=why).encode()).failures
    assert (failure.kind, failure.reason) == ("hard", reason)
