"""Bounce detection: what mutation testing (scripts/mutation) found unchecked.

Every field of a failure is checked (not only recipient, kind and status): the
diagnostic an operator reads, the reporting and remote MTA. Each plain-text format
is checked where its section ends (text after the marker is the returned original
and must not be read), delay notices must not count as failures, and the transfer
encodings, header encodings and size caps are checked at their edges.
"""

from __future__ import annotations

import base64
import binascii
import logging
import quopri

import pytest

from smtpeter.bounces.detect import MAX_DIAGNOSTIC, Failure, Report, detect
from tests.unit.test_bounce_detect import NONE, TABLE, dsn, fixture_bytes, nested

Row = tuple[str, str | None, str, str | None, str | None, str | None]

# Each fixture's failures in full: recipient, status, kind, diagnostic, reporting
# MTA, remote MTA.
FULL: dict[str, list[Row]] = {
    "dsn-multi.eml": [("Lara.Alias@example.org", "5.0.0", "hard",
                       "SMTP; 550 Requested action not taken: mailbox unavailable",
                       "mx.example.org", "mailstore.example.org")],
    "exchange-plain.eml": [
        ("nina.patel@tailspin.example", "5.1.1", "hard",
         "#550 5.1.1 RESOLVER.ADR.RecipNotFound; not found ##", "EX01.tailspin.example", None),
        ("oscar@tailspin.example", "5.2.2", "soft",
         "#550 5.2.2 STOREDRV.Deliver; recipient mailbox is full ##",
         "EX01.tailspin.example", None)],
    "exim-delay.eml": [("erin@busy.example.net", "4.2.2", "delay",
                        "host mx.busy.example.net [198.51.100.20] Delay reason: SMTP error from "
                        "remote mail server after RCPT TO:<erin@busy.example.net>: 452 4.2.2 "
                        "Mailbox full", None, "mx.busy.example.net")],
    "exim-dsn.eml": [("gone@example.org", "5.1.1", "hard",
                      "smtp; 550 5.1.1 <gone@example.org>: mailbox unavailable",
                      "mx.example.org", "mail.example.org")],
    "exim-plain.eml": [
        ("carol@example.net", "5.2.1", "soft",
         "host mail.example.net [192.0.2.40] SMTP error from remote mail server after RCPT "
         "TO:<carol@example.net>: 550 5.2.1 <carol@example.net>: mailbox disabled",
         None, "mail.example.net"),
        ("dave@down.example.net", None, "soft", "retry timeout exceeded", None, None)],
    "generic.eml": [("paul@example.net", "5.1.1", "hard",
                     "550 5.1.1 <paul@example.net>... No such user here", None, None)],
    "global-dsn.eml": [("j\u00f6rg@b\u00fccher.example", "5.1.1", "hard",
                        'X-Postfix; unknown user: "j\u00f6rg"', "mx.xn--bcher-kva.example", None)],
    "gmail-plain.eml": [("jack@example.net", "5.1.1", "hard",
                         "550 5.1.1 <jack@example.net>: Recipient address rejected: User unknown",
                         None, "mx.example.net")],
    "office365-dsn.eml": [("j.doe@contoso.example", "5.1.10", "hard",
                           "smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient "
                           "j.doe@contoso.example not found by SMTP address lookup",
                           "AM0PR01MB1234.eurprd01.prod.exchangelabs.com", None)],
    "outlook-autoreply.eml": [("lena.schmidt@fabrikam.example", None, "autoreply",
                               "Automatische Antwort: Our May newsletter", None, None)],
    "postfix-delay.eml": [("bob@grey.example.org", "4.7.1", "delay",
                           "smtp; 451 4.7.1 Greylisting in action, please come back later",
                           "relay.example.com", "mx.grey.example.org")],
    "postfix-dsn-expired.eml": [("ann@slow.example.org", "4.4.1", "soft",
                                 "X-Postfix; delivery temporarily suspended: connect to "
                                 "mx.slow.example.org[198.51.100.7]:25: Connection timed out",
                                 "relay.example.com", None)],
    "postfix-plain.eml": [("ivy@example.net", "5.1.1", "hard",
                           "host mx.example.net[192.0.2.25] said: 550 5.1.1 <ivy@example.net>: "
                           "Recipient address rejected: User unknown in local recipient table "
                           "(in reply to RCPT TO command)", "legacy.example.org",
                           "mx.example.net")],
    "qmail.eml": [
        ("frank@example.com.invalid", "5.1.2", "hard",
         "Sorry, I couldn't find any host named example.com.invalid. (#5.1.2)",
         "mail.example.net", None),
        ("grace@example.net", "5.1.1", "hard",
         "192.0.2.44 does not like recipient. Remote host said: 550 5.1.1 <grace@example.net>: "
         "Recipient address rejected: User unknown Giving up on 192.0.2.44.",
         "mail.example.net", "192.0.2.44")],
    "sendmail-dsn.eml": [("ghost@example.org", "5.1.1", "hard",
                          "SMTP; 550 5.1.1 <ghost@example.org>... User unknown",
                          "mail.example.org", "mail.example.org")],
    "sendmail-plain.eml": [("henry@old.example.org", "5.1.1", "hard",
                            "550 5.1.1 <henry@old.example.org>... User unknown",
                            None, "old.example.org")],
    "vacation.eml": [("Jane.Roe@example.org", None, "autoreply", "Auto: Our May newsletter",
                      None, None)],
    "yahoo.eml": [("kim@example.net", "5.1.1", "hard",
                   "Remote host said: 550 5.1.1 <kim@example.net>: Recipient address rejected: "
                   "User unknown [RCPT_TO]", None, None)],
}  # fmt: skip


def rows(report: Report) -> list[Row]:
    return [
        (f.recipient, f.status, f.kind, f.diagnostic, f.reporting_mta, f.remote_mta)
        for f in report.failures
    ]


@pytest.mark.parametrize("name", sorted(FULL))
def test_fixture_failures_in_full(name: str) -> None:
    """Each stored bounce yields the diagnostic and the MTAs an operator reads, exactly."""
    assert rows(detect(fixture_bytes(name))) == FULL[name]
    assert detect(fixture_bytes(name)).detector == TABLE[name][0]


# ---------------------------------------------------------------------------
# Plain-text bounces, written in the shapes the named software produces.


def plain(body: str, *, sender: str = "MAILER-DAEMON@mx.example.org", subject: str = "x",
          headers: str = "") -> bytes:  # fmt: skip
    return (
        f"From: {sender}\nTo: b+t@bounce.example.com\nSubject: {subject}\n{headers}\n{body}"
    ).encode()


QMAIL_HEAD = (
    "Hi. This is the qmail-send program at mail.example.net.\n"
    "I'm afraid I wasn't able to deliver your message to the following addresses.\n"
    "This is a permanent error; I've given up. Sorry it didn't work out.\n\n"
    "<ann@example.org>:\n"
    "Connected to 192.0.2.44 but sender was rejected.\n"
    "Remote host said: 571 denied\n\n"
)
QUOTED = "<zed@example.org>:\n550 5.1.1 quoted in the original\n"

SAMPLES: dict[str, tuple[bytes, str, list[Row]]] = {
    # qmail: each marker that starts the returned message ends the list. (A refused
# sender says nothing about the recipient: soft, however permanent qmail calls it.)
    "qmail-below": (
        plain(QMAIL_HEAD + "--- Below this line is a copy of the message.\n\n" + QUOTED),
        "qmail",
        [("ann@example.org", "5.0.0", "soft",
          "Connected to 192.0.2.44 but sender was rejected. Remote host said: 571 denied",
          "mail.example.net", "192.0.2.44")],
    ),
    "qmail-enclosed": (
        plain(QMAIL_HEAD + "--- Enclosed is a copy of the message.\n\n" + QUOTED),
        "qmail",
        [("ann@example.org", "5.0.0", "soft",
          "Connected to 192.0.2.44 but sender was rejected. Remote host said: 571 denied",
          "mail.example.net", "192.0.2.44")],
    ),
    "qmail-original": (
        plain(QMAIL_HEAD + "--- Original message follows.\n\n" + QUOTED),
        "qmail",
        [("ann@example.org", "5.0.0", "soft",
          "Connected to 192.0.2.44 but sender was rejected. Remote host said: 571 denied",
          "mail.example.net", "192.0.2.44")],
    ),
    "qmail-no-status": (
        plain("Hi. This is the qmail-send program at mx.example.net.\n\n"
              "<bo@example.org>:\nThis address no longer accepts mail.\n\n"
              "<cy@example.org>:\nThe mail system said: 250 2.0.0 ok\n\n"
              "<di@example.org>:\n452 4.2.2 mailbox full, message expired in queue\n"),
        "qmail",
        [("bo@example.org", None, "hard", "This address no longer accepts mail.",
          "mx.example.net", None),
         ("di@example.org", "4.2.2", "soft", "452 4.2.2 mailbox full, message expired in queue",
          "mx.example.net", None)],
    ),
    # Yahoo: both greetings, both markers; no status and no "permanent" wording gives unknown.
    "yahoo-old": (
        plain("Message from yahoo.com.\nUnable to deliver message to the following address(es)."
              "\n\n<eve@example.net>:\nThis user doesn't have a yahoo.com account\n\n"
              "--- Original message follows.\n\n" + QUOTED),
        "yahoo",
        [("eve@example.net", None, "hard", "This user doesn't have a yahoo.com account",
          None, None)],
    ),
    "yahoo-below": (
        plain("Sorry, we were unable to deliver your message to the following address.\n\n"
              "<fay@example.net>:\nRemote host said: 554 delivery error\n\n"
              "--- Below this line is a copy of the message.\n\n" + QUOTED),
        "yahoo",
        [("fay@example.net", "5.0.0", "soft", "Remote host said: 554 delivery error",
          None, None)],
    ),
    # Postfix before DSNs: hard, delay ("THIS IS A WARNING ONLY"), each section end.
    "postfix-warning": (
        plain("This is the mail system at host relay.example.com.\n\n"
              "####################################################################\n"
              "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\n"
              "####################################################################\n\n"
              "<gus@example.net>: host mx.example.net[192.0.2.25] said: 451 4.7.1 try\n"
              "    later (in reply to RCPT TO command)\n\n"
              "--- Delivery report unavailable ---\n\n" + QUOTED),
        "postfix",
        [("gus@example.net", "4.7.1", "delay",
          "host mx.example.net[192.0.2.25] said: 451 4.7.1 try later (in reply to RCPT TO "
          "command)", "relay.example.com", "mx.example.net")],
    ),
    "postfix-reporting-mta": (
        plain("This is the Postfix program at host relay.example.com.\n\n"
              "<hal@example.net> (expanded from <list@example.com>): unknown user: \"hal\"\n\n"
              "Reporting-MTA: dns; relay.example.com\n\n" + QUOTED),
        "postfix",
        [("hal@example.net", None, "hard", 'unknown user: "hal"', "relay.example.com",
          None)],
    ),
    "postfix-content-type": (
        plain("This is the mail system at host relay.example.com.\n\n"
              "<ida@example.net>: connect to mx.example.net[192.0.2.25]:25: Connection timed"
              " out\n\nContent-Type: message/rfc822\n\n" + QUOTED),
        "postfix",
        [("ida@example.net", None, "soft",
          "connect to mx.example.net[192.0.2.25]:25: Connection timed out",
          "relay.example.com", None)],
    ),
    # Exim: permanent list, "(generated from ...)", and each marker that ends the list.
    "exim-generated": (
        plain("This message was created automatically by mail delivery software.\n\n"
              "A message that you sent could not be delivered to one or more of its\n"
              "recipients. This is a permanent error. The following address(es) failed:\n\n"
              "  jo@example.net\n    (generated from info@example.org)\n"
              "    host mx.example.net [192.0.2.40]\n"
              "    SMTP error from remote mail server after RCPT TO:<jo@example.net>:\n"
              "    550 5.1.1 unknown\n"
              "  kit@example.net\n    mailbox is full: retry timeout exceeded\n"
              " (ignored)\n"
              "  lou@example.net\n\n"
              "------ This is a copy of the message, including all the headers. ------\n\n"
              "  zed@example.org\n    550 5.1.1 quoted\n"),
        "exim",
        # The "(generated from ...)" line names the alias (Failure.original), not a reason.
        [("jo@example.net", "5.1.1", "hard",
          "host mx.example.net [192.0.2.40] SMTP error from "
          "remote mail server after RCPT TO:<jo@example.net>: 550 5.1.1 unknown",
          None, "mx.example.net"),
         ("kit@example.net", None, "soft", "mailbox is full: retry timeout exceeded", None, None),
         ("lou@example.net", None, "soft", None, None, None)],
    ),
}  # fmt: skip

EXIM_HEAD = (
    "This message was created automatically by mail delivery software.\n\n"
    "A message that you sent could not be delivered to one or more of its\n"
    "recipients. This is a permanent error. The following address(es) failed:\n\n"
    "  mo@example.net\n    550 5.2.1 disabled\n"
)
EXIM_ENDS = [
    "------ This is a copy of the message's headers. ------\n",
    "------ The header of the original message is included below\n",
    "Reporting-MTA: dns; mx.example.org\n",
    "Content-Type: message/delivery-status\n",
    "The message identifier is: 1s6pAB-0002xY-9c\n",
    "If any of these addresses were forwarded, do check them.\n",
    "No action is required on your part.\n",
]
for i, end in enumerate(EXIM_ENDS):
    SAMPLES[f"exim-end-{i}"] = (
        plain(EXIM_HEAD + "\n" + end + "\n  zed@example.org\n    550 5.1.1 quoted\n"),
        "exim",
        [("mo@example.net", "5.2.1", "soft", "550 5.2.1 disabled", None, None)],
    )

SAMPLES.update({
    "exim-delay": (
        plain("This message was created automatically by mail delivery software.\n\n"
              "A message that you sent has not yet been delivered to one or more of its\n"
              "recipients after more than 24 hours on the queue on mx.example.org.\n\n"
              "The message identifier is:     1s6pAB-0002xY-9c\n\n"
              "The address to which the message has not yet been delivered is:\n\n"
              "  ned@example.net\n    host mx.example.net [192.0.2.41]\n"
              "    Delay reason: 451 4.3.0 busy\n\n"
              "No action is required on your part.\n"),
        "exim",
        [("ned@example.net", "4.3.0", "delay",
          "host mx.example.net [192.0.2.41] Delay reason: 451 4.3.0 busy",
          None, "mx.example.net")],
    ),
    "exim-prose-ends-list": (
        plain("This message was created automatically by mail delivery software.\n\n"
              "The following addresses failed:\n"
              "  oz@example.net\n    550 5.1.1 unknown\n"
              "Some prose the detector does not know.\n"
              "  pat@example.net\n    550 5.1.1 unknown\n"),
        "exim",
        [("oz@example.net", "5.1.1", "hard", "550 5.1.1 unknown", None, None)],
    ),
    # Sendmail: transient errors are a delay; the remote host is named.
    "sendmail-transient": (
        plain("The original message was received at Tue, 14 May 2024 10:21:05 +0200\n\n"
              "   ----- The following addresses had transient non-fatal errors -----\n"
              "<quin@example.org>\n    (reason: 451 4.4.1 reply: read error from mx)\n"
              "<rex@example.org>\n\n"
              "   ----- Transcript of session follows -----\n"
              "... while talking to mx.example.org.:\n"
              ">>> DATA\n<<< 451 4.4.1 reply: read error\n",
              subject="Warning: could not send message for past 4 hours"),
        "sendmail",
        [("quin@example.org", "4.4.1", "delay", "451 4.4.1 reply: read error from mx", None,
          "mx.example.org"),
         ("rex@example.org", None, "delay", None, None, "mx.example.org")],
    ),
    "sendmail-two-sections": (
        plain("   ----- The following addresses had permanent fatal errors -----\n"
              "<sam@example.org>\n    (reason: 550 5.1.1 User unknown)\n\n"
              "   ----- The following addresses had transient non-fatal errors -----\n"
              "<tom@example.org>\n"),
        "sendmail",
        [("sam@example.org", "5.1.1", "hard", "550 5.1.1 User unknown", None, None),
         ("tom@example.org", None, "delay", None, None, None)],
    ),
    # Exchange: the administrators' section gives reasons and servers.
    "exchange-remote": (
        plain("Delivery has failed to these recipients or groups:\n\n"
              "uma@example.net\nThe recipient's mailbox is full.\n\n"
              "Diagnostic information for administrators:\n\n"
              "Generating server: EX02.example.org\n"
              "Receiving server: mx.example.net\n\n"
              "uma@example.net\n"
              "Remote server returned '554 5.2.2 mailbox full'\n\n"
              "Original message headers:\n\nTo: vic@example.net\n",
              sender="postmaster@example.org", subject="Undeliverable: news"),
        "exchange",
        [("uma@example.net", "5.2.2", "soft", "Remote server returned '554 5.2.2 mailbox full'",
          "EX02.example.org", "mx.example.net")],
    ),
    "exchange-no-diagnostics": (
        plain("Delivery has failed to these recipients or groups:\n\n"
              "Wen Li <wen@example.net>\n"
              "Your message wasn't delivered because it timed out.\n\n"
              "Original message headers:\n\nwen2@example.net\n",
              sender="postmaster@example.org", subject="Undeliverable: news"),
        "exchange",
        [("wen@example.net", None, "unknown", None, None, None)],
    ),
    # Gmail's old plain text: delay notice.
    "gmail-delay": (
        plain("This is an automatically generated Delivery Status Notification\n\n"
              "THIS IS A WARNING MESSAGE ONLY.\n\n"
              "YOU DO NOT NEED TO RESEND YOUR MESSAGE.\n\n"
              "Delivery to the following recipient has been delayed:\n\n"
              "     xia@example.net\n\n"
              "Message will be retried for 2 more day(s)\n\n"
              "Technical details of temporary failure:\n"
              "Google tried to deliver your message, but it was rejected by the server for the "
              "recipient domain example.net by mx.example.net. [192.0.2.25].\n\n"
              "The error that the other server returned was:\n"
              "451 4.3.0 Mailbox temporarily unavailable\n"
              "try later\n\n"
              "----- Original message -----\n"),
        "gmail",
        [("xia@example.net", "4.3.0", "delay", "451 4.3.0 Mailbox temporarily unavailable try "
          "later", None, "mx.example.net")],
    ),
    "gmail-no-error-text": (
        plain("Delivery to the following recipients failed permanently:\n\n"
              "     yan@example.net\n     zoe@example.net\n\n"
              "Technical details of permanent failure:\nDNS Error: Domain name not found\n"),
        "gmail",
        [("yan@example.net", None, "hard", "DNS Error: Domain name not found", None, None),
         ("zoe@example.net", None, "hard", "DNS Error: Domain name not found", None, None)],
    ),
    # A failure of Gmail's own (no remote reply): what its technical details say.
    "gmail-quota": (
        plain("Delivery to the following recipient failed permanently:\n\n"
              "     ada@example.net\n\n"
              "Technical details of permanent failure:=20\nStorage quota exceeded\n\n"
              "----- Original message -----\n"),
        "gmail",
        [("ada@example.net", None, "soft", "Storage quota exceeded", None, None)],
    ),
})  # fmt: skip


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_plain_text_formats(name: str) -> None:
    """Each MTA's plain-text bounce yields exactly its listed recipients, reasons and hosts."""
    raw, detector, expected = SAMPLES[name]
    for variant in (raw, raw.replace(b"\n", b"\r\n")):
        report = detect(variant)
        assert report.detector == detector
        assert rows(report) == expected


@pytest.mark.parametrize(
    "body",
    [
        # A Postfix success or trace report shares the greeting: no failure.
        "This is the mail system at host gw.example.org.\n\nYour message was Successfully "
        "Delivered.\n\n<sam@example.org>: 550 nothing\n",
        "This is the mail system at host gw.example.org.\n\nEnclosed is the mail Delivery "
        "Status Report.\n\n<sam@example.org>: 550 nothing\n",
        # Exim's greeting without either list.
        "This message was created automatically by mail delivery software.\n\n"
        "550 5.1.1 <a@example.org> unknown\n",
        # Exim list header at the very end of the text.
        "This message was created automatically by mail delivery software.\n"
        "The following address(es) failed:",
        # Gmail's list with a line that is not an address.
        "Delivery to the following recipient failed permanently:\n\n     a@example.org\n"
        "     and some prose\n",
        "Delivery to the following recipient failed permanently:",
    ],
)
def test_plain_text_that_is_not_a_failure(body: str) -> None:
    """Greetings without a failure list (or with a success report) count nobody as failed."""
    assert detect(plain(body, sender="ann@example.org")) == NONE


# ---------------------------------------------------------------------------
# DSNs: fields, addresses, MTAs, encodings.


def one(fields: str) -> Row:
    report = detect(dsn("Reporting-MTA: dns; mx.example.org\n\n" + fields + "\n"))
    assert report.detector == "dsn"
    (row,) = rows(report)
    return row


@pytest.mark.parametrize(
    ("field", "recipient"),
    [
        ('rfc822; "Doe; J" <j@x.example>', "j@x.example"),
        ("<j@x.example> (Doe; J)", "j@x.example"),
        ("utf8; \\x{65E5}@x.example", "\u65e5@x.example"),
        ("rfc822; <MAILTO:Ann@x.example>", "Ann@x.example"),
        ("rfc822; JUAN@CORREO.MX", "JUAN@correo.mx"),
        ("rfc822; juan@correo.mx.", "juan@correo.mx"),
        ("utf-8; \\x{10FFFF}@x.example", "\U0010ffff@x.example"),
        ("utf-8; \\x{E000}@x.example", "\ue000@x.example"),
        ("utf-8; \\x{D7FF}@x.example", "\ud7ff@x.example"),
        ("utf-8; \\x{110000}@x.example", "\\x{110000}@x.example"),
        ("utf-8; \\x{D800}@x.example", "\\x{D800}@x.example"),
        ("utf-8; \\x{DFFF}@x.example", "\\x{DFFF}@x.example"),
    ],
)
def test_recipient_address_forms(field: str, recipient: str) -> None:
    """Typed, untyped, mailto:, RFC 6533 escaped and upper-case addresses are read as sent."""
    assert one(f"Final-Recipient: {field}\nAction: failed\nStatus: 5.1.1")[0] == recipient


@pytest.mark.parametrize("field", ["rfc822; a@.", "rfc822; a@.x.example", "rfc822; a@..."])
def test_addresses_without_a_domain_are_not_recipients(field: str) -> None:
    """A recipient whose domain is empty or starts with a dot is no address we sent to."""
    report = detect(dsn(f"Final-Recipient: {field}\nAction: failed\nStatus: 5.1.1\n"))
    assert report.failures == ()


def test_original_recipient_is_preferred_and_records_split() -> None:
    """Original-Recipient names the address we sent to; records run together are split."""
    report = detect(
        dsn(
            "Reporting-MTA: dns; mx.example.org\n\n"
            "Original-Recipient: rfc822; list@x.example\n"
            "Final-Recipient: rfc822; member@y.example\nAction: failed\nStatus: 5.1.1\n"
            "Original-Recipient: rfc822; two@x.example\n"
            "Final-Recipient: rfc822; other@y.example\nAction: failed\nStatus: 5.2.2\n"
            "Final-Recipient: rfc822; three@y.example\nAction: failed\nStatus: 5.3.0\n"
            "Original-Recipient: rfc822; four@x.example\nAction: failed\nStatus: 5.4.4\n"
        )
    )
    assert [(f.recipient, f.status) for f in report.failures] == [
        ("list@x.example", "5.1.1"),
        ("two@x.example", "5.2.2"),
        ("three@y.example", "5.3.0"),
        ("four@x.example", "5.4.4"),
    ]


def test_a_record_with_only_original_recipient_counts() -> None:
    """A DSN record that has Original-Recipient but no Final-Recipient is still read."""
    assert one("Original-Recipient: rfc822; a@x.example\nAction: failed\nStatus: 5.1.1") == (
        "a@x.example", "5.1.1", "hard", None, "mx.example.org", None,
    )  # fmt: skip


def test_a_record_that_is_no_address_does_not_hide_the_next() -> None:
    """An x400 or bad recipient record is skipped, the following records still count."""
    report = detect(
        dsn(
            "Final-Recipient: x400; /C=XX/\nAction: failed\nStatus: 5.1.1\n\n"
            "Final-Recipient: rfc822; b@x.example\nAction: failed\nStatus: 5.1.1\n"
        )
    )
    assert [f.recipient for f in report.failures] == ["b@x.example"]


def test_a_dsn_without_any_recipient_falls_through_to_the_text() -> None:
    """A delivery-status part with no recipient record leaves the decision to the text."""
    raw = dsn("Reporting-MTA: dns; mx.example.org\nArrival-Date: today\n")
    raw = raw.replace(b"See the report.", b"550 5.1.1 <a@x.example> unknown user")
    report = detect(raw)
    assert report.detector == "generic"
    assert [f.recipient for f in report.failures] == ["a@x.example"]


@pytest.mark.parametrize(
    ("fields", "row"),
    [
        ("Final-Recipient: rfc822; a@x.example\nAction: failed (permanent)\n"
         "Diagnostic-Code: smtp; 550 5.7.1 <a@x.example>; refused",
         ("a@x.example", "5.7.1", "soft", "smtp; 550 5.7.1 <a@x.example>; refused",
          "mx.example.org", None)),
        ("Final-Recipient: rfc822; a@x.example\nAction: failed\nStatus: 5.0.0\n"
         "Diagnostic-Code: X-Exim; 550 refused; code 5.2.2 given later",
         ("a@x.example", "5.2.2", "soft", "X-Exim; 550 refused; code 5.2.2 given later",
          "mx.example.org", None)),
        ("Final-Recipient: rfc822; a@x.example\nAction: failed\nStatus: 5.0.0\n"
         "Diagnostic-Code: 550 5.1.1 no type given",
         ("a@x.example", "5.1.1", "hard", "550 5.1.1 no type given", "mx.example.org", None)),
        ("Final-Recipient: rfc822; a@x.example\nAction: failed\nStatus: 5.0.0\n"
         "Diagnostic-Code: smtp; 4.4.7 queue expired",
         ("a@x.example", "5.0.0", "soft", "smtp; 4.4.7 queue expired", "mx.example.org", None)),
        ("Final-Recipient: rfc822; a@x.example\nAction: failed\n"
         "Remote-MTA: dns; MAIL.CORREO.MX (Postfix; Debian)",
         ("a@x.example", None, "unknown", None, "mx.example.org", "MAIL.CORREO.MX")),
        ("Final-Recipient: rfc822; a@x.example\nAction: failed\nRemote-MTA: mx.example.net.",
         ("a@x.example", None, "unknown", None, "mx.example.org", "mx.example.net")),
        ("Final-Recipient: rfc822; a@x.example\nAction:\nStatus: 5.1.1", None),
        # No Action at all: the Status class says it.
        ("Final-Recipient: rfc822; a@x.example\nStatus: 5.1.1",
         ("a@x.example", "5.1.1", "hard", None, "mx.example.org", None)),
    ],
)  # fmt: skip
def test_dsn_status_and_diagnostic(fields: str, row: Row | None) -> None:
    """Status, Diagnostic-Code and Remote-MTA give the code, the reason and the host as sent."""
    report = detect(dsn("Reporting-MTA: dns; mx.example.org\n\n" + fields + "\n"))
    assert report.detector == "dsn"
    assert rows(report) == ([row] if row else [])


@pytest.mark.parametrize(
    ("reporting", "expected"),
    [
        ("dns; mx.example.org (Postfix; Debian)", "mx.example.org"),
        ("mx.example.org", "mx.example.org"),
        ("dns; MX.EXAMPLE.MX.", "MX.EXAMPLE.MX"),
        ("dns;", None),
    ],
)
def test_reporting_mta_forms(reporting: str, expected: str | None) -> None:
    """Reporting-MTA is read with or without a type, comments and trailing dots dropped."""
    report = detect(
        dsn(f"Reporting-MTA: {reporting}\n\nFinal-Recipient: rfc822; a@x.example\n"
            "Action: failed\nStatus: 5.1.1\n")
    )  # fmt: skip
    assert [f.reporting_mta for f in report.failures] == [expected]


def test_a_long_diagnostic_is_cut() -> None:
    """A diagnostic longer than the limit is stored cut to the limit, unfolded."""
    text = "x" * (MAX_DIAGNOSTIC + 50)
    row = one(f"Final-Recipient: rfc822; a@x.example\nAction: failed\nDiagnostic-Code: smtp; "
              f"550\n {text}")  # fmt: skip
    assert row[3] == ("smtp; 550 " + text)[:MAX_DIAGNOSTIC]


STATUS = (
    "Reporting-MTA: dns; mx.example.org\r\n\r\n"
    "Final-Recipient: rfc822; a@x.example\r\nAction: failed\r\nStatus: 5.1.1\r\n"
    "Diagnostic-Code: smtp; 550 5.1.1 \u00fcnknown\r\n"
)


def report_with(status_part: bytes, *, cte: str, ctype: str = "message/delivery-status",
                top: str = "multipart/report; report-type=delivery-status") -> bytes:  # fmt: skip
    return (
        b"From: MAILER-DAEMON@mx.example.org\nSubject: Undelivered Mail\nMIME-Version: 1.0\n"
        + f"Content-Type: {top}; boundary=BB\n\n".encode()
        + b"--BB\nContent-Type: text/plain\n\nSee the report.\n\n"
        + f"--BB\nContent-Type: {ctype}\nContent-Transfer-Encoding: {cte}\n\n".encode()
        + status_part
        + b"\n--BB--\n"
    )


@pytest.mark.parametrize(
    ("cte", "encoded"),
    [
        ("Base64", base64.encodebytes(STATUS.encode())),
        ("base64", base64.b64encode(STATUS.encode()).rstrip(b"=")),
        (" Quoted-Printable", quopri.encodestring(STATUS.encode())),
        ("8bit", STATUS.encode()),
        # No padding and no final line break: nothing may be added after the last byte.
        ("base64", base64.b64encode(STATUS.rstrip().encode() + b"  ")),
    ],
)
def test_encoded_delivery_status(cte: str, encoded: bytes) -> None:
    """A delivery-status part in base64 (even unpadded), quoted-printable or 8bit is read."""
    report = detect(report_with(encoded, cte=cte))
    assert report.detector == "dsn" and report.is_dsn
    assert rows(report) == [
        ("a@x.example", "5.1.1", "hard", "smtp; 550 5.1.1 \u00fcnknown", "mx.example.org", None)
    ]


def test_global_delivery_status_report_type() -> None:
    """An RFC 6533 report (global-delivery-status) is a DSN and its UTF-8 fields are read."""
    raw = report_with(
        STATUS.replace("a@x.example", "\u00e5sa@x.example").encode(),
        cte="8bit",
        ctype="message/global-delivery-status",
        top="multipart/report; Report-Type=Global-Delivery-Status",
    )
    report = detect(raw)
    assert report.is_dsn and [f.recipient for f in report.failures] == ["\u00e5sa@x.example"]


def test_bad_base64_delivery_status_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    """A delivery-status part whose base64 cannot be decoded yields nothing, quietly."""
    assert detect(report_with(b"QUJDR\n", cte="base64")) == NONE
    assert not caplog.records


def test_a_multipart_report_of_another_type_is_not_a_dsn() -> None:
    """A multipart/report that is not a delivery-status report (e.g. a feedback report)."""
    raw = report_with(STATUS.encode(), cte="8bit", top="multipart/report; report-type=disposition")
    report = detect(raw)
    assert report.detector == "dsn" and not report.is_dsn
    plain_raw = report_with(STATUS.encode(), cte="8bit", top="multipart/mixed")
    assert not detect(plain_raw).is_dsn
    no_param = report_with(STATUS.encode(), cte="8bit", top="multipart/report")
    assert not detect(no_param).is_dsn


# ---------------------------------------------------------------------------
# The returned original's Message-ID.


def with_original(part: str) -> bytes:
    return dsn("Final-Recipient: rfc822; a@x.example\nAction: failed\nStatus: 5.1.1\n").replace(
        b"--BB--\n", part.encode() + b"\n--BB--\n"
    )


@pytest.mark.parametrize(
    ("part", "expected"),
    [
        ("--BB\nContent-Type: message/rfc822\n\nMessage-ID: <m1@x> (added by relay)\n\nhi",
         "<m1@x>"),
        ("--BB\nContent-Type: message/global\n\nMessage-ID: <m2@x>\n\nhi", "<m2@x>"),
        ("--BB\nContent-Type: text/rfc822-headers\n\nMessage-ID: bare-id@x\n", "bare-id@x"),
        ("--BB\nContent-Type: text/rfc822-headers\n\nMessage-ID: not an id\n", None),
        ("--BB\nContent-Type: text/rfc822-headers\n\nSubject: hi\n\nMessage-ID: <body@x>\n",
         None),
        ("--BB\nContent-Type: message/global-headers\nContent-Transfer-Encoding: base64\n\n"
         + base64.b64encode(b"Message-ID: <m3@x>\n").decode(), "<m3@x>"),
    ],
)  # fmt: skip
def test_original_message_id_forms(part: str, expected: str | None) -> None:
    """The returned original's Message-ID is read from each form a DSN returns it in."""
    assert detect(with_original(part)).original_message_id == expected


def test_original_message_id_from_dsn_field_and_text() -> None:
    """Without a returned original, X-Original-Message-ID or a quoted header gives the id."""
    raw = dsn(
        "Reporting-MTA: dns; mx.example.org\nX-Original-Message-ID: <orig@x>\n\n"
        "Final-Recipient: rfc822; a@x.example\nAction: failed\nStatus: 5.1.1\n"
    )
    assert detect(raw).original_message_id == "<orig@x>"
    text = plain("This is the qmail-send program at mx.example.net.\n\n<a@x.example>:\n"
                 "no such user\n\n--- Below this line is a copy of the message.\n\n"
                 "message-id: <q@x>\n")  # fmt: skip
    assert detect(text).original_message_id == "<q@x>"


# ---------------------------------------------------------------------------
# Parsing limits and odd input.


def test_a_parser_crash_is_logged_with_its_size_and_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A message that breaks the parser gives nothing and one warning naming its size."""
    raw = nested(5000)
    with caplog.at_level(logging.WARNING, logger="smtpeter.bounce"):
        assert detect(raw) == NONE
    (record,) = caplog.records
    assert record.getMessage() == f"bounce parsing failed on a {len(raw)} byte message"
    assert record.exc_info is not None and record.exc_info[0] is RecursionError


def test_nesting_cap_is_exact() -> None:
    """Parts are read down to the nesting cap and not one level below it."""
    assert detect(nested(12)).detector == "generic"
    assert detect(nested(13)) == NONE


def many_parts(fillers: int) -> bytes:
    parts = "".join("--P\nContent-Type: text/plain\n\nfiller\n" for _ in range(fillers))
    return (
        "From: MAILER-DAEMON@x.example\nSubject: Undeliverable\n"
        "Content-Type: multipart/mixed; boundary=P\n\n"
        + parts
        + "--P\nContent-Type: text/plain\n\n550 5.1.1 <a@x.example> unknown\n--P--\n"
    ).encode()


def test_part_count_cap_is_exact() -> None:
    """The first 200 parts are read (the message itself counts), later ones are not."""
    assert detect(many_parts(198)).detector == "generic"
    assert detect(many_parts(199)) == NONE


@pytest.mark.parametrize(
    "subject",
    [
        "Undeliverable: =?utf-8?b?/w==?=",  # decodes to bytes that are not UTF-8
        "Undeliverable: =?x-no-such-charset?q?abc?=",
        "Undeliverable: =?utf-8?b?QUJD?=",
        "Undeliverable: =?utf-8?b?QUJDR?=",  # base64 of a bad length
    ],
)
def test_a_bad_encoded_word_leaves_the_header_as_it_is(
    subject: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A subject with a bad encoded word still marks the message as a bounce, quietly."""
    raw = f"From: someone@x.example\nSubject: {subject}\n\n550 5.1.1 <a@x.example> unknown\n"
    report = detect(raw.encode())
    assert report.detector == "generic"
    assert not caplog.records


def test_an_autoreply_with_a_bad_encoded_word_is_still_an_autoreply(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An out-of-office reply whose subject has broken base64 is reported, not dropped."""
    raw = b"From: ann@x.example\nSubject: Automatic reply: =?utf-8?b?Q?=\n\nAway.\n"
    report = detect(raw)
    assert report.detector == "autoreply"
    assert [f.recipient for f in report.failures] == ["ann@x.example"]
    assert not caplog.records


def test_html_only_notification_is_read() -> None:
    """An NDR with only an HTML part is read as text: scripts, styles and entities handled."""
    html = (
        "<style>p{color:red}</style><SCRIPT>var a='550 <x@evil.example>';</SCRIPT>"
        "<p>Delivery has failed to these recipients or groups:</p>"
        '<p><a href="mailto:rob@example.net">rob@example.net</a></p>'
        "<p>Diagnostic information for administrators:</p>"
        "<p>Generating server: EX03.example.org</p>"
        "<p>rob@example.net<br>Remote server returned &quot;550 5.1.1 &lt;rob@example.net&gt;"
        "&nbsp;not&nbsp;found&quot; &amp;amp; more</p><style>unclosed"
    )
    raw = (
        "From: postmaster@example.org\nSubject: Undeliverable\nMIME-Version: 1.0\n"
        "Content-Type: text/html; charset=utf-8\n\n" + html
    ).encode()
    report = detect(raw)
    assert report.detector == "exchange"
    assert rows(report) == [
        ("rob@example.net", "5.1.1", "hard",
         'Remote server returned "550 5.1.1 <rob@example.net> not found" &amp; more',
         "EX03.example.org", None)
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("html", "found"),
    [
        ("<p>550 5.1.1 &lt;a@x.example&gt; unknown</p><script>x</script", ["a@x.example"]),
        ("<p>550 5.1.1 &lt;a@x.example&gt; unknown</p><script>no end", ["a@x.example"]),
        ("<script>x</script><p>550 5.1.1 &lt;a@x.example&gt; unknown</p>", ["a@x.example"]),
        ("<script>no end<p>550 5.1.1 &lt;a@x.example&gt; unknown</p>", []),
    ],
)
def test_scripts_are_skipped_closed_or_not(html: str, found: list[str]) -> None:
    """Text inside a script is never read; text before or after a closed one is."""
    raw = (
        "From: postmaster@example.org\nSubject: Undeliverable\nContent-Type: text/html\n\n" + html
    ).encode()
    assert [f.recipient for f in detect(raw).failures] == found


def test_html_part_is_used_only_without_text() -> None:
    """When a notification has a text part, its HTML twin is not read as well."""
    raw = (
        b"From: postmaster@example.org\nSubject: Undeliverable\n"
        b"Content-Type: multipart/alternative; boundary=A\n\n"
        b"--A\nContent-Type: text/plain\n\n550 5.1.1 <a@x.example> unknown\n"
        b"--A\nContent-Type: text/html\n\n<p>550 5.1.1 &lt;b@x.example&gt; unknown</p>\n--A--\n"
    )
    assert [f.recipient for f in detect(raw).failures] == ["a@x.example"]


def test_text_in_an_unknown_charset_and_crlf_inside_parts() -> None:
    """A text part in an unknown charset is read as UTF-8; a CR LF inside a part is a line end."""
    body = base64.b64encode("550 5.1.1 <\u00e9@x.example> unknown\r\n".encode()).decode()
    raw = (
        "From: MAILER-DAEMON@x.example\nSubject: Undeliverable\n"
        "Content-Type: text/plain; charset=x-unknown\nContent-Transfer-Encoding: base64\n\n"
        + body + "\n"
    ).encode()  # fmt: skip
    assert rows(detect(raw)) == [
        ("\u00e9@x.example", "5.1.1", "hard", "550 5.1.1 <\u00e9@x.example> unknown", None, None)
    ]


# ---------------------------------------------------------------------------
# Auto-replies and the generic fallback.


@pytest.mark.parametrize(
    "headers",
    [
        "Subject: Hello\nX-Autorespond: yes\n",
        "Subject: Hello\nX-AutoGenerated: Reply\n",
        "Subject: Hello\nAUTO-SUBMITTED: Auto-Replied\n",
        "Subject: Hello\nPRECEDENCE: Auto_Reply\n",
    ],
)
def test_more_autoreply_signals(headers: str) -> None:
    """Each auto-reply header marks a reply, whatever its letter case."""
    raw = f"From: Ann <ann@x.example>\n{headers}In-Reply-To: <n1@news.example>\n\nAway.\n"
    assert detect(raw.encode()) == Report(
        (Failure("ann@x.example", None, "autoreply", "Hello", None, None),),
        False,
        "autoreply",
        "<n1@news.example>",
    )


def test_generic_skips_long_and_sender_lines_and_our_delivered_to() -> None:
    """Sender lines, overlong lines and our own Delivered-To are skipped; later lines count."""
    long_line = "550 5.1.1 <long@x.example> " + "y" * 2000
    raw = (
        "From: MAILER-DAEMON@x.example\nTo: undisclosed\nDelivered-To: b+t@bounce.example.com\n"
        "Subject: Returned mail\n\n"
        "550 5.1.8 <news@example.com>: Sender address rejected\n"
        "550 5.7.1 <b+t@bounce.example.com> refused\n"
        f"{long_line}\n"
        "550 5.1.1 <first@x.example> unknown\n"
        "550 5.2.2 <first@x.example> again\n"
        "550 5.1.1 <second@x.example> unknown\n"
        "----- Original message -----\n"
        "550 5.1.1 <quoted@x.example> unknown\n"
    ).encode()
    assert rows(detect(raw)) == [
        ("first@x.example", "5.1.1", "hard", "550 5.1.1 <first@x.example> unknown", None, None),
        ("second@x.example", "5.1.1", "hard", "550 5.1.1 <second@x.example> unknown", None,
         None),
    ]  # fmt: skip


def test_a_line_of_exactly_2000_characters_is_read() -> None:
    """The generic detector reads lines up to 2000 characters long."""
    line = "550 5.1.1 <a@x.example> " + "y" * (2000 - 24)
    assert len(line) == 2000
    raw = f"From: MAILER-DAEMON@x.example\nSubject: x\n\n{line}\n".encode()
    assert [f.recipient for f in detect(raw).failures] == ["a@x.example"]


def test_text_right_after_a_script_or_between_two_is_read() -> None:
    """A failure right after a closed script, or between two scripts, is still read."""
    html = (
        "<script>a</script>550 5.1.1 &lt;a@x.example&gt; unknown<br>"
        "<style>b</style><p>550 5.1.1 &lt;b@x.example&gt; unknown</p><style>c</style>"
    )
    raw = (
        "From: postmaster@example.org\nSubject: Undeliverable\nContent-Type: text/html\n\n" + html
    ).encode()
    assert [f.recipient for f in detect(raw).failures] == ["a@x.example", "b@x.example"]


def test_style_content_is_not_read() -> None:
    """Text inside a style element is never read for failures."""
    raw = (
        b"From: postmaster@example.org\nSubject: Undeliverable\nContent-Type: text/html\n\n"
        b"<STYLE>\n550 5.1.1 &lt;css@x.example&gt; x\n</STYLE><p>nothing here</p>"
    )
    assert detect(raw) == NONE


def test_qmail_paragraph_without_a_domain_does_not_hide_the_next() -> None:
    """A qmail paragraph for a bare local name is skipped; later recipients still count."""
    raw = plain(
        "Hi. This is the qmail-send program at mx.example.net.\n\n"
        "<postmaster>:\nno such local user\n\n<b@x.example>:\n550 5.1.1 unknown\n"
    )
    assert [f.recipient for f in detect(raw).failures] == ["b@x.example"]


def test_exim_failure_with_a_4xx_code_is_soft() -> None:
    """An address Exim gave up on after a 4xx reply is a soft failure, not a hard one."""
    raw = plain(
        "This message was created automatically by mail delivery software.\n\n"
        "The following address(es) failed:\n\n"
        "  a@x.example\n    host mx.x.example [192.0.2.9]\n    451 4.3.2 system not ready\n"
    )
    assert [(f.kind, f.status) for f in detect(raw).failures] == [("soft", "4.3.2")]


def test_truncated_sendmail_list_header_reads_nothing() -> None:
    """A Sendmail bounce cut right after its list header yields no failures."""
    raw = plain(
        "<a@x.example>\n\n   ----- The following addresses had permanent fatal errors -----"
    )
    assert detect(raw) == NONE


def test_generic_reads_5000_lines_and_lines_up_to_2000_characters() -> None:
    """The generic detector stops after 5000 lines and skips lines over 2000 characters."""
    head = "From: MAILER-DAEMON@x.example\nSubject: Undeliverable\n\n"
    filler = "x\n" * 5000
    assert detect((head + filler + "550 5.1.1 <a@x.example> unknown\n").encode()) == NONE
    line = "550 5.1.1 <a@x.example> " + "y" * (2001 - 24)
    assert detect((head + line + "\n").encode()) == NONE


def test_sendmail_permanent_without_reason_and_indented_lines() -> None:
    """A Sendmail permanent failure without a reason is hard; indented lines are no recipient."""
    raw = plain(
        "   ----- The following addresses had permanent fatal errors -----\n"
        "<una@example.org>\n <not-a-recipient@example.org>\n"
    )
    assert rows(detect(raw)) == [("una@example.org", None, "soft", None, None, None)]


def test_exchange_lowercase_server_and_expired_reason() -> None:
    """Exchange's receiving server is read whatever its case; an expiry without code is soft."""
    raw = plain(
        "Delivery has failed to these recipients or groups:\n\nvi@example.net\n\n"
        "Diagnostic information for administrators:\n\n"
        "receiving server: mx.example.net\n\nvi@example.net\nMessage expired in queue\n",
        sender="postmaster@example.org",
    )
    assert rows(detect(raw)) == [
        ("vi@example.net", None, "soft", "Message expired in queue", None, "mx.example.net")
    ]


@pytest.mark.parametrize(
    ("error", "kind", "status"),
    [("451 4.4.1 no answer from host", "soft", "4.4.1"), ("Connection timed out", "soft", None)],
)
def test_gmail_permanent_failure_after_a_transient_error_is_soft(
    error: str, kind: str, status: str | None
) -> None:
    """Gmail giving up after a 4xx reply or a time-out reports a soft failure."""
    raw = plain(
        "Delivery to the following recipient failed permanently:\n\n     wu@example.net\n\n"
        f"The error that the other server returned was:\n{error}\n"
    )
    assert [(f.kind, f.status) for f in detect(raw).failures] == [(kind, status)]


# ---------------------------------------------------------------------------
# Exchange NDRs: where the listing and the administrators' section end, and how a
# reason is found under an address.

EXCHANGE_HEAD = "Delivery has failed to these recipients or groups:\n\n"


def exchange(body: str) -> bytes:
    return plain(EXCHANGE_HEAD + body, sender="postmaster@example.org",
                 subject="Undeliverable: May news")  # fmt: skip


def test_exchange_address_only_in_the_diagnostics_is_not_a_recipient() -> None:
    """An address the administrators' section names (a contact's routed address) is not
    counted as failed: only the recipients listed for the user are."""
    raw = exchange(
        "Uma Patel <uma@example.net>\nThe email address couldn't be found.\n\n"
        "Diagnostic information for administrators:\n\n"
        "Generating server: EX02.example.org\n\n"
        "uma.patel@partner.example\n"
        "Remote Server returned '550 5.1.1 RESOLVER.ADR.RecipNotFound; not found'\n\n"
        "Original message headers:\n\nTo: Uma Patel <uma@example.net>\n"
    )
    assert rows(detect(raw)) == [
        ("uma@example.net", None, "unknown", None, "EX02.example.org", None)
    ]


def test_exchange_original_headers_are_not_read_for_reasons() -> None:
    """The returned original's headers after "Original message headers" give no reason,
    even when a header names the recipient in angle brackets."""
    raw = exchange(
        "Uma Patel <uma@example.net>\nYour message couldn't be delivered.\n\n"
        "Diagnostic information for administrators:\n\n"
        "Generating server: EX02.example.org\n\n"
        "Original message headers:\n\n"
        "From: News <news@example.com>\nTo: Uma Patel <uma@example.net>\n"
        "Subject: 550 5.1.1 May news\nReceiving server: mx.quoted.example\n"
    )
    assert rows(detect(raw)) == [
        ("uma@example.net", None, "unknown", None, "EX02.example.org", None)
    ]


def test_exchange_reason_is_the_line_under_the_address_not_an_earlier_attempt() -> None:
    """Exchange 2013+ lists the final reply under the address, then earlier attempts that
    name the address again; the final (permanent) reply is the reason."""
    raw = exchange(
        "uma@example.net\nThe email address couldn't be found.\n\n"
        "Diagnostic information for administrators:\n\n"
        "Generating server: EX02.example.org\n"
        "Receiving server: mx.example.net (192.0.2.25)\n\n"
        "uma@example.net\n"
        "Remote Server at mx.example.net (192.0.2.25) returned '550 5.1.1 "
        "<uma@example.net>: Recipient address rejected: User unknown'\n"
        "5/14/2024 8:21:05 AM - Remote Server at mx.example.net (192.0.2.25) returned "
        "'450 4.7.1 <uma@example.net>: Client host rejected: try again later'\n\n"
        "Original message headers:\n\nTo: uma@example.net\n"
    )
    assert rows(detect(raw)) == [
        ("uma@example.net", "5.1.1", "hard",
         "Remote Server at mx.example.net (192.0.2.25) returned '550 5.1.1 <uma@example.net>: "
         "Recipient address rejected: User unknown'", "EX02.example.org", "mx.example.net")
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("gap", "reason"),
    [
        ("\n\n", "#550 5.1.1 RESOLVER.ADR.RecipNotFound; not found ##"),
        ("\n\n\n", None),
    ],
)
def test_exchange_reason_is_read_from_the_three_lines_under_the_address(
    gap: str, reason: str | None
) -> None:
    """A reason up to three lines under an address is its reason; one further down is not
    (it is the next recipient's block)."""
    raw = exchange(
        "uma@example.net\nvic@example.net\n\n"
        "Diagnostic information for administrators:\n\n"
        "Generating server: EX02.example.org\n\n"
        f"uma@example.net{gap}\n"
        "#550 5.1.1 RESOLVER.ADR.RecipNotFound; not found ##\n\n"
        "Original message headers:\n"
    )
    report = detect(raw)
    assert [(f.recipient, f.diagnostic) for f in report.failures] == [
        ("uma@example.net", reason),
        ("vic@example.net", None),
    ]


def test_text_inside_the_first_of_two_scripts_is_not_read() -> None:
    """An HTML NDR with two scripts: a failure-like string in the first one is not read,
    the real failure between them is."""
    html = (
        "<script>var sample = '550 5.1.1 &lt;x@evil.example&gt; unknown';</script>"
        "<p>550 5.1.1 &lt;a@x.example&gt; unknown</p>"
        "<script>track();</script><p>Thanks</p>"
    )
    raw = (
        "From: postmaster@example.org\nSubject: Undeliverable\nContent-Type: text/html\n\n" + html
    ).encode()
    assert [f.recipient for f in detect(raw).failures] == ["a@x.example"]


def test_base64_delivery_status_is_read_wherever_its_lines_break() -> None:
    """A base64 delivery-status part is read the same whatever its line breaks split, here
    a break between two ``XX`` pairs (the texts are chosen so the base64 holds ``XXXX``)."""
    text = (
        STATUS.replace("\r\n\r\n", "\r\nX-Postfix-Queue-ID: 4F2A1B7\r\n\r\n", 1)
        .replace("\u00fcnknown", "\u00fcnknown (W]u\u00fc)")
        .encode()
    )
    encoded = base64.b64encode(text)
    at = encoded.find(b"XXXX") + 2
    assert at > 2
    report = detect(report_with(encoded[:at] + b"\n" + encoded[at:], cte="base64"))
    assert rows(report) == [
        ("a@x.example", "5.1.1", "hard", "smtp; 550 5.1.1 \u00fcnknown (W]u\u00fc)",
         "mx.example.org", None)
    ]  # fmt: skip


def uuencoded(data: bytes) -> bytes:
    lines = [binascii.b2a_uu(data[i : i + 45]) for i in range(0, len(data), 45)]
    return b"begin 644 headers\n" + b"".join(lines) + b"`\nend\n"


HEADERS = b"From: news@example.com\nTo: a@x.example\nMessage-ID: <n-7@news.example.com>\n"


@pytest.mark.parametrize(
    ("cte", "body"),
    [
        ("base64", base64.encodebytes(HEADERS)),
        ("quoted-printable", quopri.encodestring(HEADERS)),
        ("x-uuencode", uuencoded(HEADERS)),
    ],
)
def test_original_message_id_from_encoded_returned_headers(cte: str, body: bytes) -> None:
    """The original's Message-ID is read from a text/rfc822-headers part in any transfer
    encoding the email package undoes (base64, quoted-printable, uuencode)."""
    part = f"--BB\nContent-Type: text/rfc822-headers\nContent-Transfer-Encoding: {cte}\n\n"
    assert detect(with_original(part + body.decode())).original_message_id == (
        "<n-7@news.example.com>"
    )


def test_a_broken_byte_in_a_declared_charset_spoils_only_itself() -> None:
    """A Japanese NDR in Shift_JIS with one broken byte keeps its Japanese diagnostic; only
    that byte becomes U+FFFD (the text is not re-read as UTF-8)."""
    reason = "\u5b9b\u5148\u304c\u5b58\u5728\u3057\u307e\u305b\u3093"  # no such recipient
    raw = (
        b"From: MAILER-DAEMON@mx.example.jp\nSubject: Undeliverable\n"
        b"Content-Type: text/plain; charset=Shift_JIS\n\n"
        + b"550 5.1.1 <taro@example.jp> "
        + reason.encode("shift_jis")
        + b"\xff\n"
    )
    assert rows(detect(raw)) == [
        ("taro@example.jp", "5.1.1", "hard", f"550 5.1.1 <taro@example.jp> {reason}\ufffd",
         None, None)
    ]  # fmt: skip


@pytest.mark.parametrize("charset", ["us-ascii", "US-ASCII", "ascii"])
def test_utf8_text_labelled_us_ascii_keeps_its_recipient(charset: str) -> None:
    """A bounce whose text part says us-ascii but quotes a UTF-8 address (common for
    SMTPUTF8 recipients) reports that address as sent, not with U+FFFD in it."""
    raw = (
        "From: MAILER-DAEMON@mx.example.net\nSubject: failure notice\n"
        f"Content-Type: text/plain; charset={charset}\nContent-Transfer-Encoding: 8bit\n\n"
        "Hi. This is the qmail-send program at mx.example.net.\n\n"
        "<j\u00f6rg@b\u00fccher.example>:\nSorry, no mailbox here by that name. (#5.1.1)\n"
    ).encode()
    assert [(f.recipient, f.status) for f in detect(raw).failures] == [
        ("j\u00f6rg@b\u00fccher.example", "5.1.1")
    ]


def test_html_ndr_stops_at_a_bold_original_message_marker() -> None:
    """In an HTML-only NDR, a marker set in bold ("<b>Original message headers:</b>")
    still ends the report: a 550 line quoted from the original below it is not read."""
    html = (
        "<html><body><p>Your message to <b>a@x.example</b> couldn't be delivered.</p>\n"
        "<p>550 5.1.1 &lt;a@x.example&gt; mailbox unavailable</p>\n"
        "<p><b>Original message headers:</b></p>\n"
        "<pre>To: b@x.example\n"
        "Subject: re: 550 5.1.1 &lt;quoted@x.example&gt; unknown</pre></body></html>\n"
    )
    raw = (
        "From: postmaster@example.org\nSubject: Undeliverable: news\n"
        "Content-Type: text/html; charset=utf-8\n\n" + html
    ).encode()
    assert rows(detect(raw)) == [
        ("a@x.example", "5.1.1", "hard", "550 5.1.1 <a@x.example> mailbox unavailable", None,
         None)
    ]  # fmt: skip


def test_an_attachment_that_is_not_text_is_not_read() -> None:
    """A bounce that attaches the returned original as application/octet-stream: only its
    text part is read, not a 550 line inside the attachment."""
    original = base64.encodebytes(
        b"From: news@example.com\nTo: b@x.example\nSubject: fwd\n\n"
        b"> 550 5.1.1 <quoted@x.example> unknown\n"
    )
    raw = (
        b"From: MAILER-DAEMON@mx.example.org\nSubject: Returned mail\nMIME-Version: 1.0\n"
        b"Content-Type: multipart/mixed; boundary=BB\n\n"
        b"--BB\nContent-Type: text/plain\n\n550 5.1.1 <a@x.example> unknown\n"
        b"--BB\nContent-Type: application/octet-stream; name=original.eml\n"
        b"Content-Transfer-Encoding: base64\n\n" + original + b"--BB--\n"
    )
    assert [f.recipient for f in detect(raw).failures] == ["a@x.example"]


def test_a_bounce_whose_only_part_is_not_text_is_still_read() -> None:
    """A bounce from a broken MTA that labels its whole body application/octet-stream is
    still read as the text it is."""
    raw = (
        b"From: MAILER-DAEMON@mx.example.org\nSubject: Returned mail\n"
        b"Content-Type: application/octet-stream\n\n550 5.1.1 <a@x.example> unknown\n"
    )
    assert [f.recipient for f in detect(raw).failures] == ["a@x.example"]
