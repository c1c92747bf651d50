"""Bounces of qmail-derived MTAs whose greeting the provider rewrote (GoDaddy's
"We're sorry. There's a problem with the e-mail address(es)", outblaze's "The MTA
program at ...", localised ones): qmail's ``<addr>:`` paragraphs, ended by a
qmail-style marker line such as "--- Below this line is a copy of the message.".

Read only when the message says it is a bounce (its sender or subject) and has
such a marker. Hard only when the text says the error is permanent; otherwise the
recipient's kind comes from its reason alone (unknown without one).
"""

from __future__ import annotations

import re

from smtpeter.bounces.detectors.generic import looks_like_bounce
from smtpeter.bounces.message import BounceMessage
from smtpeter.bounces.report import Failure, Kind
from smtpeter.bounces.text import angle_paragraphs

_MARKER = re.compile(
    r"^-{2,3} ?(?:Below (?:this|the next) line is a copy|Attachment is a copy"
    r"|Mensaje original adjunto|Enclosed is a copy|\S.{0,40}(?:原信件|copy of the message))",
    re.M | re.I,
)
_PERMANENT = re.compile(r"this is a permanent error|permanent(?:ly)? fail", re.I)


def detect(msg: BounceMessage) -> list[Failure]:
    if not looks_like_bounce(msg):
        return []
    text = msg.text
    marker = _MARKER.search(text)
    if marker is None:
        return []
    kind: Kind = "hard" if _PERMANENT.search(text[: marker.start()]) else "unknown"
    return angle_paragraphs(text[: marker.start()], kind, None)
