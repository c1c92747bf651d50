"""Ipswitch IMail's bounce (``X-Mailer: <SMTP32 v...>``, subject "Undeliverable
Mail"): one line per recipient before "Original message follows.":

- ``Delivery failed N attempts: ADDR``: it gave up retrying (soft);
- ``undeliverable to ADDR``: refused (hard);
- ``Invalid final delivery userid: ADDR``, ``Unknown user: ADDR``: no such user (hard);
- ``User mailbox exceeds allowed size: ADDR``: the mailbox is full (soft).
"""

from __future__ import annotations

import re

from smtpeter.bounces.message import BounceMessage
from smtpeter.bounces.report import Failure, Kind
from smtpeter.bounces.text import ADDR, address, text_failure, until

_LINE = re.compile(
    rf"^[ \t]*(?P<what>Delivery failed \d+ attempts|undeliverable\s+to|Invalid final delivery"
    rf" userid|Unknown user|User mailbox exceeds allowed size):?[ \t]*<?(?P<a>{ADDR})>?",
    re.I | re.M,
)


def detect(msg: BounceMessage) -> list[Failure]:
    if "smtp32" not in msg.header("x-mailer").lower():
        return []
    failures: list[Failure] = []
    for m in _LINE.finditer(until(msg.text, r"^Original message follows")):
        recipient = address(m.group("a"))
        if recipient is None:
            continue
        what = " ".join(m.group("what").split())
        kind: Kind = (
            "soft" if what.lower().startswith(("delivery failed", "user mailbox")) else "hard"
        )
        rest = msg.text[m.end() :].split("\n", 1)[0].strip()
        failures.append(text_failure(recipient, f"{what}: {rest}".strip(": "), kind, None))
    return failures
