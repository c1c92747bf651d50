"""qmail-send's bounce: "Hi. This is the qmail-send program at ...", then one
``<addr>:`` paragraph per recipient."""

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
    m = re.search(r"This is the qmail-send program at ([^\s]+?)\.?\s*$", text, re.M)
    if not m:
        return []
    body = until(text[m.end() :], r"--- Below this line is", r"--- Enclosed is", r"--- Original")
    # qmail only bounces after giving up; its text says the error is permanent.
    return angle_paragraphs(
        body, "hard", m.group(1), r"(?:Connected to |^)(\d{1,3}(?:\.\d{1,3}){3})\b"
    )
