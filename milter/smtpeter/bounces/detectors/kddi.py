"""au's (KDDI, au one net, ``dion.ne.jp``) notice: "Your mail sent on: <date>",
"Could not be delivered to: <ADDR>" and the reason on the lines after it ("As their
mailbox is full.", "As the remote domain doesnt exist.", "Due to the following SMTP
relay error ..."). Read only from a bounce sender or a ``no-reply`` address.
``soft`` unless the reason says more.
"""

from __future__ import annotations

import re

from smtpeter.bounces.detectors.generic import looks_like_bounce
from smtpeter.bounces.message import BounceMessage
from smtpeter.bounces.report import Failure
from smtpeter.bounces.text import ADDR, address, lines_after, text_failure

_SENT = re.compile(r"^[ \t]*Your mail sent on:[ \t]*\S", re.M)
_TO = re.compile(rf"^[ \t]*Could not be delivered to:[ \t]*<?(?P<a>{ADDR})>?[ \t]*$", re.M)


def detect(msg: BounceMessage) -> list[Failure]:
    if not (looks_like_bounce(msg) or re.search(r"\bno-?reply@", msg.header("from"), re.I)):
        return []
    text = msg.text
    sent = _SENT.search(text)
    if sent is None:
        return []
    failures: list[Failure] = []
    for m in _TO.finditer(text, sent.end()):
        recipient = address(m.group("a"))
        if recipient is None:
            continue
        reason_lines: list[str] = []
        for line in lines_after(text, m.start())[:5]:
            if _TO.match(line) or _SENT.match(line):
                break  # the next recipient's notice
            reason_lines.append(line.strip())
        reason = " ".join(reason_lines)
        failures.append(text_failure(recipient, reason or None, "soft", None))
    return failures
