"""The fallback: in a message whose sender or subject says it is a bounce, lines
holding a 5xx SMTP reply and one address."""

from __future__ import annotations

import re

from smtpeter.bounces.message import BounceMessage
from smtpeter.bounces.report import Failure
from smtpeter.bounces.text import (
    ADDR,
    RETURNED,
    address,
    clip,
    status_of,
    until,
)

BOUNCE_SENDER = re.compile(
    r"mailer-daemon|mail-daemon|postmaster|mail delivery (?:system|subsystem)", re.I
)
BOUNCE_SUBJECT = re.compile(
    r"undeliver|delivery (?:status notification|failure|failed|has failed|report)"
    r"|returned mail|mail delivery failed|failure notice|non-?deliver|could not be delivered"
    r"|delivery problem|unzustellbar|non remis",
    re.I,
)


def looks_like_bounce(msg: BounceMessage) -> bool:
    return bool(
        BOUNCE_SENDER.search(msg.header("from")) or BOUNCE_SUBJECT.search(msg.header("subject"))
    )


def detect(msg: BounceMessage) -> list[Failure]:
    """Lines with a 5xx reply and one address, in a message that says it is a bounce.

    Lines about the sender (``Sender address rejected``, ``MAIL FROM``) are skipped,
    and so are addresses the bounce was sent to (our own return path).
    """
    ours = {a for v in (msg.header("to"), msg.header("delivered-to")) if (a := address(v))}
    failures: dict[str, Failure] = {}
    line_rx = re.compile(rf"(?:^|[\s;:'\"(#])(5\d\d)[ -].*?<?(?:mailto:)?({ADDR})>?")
    for line in until(msg.text, *RETURNED).split("\n")[:5000]:
        if len(line) > 2000 or re.search(r"sender|mail from", line, re.I):
            continue
        m = line_rx.search(line)
        if not m:
            continue
        recipient = address(m.group(2))
        if recipient is None or recipient in ours or recipient in failures:
            continue
        diagnostic = line[m.start(1) :]
        failures[recipient] = Failure(
            recipient, status_of(diagnostic), "hard", clip(diagnostic), None, None
        )
    return list(failures.values())
