"""Reasons of failed deliveries, read from the remote replies real servers give, and
the hard/soft verdict that follows from them (as the established bounce parsers
decide it: by the reason, the status class only when the reason says nothing)."""

from __future__ import annotations

import pytest

from smtpeter.bounces.detect import detect
from smtpeter.bounces.reasons import HARD, kind_of, reason_of
from tests.unit.test_bounce_detect import fixture_bytes

CASES = [
    # (status, diagnostic as reported, reason)
    ("5.1.1", "smtp; 550 5.1.1 <nobody@example.net>: Recipient address rejected: User unknown"
     " in virtual mailbox table", "user-unknown"),
    ("5.1.1", "smtp; 550-5.1.1 The email account that you tried to reach does not exist. Please"
     " try double-checking the recipient's email address for typos", "user-unknown"),
    ("5.0.0", "smtp; 554 delivery error: dd This user doesn't have a yahoo.com account"
     " (kim@example.net) [0] - mta1.mail.example.net", "user-unknown"),
    ("5.5.0", "smtp; 550 5.5.0 Requested action not taken: mailbox unavailable", "user-unknown"),
    ("5.1.10", "smtp; 550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP"
     " address lookup", "user-unknown"),
    (None, "Sorry, no mailbox here by that name. (#5.1.1)", "user-unknown"),
    (None, "Unrouteable address", "user-unknown"),
    ("5.1.1", None, "user-unknown"),
    ("5.1.6", None, "user-unknown"),
    ("5.4.4", "Host or domain name not found. Name service error for name=nowhere.example"
     " type=A: Host not found", "host-unknown"),
    (None, "all relevant MX records point to non-existent hosts", "host-unknown"),
    ("5.1.2", None, "host-unknown"),
    ("5.1.10", "smtp; 556 5.1.10 Recipient address has null MX", "not-accepted"),
    ("5.2.2", "smtp; 552-5.2.2 The email account that you tried to reach is over quota. Please"
     " direct the recipient to https://support.google.com/mail/?p=OverQuotaPerm",
     "mailbox-full"),
    ("5.2.2", "smtp; 552 5.2.2 <ann@example.org> Quota exceeded (mailbox for user is full)",
     "mailbox-full"),
    ("5.0.0", "550 5.0.0 <ann@example.org>: mailbox is full (MTA-imposed quota exceeded while"
     " writing to file)", "mailbox-full"),
    # Lotus Notes / Domino names the mailbox its mail file.
    (None, "Unable to deliver message: The recipient's mail file is full", "mailbox-full"),
    # A full mailbox is full whatever code the server picked.
    ("5.1.1", "smtp; 550 5.1.1 user's mailbox full", "mailbox-full"),
    ("5.2.2", None, "mailbox-full"),
    ("4.2.2", None, "mailbox-full"),
    ("5.3.4", "smtp; 552 5.3.4 Message size exceeds fixed limit", "message-too-large"),
    ("5.2.3", "smtp; 552-5.2.3 Your message exceeded Google's message size limits.",
     "message-too-large"),
    ("5.7.1", "smtp; 554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using"
     " zen.spamhaus.org", "blocked"),
    ("5.7.1", "smtp; 550 5.7.1 Mail from 192.0.2.1 refused, listed at bl.example.net",
     "blocked"),
    ("5.7.1", "smtp; 550-5.7.1 [192.0.2.1] Our system has detected that this message is likely"
     " unsolicited mail. To reduce the amount of spam sent to Gmail, this message has been"
     " blocked.", "spam-detected"),
    ("5.7.26", "smtp; 550-5.7.26 This mail is unauthenticated, which poses a security risk to"
     " the sender and Gmail users", "policy"),
    ("5.7.1", "smtp; 554 5.7.1 <x@example.net>: Relay access denied", "policy"),
    ("5.7.1", "smtp; 550 5.7.1 RESOLVER.RST.NotAuthorized; not authorized", "policy"),
    ("5.7.0", None, "policy"),
    ("5.6.0", "smtp; 554 5.6.0 Message rejected: a virus was found in an attachment",
     "content-rejected"),
    ("5.2.1", "smtp; 550 5.2.1 <carol@example.net>: mailbox is disabled", "mailbox-disabled"),
    ("5.2.1", None, "mailbox-disabled"),
    ("4.4.7", "Delivery time expired", "expired"),
    (None, "retry timeout exceeded", "expired"),
    ("4.4.1", "connect to mx.example.org[192.0.2.9]:25: Connection timed out", "expired"),
    ("4.4.1", "delivery temporarily suspended: connect to mx.example.org[192.0.2.9]:25:"
     " Connection refused", "network-error"),
    ("4.3.0", "smtp; 451 4.3.0 Temporary local problem", "system-error"),
    # Wordings of the flufl.bounce test corpus that read as full mailboxes.
    ("5.0.0", "552 Message for <b@example.com> would exceed mailbox quota", "mailbox-full"),
    ("5.0.0", "552 Quota violation for userx@example.com", "mailbox-full"),
    (None, "Sorry, the user's mailfolder is full", "mailbox-full"),
    (None, "This person's account is exceeding their quota.", "mailbox-full"),
    (None, "recipient is over disk quota", "mailbox-full"),
    ("5.0.0", "recipient reached disk quota", "mailbox-full"),
    ("5.0.0", "553 Exceeded maximum inbound message size", "message-too-large"),
    # "not listed in" a directory is no block list: the user does not exist.
    ("5.0.0", "User carlosr73 (userx@example.com) not listed in Domino Directory",
     "user-unknown"),
    # A transient routing failure given up after retries is no dead domain.
    ("4.4.4", "4.4.4 Temporary server error. Please try again later", "network-error"),
    ("4.4.4", "Recipient server unavailable or busy after 30 attempt(s)", "expired"),
    ("4.4.4", None, "network-error"),
    ("4.1.1", None, "other"),  # soft
    ("5.4.4", None, "host-unknown"),
    # The sender refused: nothing about the recipient, whatever words follow.
    ("5.1.8", "smtp; 553 5.1.8 <owner@example.com>... Domain of sender address"
     " owner@example.com does not exist", "sender-rejected"),
    ("5.1.8", "smtp; 550 5.1.8 does not exist", "sender-rejected"),
    ("5.7.1", "smtp; 550 5.7.1 <owner@example.com>: Sender address rejected: Domain not found",
     "sender-rejected"),
    ("5.0.0", "smtp; 550 Verification failed for <owner@example.com>: unknown sender",
     "sender-rejected"),
    ("5.1.7", None, "sender-rejected"),
    ("5.7.1", "smtp; 550 5.7.1 Client host rejected: cannot find your reverse hostname,"
     " no PTR record", "blocked"),
    ("4.7.0", "smtp; 421 4.7.0 Too many concurrent SMTP connections", "network-error"),
    (None, "DNS lookup failure: host mx.example.invalid not found", "host-unknown"),  # dma
    (None, "an MX or SRV record indicated no SMTP service", "not-accepted"),  # Exim
    ("5.3.2", "521 5.3.2 <a@example.net>: Recipient address rejected: System not accept",
     "not-accepted"),
    ("5.1.0", "smtp; 550 #5.1.0 Address rejected.", "user-unknown"),
    ("5.1.3", "501 5.1.3 <a@example.net>: Recipient address rejected: Bad destination",
     "user-unknown"),
    (None, "User not listed in public Name & Address Book", "user-unknown"),  # Lotus Notes
    # A reply that names no reason: soft, even under 5.x.x (Sisimai's "undefined").
    ("5.0.0", "smtp; 550 Requested action not taken", "other"),
    ("5.0.0", "smtp; 554 Transaction failed", "other"),
    (None, None, "other"),
]  # fmt: skip


@pytest.mark.parametrize(("status", "diagnostic", "reason"), CASES)
def test_the_reason_is_read_from_the_reply_then_the_code(
    status: str | None, diagnostic: str | None, reason: str
) -> None:
    """Each real-world reply gets the reason a bounce parser gives it."""
    assert reason_of(status, diagnostic) == reason


@pytest.mark.parametrize(("status", "diagnostic", "reason"), CASES)
def test_hard_only_for_an_address_that_will_never_take_mail(
    status: str | None, diagnostic: str | None, reason: str
) -> None:
    """Unknown user, unknown domain, null MX are hard (not under a 4.x.x code); a full
    mailbox, a block, a spam verdict, a policy, a timeout or a reply that says nothing
    never is, whatever the status class; with neither a status nor a reason nothing is
    known."""
    kind = kind_of(reason_of(status, diagnostic), status)
    if reason in HARD and not (status and status[0] == "4"):
        assert kind == "hard"
    elif reason == "other" and status is None:
        assert kind is None
    else:
        assert kind == "soft"


@pytest.mark.parametrize(
    ("status", "diagnostic", "reason"),
    [
        ("4.4.3", "Host or domain name not found. Name service error for name=example.net"
         " type=MX: Host not found, try again", "host-unknown"),
        ("4.0.0", "DNS Error: DNS type 'mx' lookup of example.net responded with code NXDOMAIN",
         "host-unknown"),
        ("4.1.1", "smtp; 450 4.1.1 <ann@example.net>: Recipient address rejected: User unknown"
         " in local recipient table", "user-unknown"),
    ],
)  # fmt: skip
def test_a_transient_status_is_never_hard_whatever_the_reason(
    status: str, diagnostic: str, reason: str
) -> None:
    """A report that gave up under a 4.x.x code (a DNS failure that outlived the queue
    lifetime, a 450 user unknown while a directory was down) proves nothing about the
    address: its reason is kept, the bounce is soft and suppresses nothing."""
    assert reason_of(status, diagnostic) == reason
    assert kind_of(reason, status) == "soft"


def test_a_full_mailbox_is_never_hard_in_any_wording() -> None:
    """The must-never of the issue: every way servers say "full" is soft, even under a
    5.x.x code that alone would be hard."""
    for text in (
        "Mailbox full", "mailbox is full", "Mailbox over quota", "user is over quota",
        "Quota exceeded", "exceeded storage allocation", "Insufficient system storage",
        "The user's inbox is full", "mailbox size limit exceeded", "out of storage space",
    ):  # fmt: skip
        for status in ("5.0.0", "5.1.1", "5.2.2", "5.5.0", None):
            assert kind_of(reason_of(status, f"smtp; 552 {text}"), status) == "soft", text


FIXTURES = [
    # (file of tests/data/bounces, recipient, reason, kind recorded)
    ("dsn-multi.eml", "Lara.Alias@example.org", "user-unknown", "hard"),
    ("exchange-plain.eml", "nina.patel@tailspin.example", "user-unknown", "hard"),
    ("exchange-plain.eml", "oscar@tailspin.example", "mailbox-full", "soft"),
    ("exim-plain.eml", "carol@example.net", "mailbox-disabled", "soft"),
    ("exim-plain.eml", "dave@down.example.net", "expired", "soft"),
    ("gmail-dsn.eml", "no.such.user@example.net", "user-unknown", "hard"),
    ("office365-dsn.eml", "j.doe@contoso.example", "user-unknown", "hard"),
    ("postfix-dsn-expired.eml", "ann@slow.example.org", "expired", "soft"),
    ("qmail.eml", "frank@example.com.invalid", "host-unknown", "hard"),
    # qmail's own "Giving up on <host>." line is not the reason: the remote reply is.
    ("qmail.eml", "grace@example.net", "user-unknown", "hard"),
    ("smtp32-invalid.eml", "sam@example.org", "user-unknown", "hard"),
    ("exchange2003.eml", "uma@contoso.example", "user-unknown", "hard"),
    # The quota is only in the Status comment of an "Action: error" DSN: soft.
    ("dsn-action-error.eml", "vic@example.net", "mailbox-full", "soft"),
    ("exim-wrapped.eml", "wendy@example.de", "user-unknown", "hard"),
    ("qmail-like.eml", "xavier@example.net", "mailbox-full", "soft"),
    ("yahoo.eml", "kim@example.net", "user-unknown", "hard"),
]


@pytest.mark.parametrize(("name", "recipient", "reason", "kind"), FIXTURES)
def test_the_fixture_bounces_get_their_reasons(
    name: str, recipient: str, reason: str, kind: str
) -> None:
    """Each failure the detectors read from the fixture bounces is judged as a bounce
    parser would: a full mailbox soft, a disabled one soft, an unknown user hard."""
    failures = {f.recipient: f for f in detect(fixture_bytes(name)).failures}
    assert (failures[recipient].reason, failures[recipient].kind) == (reason, kind)


@pytest.mark.parametrize("name", ["exim-delay.eml", "postfix-delay.eml", "vacation.eml",
                                  "outlook-autoreply.eml"])  # fmt: skip
def test_delays_and_auto_replies_are_never_judged_into_bounces(name: str) -> None:
    """A delay notice stays a delay and an auto-reply an auto-reply, with no reason."""
    failures = detect(fixture_bytes(name)).failures
    assert failures
    for failure in failures:
        assert failure.kind in ("delay", "autoreply")
        assert failure.reason is None
