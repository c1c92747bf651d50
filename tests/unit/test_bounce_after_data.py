"""A "550 Unknown user" given after DATA (the recipient was taken at RCPT, then the
message was refused: the recipient's filter, a Japanese carrier's reception settings)
is a soft ``content-rejected`` bounce, never a dead address; the same words at RCPT
stay a hard ``user-unknown``. Also: a refusal in reply to MAIL FROM is about the
sender. The samples are in tests/data/bounces/phase (origins in its README)."""

from __future__ import annotations

from pathlib import Path

import pytest

from smtpeter.bounces.detect import detect
from smtpeter.bounces.processor import EX_OK, process
from smtpeter.store import Store
from tests.unit.test_bounce_detect import BOUNCES, dsn
from tests.unit.test_bounce_processor import make_config, return_path
from tests.unit.test_bounce_processor import store as store

PHASE = BOUNCES / "phase"


def sample(name: str, *replace: tuple[str, str]) -> bytes:
    text = (PHASE / name).read_text()
    for old, new in replace:
        assert old in text
        text = text.replace(old, new)
    return text.encode()


def verdict(raw: bytes) -> list[tuple[str, str, str | None]]:
    return [(f.recipient, f.kind, f.reason) for f in detect(raw).failures]


POSTFIX_RCPT = ("end of DATA command", "RCPT TO command")
EXIM_RCPT = ("after end of data:", "after RCPT TO:<aya@mobile.example.jp>:")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (sample("postfix-after-data.eml"), ("ken@mobile.example.jp", "soft", "content-rejected")),
        (sample("postfix-after-data.eml", POSTFIX_RCPT),
         ("ken@mobile.example.jp", "hard", "user-unknown")),
        (sample("postfix-after-data.eml", ("end of DATA command", "DATA command")),
         ("ken@mobile.example.jp", "soft", "content-rejected")),
        (sample("exim-after-data.eml"), ("aya@mobile.example.jp", "soft", "content-rejected")),
        (sample("exim-after-data.eml", EXIM_RCPT),
         ("aya@mobile.example.jp", "hard", "user-unknown")),
        (sample("sendmail-after-data.eml"),
         ("mio@carrier.example.ne.jp", "soft", "content-rejected")),
        # Sendmail ends a DATA reply with ">>> ." when it got that far.
        (sample("sendmail-after-data.eml", (">>> DATA\n", ">>> DATA\n<<< 354 Go ahead\n>>> .\n"),
                ("<<< 354 Go ahead", "")),
         ("mio@carrier.example.ne.jp", "soft", "content-rejected")),
        (sample("sendmail-pipelined-rcpt.eml"), ("nobody@example.org", "hard", "user-unknown")),
    ],
    ids=["postfix-end-of-data", "postfix-rcpt", "postfix-data", "exim-end-of-data",
         "exim-rcpt", "sendmail-data", "sendmail-dot", "sendmail-pipelined-rcpt"],
)  # fmt: skip
def test_unknown_user_after_data_is_soft_and_at_rcpt_hard(
    raw: bytes, expected: tuple[str, str, str]
) -> None:
    """An unknown user after DATA is a soft content refusal; at RCPT (or pipelined RCPT) hard."""
    assert verdict(raw) == [expected]


COURIER = """\
Your message to the following recipients cannot be delivered:

<rin@carrier.example.ne.jp>:
    mfsmax.carrier.example.ne.jp [192.0.2.45]:
>>> {command}
<<< 550 Unknown user rin@carrier.example.ne.jp
"""

MFILTER = """\
rin@carrier.example.ne.jp


-------server message
550 unknown user <rin@carrier.example.ne.jp>

-------SMTP command
{command}

-------original message
"""


def bounce_text(body: str) -> bytes:
    return (
        "From: MAILER-DAEMON@mx.example.org\nTo: b+x@bounce.example.com\n"
        "Subject: Undelivered Mail Returned to Sender\nMIME-Version: 1.0\n"
        "Content-Type: multipart/report; report-type=delivery-status; boundary=BB\n\n"
        f"--BB\nContent-Type: text/plain\n\n{body}\n"
        "--BB\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.org\n\n"
        "Final-Recipient: rfc822; rin@carrier.example.ne.jp\nAction: failed\nStatus: 5.0.0\n"
        "Diagnostic-Code: smtp; 550 Unknown user rin@carrier.example.ne.jp\n--BB--\n"
    ).encode()


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (COURIER.format(command="DATA"), "soft"),
        (COURIER.format(command="RCPT TO:<rin@carrier.example.ne.jp>"), "hard"),
        (MFILTER.format(command="DATA"), "soft"),
        (MFILTER.format(command="RCPT TO"), "hard"),
    ],
    ids=["courier-data", "courier-rcpt", "m-filter-data", "m-filter-rcpt"],
)
def test_courier_and_m_filter_name_the_command(body: str, kind: str) -> None:
    """Courier's and m-FILTER's DATA make the unknown user soft; RCPT keeps it hard."""
    [failure] = detect(bounce_text(body)).failures
    assert failure.kind == kind


def test_each_recipient_is_judged_by_its_own_paragraph() -> None:
    """One bounce: the recipient refused at RCPT is hard, the one after DATA soft."""
    raw = sample(
        "postfix-after-data.eml",
        (
            "\n--4XkR2m1Qz7z9sTb.1764547964/relay.example.com\nContent-Description: Delivery",
            "\n<gone@example.net>: host mx.example.net[192.0.2.25] said: 550 5.1.1\n"
            "    <gone@example.net>: Recipient address rejected: User unknown in local\n"
            "    recipient table (in reply to RCPT TO command)\n"
            "\n--4XkR2m1Qz7z9sTb.1764547964/relay.example.com\nContent-Description: Delivery",
        ),
        (
            "\n\n--4XkR2m1Qz7z9sTb.1764547964/relay.example.com\nContent-Description: Undel",
            "\n\nFinal-Recipient: rfc822; gone@example.net\nAction: failed\nStatus: 5.1.1\n"
            "Diagnostic-Code: smtp; 550 5.1.1 <gone@example.net>: Recipient address\n"
            "    rejected: User unknown in local recipient table\n"
            "\n--4XkR2m1Qz7z9sTb.1764547964/relay.example.com\nContent-Description: Undel",
        ),
    )
    assert verdict(raw) == [
        ("ken@mobile.example.jp", "soft", "content-rejected"),
        ("gone@example.net", "hard", "user-unknown"),
    ]


@pytest.mark.parametrize(
    ("diagnostic", "status", "kind", "reason"),
    [
        ("554 delivery error: dd This user doesn't have a yahoo.com account"
         " (kim@mobile.example.jp) [0] - mta1.mail.example.net", "5.0.0", "hard", "user-unknown"),
        ("550 5.1.1 <ken@mobile.example.jp>: Recipient address rejected: User unknown",
         "5.1.1", "hard", "user-unknown"),
        ("550 5.7.1 Message rejected as spam", "5.7.1", "soft", "spam-detected"),
        ("550 Unknown user ken@mobile.example.jp", "5.0.0", "soft", "content-rejected"),
    ],
    ids=["yahoo-dd", "x.1.1", "spam", "unknown-user"],
)  # fmt: skip
def test_what_stays_hard_after_data(diagnostic: str, status: str, kind: str, reason: str) -> None:
    """After DATA an x.1.1 or Yahoo's "dd" stays hard; a soft reason stays what it was."""
    raw = sample(
        "postfix-after-data.eml",
        ("550\n    Unknown user ken@mobile.example.jp (in", f"{diagnostic} (in"),
        ("Status: 5.0.0", f"Status: {status}"),
        ("Diagnostic-Code: smtp; 550 Unknown user ken@mobile.example.jp",
         f"Diagnostic-Code: smtp; {diagnostic}"),
    )  # fmt: skip
    [failure] = detect(raw).failures
    assert (failure.kind, failure.reason) == (kind, reason)


def test_a_diagnostic_code_that_names_data_is_enough() -> None:
    """A Diagnostic-Code saying "in reply to end of DATA command" alone makes it soft."""
    raw = dsn(
        "Reporting-MTA: dns; mx.example.org\n\nFinal-Recipient: rfc822; ken@mobile.example.jp\n"
        "Action: failed\nStatus: 5.0.0\nDiagnostic-Code: smtp; 550 Unknown user"
        " ken@mobile.example.jp (in reply to end of DATA command)\n"
    )
    assert verdict(raw) == [("ken@mobile.example.jp", "soft", "content-rejected")]


EXIM_MAIL_FROM = (
    "after end of data:\n    550 : User unknown",
    "after MAIL FROM:<b+qa7Tf0Hx.3kq9@bounce.example.com> SIZE=1022:\n"
    "    553 5.1.0 bounce.example.com does not exist",
)


def test_an_address_refused_in_reply_to_mail_from_is_the_senders() -> None:
    """Exim's "after MAIL FROM:" makes "does not exist" the sender's (soft), not a dead address."""
    raw = sample("exim-after-data.eml", EXIM_MAIL_FROM)
    assert verdict(raw) == [("aya@mobile.example.jp", "soft", "sender-rejected")]


def test_postfix_mail_from_reply_is_the_senders() -> None:
    """Postfix's "(in reply to MAIL FROM command)" makes an address verdict sender-rejected."""
    raw = sample(
        "postfix-after-data.eml",
        ("550\n    Unknown user ken@mobile.example.jp (in reply to end of DATA command)",
         "553 5.1.0\n    Domain bounce.example.com does not exist (in reply to MAIL FROM"
         " command)"),
    )  # fmt: skip
    assert verdict(raw) == [("ken@mobile.example.jp", "soft", "sender-rejected")]


def test_an_unknown_user_after_data_does_not_suppress_the_recipient(
    tmp_path: Path, store: Store
) -> None:
    """An after-DATA "Unknown user" leaves the recipient mailable; the same at RCPT suppresses."""
    cfg = make_config(tmp_path, tmp_path / "no-sendmail", forward=False)
    to_gone = ("ken@mobile.example.jp", "gone@example.org")
    raw = sample("postfix-after-data.eml", to_gone)
    assert process(raw, return_path(store, cfg), cfg, store=store).status == EX_OK
    [event] = store.events(message="k3xq7m2pw9r4t6ya", type="bounce")
    assert (event.detail["kind"], event.detail["reason"]) == ("soft", "content-rejected")
    assert store.suppressions() == []
    rcpt = sample("postfix-after-data.eml", to_gone, POSTFIX_RCPT, ("09:12:41", "09:13:41"))
    assert process(rcpt, return_path(store, cfg), cfg, store=store).status == EX_OK
    entry = store.suppression("alice", "gone@example.org")
    assert entry is not None and entry.reason == "user-unknown"
