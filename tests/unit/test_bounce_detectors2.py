"""Plain-text bounce formats read by their own markers: the DragonFly Mail Agent,
OpenSMTPD, Zoho, au (EZweb, KDDI), GMX, Lotus Notes, InterScan, X6, Amazon
WorkMail, IMail's other lines, and listing variants. Every message here is written
for the test in the words of the format; none is taken from a corpus."""

from __future__ import annotations

import pytest

from smtpeter.bounces.detect import detect
from tests.unit.test_bounce_detect_mutants import plain

Row = tuple[str, str | None, str, str | None]


def short(raw: bytes) -> tuple[str, list[Row]]:
    report = detect(raw)
    return report.detector, [(f.recipient, f.status, f.kind, f.diagnostic) for f in report.failures]


DMA = (
    "This is the DragonFly Mail Agent v0.13 at mail.example.net.\n\n"
    "There was an error delivering your mail to <{addr}>.\n\n"
    "{reason}\n\n"
    "Message headers follow.\n\n"
    "Subject: hello\nTo: <{addr}>\n"
)
OPENSMTPD = (
    "    Hi!\n\n"
    "    This is the MAILER-DAEMON, please DO NOT REPLY to this e-mail.\n\n"
    "{intro}\n\n"
    "{lines}\n\n"
    "    Below is a copy of the original message:\n\n"
    "Subject: hello\n\nann@example.org: 550 5.1.1 quoted in the original\n"
)
ZOHO = (
    "This message was created automatically by mail delivery software.\n"
    "A message that you sent could not be delivered to one or more of its recipients."
    " This is a permanent error. \n\n"
    "{lines}\n\n\n"
    "Received:from mail.example.com by mx.example.com\n"
)
ZOHO_WARNING = (
    "This message was created automatically by mail delivery system.\n\n"
    "THIS IS A WARNING MESSAGE ONLY.\n\nYOU DO NOT NEED TO RESEND YOUR MESSAGE.\n\n"
    "----- The following addresses had fatal errors ----- \n"
    "[Status: Error, Address: <dan@example.org>, ResponseCode 421, , Host not reachable.]\n\n"
    "Message will be retried for 2 more day(s)\n"
)
GMX = (
    "This message was created automatically by mail delivery software.\n\n"
    "A message that you sent could not be delivered to one or more of\n"
    "its recipients. This is a permanent error. The following address\nfailed:\n\n"
    '"eve@example.org":\nSMTP error from remote server after RCPT command:\n'
    "host: mx.example.org\n5.1.1 <eve@example.org>... User unknown\n"
    '"fay@example.org":\nSMTP error from remote server after RCPT command:\n'
    "host: mx.example.org\n5.2.2 <fay@example.org>... Mailbox full\n\n\n"
    "--- The header of the original message is following. ---\n\n"
    "To: eve@example.org\n"
)
EZWEB_SESSION = (
    "Each of the following recipients was rejected by a remote\nmail server.\n\n"
    "    Recipient: <gus@example.org>\n"
    "    >>> RCPT TO:<gus@example.org>\n"
    "    <<< 550 5.1.1 <gus@example.org>: Recipient address rejected: User unknown\n"
)
EZWEB_BARE = "The user(s) account is disabled.\n\n<hal@ezweb.ne.jp>\n"
KDDI = (
    "Your mail sent on: Mon, 2 Feb 2015 10:00:00 +0900\n"
    "     Could not be delivered to: <ida@example.dion.ne.jp>\n"
    "     As their mailbox is full.\n"
)
NOTES = (
    "------- Failure Reasons  --------\n\n"
    "User not listed in public Name & Address Book\njoe@example.org\n\n"
    "------- Returned Message --------\nTo: joe@example.org\n"
)
INTERSCAN = (
    "****** Message from InterScan Messaging Security Suite ******\n\n"
    "The following mail could not be delivered.\n"
    "Reason:  Unable to deliver message to <kim@example.org> (and other recipients in"
    " the same domain).\n\n"
    "************************     End of message     **********************\n"
)
INTERSCAN_SESSION = (
    "Sent <<< RCPT TO:<lee@example.org>\nReceived >>> 550 5.1.1 <lee@example.org>... User unknown\n"
)
X6 = (
    "We had trouble delivering your message. Full details follow:\n\n"
    "Subject: 'hello'\nDate: 'Mon, 2 Feb 2015 10:00:00 +0000'\n\n2 error(s):\n\n"
    "The following recipients returned permanent errors: max@example.org. Reason: SMTP"
    " Server <192.0.2.7> refused to accept your message (DATA), with the following error"
    " message: [554 5.4.6 Hop count exceeded - possible mail loop]\n\n"
    "SMTP Server <mx.example.org> rejected recipient <ned@example.org> (Error following RCPT"
    " command). It responded as follows: [550 5.1.1 User unknown]\n\n"
    "The attachment contains the original mail headers.\n"
)
WORKMAIL = (
    "An error occurred while trying to deliver the mail to the following recipients:\n"
    "oli@example.org\n\nTechnical report:\n\n"
    "Reporting-MTA: dsn; a1.smtp-out.example.com\n\n"
    "Action: failed\nFinal-Recipient: rfc822; oli@example.org\n"
    "Diagnostic-Code: smtp; 554 4.4.7 Message expired: unable to deliver in 840 minutes.\n"
    "Status: 4.4.7\n"
)

CASES: dict[str, tuple[bytes, str, list[Row]]] = {
    "dma-reply": (
        plain(
            DMA.format(
                addr="ann@example.org",
                reason=(
                    "mx.example.org [192.0.2.9] did not like our RCPT TO:\n"
                    "550 5.1.1 <ann@example.org>: Recipient address rejected: User unknown"
                ),
            ),
            subject="Mail delivery failed",
        ),
        "dma",
        [
            (
                "ann@example.org",
                "5.1.1",
                "hard",
                "mx.example.org [192.0.2.9] did not like our RCPT TO: 550 5.1.1 <ann@example.org>:"
                " Recipient address rejected: User unknown",
            )
        ],
    ),
    "dma-expired": (
        plain(
            DMA.format(
                addr="bob@example.org",
                reason="Could not deliver for the last 432000 seconds. Giving up.",
            ),
            subject="Mail delivery failed",
        ),
        "dma",
        [
            (
                "bob@example.org",
                None,
                "soft",
                "Could not deliver for the last 432000 seconds. Giving up.",
            )
        ],
    ),
    "opensmtpd-error": (
        plain(
            OPENSMTPD.format(
                intro="    An error has occurred while attempting to deliver a message for\n"
                "    the following list of recipients:",
                lines="cat@example.org: 550 5.1.1 No such user\ndog@example.org: Envelope expired",
            ),
            subject="Delivery status notification: error",
        ),
        "opensmtpd",
        [
            ("cat@example.org", "5.1.1", "hard", "550 5.1.1 No such user"),
            ("dog@example.org", None, "soft", "Envelope expired"),
        ],
    ),
    "opensmtpd-delay": (
        plain(
            OPENSMTPD.format(
                intro="    A message is delayed for more than 4 hours for the following\n"
                "    list of recipients:",
                lines="cat@example.org: 421 Try again later\n\n"
                "    Please note that this is only a temporary failure report.",
            ),
            subject="Delivery status notification: delay",
        ),
        "opensmtpd",
        [("cat@example.org", "4.0.0", "delay", "421 Try again later")],
    ),
    "opensmtpd-oldest": (
        plain(
            "Hi !\n\nThis is the MAILER-DAEMON, please DO NOT REPLY to this e-mail.\n"
            "An error has occurred while attempting to deliver a message.\n\n"
            "Recipient: cat@example.org\nReason:\n550 5.1.1 No such user\n\n"
            "Below is a copy of the original message:\n\nTo: cat@example.org\n",
            subject="Delivery status notification",
        ),
        "opensmtpd",
        [("cat@example.org", "5.1.1", "hard", "550 5.1.1 No such user")],
    ),
    "zoho": (
        plain(
            ZOHO.format(
                lines=(
                    "eve@example.org Invalid Address, ERROR_CODE :550, ERROR_CODE :5.1.1 "
                    "<eve@example.org>... User Unknown\n"
                    "fay@example.org Error, ERROR_CODE :421, ERROR_CODE :, Host not reachable."
                )
            ),
            sender="mailer-daemon@mail.zoho.com",
            subject="Undelivered Mail Returned to Sender",
        ),
        "zoho",
        [
            ("eve@example.org", "5.1.1", "hard", "550 5.1.1 <eve@example.org>... User Unknown"),
            ("fay@example.org", "4.0.0", "soft", "421 Host not reachable."),
        ],
    ),
    "zoho-warning": (
        plain(
            ZOHO_WARNING,
            sender="mailer-daemon@mail.zoho.com",
            subject="Mail Delivery Status Notification (Delay)",
        ),
        "zoho",
        [("dan@example.org", "4.0.0", "delay", "421 Host not reachable.")],
    ),
    "gmx": (
        plain(GMX, subject="Mail delivery failed: returning message to sender"),
        "exim",
        [
            (
                "eve@example.org",
                "5.1.1",
                "hard",
                "SMTP error from remote server after RCPT"
                " command: host: mx.example.org 5.1.1 <eve@example.org>... User unknown",
            ),
            (
                "fay@example.org",
                "5.2.2",
                "soft",
                "SMTP error from remote server after RCPT"
                " command: host: mx.example.org 5.2.2 <fay@example.org>... Mailbox full",
            ),
        ],
    ),
    "ezweb-session": (
        plain(
            EZWEB_SESSION,
            sender="Postmaster@ezweb.ne.jp",
            subject="Mail System Error - Returned Mail",
        ),
        "ezweb",
        [
            (
                "gus@example.org",
                "5.1.1",
                "hard",
                "550 5.1.1 <gus@example.org>: Recipient address rejected: User unknown",
            )
        ],
    ),
    "ezweb-bare": (
        plain(
            EZWEB_BARE,
            sender="<Postmaster@ezweb.ne.jp>",
            subject="Mail System Error - Returned Mail",
        ),
        "ezweb",
        [("hal@ezweb.ne.jp", None, "soft", "The user(s) account is disabled.")],
    ),
    "kddi": (
        plain(KDDI, sender="no-reply@example.dion.ne.jp", subject="Mail"),
        "kddi",
        [("ida@example.dion.ne.jp", None, "soft", "As their mailbox is full.")],
    ),
    "kddi-two": (
        plain(
            KDDI.replace("     As their mailbox is full.\n", "")
            + "     Could not be delivered to: <jon@example.org>\n"
            "     As the remote domain doesnt exist.\n",
            sender="no-reply@example.dion.ne.jp",
            subject="Mail",
        ),
        "kddi",
        [
            ("ida@example.dion.ne.jp", None, "soft", None),
            ("jon@example.org", None, "hard", "As the remote domain doesnt exist."),
        ],
    ),
    "notes": (
        plain(NOTES, sender="postmaster@example.org", subject="Undeliverable message"),
        "notes",
        # Not in the public Name & Address Book: no such user, hard.
        [("joe@example.org", None, "hard", "User not listed in public Name & Address Book")],
    ),
    "interscan": (
        plain(
            INTERSCAN,
            sender='postmaster@example.org ("InterScan Notification")',
            subject="Mail could not be delivered",
        ),
        "trendmicro",
        [
            (
                "kim@example.org",
                None,
                "soft",
                "Unable to deliver message to <kim@example.org>"
                " (and other recipients in the same domain).",
            )
        ],
    ),
    "interscan-session": (
        plain(INTERSCAN_SESSION, sender='"InterScan MSS" <postmaster@example.org>'),
        "trendmicro",
        [("lee@example.org", "5.1.1", "hard", "550 5.1.1 <lee@example.org>... User unknown")],
    ),
    "trouble": (
        plain(X6, sender="mailer-daemon", subject="There was an error sending your mail"),
        "trouble",
        [
            (
                "max@example.org",
                "5.4.6",
                "soft",
                "554 5.4.6 Hop count exceeded - possible mail loop",
            ),
            ("ned@example.org", "5.1.1", "hard", "550 5.1.1 User unknown"),
        ],
    ),
    "amazonworkmail": (
        plain(
            WORKMAIL,
            sender="MAILER-DAEMON@us-west-2.amazonses.com",
            subject="Delivery Status Notification (Failure)",
        ),
        "amazonworkmail",
        [
            (
                "oli@example.org",
                "4.4.7",
                "soft",
                "smtp; 554 4.4.7 Message expired: unable to deliver in 840 minutes.",
            )
        ],
    ),
    "imail-lines": (
        plain(
            "Unknown user: pam@example.org\n"
            "User mailbox exceeds allowed size: quin@example.org\n\n\n"
            "Original message follows.\n\nTo: pam@example.org\n",
            sender="Postmaster <postmaster@example.org>",
            subject="Undeliverable Mail",
            headers="X-Mailer: <SMTP32 v8.22>\n",
        ),
        "smtp32",
        [
            ("pam@example.org", None, "hard", "Unknown user"),
            ("quin@example.org", None, "soft", "User mailbox exceeds allowed size"),
        ],
    ),
    "listing-brackets": (
        plain(
            "The original message was received at Mon, 2 Feb 2015 10:00:00 +0900\n"
            "from sam@example.jp\n\n---The following addresses had delivery errors---\n\n"
            "ray@example.org [User unknown]\n\n\nhello\n",
            sender='"Mail Deliver System" <MAILER-DAEMON@mx.example.jp>',
            subject="Returned Mail: User unknown",
        ),
        "listing",
        [("ray@example.org", None, "hard", "User unknown")],
    ),
    "listing-aborted": (
        plain(
            "Delevery to the following recipients was aborted after 5.0 hour(s):\n\n"
            "  * sue@example.org\n\n",
            sender="Mail Delivery System <Mail.Delivery.System@mx.example.com>",
            subject="Delivery status notification",
        ),
        "listing",
        [("sue@example.org", None, "soft", None)],
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_format_table(name: str) -> None:
    """Each format yields its recipients with the status, kind and reply it wrote."""
    raw, detector, expected = CASES[name]
    assert short(raw) == (detector, expected)


LOOKALIKES: dict[str, bytes] = {
    # A person quoting the sentence, without the agent's greeting.
    "dma": plain(
        "Hi, I got this: There was an error delivering your mail to <ann@example.org>.\n\n"
        "Message headers follow.\n",
        sender="ann@example.net",
        subject="odd",
    ),
    # The recipient line without the MAILER-DAEMON greeting.
    "opensmtpd": plain(
        "    An error has occurred while attempting to deliver a message for\n"
        "    the following list of recipients:\n\ncat@example.org: 550 full\n",
        sender="bob@example.net",
        subject="fyi",
    ),
    # ERROR_CODE lines without Zoho's greeting and permanence sentence.
    "zoho": plain(
        "eve@example.org Invalid Address, ERROR_CODE :550, ERROR_CODE :5.1.1 gone\n",
        sender="eve@example.net",
        subject="notes",
    ),
    # EZweb's words from someone who is not EZweb's postmaster.
    "ezweb": plain(EZWEB_SESSION, sender="gus@example.net", subject="Fwd: what is this"),
    # KDDI's sentence in a person's note, without "Your mail sent on:".
    "kddi": plain(
        "It says: Could not be delivered to: <ida@example.org>\nAs their mailbox is full.\n",
        sender="no-reply@example.net",
        subject="Mail",
    ),
    # Notes' section headings under a subject a person chose.
    "notes": plain(NOTES, sender="joe@example.net", subject="Re: your message"),
    # InterScan's sentence without its frame.
    "trendmicro": plain(
        "Unable to deliver message to <kim@example.org> (and other recipients"
        " in the same domain).\n",
        sender="kim@example.net",
        subject="Mail",
    ),
    # X6's failure line without its heading.
    "trouble": plain(
        "The following recipients returned permanent errors: max@example.org. Reason:"
        " [550 5.1.1 User unknown]\n",
        sender="max@example.net",
        subject="hi",
    ),
    # WorkMail's intro without its technical report.
    "amazonworkmail": plain(
        "An error occurred while trying to deliver the mail to the following"
        " recipients:\noli@example.org\n",
        sender="oli@example.net",
        subject="hi",
    ),
    # GMX's quoted address in a letter that is no Exim bounce.
    "gmx": plain(
        '"eve@example.org":\nSMTP error from remote server after RCPT command:\n'
        "5.1.1 User unknown\n",
        sender="eve@example.net",
        subject="hi",
    ),
}


@pytest.mark.parametrize("name", sorted(LOOKALIKES))
def test_lookalike_written_by_a_person_is_not_read(name: str) -> None:
    """A person's message in a format's words, without its markers, is no bounce."""
    assert detect(LOOKALIKES[name]).failures == ()
