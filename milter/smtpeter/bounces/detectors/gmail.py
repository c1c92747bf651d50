"""Gmail's old plain text: "Delivery to the following recipient failed
permanently" (or "has been delayed")."""

from __future__ import annotations

import re

from smtpeter.bounces.message import BounceMessage
from smtpeter.bounces.report import Failure, Kind
from smtpeter.bounces.text import (
    address,
    clip,
    failed_kind,
    lines_after,
    paragraphs,
    status_of,
)


def detect(msg: BounceMessage) -> list[Failure]:
    text = msg.text
    m = re.search(
        r"Delivery to the following recipients? (failed permanently|has been delayed):", text
    )
    if not m:
        return []
    kind: Kind = "hard" if m.group(1).startswith("failed") else "delay"
    paras = paragraphs(text[m.end() :])
    if not paras:
        return []
    recipients = [a for line in paras[0] if (a := address(line.strip()))]
    if len(recipients) != len(paras[0]):
        return []
    # The remote server's reply, else (a failure of Gmail's own, such as a full
    # mailbox) what Gmail says under its technical details.
    err = re.search(r"The error that the other server returned was:[ \t]*$", text, re.M)
    err = err or re.search(
        r"Technical details of (?:permanent|temporary) failure:[ \t]*(?:=20)?[ \t]*$", text, re.M
    )
    reason = "\n".join(lines_after(text, err.end())) if err else None
    status = status_of(reason)
    remote = re.search(r"by ([^\s\[]+?)\.? \[", text)
    return [
        Failure(
            r,
            status,
            kind if kind == "delay" else failed_kind(status, kind, reason),
            clip(reason),
            None,
            remote.group(1) if remote else None,
        )
        for r in recipients
    ]
