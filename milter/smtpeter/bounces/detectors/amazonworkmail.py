"""Amazon WorkMail's plain-text bounce: "An error occurred while trying to deliver
the mail to the following recipients:", the addresses, then "Technical report:" and
the RFC 3464 fields written as text (``Reporting-MTA``, ``Action``,
``Final-Recipient``, ``Diagnostic-Code``, ``Status``), which are read as a DSN is."""

from __future__ import annotations

import re

from smtpeter.bounces.detectors import dsn
from smtpeter.bounces.message import BounceMessage
from smtpeter.bounces.report import Failure

_INTRO = re.compile(
    r"^An error occurred while trying to deliver the mail to the following recipients:", re.M
)
_REPORT = re.compile(r"^Technical report:[ \t]*$", re.M)


def detect(msg: BounceMessage) -> list[Failure]:
    text = msg.text
    intro = _INTRO.search(text)
    report = _REPORT.search(text, intro.end()) if intro else None
    if report is None:
        return []
    fields = text[report.end() :]
    inline = BounceMessage(msg.top, [], [fields], [], False)
    return dsn.detect(inline) or []
