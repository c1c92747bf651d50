"""Postfix's pre-DSN plain text: "This is the mail system at host ..." (or "the
Postfix program"; older versions say "the $mail_name program", which sites rename:
"the Postfix on SuSE Linux program", then "I'm sorry to have to inform you that"),
``<addr>: reason`` paragraphs; its warnings are delays."""

from __future__ import annotations

import re

from smtpeter.bounces.message import BounceMessage
from smtpeter.bounces.report import Failure, Kind
from smtpeter.bounces.text import (
    angle_paragraphs,
    until,
)


def detect(msg: BounceMessage) -> list[Failure]:
    text = msg.text
    m = re.search(
        r"This is the (?:mail system|Postfix program) at host ([^\s]+?)\.?\s*$", text, re.M
    )
    if not m and re.search(r"^I'm sorry to have to inform you that", text, re.M):
        m = re.search(r"^This is the [^\n]{1,80}? program at host ([^\s]+?)\.?\s*$", text, re.M)
    if not m:
        return []
    if re.search(r"successfully delivered|delivery status report", text, re.I):
        return []  # Postfix's success and trace reports share the greeting
    kind: Kind = "delay" if "THIS IS A WARNING ONLY" in text else "unknown"
    body = until(text[m.end() :], r"^--- ", r"^Reporting-MTA:", r"^Content-Type:")
    return angle_paragraphs(body, kind, m.group(1), r"host ([^\s\[]+)\[")
