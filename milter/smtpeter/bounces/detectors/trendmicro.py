"""Trend Micro InterScan's notice ("Message from InterScan Messaging Security Suite"
in a frame of asterisks, subject "Mail could not be delivered"): "Unable to deliver
message to <ADDR> (and other recipients in the same domain).", or the session it
failed in, ``Sent <<< RCPT TO:<ADDR>`` then ``Received >>> reply``.

The diagnostic is the remote reply when there is one, else InterScan's sentence:
``soft`` unless the reply says more.
"""

from __future__ import annotations

import re

from smtpeter.bounces.message import BounceMessage
from smtpeter.bounces.report import MAX_FAILURES, Failure
from smtpeter.bounces.text import ADDR, address, text_failure

_MARKER = re.compile(r"^\**[ \t]*Message from InterScan Messaging Security Suite\b", re.M)
_UNABLE = re.compile(rf"Unable to deliver message to <(?P<a>{ADDR})>[^\n]*")
_SENT = re.compile(
    rf"^[ \t]*Sent <<< RCPT TO:[ \t]*<(?P<a>{ADDR})>[^\n]*\n[ \t]*Received >>> (?P<r>[^\n]*)",
    re.M,
)


def detect(msg: BounceMessage) -> list[Failure]:
    text = msg.text
    if not (
        _MARKER.search(text) or ("interscan" in msg.header("from").lower() and _SENT.search(text))
    ):
        return []
    found: dict[str, Failure] = {}
    for m in _SENT.finditer(text):
        if (recipient := address(m.group("a"))) and recipient not in found:
            found[recipient] = text_failure(recipient, m.group("r").strip(), "soft", None)
    for m in _UNABLE.finditer(text):
        if (recipient := address(m.group("a"))) and recipient not in found:
            found[recipient] = text_failure(recipient, m.group(0).strip(), "soft", None)
    return list(found.values())[:MAX_FAILURES]
