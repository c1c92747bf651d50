"""A bounce's identity: the same for every delivery of the same bounce (whatever a
relay adds on the way), different for a different bounce of the same message."""

from __future__ import annotations

from smtpeter.bounces.detect import detect
from smtpeter.bounces.processor import identity
from tests.unit.test_bounce_detect import dsn, fixture_bytes

UID = "k3xq7m2pw9r4t6ya"
REPORT = (
    "Reporting-MTA: dns; mx.example.org\nArrival-Date: Tue, 1 Dec 2026 09:59:58 +0100\n\n"
    "Final-Recipient: rfc822; gone@example.org\nAction: failed\nStatus: 5.1.1\n"
)


def key(raw: bytes, uid: str = UID) -> str:
    return identity(raw, uid, detect(raw).failures)


def test_what_relays_add_on_the_way_does_not_change_it() -> None:
    """Received lines, and a Date or Message-ID added to a bounce that had none, leave
    the identity as it was."""
    raw = dsn(REPORT)
    relayed = b"Received: from mx2.example.org by mx.bounces.example.com; Tue, 1 Dec 2026\n" + raw
    added = dsn(REPORT, headers="Date: Wed, 2 Dec 2026 00:00:00 +0000\nMessage-ID: <x@y>\n")
    assert key(raw) == key(relayed) == key(added)
    assert len(key(raw)) == 32 and int(key(raw), 16) >= 0


def test_a_different_bounce_of_the_same_message_is_another_identity() -> None:
    """Another arrival at the reporting MTA, another status, another recipient, another
    message: each is a bounce of its own."""
    raw = dsn(REPORT)
    others = [
        dsn(REPORT.replace("09:59:58", "10:59:58")),
        dsn(REPORT.replace("5.1.1", "5.2.2")),
        dsn(REPORT.replace("gone@", "other@")),
        dsn(REPORT.replace("mx.example.org", "mx9.example.org")),
    ]
    keys = {key(raw), *(key(o) for o in others), key(raw, "another0message0")}
    assert len(keys) == 6


def test_the_same_arrival_written_in_another_zone_is_the_same_bounce() -> None:
    """Dates are compared as instants."""
    other_zone = REPORT.replace("Tue, 1 Dec 2026 09:59:58 +0100", "Tue, 1 Dec 2026 08:59:58 +0000")
    assert key(dsn(REPORT)) == key(dsn(other_zone))


def test_without_an_arrival_date_the_bounce_date_then_the_body_tells() -> None:
    """A report without Arrival-Date is told by its own Date; one without either by its
    body (never by headers a relay adds)."""
    bare = REPORT.replace("Arrival-Date: Tue, 1 Dec 2026 09:59:58 +0100\n", "")
    monday = dsn(bare, headers="Date: Mon, 30 Nov 2026 10:00:00 +0000\n")
    tuesday = dsn(bare, headers="Date: Tue, 1 Dec 2026 10:00:00 +0000\n")
    assert key(monday) != key(tuesday)
    assert key(monday) == key(b"Received: by relay\n" + monday)
    assert key(dsn(bare)) != key(dsn(bare).replace(b"See the report.", b"See below."))
    assert key(dsn(bare)) == key(b"Received: by relay\n" + dsn(bare))


def test_every_fixture_bounce_keeps_its_identity_through_a_relay() -> None:
    """For real-shaped bounces of several families, a relay's Received line changes
    nothing, and no two of them share an identity."""
    names = ("postfix-dsn-hard.eml", "exim-plain.eml", "qmail.eml", "gmail-dsn.eml",
             "vacation.eml", "sendmail-plain.eml")  # fmt: skip
    keys = set()
    for name in names:
        raw = fixture_bytes(name)
        assert key(raw) == key(b"Received: from relay.example.net by mx; Tue, 1 Dec 2026\n" + raw)
        keys.add(key(raw))
    assert len(keys) == len(names)
