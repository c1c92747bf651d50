"""One-line bounce formats: the failed address and the phrase that says so share a
line, with no SMTP code on it ("Undeliverable Address: ADDR", "Intended recipient:
ADDR", "User's mailbox is full: <ADDR>", MDaemon's "ADDR - no such user here",
mail.ru's "Local mailbox ADDR is unavailable: ...", LISTSERV's "Error-for: ADDR",
"addressed to 'ADDR'", InterScan's "RCPT TO:<ADDR>" with the refusal on the next line).

Each phrase says nothing of the kind by itself (``unknown``): the reason, read from
the rest of the line and the line after it, decides hard or soft, and a recipient
whose reason says nothing is left out. Read only in a message that says it is a
bounce (sender or subject) or carries a delivery-status part.
"""

from __future__ import annotations

import re

from smtpeter.bounces.detectors.generic import looks_like_bounce
from smtpeter.bounces.message import BounceMessage
from smtpeter.bounces.report import MAX_FAILURES, Failure
from smtpeter.bounces.text import ADDR, RETURNED, address, text_failure, until

_A = rf"[<\"']?(?P<a>{ADDR})[>\"']?"
_PHRASES = tuple(
    re.compile(p, re.I | re.M)
    for p in (
        # First: its reason is the refusal on the next line, the others' their own.
        rf"RCPT TO:[ \t]*{_A}[ \t]*$(?=\n.*\b5\d\d\b)",
        rf"^[ \t]*Undeliverable Address:[ \t]*{_A}",
        rf"^[ \t]*Intended recipient:[ \t]*{_A}",
        rf"^[ \t]*User's mailbox is full:[ \t]*{_A}",
        rf"^[ \t]*{_A}[ \t]+-[ \t]+(?=no such user)",
        rf"Local mailbox[ \t]+{_A}[ \t]+is unavailable",
        rf"^[ \t]*Error-for:[ \t]*{_A}",
        rf"addressed to[ \t]+'(?P<a>{ADDR})'",
        rf"Your message to[ \t]+{_A}[ \t]+was automatically rejected",
        rf"unable to deliver (?:your )?message to[ \t]+{_A}",
    )
)


def detect(msg: BounceMessage) -> list[Failure]:
    if not (msg.statuses or looks_like_bounce(msg)):
        return []
    text = until(msg.text, *RETURNED)
    failures: dict[str, Failure] = {}
    for phrase in _PHRASES:
        for m in phrase.finditer(text):
            recipient = address(m.group("a"))
            if recipient is None or recipient in failures:
                continue
            # The phrase's own line (it may say why: "User's mailbox is full") and the
            # line after it.
            start = text.rfind("\n", 0, m.start()) + 1
            lines = text[start:].split("\n", 2)[:2]
            reason = " ".join(line.strip() for line in lines).strip() or None
            failures[recipient] = text_failure(recipient, reason, "unknown", None)
            if len(failures) >= MAX_FAILURES:
                return list(failures.values())
    return list(failures.values())
