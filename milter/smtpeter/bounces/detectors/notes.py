"""Lotus Notes' (Lotus SMTP MTA) bounce: subject "Undeliverable message", then
"------- Failure Reasons  --------", paragraphs of a reason line and the address
it is about on the next line, and "------- Returned Message --------".

Notes says nothing of permanence: ``soft`` unless the reason says more ("User not
listed in public Name & Address Book" is an unknown user).
"""

from __future__ import annotations

import re

from smtpeter.bounces.message import BounceMessage
from smtpeter.bounces.report import MAX_FAILURES, Failure
from smtpeter.bounces.text import ADDR, address, paragraphs, text_failure

_START = re.compile(r"^-{3,}[ \t]*Failure Reasons[ \t]*-{3,}[ \t]*$", re.M)
_END = re.compile(r"^-{3,}[ \t]*Returned Message[ \t]*-{3,}[ \t]*$", re.M)
_ADDR = re.compile(rf"^[ \t]*<?(?P<a>{ADDR})>?[ \t]*$")


def detect(msg: BounceMessage) -> list[Failure]:
    if "undeliverable message" not in msg.header("subject").lower():
        return []
    text = msg.text
    start = _START.search(text)
    end = _END.search(text, start.end()) if start else None
    if start is None or end is None:
        return []
    failures: list[Failure] = []
    for para in paragraphs(text[start.end() : end.start()]):
        reason: list[str] = []
        for line in para:
            m = _ADDR.match(line)
            recipient = address(m.group("a")) if m else None
            if recipient is None:
                reason.append(line.strip())
                continue
            failures.append(text_failure(recipient, " ".join(reason) or None, "soft", None))
    return failures[:MAX_FAILURES]
