"""au's EZweb bounce: from ``Postmaster@ezweb.ne.jp``, subject "Mail System Error -
Returned Mail", a Japanese paragraph, then an English one ("Each of the following
recipients was rejected by a remote mail server.", "The user(s) account is
disabled.", "Your message was not delivered within N days and N hours.", ...) and
the recipients, one a line: ``<ADDR>``, ``<ADDR>: reply`` or ``Recipient: <ADDR>``
followed by the session (``>>> command``, ``<<< reply``).

The diagnostic is the remote reply when there is one, else EZweb's English
sentences. EZweb says nothing of permanence: ``soft`` unless the reason says more.
"""

from __future__ import annotations

import re

from smtpeter.bounces.message import BounceMessage
from smtpeter.bounces.report import MAX_FAILURES, Failure
from smtpeter.bounces.text import ADDR, RETURNED, address, text_failure, until

_SENDER = re.compile(r"\bpostmaster@ezweb\.ne\.jp\b", re.I)
_SUBJECT = "mail system error - returned mail"
_RECIPIENT = re.compile(rf"^[ \t]*(?:Recipient:[ \t]*)?<(?P<a>{ADDR})>(?::[ \t]*(?P<r>.*))?$")


def detect(msg: BounceMessage) -> list[Failure]:
    if not _SENDER.search(msg.header("from")) or msg.header("subject").lower() != _SUBJECT:
        return []
    body = until(msg.text, *RETURNED, r"^-{10,}[ \t]*$", r"^Received: ")
    prose: list[str] = []
    found: list[tuple[str, list[str]]] = []
    for line in body.split("\n"):
        m = _RECIPIENT.match(line)
        recipient = address(m.group("a")) if m else None
        if m is not None and recipient is not None:
            found.append((recipient, [m.group("r").strip()] if m.group("r") else []))
        elif found and line.strip().startswith("<<<"):
            found[-1][1].append(line.strip()[3:].strip())
        elif not found and line.strip().isascii() and line.strip()[:1].isalpha():
            prose.append(line.strip())  # EZweb's English sentences, before the list
    general = " ".join(prose) or None
    return [
        text_failure(recipient, " ".join(reply) or general, "soft", None)
        for recipient, reply in found[:MAX_FAILURES]
    ]
