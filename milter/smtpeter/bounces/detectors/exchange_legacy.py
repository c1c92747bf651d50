"""Exchange 5.5 / 2000 / 2003 NDRs (and GroupWise gateways that copy them): "Your
message ... did not reach the following recipient(s):", then per recipient a line
``ADDR on DATE`` (or the X.400 form ``c=US;a= ;p=...;dda:SMTP=ADDR; on DATE``) and
indented lines with the reason, such as "The recipient name is not recognized" and
"MSEXCH:IMS:...(000C05A6) Unknown Recipient". A one-line variant names the address
after the heading itself."""

from __future__ import annotations

import re

from smtpeter.bounces.message import BounceMessage
from smtpeter.bounces.report import MAX_FAILURES, Failure
from smtpeter.bounces.text import ADDR, RETURNED, address, text_failure, until

_HEADING = re.compile(
    rf"did not reach the following recipient(?:\(s\)|s)?:[ \t]*(?:<?(?P<a>{ADDR})>?)?", re.I
)
_RECIPIENT = re.compile(rf"^[ \t]*(?:.*dda:SMTP=)?<?(?P<a>{ADDR})>?;?(?:[ \t]+on[ \t].*)?$", re.I)
# The rest of a date wrapped onto its own line: "10:02:11 +0200".
_WRAPPED_TIME = re.compile(r"^\d{1,2}:\d\d(?::\d\d)?(?:\s+[-+]\d{4})?\s*$")


def detect(msg: BounceMessage) -> list[Failure]:
    text = msg.text
    heading = _HEADING.search(text)
    if heading is None:
        return []
    if heading.group("a"):
        recipient = address(heading.group("a"))
        return [text_failure(recipient, None, "hard", None)] if recipient else []
    section = until(text[heading.end() :], *RETURNED, r"^-+ ?Transcript of session")
    failures: list[Failure] = []
    lines = section.split("\n")
    for i, line in enumerate(lines):
        m = _RECIPIENT.match(line) if line[:1].strip() or "dda:" in line else None
        if m is None or (recipient := address(m.group("a"))) is None:
            continue
        reason: list[str] = []
        for following in lines[i + 1 : i + 6]:
            if _WRAPPED_TIME.match(following):
                continue
            if not following.strip() or not following[:1].isspace():
                if reason or following.strip():
                    break
                continue
            reason.append(following.strip())
        failures.append(text_failure(recipient, " ".join(reason) or None, "hard", None))
        if len(failures) >= MAX_FAILURES:
            break
    return failures
