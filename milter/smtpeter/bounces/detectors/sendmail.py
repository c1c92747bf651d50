"""Pre-DSN Sendmail "Returned mail": "The following addresses had permanent fatal
(or transient non-fatal) errors", addresses with "(reason: ...)", else, for a single
recipient, the transcript's first reply."""

from __future__ import annotations

import re

from smtpeter.bounces.message import BounceMessage
from smtpeter.bounces.report import Failure, Kind
from smtpeter.bounces.text import (
    address,
    lines_after,
    text_failure,
)


def detect(msg: BounceMessage) -> list[Failure]:
    text = msg.text
    failures: list[Failure] = []
    sections = re.finditer(
        r"The following addresses had (permanent fatal|transient non-fatal) errors -+[ \t]*$",
        text,
        re.M,
    )
    remote = re.search(r"\.\.\. while talking to ([^\s:]+?)\.?:", text)
    for section in sections:
        kind: Kind = "hard" if section.group(1).startswith("permanent") else "delay"
        current: str | None = None
        reasons: dict[str, str] = {}
        aliases: dict[str, str] = {}
        order: list[str] = []
        for line in lines_after(text, section.end()):
            stripped = line.strip()
            if (m := re.match(r"\(reason: (.*)\)$", stripped)) and current:
                reasons[current] = m.group(1)
            elif (m := re.match(r"\(expanded from:? (.*)\)$", stripped)) and current:
                if alias := address(m.group(1)):
                    aliases[current] = alias
            elif not line[0].isspace() and (addr := address(stripped)):
                current = addr
                order.append(addr)
        if len(order) == 1 and order[0] not in reasons and (reply := _first_reply(text)):
            # No "(reason: ...)": the one recipient's reply is the transcript's first
            # (Active!Hunter writes the remote's reply there bare).
            reasons[order[0]] = reply
        failures += [
            text_failure(
                r, reasons.get(r), kind, remote.group(1) if remote else None, aliases.get(r)
            )
            for r in order
        ]
    return failures


def _first_reply(text: str) -> str | None:
    """The first 4xx or 5xx reply of the transcript ("<<< 550 ..." or bare)."""
    m = re.search(r"-+ Transcript of session follows -+[ \t]*$", text, re.M)
    if m is None:
        return None
    for line in lines_after(text, m.end()):
        if r := re.match(r"(?:<<< )?([45]\d\d[ -]\S.*)$", line.strip()):
            return r.group(1)
    return None
