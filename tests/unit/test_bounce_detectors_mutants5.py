"""The details of the plain-text formats of tests/unit/test_bounce_detectors2.py that its
table does not pin: the remote MTA, the reason and kind of the less common shapes
(wrapped lines, an empty reason, a reply with no code), the sections each format reads
and where it stops, and look-alikes (a bounce of a bounce, a person's message with one
of the format's two markers) that must not be read. Each message is written for the test
in the words of its format."""

from __future__ import annotations

import pytest

from smtpeter.bounces.detect import detect
from tests.unit.test_bounce_detect_mutants import plain
from tests.unit.test_bounce_detectors2 import (
    DMA,
    EZWEB_BARE,
    INTERSCAN,
    INTERSCAN_SESSION,
    KDDI,
    NOTES,
    WORKMAIL,
    ZOHO,
    ZOHO_WARNING,
)

# recipient, status, kind, diagnostic, remote MTA, reason
Row = tuple[str, str | None, str, str | None, str | None, str | None]


def rows(raw: bytes) -> tuple[str, list[Row]]:
    report = detect(raw)
    return report.detector, [
        (f.recipient, f.status, f.kind, f.diagnostic, f.remote_mta, f.reason)
        for f in report.failures
    ]


OPENSMTPD_HI = "    Hi!\n\n    This is the MAILER-DAEMON, please DO NOT REPLY to this e-mail.\n\n"
OPENSMTPD_ERROR = (
    "    An error has occurred while attempting to deliver a message for\n"
    "    the following list of recipients:\n\n"
)
OPENSMTPD_OLD = (
    "Hi !\n\nThis is the MAILER-DAEMON, please DO NOT REPLY to this e-mail.\n"
    "An error has occurred while attempting to deliver a message.\n\n"
    "Recipient: <cat@example.org>\nReason:\n{reason}\n"
    "Below is a copy of the original message:\n\nTo: cat@example.org\n"
)
ZOHO_FROM = {
    "sender": "mailer-daemon@mail.zoho.com",
    "subject": "Undelivered Mail Returned to Sender",
}
EZWEB_FROM = {"sender": "Postmaster@ezweb.ne.jp", "subject": "Mail System Error - Returned Mail"}
EZWEB_JAPANESE = (
    "こちらはKDDIのメールサーバです。\n"
    "お客様が送信されたメールは、以下の理由により送信先に届きませんでした。\n\n"
)
KDDI_FROM = {"sender": "no-reply@example.dion.ne.jp", "subject": "Mail"}
KDDI_SENT = "Your mail sent on: Mon, 2 Feb 2015 10:00:00 +0900\n"
NOTES_FROM = {"sender": "postmaster@example.org", "subject": "Undeliverable message"}
INTERSCAN_FROM = {
    "sender": '"InterScan MSS" <postmaster@example.org>',
    "subject": "Mail could not be delivered",
}
X6_FROM = {"sender": "mailer-daemon", "subject": "There was an error sending your mail"}
X6_HEAD = (
    "We had trouble delivering your message. Full details follow:\n\n"
    "Subject: 'hello'\nDate: 'Mon, 2 Feb 2015 10:00:00 +0000'\n\n1 error(s):\n\n"
)
GOOGLE = {
    "sender": "Mail Delivery Subsystem <mailer-daemon@googlemail.com>",
    "subject": "Delivery Status Notification (Failure)",
}
FAILED_RECIPIENTS = "X-Failed-Recipients: ann@example.org, bob@example.org,\n carl@.example.org\n"
GERMAN = "Die Nachricht konnte nicht zugestellt werden.\n"

CASES: dict[str, tuple[bytes, str, list[Row]]] = {
    # dma: the host that refused is the remote MTA; a bounce with no reason paragraph.
    "dma-remote": (
        plain(
            DMA.format(
                addr="ann@example.org",
                reason="mx.example.org [192.0.2.9] did not like our RCPT TO:\n"
                "550 5.1.1 <ann@example.org>: User unknown",
            ),
            subject="Mail delivery failed",
        ),
        "dma",
        [
            (
                "ann@example.org", "5.1.1", "hard",
                "mx.example.org [192.0.2.9] did not like our RCPT TO: 550 5.1.1"
                " <ann@example.org>: User unknown",
                "mx.example.org", "user-unknown",
            )
        ],
    ),
    "dma-no-reason": (
        plain(
            "This is the DragonFly Mail Agent v0.13 at mail.example.net.\n\n"
            "There was an error delivering your mail to <ann@example.org>.\n\n"
            "Original message follows.\n\nSubject: hello\n",
            subject="Mail delivery failed",
        ),
        "dma",
        [("ann@example.org", None, "soft", None, None, "other")],
    ),
    "dma-dns": (
        plain(
            DMA.format(
                addr="ann@example.org", reason="DNS lookup failure: example.org: host not found"
            ),
            subject="Mail delivery failed",
        ),
        "dma",
        [("ann@example.org", None, "hard", "DNS lookup failure: example.org: host not found", None,
          "host-unknown")],
    ),
    # OpenSMTPD: without the copy of the original the list is still read; the oldest form
    # with a reason over two lines, and one that says nothing of permanence (soft).
    "opensmtpd-no-copy": (
        plain(
            OPENSMTPD_HI + OPENSMTPD_ERROR + "cat@example.org: 550 5.1.1 No such user\n",
            subject="Delivery status notification: error",
        ),
        "opensmtpd",
        [("cat@example.org", "5.1.1", "hard", "550 5.1.1 No such user", None, "user-unknown")],
    ),
    "opensmtpd-oldest-network": (
        plain(
            OPENSMTPD_OLD.format(reason="Network error on\ndestination MXs\n"),
            subject="Delivery status notification",
        ),
        "opensmtpd",
        [("cat@example.org", None, "soft", "Network error on destination MXs", None, "other")],
    ),
    "opensmtpd-oldest-copy-right-after": (
        plain(
            OPENSMTPD_OLD.format(reason="550 5.1.1 No such user"),
            subject="Delivery status notification",
        ),
        "opensmtpd",
        [("cat@example.org", "5.1.1", "hard", "550 5.1.1 No such user", None, "user-unknown")],
    ),
    "opensmtpd-delay-two": (
        plain(
            OPENSMTPD_HI + "    A message is delayed for more than 4 hours for the following\n"
            "    list of recipients:\n\n"
            "cat@example.org: 421 Try again later\ndog@example.org: Network error\n\n"
            "    Please note that this is only a temporary failure report.\n",
            subject="Delivery status notification: delay",
        ),
        "opensmtpd",
        [
            ("cat@example.org", "4.0.0", "delay", "421 Try again later", None, None),
            ("dog@example.org", None, "delay", "Network error", None, None),
        ],
    ),
    # Zoho: a line whose address is no address is skipped, not the end; a reply without
    # its code; a line with neither code nor reply.
    "zoho-bad-address-first": (
        plain(
            ZOHO.format(
                lines="eve@.example.org Invalid Address, ERROR_CODE :550, ERROR_CODE :5.1.1 gone\n"
                "fay@example.org Invalid Address, ERROR_CODE :550, ERROR_CODE :Mailbox unavailable"
            ),
            **ZOHO_FROM,
        ),
        "zoho",
        [("fay@example.org", "5.0.0", "hard", "550 Mailbox unavailable", None, "user-unknown")],
    ),
    "zoho-no-code": (
        plain(
            ZOHO.format(
                lines="fay@example.org Error, ERROR_CODE :, ERROR_CODE :Mailbox unavailable"
            ),
            **ZOHO_FROM,
        ),
        "zoho",
        [("fay@example.org", None, "hard", "Mailbox unavailable", None, "user-unknown")],
    ),
    "zoho-nothing-said": (
        plain(ZOHO.format(lines="fay@example.org Error, ERROR_CODE :, ERROR_CODE :"), **ZOHO_FROM),
        "zoho",
        [("fay@example.org", None, "soft", None, None, "other")],
    ),
    # A bounce that also quotes a warning's line: the bounce's lines are read.
    "zoho-bounce-quoting-a-warning": (
        plain(
            ZOHO.format(
                lines="eve@example.org Invalid Address, ERROR_CODE :550, ERROR_CODE :5.1.1 gone\n"
                "[Status: Error, Address: <dan@example.org>, ResponseCode 421, , Host down.]\n"
                "Message will be retried for 2 more day(s)"
            ),
            **ZOHO_FROM,
        ),
        "zoho",
        [("eve@example.org", "5.1.1", "hard", "550 5.1.1 gone", None, "user-unknown")],
    ),
    "zoho-warning-three-lines": (
        plain(
            ZOHO_WARNING.replace(
                "Host not reachable.]\n",
                "Host not reachable.]\n"
                "[Status: Error, Address: <bad@.example.org>, ResponseCode 421, , Host down]\n"
                "[Status: Error, Address: <eli@example.org>, ResponseCode , , Connection timed"
                " out]\n",
            ),
            sender="mailer-daemon@mail.zoho.com",
            subject="Mail Delivery Status Notification (Delay)",
        ),
        "zoho",
        [
            ("dan@example.org", "4.0.0", "delay", "421 Host not reachable.", None, None),
            ("eli@example.org", None, "delay", "Connection timed out", None, None),
        ],
    ),
    # EZweb: the Japanese paragraph is not the reason, its English one is (a wrapped line
    # starting with "a" included); "<ADDR>: reply"; an address that is none is skipped.
    "ezweb-japanese-and-english": (
        plain(
            EZWEB_JAPANESE + "Each of the following recipients was rejected by\n"
            "a remote mail server.\n\n<hal@ezweb.ne.jp>\n",
            **EZWEB_FROM,
        ),
        "ezweb",
        [
            (
                "hal@ezweb.ne.jp", None, "soft",
                "Each of the following recipients was rejected by a remote mail server.",
                None, "other",
            )
        ],
    ),
    "ezweb-reply-after-colon": (
        plain(
            EZWEB_JAPANESE + "The following recipients could not be reached.\n\n"
            "<hal@ezweb.ne.jp>: 550 5.1.1 user unknown\n<ivy@ezweb.ne.jp>\n",
            **EZWEB_FROM,
        ),
        "ezweb",
        [
            ("hal@ezweb.ne.jp", "5.1.1", "hard", "550 5.1.1 user unknown", None, "user-unknown"),
            ("ivy@ezweb.ne.jp", None, "soft", "The following recipients could not be reached.",
             None, "other"),
        ],
    ),
    "ezweb-bad-address": (
        plain(
            "The user(s) account is disabled.\n\n<hal@.ezweb.ne.jp>\n<ivy@ezweb.ne.jp>\n",
            **EZWEB_FROM,
        ),
        "ezweb",
        [("ivy@ezweb.ne.jp", None, "soft", "The user(s) account is disabled.", None,
          "mailbox-disabled")],
    ),
    # A signature "<addr>" line in the returned message, after EZweb's dashed line or its
    # Received: line, is no recipient.
    "ezweb-signature-after-dashes": (
        plain(
            EZWEB_BARE + "\n----------------------------------------\n"
            "From: sam@example.org\nSubject: hi\n\nSee you\nSam\n<sam@example.org>\n",
            **EZWEB_FROM,
        ),
        "ezweb",
        [("hal@ezweb.ne.jp", None, "soft", "The user(s) account is disabled.", None,
          "mailbox-disabled")],
    ),
    "ezweb-signature-after-received": (
        plain(
            EZWEB_BARE + "\nReceived: from mx.example.org\nFrom: sam@example.org\n\n"
            "Sam\n<sam@example.org>\n",
            **EZWEB_FROM,
        ),
        "ezweb",
        [("hal@ezweb.ne.jp", None, "soft", "The user(s) account is disabled.", None,
          "mailbox-disabled")],
    ),
    # KDDI: from a bounce sender too, any letter case of no-reply; the reason over two
    # lines, at most five lines; a notice line before "Your mail sent on:" is not read;
    # a second "Your mail sent on:" ends the reason.
    "kddi-mailer-daemon": (
        plain(KDDI, sender="MAILER-DAEMON@example.dion.ne.jp", subject="Mail"),
        "kddi",
        [("ida@example.dion.ne.jp", None, "soft", "As their mailbox is full.", None,
          "mailbox-full")],
    ),
    "kddi-no-reply-capitals": (
        plain(KDDI, sender="No-Reply@example.dion.ne.jp", subject="Mail"),
        "kddi",
        [("ida@example.dion.ne.jp", None, "soft", "As their mailbox is full.", None,
          "mailbox-full")],
    ),
    "kddi-relay-error": (
        plain(
            KDDI_SENT + "     Could not be delivered to: <ida@example.org>\n"
            "     Due to the following SMTP relay error\n     550 5.1.1 user unknown\n",
            **KDDI_FROM,
        ),
        "kddi",
        [("ida@example.org", "5.1.1", "hard",
          "Due to the following SMTP relay error 550 5.1.1 user unknown", None, "user-unknown")],
    ),
    "kddi-five-lines": (
        plain(
            KDDI_SENT + "     Could not be delivered to: <ida@example.org>\n"
            "     one\n     two\n     three\n     four\n     five\n     550 5.1.1 six\n",
            **KDDI_FROM,
        ),
        "kddi",
        [("ida@example.org", None, "soft", "one two three four five", None, "other")],
    ),
    "kddi-before-sent": (
        plain(
            "     Could not be delivered to: <ida@example.org>\n     As their mailbox is full.\n\n"
            + KDDI_SENT + "     Could not be delivered to: <joe@example.org>\n"
            "     As their mailbox is full.\n",
            **KDDI_FROM,
        ),
        "kddi",
        [("joe@example.org", None, "soft", "As their mailbox is full.", None, "mailbox-full")],
    ),
    "kddi-bad-address": (
        plain(
            KDDI_SENT + "     Could not be delivered to: <ida@.example.org>\n"
            "     As their mailbox is full.\n\n     Could not be delivered to: <joe@example.org>\n"
            "     As their mailbox is full.\n",
            **KDDI_FROM,
        ),
        "kddi",
        [("joe@example.org", None, "soft", "As their mailbox is full.", None, "mailbox-full")],
    ),
    "kddi-two-notices": (
        plain(
            KDDI_SENT + "     Could not be delivered to: <ida@example.org>\n"
            "Your mail sent on: Mon, 2 Feb 2015 11:00:00 +0900\n"
            "     Could not be delivered to: <joe@example.org>\n     As their mailbox is full.\n",
            **KDDI_FROM,
        ),
        "kddi",
        [
            ("ida@example.org", None, "soft", None, None, "other"),
            ("joe@example.org", None, "soft", "As their mailbox is full.", None, "mailbox-full"),
        ],
    ),
    # Notes: a reason over two lines; two addresses under one reason; an address with no
    # reason; the subject in capitals; only the section before "Returned Message".
    "notes-paragraphs": (
        plain(
            "------- Failure Reasons  --------\n\n"
            "Unable to deliver message, recipient's\nmail file is full\njoe@example.org\n\n"
            "No route found to domain example.net from server MAIL01\n<kay@example.net>\n"
            "lee@example.net\n\n------- Returned Message --------\nTo: joe@example.org\n",
            **NOTES_FROM,
        ),
        "notes",
        [
            ("joe@example.org", None, "soft",
             "Unable to deliver message, recipient's mail file is full", None, "mailbox-full"),
            ("kay@example.net", None, "soft",
             "No route found to domain example.net from server MAIL01", None, "other"),
            ("lee@example.net", None, "soft",
             "No route found to domain example.net from server MAIL01", None, "other"),
        ],
    ),
    "notes-address-only": (
        plain(
            "------- Failure Reasons  --------\n\njoe@example.org\n\n"
            "------- Returned Message --------\n",
            **NOTES_FROM,
        ),
        "notes",
        [("joe@example.org", None, "soft", None, None, "other")],
    ),
    "notes-capitals-and-returned-reasons": (
        plain(
            NOTES + "\n------- Failure Reasons  --------\n\n"
            "User not listed in public Name & Address Book\nzed@example.org\n",
            sender="postmaster@example.org",
            subject="DELIVERY REPORT: UNDELIVERABLE MESSAGE",
        ),
        "notes",
        [("joe@example.org", None, "hard", "User not listed in public Name & Address Book", None,
          "user-unknown")],
    ),
    # InterScan: the session's reply wins over the sentence for the same recipient, and
    # the first session over a later one; an address that is none is skipped.
    "interscan-reply-wins": (
        plain(INTERSCAN.replace("kim@", "lee@") + "\n" + INTERSCAN_SESSION, **INTERSCAN_FROM),
        "trendmicro",
        [("lee@example.org", "5.1.1", "hard", "550 5.1.1 <lee@example.org>... User unknown", None,
          "user-unknown")],
    ),
    "interscan-first-session": (
        plain(
            INTERSCAN_SESSION + "Sent <<< RCPT TO:<lee@example.org>\n"
            "Received >>> 450 4.2.0 try later\n",
            **INTERSCAN_FROM,
        ),
        "trendmicro",
        [("lee@example.org", "5.1.1", "hard", "550 5.1.1 <lee@example.org>... User unknown", None,
          "user-unknown")],
    ),
    "interscan-capitals-and-bad-addresses": (
        plain(
            "****** Message from InterScan Messaging Security Suite ******\n\n"
            "Sent <<< RCPT TO:<lee@.example.org>\nReceived >>> 550 5.1.1 gone\n"
            "Unable to deliver message to <kim@.example.org> (no MX).\n"
            "Unable to deliver message to <kim@example.org> (and other recipients in the same"
            " domain).\n",
            sender='"INTERSCAN" <postmaster@example.org>',
            subject="Mail could not be delivered",
        ),
        "trendmicro",
        [
            (
                "kim@example.org", None, "soft",
                "Unable to deliver message to <kim@example.org> (and other recipients in the"
                " same domain).",
                None, "other",
            )
        ],
    ),
    # X6: wrapped paragraphs; the remote server; two addresses; a reason or reply
    # without brackets; addresses that are none; a domain in capitals ending in X.
    "trouble-wrapped": (
        plain(
            X6_HEAD + "SMTP Server <mx.example.org> rejected recipient <ned@example.org>\n"
            "(Error following RCPT command). It responded as follows: [550 5.1.1\n"
            "User unknown]\n\nThe attachment contains the original mail headers.\n",
            **X6_FROM,
        ),
        "trouble",
        [("ned@example.org", "5.1.1", "hard", "550 5.1.1 User unknown", "mx.example.org",
          "user-unknown")],
    ),
    "trouble-two-without-brackets": (
        plain(
            X6_HEAD + "The following recipients returned permanent errors: max@example.org,"
            " pat@EXAMPLE.BOX. Reason: Remote host said: 550 no such user\n",
            **X6_FROM,
        ),
        "trouble",
        [
            ("max@example.org", "5.0.0", "hard", "Remote host said: 550 no such user", None,
             "user-unknown"),
            ("pat@example.box", "5.0.0", "hard", "Remote host said: 550 no such user", None,
             "user-unknown"),
        ],
    ),
    "trouble-rejected-without-brackets": (
        plain(
            X6_HEAD + "SMTP Server <mx.example.org> rejected recipient <ned@example.org> (Error"
            " following RCPT command).  It responded as follows: 550 5.1.1 User unknown \n",
            **X6_FROM,
        ),
        "trouble",
        [
            (
                "ned@example.org", "5.1.1", "hard",
                "(Error following RCPT command). It responded as follows: 550 5.1.1 User unknown",
                "mx.example.org", "user-unknown",
            )
        ],
    ),
    "trouble-bad-addresses": (
        plain(
            X6_HEAD + "SMTP Server <mx.example.org> rejected recipient <ned@.example.org> (Error"
            " following RCPT command). It responded as follows: [550 5.1.1 User unknown]\n\n"
            "The following recipients returned permanent errors: max@.example.org,"
            " pat@example.org. Reason: boom\n",
            **X6_FROM,
        ),
        "trouble",
        [("pat@example.org", None, "soft", "boom", None, "other")],
    ),
    "trouble-after-a-greeting": (
        plain(
            "Hello,\n\nWe had trouble delivering your message. Full details follow:\n"
            "The following recipients returned permanent errors: max@example.org. Reason:"
            " Mailbox unavailable\n",
            **X6_FROM,
        ),
        "trouble",
        [("max@example.org", None, "hard", "Mailbox unavailable", None, "user-unknown")],
    ),
    # WorkMail: the technical report after the intro is read, not a quoted one before it.
    "workmail-report-after-intro": (
        plain(
            "Technical report:\n\nAction: failed\nFinal-Recipient: rfc822; zed@example.org\n"
            "Status: 5.1.1\n\n" + WORKMAIL,
            sender="MAILER-DAEMON@us-west-2.amazonses.com",
            subject="Delivery Status Notification (Failure)",
        ),
        "amazonworkmail",
        [
            (
                "oli@example.org", "4.4.7", "soft",
                "smtp; 554 4.4.7 Message expired: unable to deliver in 840 minutes.",
                None, "expired",
            )
        ],
    ),
    # X-Failed-Recipients: every address, folded, the invalid one left out; a bounce by
    # its subject alone counts too.
    "failed-recipients-two": (
        plain(GERMAN, headers=FAILED_RECIPIENTS, **GOOGLE),
        "failed-recipients",
        [
            ("ann@example.org", None, "soft", None, None, "other"),
            ("bob@example.org", None, "soft", None, None, "other"),
        ],
    ),
    "failed-recipients-by-subject": (
        plain(
            GERMAN,
            headers=FAILED_RECIPIENTS,
            sender="Ann <ann@example.net>",
            subject="Delivery Status Notification (Failure)",
        ),
        "failed-recipients",
        [
            ("ann@example.org", None, "soft", None, None, "other"),
            ("bob@example.org", None, "soft", None, None, "other"),
        ],
    ),
    # A marker that ends the format's text, above its head (a gateway's note): the text
    # after the head is still read up to its own end.
    "dma-end-marker-above": (
        plain(
            "Original message follows.\n\n"
            + DMA.format(addr="ann@example.org", reason="Could not deliver. Giving up."),
            subject="Mail delivery failed",
        ),
        "dma",
        [("ann@example.org", None, "soft", "Could not deliver. Giving up.", None, "other")],
    ),
    "opensmtpd-end-marker-above": (
        plain(
            "    Below is a copy of the original message:\n\n" + OPENSMTPD_HI + OPENSMTPD_ERROR
            + "cat@example.org: 550 5.1.1 No such user\n",
            subject="Delivery status notification: error",
        ),
        "opensmtpd",
        [("cat@example.org", "5.1.1", "hard", "550 5.1.1 No such user", None, "user-unknown")],
    ),
    "notes-end-marker-above": (
        plain("------- Returned Message --------\n\n" + NOTES, **NOTES_FROM),
        "notes",
        [("joe@example.org", None, "hard", "User not listed in public Name & Address Book", None,
          "user-unknown")],
    ),
    # OpenSMTPD: a line of prose right after the list ends it.
    "opensmtpd-prose-ends-the-list": (
        plain(
            OPENSMTPD_HI + OPENSMTPD_ERROR + "cat@example.org: 550 5.1.1 No such user\n"
            "    Please note this.\ndog@example.org: 550 gone\n",
            subject="Delivery status notification: error",
        ),
        "opensmtpd",
        [("cat@example.org", "5.1.1", "hard", "550 5.1.1 No such user", None, "user-unknown")],
    ),
    # Zoho: a reply starting with "X" keeps it.
    "zoho-reply-starting-with-x": (
        plain(
            ZOHO.format(
                lines="fay@example.org Error, ERROR_CODE :554, ERROR_CODE :X.400 gateway refused"
            ),
            **ZOHO_FROM,
        ),
        "zoho",
        [("fay@example.org", "5.0.0", "soft", "554 X.400 gateway refused", None, "other")],
    ),
    # EZweb: a multi-line reply is joined; the original after a "--- Original message"
    # line is not read.
    "ezweb-multi-line-reply": (
        plain(
            "Each of the following recipients was rejected by a remote\nmail server.\n\n"
            "    Recipient: <gus@example.org>\n    >>> RCPT TO:<gus@example.org>\n"
            "    <<< 550-5.1.1 The email account that you tried to reach does not exist.\n"
            "    <<< 550 5.1.1 Please try double-checking the recipient's address.\n",
            **EZWEB_FROM,
        ),
        "ezweb",
        [
            (
                "gus@example.org", "5.1.1", "hard",
                "550-5.1.1 The email account that you tried to reach does not exist. 550 5.1.1"
                " Please try double-checking the recipient's address.",
                None, "user-unknown",
            )
        ],
    ),
    "ezweb-signature-after-original-message-line": (
        plain(
            EZWEB_BARE + "\n--- Original message follows\nFrom: sam@example.org\n\n"
            "Sam\n<sam@example.org>\n",
            **EZWEB_FROM,
        ),
        "ezweb",
        [("hal@ezweb.ne.jp", None, "soft", "The user(s) account is disabled.", None,
          "mailbox-disabled")],
    ),
    # Notes' subject with no (or an unended) failure section: Notes reads nothing and the
    # readers after it still run (here X-Failed-Recipients).
    "notes-subject-without-its-section": (
        plain(GERMAN, headers="X-Failed-Recipients: joe@example.org\n", **NOTES_FROM),
        "failed-recipients",
        [("joe@example.org", None, "soft", None, None, "other")],
    ),
    "notes-section-without-its-end": (
        plain(
            "------- Failure Reasons  --------\n\n"
            "User not listed in public Name & Address Book\njoe@example.org\n",
            headers="X-Failed-Recipients: joe@example.org\n",
            **NOTES_FROM,
        ),
        "failed-recipients",
        [("joe@example.org", None, "soft", None, None, "other")],
    ),
    # A reply without a code says nothing of permanence: soft.
    "interscan-reply-without-code": (
        plain(
            "Sent <<< RCPT TO:<lee@example.org>\nReceived >>> Requested action aborted\n",
            **INTERSCAN_FROM,
        ),
        "trendmicro",
        [("lee@example.org", None, "soft", "Requested action aborted", None, "other")],
    ),
    "trouble-reply-without-code": (
        plain(
            X6_HEAD + "SMTP Server <mx.example.org> rejected recipient <ned@example.org> (Error"
            " following RCPT command). It responded as follows: [Requested action aborted]\n",
            **X6_FROM,
        ),
        "trouble",
        [("ned@example.org", None, "soft", "Requested action aborted", "mx.example.org",
          "other")],
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CASES))
def test_format_details(name: str) -> None:
    """Each shape yields exactly its recipients, status, kind, reply, remote MTA and reason."""
    raw, detector, expected = CASES[name]
    assert rows(raw) == (detector, expected)


LOOKALIKES: dict[str, bytes] = {
    # dma's sentences from an agent that is no "Mail Agent".
    "dma-other-agent": plain(
        DMA.format(addr="ann@example.org", reason="Could not deliver. Giving up.").replace(
            "DragonFly Mail Agent v0.13", "Foo relay v1"
        ),
        subject="Mail delivery failed",
    ),
    # dma's head without the line that ends its reason.
    "dma-no-end": plain(
        DMA.format(addr="ann@example.org", reason="Could not deliver. Giving up.").replace(
            "Message headers follow.", "Bye."
        ),
        subject="Mail delivery failed",
    ),
    # A bounce of an OpenSMTPD bounce: its list is in the returned message only.
    "opensmtpd-in-the-original": plain(
        OPENSMTPD_HI + "    Your message could not be processed.\n\n"
        "    Below is a copy of the original message:\n\nSubject: x\n\n"
        + OPENSMTPD_HI
        + OPENSMTPD_ERROR
        + "cat@example.org: 550 5.1.1 No such user\n",
        subject="Delivery status notification: error",
    ),
    # OpenSMTPD's oldest form naming no valid address.
    "opensmtpd-oldest-no-address": plain(
        OPENSMTPD_OLD.format(reason="550 5.1.1 No such user").replace(
            "<cat@example.org>", "<cat@.example.org>"
        ),
        subject="Delivery status notification",
    ),
    # Zoho's lines without "This is a permanent error".
    "zoho-not-permanent": plain(
        ZOHO.format(
            lines="eve@example.org Invalid Address, ERROR_CODE :550, ERROR_CODE :5.1.1 gone"
        ).replace(" This is a permanent error.", ""),
        **ZOHO_FROM,
    ),
    # A Zoho warning that does not say it will retry, even with a bounce's lines.
    "zoho-warning-without-retry": plain(
        ZOHO_WARNING.replace(
            "Message will be retried for 2 more day(s)\n",
            "This is a permanent error.\n"
            "eve@example.org Invalid Address, ERROR_CODE :550, ERROR_CODE :5.1.1 gone\n",
        ),
        sender="mailer-daemon@mail.zoho.com",
        subject="Mail Delivery Status Notification (Delay)",
    ),
    # EZweb's subject from a person; EZweb's postmaster under another subject.
    "ezweb-subject-only": plain(
        EZWEB_BARE, sender="kim@example.net", subject="Mail System Error - Returned Mail"
    ),
    "ezweb-sender-only": plain(EZWEB_BARE, sender="Postmaster@ezweb.ne.jp", subject="Notice"),
    # KDDI's notice from a person, or from an address merely ending in "no-reply".
    "kddi-person": plain(KDDI, sender="ann@example.dion.ne.jp", subject="Mail"),
    "kddi-not-no-reply": plain(KDDI, sender="bigno-reply@example.dion.ne.jp", subject="Mail"),
    # Notes' failure section with no end: nothing is read.
    "notes-no-end": plain(
        "------- Failure Reasons  --------\n\n"
        "User not listed in public Name & Address Book\njoe@example.org\n",
        **NOTES_FROM,
    ),
    # InterScan's session pasted by a person.
    "interscan-session-from-a-person": plain(
        INTERSCAN_SESSION, sender="lee@example.net", subject="see this"
    ),
    # X-Failed-Recipients on a person's message, or empty on a bounce.
    "failed-recipients-person": plain(
        GERMAN, headers=FAILED_RECIPIENTS, sender="Ann <ann@example.net>", subject="Hallo"
    ),
    "failed-recipients-empty": plain(GERMAN, headers="X-Failed-Recipients: \n", **GOOGLE),
}


@pytest.mark.parametrize("name", sorted(LOOKALIKES))
def test_lookalike_is_not_read(name: str) -> None:
    """A message with only some of a format's markers yields no failure at all."""
    assert rows(LOOKALIKES[name]) == ("none", [])


def test_interscan_sentence_needs_the_frame_or_a_session() -> None:
    """From InterScan but with neither its frame nor a session, the sentence is not read
    as InterScan's (only the generic phrase reader sees it, as unknown)."""
    raw = plain(
        "Unable to deliver message to <kim@example.org> (and other recipients in the same"
        " domain).\n",
        **INTERSCAN_FROM,
    )
    assert rows(raw) == (
        "phrases",
        [
            (
                "kim@example.org", None, "unknown",
                "Unable to deliver message to <kim@example.org> (and other recipients in the"
                " same domain).",
                None, None,
            )
        ],
    )  # fmt: skip


# WorkMail's intro and report fields without "Technical report:".
WORKMAIL_WITHOUT_HEADING = plain(
    "An error occurred while trying to deliver the mail to the following recipients:\n"
    "oli@example.org\n\nReporting-MTA: dsn; a1\n\nAction: failed\n"
    "Final-Recipient: rfc822; oli@example.org\nStatus: 5.1.1\n",
    sender="MAILER-DAEMON@us-west-2.amazonses.com",
    subject="Delivery Status Notification (Failure)",
)


def test_workmail_fields_without_its_heading_are_plain_delivery_status_fields() -> None:
    """Without "Technical report:" it is not read as WorkMail's report; its
    Final-Recipient and Status fields are still read, as any report's in a text."""
    detector, _ = rows(WORKMAIL_WITHOUT_HEADING)
    assert detector == "dsn-text"
