"""``X-Failed-Recipients:``, the header Exim and Google's mail servers put on their
bounces, naming the addresses delivery failed for. Read last among the formats, when
no detector understood the text (Google Groups' "the group may not exist or you may
not post to it", written in the sender's language): the header says that delivery
failed, not why, so the failure is soft with no status, and only in a message that
says it is a bounce (sender or subject)."""

from __future__ import annotations

import re

from smtpeter.bounces.detectors.generic import looks_like_bounce
from smtpeter.bounces.message import BounceMessage
from smtpeter.bounces.report import MAX_FAILURES, Failure
from smtpeter.bounces.text import ADDR, address


def detect(msg: BounceMessage) -> list[Failure]:
    value = msg.header("x-failed-recipients")
    if not value or not looks_like_bounce(msg):
        return []
    found = [a for m in re.finditer(ADDR, value) if (a := address(m.group(0)))]
    return [Failure(a, None, "soft", None, None, None) for a in found[:MAX_FAILURES]]
