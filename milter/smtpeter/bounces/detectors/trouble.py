"""``trouble``: the bounce of an MTA that Sisimai calls X6, named here by its first
line (subject "There was an error sending your mail"): "We had trouble delivering
your message. Full details follow:", then "N error(s):" and one paragraph per
failure:

- "The following recipients returned permanent errors: ADDR[, ADDR]. Reason: ..."
  (``hard``, as it says);
- "SMTP Server <host> rejected recipient <ADDR> (Error following RCPT command). It
  responded as follows: [reply]".

The diagnostic is the reply in brackets, else the text after "Reason:".
"""

from __future__ import annotations

import re

from smtpeter.bounces.message import BounceMessage
from smtpeter.bounces.report import MAX_FAILURES, Failure
from smtpeter.bounces.text import ADDR, address, paragraphs, text_failure

_MARKER = "We had trouble delivering your message. Full details follow:"
_PERMANENT = re.compile(
    r"^The following recipients returned permanent errors: (?P<list>.*?)\.? Reason: (?P<r>.*)$"
)
_REJECTED = re.compile(
    rf"^SMTP Server <(?P<host>[^<>\s]*)> rejected recipient <(?P<a>{ADDR})>(?P<r>.*)$"
)
_REPLY = re.compile(r"\[([^\[\]]+)\]\s*$")


def detect(msg: BounceMessage) -> list[Failure]:
    text = msg.text
    start = text.find(_MARKER)
    if start < 0:
        return []
    failures: list[Failure] = []
    for para in paragraphs(text[start + len(_MARKER) :])[:MAX_FAILURES]:
        line = " ".join(p.strip() for p in para)
        if m := _PERMANENT.match(line):
            reply = _REPLY.search(m.group("r"))
            reason = reply.group(1) if reply else m.group("r")
            for part in re.findall(ADDR, m.group("list")):
                if recipient := address(part.rstrip(".")):
                    failures.append(text_failure(recipient, reason, "hard", None))
        elif m := _REJECTED.match(line):
            reply = _REPLY.search(m.group("r"))
            recipient = address(m.group("a"))
            if recipient:
                reason = reply.group(1) if reply else m.group("r").strip()
                failures.append(text_failure(recipient, reason, "soft", m.group("host")))
    return failures
