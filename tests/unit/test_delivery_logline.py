"""Postfix's per-recipient delivery results read from its log lines, as Postfix 3.7 on
Debian 12 writes them (log_adhoc.c), under each header its log paths use: rsyslog's
RFC 3339 default, the traditional syslog form, Postfix's own maillog_file, journalctl,
and journald's bare MESSAGE."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpeter.deliveries.logline import (
    MAX_LINE,
    DeliveryResult,
    Expiry,
    parse,
    parse_message,
)

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
CEST = timezone(timedelta(hours=2))

# (line, expected fields). Fields not named are not checked by the table; the
# structure test below checks every field of one line.
RESULTS: list[tuple[str, dict[str, object]]] = [
    (
        "2024-05-01T10:00:00.123456+02:00 mail postfix/smtp[4711]: 3F2A1B4C5D: "
        "to=<ann@example.org>, relay=mx.example.org[192.0.2.1]:25, delay=1.2, "
        "delays=0.05/0.01/0.6/0.52, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 4VqKy0ZZ)",
        {
            "status": "delivered",
            "agent": "smtp",
            "instance": "postfix",
            "logged_at": "2024-05-01T08:00:00.123456Z",
            "reply": "250 2.0.0 Ok: queued as 4VqKy0ZZ",
        },
    ),
    (
        "May  1 10:00:00 mail postfix/smtp[4712]: 3F2A1B4C5E: to=<bob@example.net>, "
        "relay=mx1.example.net[198.51.100.7]:25, delay=0.83, delays=0.02/0/0.41/0.4, "
        "dsn=5.1.1, status=bounced (host mx1.example.net[198.51.100.7] said: 550 5.1.1 "
        "<bob@example.net>: Recipient address rejected: User unknown (in reply to RCPT TO "
        "command))",
        {
            "status": "failed",
            "dsn": "5.1.1",
            "logged_at": "2024-05-01T08:00:00.000000Z",
            "reply": "host mx1.example.net[198.51.100.7] said: 550 5.1.1 <bob@example.net>: "
            "Recipient address rejected: User unknown (in reply to RCPT TO command)",
        },
    ),
    (
        # Postfix's own maillog_file (postlogd): day padded with a zero.
        "May 01 10:00:05 mail postfix/smtp[4713]: 3F2A1B4C5F: to=<carol@example.com>, "
        "relay=none, delay=30, delays=0.01/0/30/0, dsn=4.4.1, status=deferred (connect "
        "to mx.example.com[203.0.113.5]:25: Connection timed out)",
        {
            "status": "deferred",
            "relay": "none",
            "delay": 30.0,
            "dsn": "4.4.1",
            "logged_at": "2024-05-01T08:00:05.000000Z",
        },
    ),
    (
        "2024-05-01T10:01:00.000001+02:00 mail postfix/smtp[4714]: 3F2A1B4C60: "
        "to=<dave@example.com>, relay=mx.example.com[203.0.113.5]:25, conn_use=2, "
        "delay=0.31, delays=0.01/0/0/0.3, dsn=4.2.0, status=deferred (host "
        "mx.example.com[203.0.113.5] said: 450 4.2.0 <dave@example.com>: Recipient "
        "address rejected: Greylisted (in reply to RCPT TO command))",
        {"status": "deferred", "dsn": "4.2.0", "relay": "mx.example.com[203.0.113.5]:25"},
    ),
    (
        # The queue manager defers a recipient of a site it has given up on for now.
        "2024-05-01T10:02:00.5+02:00 mail postfix/qmgr[812]: 3F2A1B4C61: "
        "to=<erin@example.com>, relay=none, delay=3602, delays=3602/0.01/0/0, dsn=4.4.1, "
        "status=deferred (delivery temporarily suspended: connect to "
        "mx.example.com[203.0.113.5]:25: Connection timed out)",
        {
            "status": "deferred",
            "agent": "qmgr",
            "delays": "3602/0.01/0/0",
            "reply": "delivery temporarily suspended: connect to mx.example.com[203.0.113.5]:25:"
            " Connection timed out",
        },
    ),
    (
        "2024-05-01T10:03:00.000000+02:00 mail postfix/lmtp[900]: 3F2A1B4C62: "
        "to=<frank@example.org>, relay=mail.example.org[private/dovecot-lmtp], delay=0.05, "
        "delays=0.02/0.01/0.01/0.01, dsn=2.0.0, status=sent (250 2.0.0 <frank@example.org> "
        "KJ3nCUl3MmYtFgAAvUdK4w Saved)",
        {"agent": "lmtp", "relay": "mail.example.org[private/dovecot-lmtp]", "status": "delivered"},
    ),
    (
        "2024-05-01T10:04:00.000000+02:00 mail postfix/local[901]: 3F2A1B4C63: "
        "to=<grace@mail.example.org>, orig_to=<postmaster@example.org>, relay=local, "
        "delay=0.02, delays=0.01/0/0/0, dsn=2.0.0, status=sent (delivered to mailbox)",
        {
            "agent": "local",
            "relay": "local",
            "original_recipient": "postmaster@example.org",
            "recipient": "grace@mail.example.org",
        },
    ),
    (
        "2024-05-01T10:05:00.000000+02:00 mail postfix/local[902]: 3F2A1B4C64: "
        "to=<henk@mail.example.org>, relay=local, delay=0.01, delays=0/0/0/0, dsn=5.1.1, "
        'status=bounced (unknown user: "henk")',
        {"status": "failed", "reply": 'unknown user: "henk"', "original_recipient": None},
    ),
    (
        "2024-05-01T10:06:00.000000+02:00 mail postfix/virtual[903]: 3F2A1B4C65: "
        "to=<ivy@example.org>, relay=virtual, delay=0.03, delays=0.02/0/0/0.01, dsn=2.0.0, "
        "status=sent (delivered to maildir)",
        {"agent": "virtual", "relay": "virtual", "reply": "delivered to maildir"},
    ),
    (
        "2024-05-01T10:07:00.000000+02:00 mail postfix/pipe[904]: 3F2A1B4C66: "
        "to=<jan@example.org>, relay=dovecot, delay=0.1, delays=0.05/0/0/0.05, dsn=2.0.0, "
        "status=sent (delivered via dovecot service)",
        {"agent": "pipe", "relay": "dovecot", "reply": "delivered via dovecot service"},
    ),
    (
        "2024-05-01T10:08:00.000000+02:00 mail postfix/error[905]: 3F2A1B4C67: "
        "to=<kim@example.org>, relay=none, delay=0.01, delays=0/0/0/0, dsn=5.0.0, "
        "status=bounced (mailbox disabled)",
        {"agent": "error", "status": "failed", "dsn": "5.0.0"},
    ),
    (
        "2024-05-01T10:09:00.000000+02:00 mail postfix/discard[906]: 3F2A1B4C68: "
        "to=<lou@example.org>, relay=none, delay=0.01, delays=0/0/0/0, dsn=2.0.0, "
        "status=sent (example.org)",
        {"agent": "discard", "status": "delivered"},
    ),
    (
        "2024-05-01T10:10:00.000000+02:00 mail postfix/retry[907]: 3F2A1B4C69: "
        "to=<max@example.org>, relay=none, delay=7200, delays=7200/0/0/0, dsn=4.4.1, "
        "status=deferred (delivery temporarily suspended: host mx.example.org[192.0.2.9] "
        "refused to talk to me: 421 4.7.0 Try again later)",
        {"agent": "retry", "status": "deferred"},
    ),
    (
        # A second instance (postmulti), relay transport with its own syslog_name.
        "2024-05-01T10:11:00.000000+02:00 mail postfix-out/relay/smtp[908]: 3F2A1B4C6A: "
        "to=<nel@example.net>, relay=smtp.example.net[198.51.100.25]:587, delay=0.4, "
        "delays=0.01/0.01/0.2/0.18, dsn=2.0.0, status=sent (250 2.0.0 OK 1714550000 x)",
        {
            "instance": "postfix-out",
            "agent": "smtp",
            "program": "postfix-out/relay/smtp",
            "relay": "smtp.example.net[198.51.100.25]:587",
        },
    ),
    (
        # journalctl -o short-iso: an offset without a colon.
        "2024-05-01T10:12:00+0200 mail postfix/smtp[909]: 3F2A1B4C6B: to=<olga@example.net>, "
        "relay=[2001:db8::25]:25, delay=0.2, delays=0/0/0.1/0.1, dsn=2.0.0, "
        "status=sent (250 Ok)",
        {"logged_at": "2024-05-01T08:12:00.000000Z", "relay": "[2001:db8::25]:25"},
    ),
    (
        # Long queue ids (enable_long_queue_ids = yes) and a quoted local part.
        '2024-05-01T10:13:00.000000+02:00 mail postfix/smtp[910]: 4VqKxY3fGmz2Bd7: to=<"piet '
        'de, Vries>"@example.org>, orig_to=<"piet"@example.org>, relay=mx.example.org'
        "[192.0.2.1]:25, delay=0.5, delays=0.1/0/0.2/0.2, dsn=2.0.0, status=sent (250 ok)",
        {
            "queue_id": "4VqKxY3fGmz2Bd7",
            "recipient": '"piet de, Vries>"@example.org',
            "original_recipient": '"piet"@example.org',
        },
    ),
    (
        # The null recipient.
        "2024-05-01T10:14:00.000000+02:00 mail postfix/local[911]: 3F2A1B4C6C: to=<>, "
        "relay=local, delay=0, delays=0/0/0/0, dsn=5.1.3, status=bounced (bad address "
        "syntax)",
        {"recipient": "", "status": "failed"},
    ),
    (
        # soft_bounce = yes: Postfix keeps the message and retries.
        "2024-05-01T10:15:00.000000+02:00 mail postfix/smtp[912]: 3F2A1B4C6D: "
        "to=<quinn@example.net>, relay=mx.example.net[198.51.100.7]:25, delay=0.4, "
        "delays=0/0/0.2/0.2, dsn=4.1.1, status=SOFTBOUNCE (host mx.example.net"
        "[198.51.100.7] said: 550 5.1.1 unknown (in reply to RCPT TO command))",
        {"status": "deferred", "postfix_status": "SOFTBOUNCE", "dsn": "4.1.1"},
    ),
    (
        # Postfix 3.10 adds a TLS summary before dsn=.
        "2024-05-01T10:16:00.000000+02:00 mail postfix/smtp[913]: 3F2A1B4C6E: "
        "to=<rob@example.net>, relay=mx.example.net[198.51.100.7]:25, delay=0.4, "
        "delays=0/0/0.2/0.2, tls=may/dane?, dsn=2.0.0, status=sent (250 ok)",
        {"status": "delivered", "dsn": "2.0.0"},
    ),
    (
        # A line from a file with Windows line ends.
        "May  1 10:17:00 mail postfix/smtp[914]: 3F2A1B4C6F: to=<sam@example.net>, "
        "relay=mx.example.net[198.51.100.7]:25, delay=1, delays=0/0/0.5/0.5, dsn=2.0.0, "
        "status=sent (250 ok)\r\n",
        {"reply": "250 ok", "status": "delivered"},
    ),
]


@pytest.mark.parametrize(("line", "expected"), RESULTS)
def test_result_fields(line: str, expected: dict[str, object]) -> None:
    """Each kind of delivery agent's line, under each header, yields its fields."""
    result = parse(line, now=NOW, tz=CEST)
    assert isinstance(result, DeliveryResult)
    assert {k: getattr(result, k) for k in expected} == expected


def test_every_field_of_a_delivery() -> None:
    """A delivered line yields every field exactly as logged."""
    assert parse(RESULTS[0][0]) == DeliveryResult(
        queue_id="3F2A1B4C5D",
        recipient="ann@example.org",
        original_recipient=None,
        status="delivered",
        postfix_status="sent",
        dsn="2.0.0",
        relay="mx.example.org[192.0.2.1]:25",
        delay=1.2,
        delays="0.05/0.01/0.6/0.52",
        reply="250 2.0.0 Ok: queued as 4VqKy0ZZ",
        agent="smtp",
        instance="postfix",
        logged_at="2024-05-01T08:00:00.123456Z",
        program="postfix/smtp",
    )


def test_journald_message_without_header() -> None:
    """journald's MESSAGE alone is read, with program and time from its other fields."""
    message = RESULTS[0][0].split(": ", 1)[1]
    bare = parse(message)
    assert isinstance(bare, DeliveryResult)
    assert (bare.queue_id, bare.agent, bare.instance, bare.logged_at) == (
        "3F2A1B4C5D",
        None,
        None,
        None,
    )
    full = parse_message(
        message,
        program="postfix/smtp",
        logged_at=datetime.fromtimestamp(1714550400.25, UTC),
    )
    assert isinstance(full, DeliveryResult)
    assert (full.agent, full.instance, full.logged_at, full.status) == (
        "smtp",
        "postfix",
        "2024-05-01T08:00:00.250000Z",
        "delivered",
    )


@pytest.mark.parametrize(
    ("line", "queue_id", "forced"),
    [
        (
            "2024-05-06T10:00:00.000000+02:00 mail postfix/qmgr[812]: 3F2A1B4C70: "
            "from=<news@example.org>, status=expired, returned to sender",
            "3F2A1B4C70",
            False,
        ),
        (
            "May  6 10:00:00 mail postfix/qmgr[812]: 3F2A1B4C71: from=<>, "
            "status=force-expired, returned to sender",
            "3F2A1B4C71",
            True,
        ),
    ],
)
def test_expiry(line: str, queue_id: str, forced: bool) -> None:
    """A message returned to its sender after its queue lifetime is an Expiry."""
    result = parse(line, now=NOW, tz=CEST)
    assert result == Expiry(
        queue_id=queue_id,
        sender=result.sender if isinstance(result, Expiry) else "?",
        forced=forced,
        agent="qmgr",
        instance="postfix",
        logged_at="2024-05-06T08:00:00.000000Z",
        program="postfix/qmgr",
    )


def test_expiry_sender() -> None:
    """The expired message's sender is the address between from=< and >."""
    result = parse("3F2A1B4C70: from=<news@example.org>, status=expired, returned to sender")
    assert isinstance(result, Expiry)
    assert result.sender == "news@example.org"


NOT_RESULTS = [
    "2024-05-01T10:00:00.000000+02:00 mail postfix/smtpd[700]: connect from "
    "client.example.com[203.0.113.9]",
    "2024-05-01T10:00:00.000000+02:00 mail postfix/smtpd[700]: 3F2A1B4C5D: "
    "client=client.example.com[203.0.113.9], sasl_method=PLAIN, sasl_username=ann",
    "2024-05-01T10:00:00.000000+02:00 mail postfix/cleanup[701]: 3F2A1B4C5D: "
    "message-id=<20240501100000.1@example.com>",
    "2024-05-01T10:00:00.000000+02:00 mail postfix/qmgr[812]: 3F2A1B4C5D: "
    "from=<ann@example.com>, size=1234, nrcpt=1 (queue active)",
    "2024-05-01T10:00:01.000000+02:00 mail postfix/qmgr[812]: 3F2A1B4C5D: removed",
    "2024-05-01T10:00:01.000000+02:00 mail postfix/smtp[4711]: warning: "
    "mx.example.org[192.0.2.1]:25 offered null AUTH mechanism list",
    "2024-05-01T10:00:01.000000+02:00 mail postfix/smtpd[700]: NOQUEUE: reject: RCPT from "
    "client.example.com[203.0.113.9]: 554 5.7.1 <x@example.net>: Relay access denied; "
    "from=<a@example.com> to=<x@example.net> proto=ESMTP helo=<client>",
    "2024-05-01T10:00:02.000000+02:00 mail postfix/bounce[950]: 3F2A1B4C5E: sender "
    "non-delivery notification: 4B1C2D3E4F",
    # Address verification probes and sendmail -bv are not deliveries.
    "2024-05-01T10:00:03.000000+02:00 mail postfix/smtp[4715]: 3F2A1B4C72: "
    "to=<tom@example.net>, relay=mx.example.net[198.51.100.7]:25, delay=0.3, "
    "delays=0/0/0.2/0.1, dsn=2.1.5, status=deliverable (250 2.1.5 Ok)",
    "2024-05-01T10:00:03.000000+02:00 mail postfix/smtp[4716]: 3F2A1B4C73: "
    "to=<uma@example.net>, relay=mx.example.net[198.51.100.7]:25, delay=0.3, "
    "delays=0/0/0.2/0.1, dsn=5.1.1, status=undeliverable (host said: 550 5.1.1 unknown)",
    '2024-05-01T10:00:04.000000+02:00 mail rsyslogd: [origin software="rsyslogd"] rsyslogd '
    "was HUPed",
    "",
    "\n",
]


@pytest.mark.parametrize("line", NOT_RESULTS)
def test_other_lines_are_none(line: str) -> None:
    """Log lines that report no delivery result give None."""
    assert parse(line, now=NOW) is None


@pytest.mark.parametrize(
    ("header", "now", "expected"),
    [
        # Read in January, a December line is from the year before.
        ("Dec 31 23:59:59", datetime(2025, 1, 1, 0, 5, tzinfo=UTC), "2024-12-31T21:59:59.000000Z"),
        # Up to a day ahead of now stays in this year (clocks a little apart).
        ("Jun  2 11:00:00", NOW, "2024-06-02T09:00:00.000000Z"),
        ("Jun  3 11:00:00", NOW, "2023-06-03T09:00:00.000000Z"),
        # Feb 29 read in a year that has none is from the last leap year.
        ("Feb 29 08:00:00", datetime(2025, 3, 1, tzinfo=UTC), "2024-02-29T06:00:00.000000Z"),
        ("Feb 30 08:00:00", NOW, None),
    ],
)
def test_year_guess(header: str, now: datetime, expected: str | None) -> None:
    """A header without a year lands in the latest year not after now (plus a day)."""
    result = parse(
        f"{header} mail postfix/smtp[1]: {RESULTS[0][0].split(': ', 1)[1]}", now=now, tz=CEST
    )
    assert isinstance(result, DeliveryResult)
    assert result.logged_at == expected


def test_overlong_line_is_refused() -> None:
    """A line longer than any Postfix writes is not a result, and costs no scan."""
    assert parse(RESULTS[0][0][:-1] + "x" * MAX_LINE + ")") is None


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_arbitrary_text_never_raises(text: str) -> None:
    """Any text at all gives a result or None, never an exception."""
    result = parse(text)
    assert result is None or isinstance(result, DeliveryResult | Expiry)
    parse_message(text, program=text[:20] or None)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([line for line, _ in RESULTS] + NOT_RESULTS),
    st.integers(0, 400),
    st.text(max_size=30),
)
def test_damaged_lines_never_raise(line: str, cut: int, junk: str) -> None:
    """A real line cut short or with junk spliced in never raises."""
    parse(line[:cut] + junk + line[cut:], now=NOW)
    parse(line[:cut], now=NOW)


_LOCAL = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20)


@settings(max_examples=300, deadline=None)
@given(
    _LOCAL,
    _LOCAL,
    st.text(alphabet=st.characters(codec="utf-8"), max_size=60).map(lambda s: s.replace("\n", " ")),
)
def test_quoted_addresses_and_any_reply_round_trip(to: str, orig: str, reply: str) -> None:
    """Quoted local parts with any characters, and any reply text, come back as logged."""

    def quoted(local: str) -> str:
        return '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"@example.org'

    line = (
        f"2024-05-01T10:00:00.000000+02:00 mail postfix/smtp[1]: 3F2A1B4C5D: to=<{quoted(to)}>,"
        f" orig_to=<{quoted(orig)}>, relay=mx.example.org[192.0.2.1]:25, delay=1,"
        f" delays=0/0/0.5/0.5, dsn=5.7.1, status=bounced ({reply})"
    )
    result = parse(line)
    assert isinstance(result, DeliveryResult)
    assert (result.recipient, result.original_recipient, result.reply) == (
        quoted(to),
        quoted(orig),
        reply,
    )
