"""The DragonFly Mail Agent's (dma) bounce: subject "Mail delivery failed", then
"This is the <version> at <host>.", "There was an error delivering your mail to
<ADDR>.", one paragraph of reason (the remote reply after "<host> [<ip>] did not
like our <command>:", "DNS lookup failure: ...", "Could not deliver for the last N
seconds. Giving up.") and "Message headers follow." or "Original message follows.".

dma writes one bounce per recipient, and only once it gave up (a 5xx reply, a host
that does not exist, or its queue lifetime ran out): the recipient is ``soft``
unless the reply says more (its reason decides).
"""

from __future__ import annotations

import re

from smtpeter.bounces.message import BounceMessage
from smtpeter.bounces.report import Failure
from smtpeter.bounces.text import address, text_failure

_HEAD = re.compile(
    r"^This is the (?P<agent>.+?) at (?P<host>\S+?)\.[ \t]*\n\s*"
    r"^There was an error delivering your mail to <(?P<a>[^<>\s]+)>\.[ \t]*$",
    re.M,
)
_END = re.compile(r"^(?:Message headers follow|Original message follows)\.[ \t]*$", re.M)
_REMOTE = re.compile(r"^(\S+) \[[^\]\s]*\] did not like our ", re.M)


def detect(msg: BounceMessage) -> list[Failure]:
    text = msg.text
    m = _HEAD.search(text)
    if m is None or "mail agent" not in m.group("agent").lower():
        return []
    end = _END.search(text, m.end())
    if end is None:
        return []
    recipient = address(m.group("a"))
    if recipient is None:
        return []
    reason = text[m.end() : end.start()].strip()
    remote = _REMOTE.search(reason)
    return [text_failure(recipient, reason or None, "soft", remote.group(1) if remote else None)]
