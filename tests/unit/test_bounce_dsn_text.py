"""Delivery-status fields read where old MTAs put them: in the text of a report whose
MIME boundary never comes, and in a block with no Action field (the Status class
says it). A person's text that merely mentions a status is not a report."""

from __future__ import annotations

import pytest

from smtpeter.bounces.detect import detect

NO_BOUNDARY = b"""\
Return-Path: <>
From: Mail Delivery Subsystem <MAILER-DAEMON@mx.example.edu>
To: <b+sig@bounces.example.com>
Subject: Returned mail: Service unavailable
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="BOUNDARY/mx.example.edu"

The original message was received at Thu, 29 Apr 1999 23:34:45 -0500
   ----- The following addresses had permanent fatal errors -----
<ann@example.edu>

Reporting-MTA: dns; mx.example.edu
Arrival-Date: Thu, 29 Apr 1999 23:34:45 -0500

Final-Recipient: RFC822; ann@example.edu
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 <ann@example.edu>... User unknown

Return-Path: <news@example.com>
From: news@example.com
To: ann@example.edu
Message-Id: <n1@example.com>
Subject: Weekly news

Hello
"""

NO_ACTION = b"""\
From: MAILER-DAEMON@mx.example.org
To: b+sig@bounces.example.com
Subject: Returned mail: see transcript for details
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b1"

--b1
Content-Type: text/plain

The message could not be delivered.

--b1
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.org

Final-Recipient: RFC822; %(rcpt)s
Status: %(status)s
Diagnostic-Code: X-Unix; 77

--b1--
"""

PERSON = b"""\
From: Bob <bob@example.org>
To: b+sig@bounces.example.com
Subject: Re: your newsletter

Our admin says the server answered Status: 5.1.1 for final-recipient yesterday,
can you check?
"""


def test_a_report_without_its_boundaries_is_read_from_its_text() -> None:
    """The DSN fields in a multipart/report whose boundary never appears give the
    failed recipient, its status and reason, and the returned message's headers are not
    taken for the report's."""
    report = detect(NO_BOUNDARY)
    assert [(f.recipient, f.status, f.kind, f.reason) for f in report.failures] == [
        ("ann@example.edu", "5.1.1", "hard", "user-unknown")
    ]
    assert report.failures[0].reporting_mta == "mx.example.edu"


@pytest.mark.parametrize(
    ("status", "kind"), [("5.3.0", "soft"), ("4.4.1", "delay"), ("2.0.0", None)]
)
def test_a_recipient_block_without_action_takes_it_from_the_status_class(
    status: str, kind: str | None
) -> None:
    """No Action field: 5.x.x is a failure, 4.x.x a delay, 2.x.x nothing at all."""
    report = detect(NO_ACTION % {b"rcpt": b"ann@example.org", b"status": status.encode()})
    assert [(f.recipient, f.status, f.kind) for f in report.failures] == (
        [("ann@example.org", status, kind)] if kind else []
    )


def test_a_person_mentioning_a_status_is_not_a_report() -> None:
    """A reply that quotes a status code without the report's fields yields nothing."""
    assert detect(PERSON).failures == ()
