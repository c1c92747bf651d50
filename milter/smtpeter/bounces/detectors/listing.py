"""Bounces that give a heading, then a list of the failed addresses, one a line, in
the formats of many smaller MTAs and gateways ("The following recipients did not
receive this message:", "Delivery to the following recipients failed.", MailEnable's
"could not be reached:" with ``Recipient: [SMTP:addr]``, Smail's "Failed addresses
follow:", Lotus Domino's "was not delivered to:", ...).

Each heading of the table has the kind it implies (``hard`` when it says the failure
is permanent, else ``unknown``: the reason then decides). A text that says delivery
will still be tried (a warning) makes every recipient a ``delay``. Read only in a
message that says it is a bounce (sender or subject) or carries a delivery-status
part; addresses must stand alone on their lines (with a bullet, quotes, brackets or
``[SMTP:...]`` around them, and the reason after ``:`` or ``...`` or in brackets
after them, ``addr [User unknown]``; for a single address without one, the
"Technical details:" under the list). "Delivery to the following recipients was
aborted after N hour(s)" says it gave up: ``soft`` unless the reason says more.
"""

from __future__ import annotations

import re

from smtpeter.bounces.detectors.generic import looks_like_bounce
from smtpeter.bounces.message import BounceMessage
from smtpeter.bounces.report import MAX_FAILURES, Failure, Kind
from smtpeter.bounces.text import ADDR, RETURNED, address, lines_after, text_failure, until

_TABLE: tuple[tuple[str, Kind], ...] = (
    (r"The following recipients? did not receive (?:this|your) message:", "unknown"),
    (r"Del[ie]very to the following recipients? failed(?: permanently)?[.:]", "hard"),
    (r"Del[ie]very to the following recipients? was aborted[^\n]*:", "soft"),
    (r"Message not delivered to the following addresses:", "hard"),
    (r"The following recipient\(s\) could not be reached:", "unknown"),
    (r"^-+ ?Failed Recipients ?-+", "unknown"),
    (r"^\|?-+ ?Failed addresses follow:? ?-+\|?", "hard"),
    (r"^-+ ?The following addresses had delivery errors ?-+", "unknown"),
    (r"could not be delivered to the following (?:recipients|user)s?:", "unknown"),
    (r"(?:was not|could not be) delivered to:?[ \t]*$", "unknown"),
)
# Under the list, the one recipient's reply ("Technical details of permanent failure:",
# as Gmail wrote it, or just "Technical details:").
_DETAILS = re.compile(
    r"^[ \t]*Technical details(?: of (?:permanent|temporary) failure)?:[ \t]*$", re.I | re.M
)
_HEADINGS = tuple((re.compile(pattern, re.I | re.M), kind) for pattern, kind in _TABLE)
_WARNING = re.compile(
    r"will continue to (?:attempt|try)|attempts will continue|this is (?:just |only )?a warning"
    r"|has not yet been delivered|no action is required",
    re.I,
)
_LINE = re.compile(
    rf"^[ \t]*(?:[*>-]{{1,2}}[ \t]*)?(?:Recipient:[ \t]*)?[\"'\[<(]*(?:SMTP:)?(?P<a>{ADDR})"
    rf"[\"'\]>)]*(?:[ \t]*(?:\.\.\.|:)[ \t]*(?P<r>.*)|[ \t]+\[(?P<b>[^\[\]\n]*)\])?[ \t]*$",
    re.I,
)


def detect(msg: BounceMessage) -> list[Failure]:
    if not (msg.statuses or looks_like_bounce(msg)):
        return []
    text = until(msg.text, *RETURNED)
    for heading, default in _HEADINGS:
        m = heading.search(text)
        if m is None:
            continue
        kind: Kind = "delay" if _WARNING.search(text) else default
        failures = _listed(text[m.end() :], kind)
        if len(failures) == 1 and failures[0].diagnostic is None:
            details = _DETAILS.search(text, m.end())
            if details and (why := " ".join(lines_after(text, details.end()))):
                failures = [_failure(failures[0].recipient, [why], kind)]
        if failures:
            return failures
    return []


def _listed(rest: str, kind: Kind) -> list[Failure]:
    failures: list[Failure] = []
    lines = rest.split("\n")[1:]  # from the line after the heading
    pending: tuple[str, list[str]] | None = None
    for line in lines[:200]:
        m = _LINE.match(line)
        recipient = address(m.group("a")) if m else None
        if recipient is not None and m is not None:
            if pending:
                failures.append(_failure(*pending, kind))
            why = m.group("r") or m.group("b")
            pending = (recipient, [why] if why else [])
        elif not line.strip():
            if pending or failures:
                break
        elif pending and (line[:1].isspace() or line.lower().startswith("reason")):
            pending[1].append(line.strip())
        else:
            break
        if len(failures) >= MAX_FAILURES:
            break
    if pending:
        failures.append(_failure(*pending, kind))
    return failures


def _failure(recipient: str, reason: list[str], kind: Kind) -> Failure:
    return text_failure(recipient, " ".join(reason) or None, kind, None)
