"""Yahoo's "Failure Notice": qmail-like ``<addr>:`` paragraphs after "Sorry, we
were unable to deliver your message to the following address"."""

from __future__ import annotations

import re

from smtpeter.bounces.message import BounceMessage
from smtpeter.bounces.report import Failure
from smtpeter.bounces.text import (
    angle_paragraphs,
    until,
)


def detect(msg: BounceMessage) -> list[Failure]:
    text = msg.text
    m = re.search(
        r"Sorry, we were unable to deliver your message to the following address"
        r"|Unable to deliver message to the following address",
        text,
    )
    if not m:
        return []
    body = until(text[m.end() :], r"--- Below this line is", r"--- Original message follows")
    return angle_paragraphs(body, "unknown", None)
