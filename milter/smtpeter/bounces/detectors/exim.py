"""Exim's non-DSN bounce and delay warning: "The following address(es) failed:"
or "... has not yet been delivered", then indented addresses and reasons; GMX's
variant writes each address quoted (``"ADDR":``) and its reason unindented below;
MXLogic's writes ``<ADDR>: reason`` on one line."""

from __future__ import annotations

import re

from smtpeter.bounces.message import BounceMessage
from smtpeter.bounces.report import Failure, Kind
from smtpeter.bounces.text import (
    address,
    text_failure,
    until,
)


def detect(msg: BounceMessage) -> list[Failure]:
    text = msg.text
    # Exim's template; a relay may name itself ("... by the SMTP relay on HOST").
    if not re.search(
        r"This message was created automatically by (?:mail delivery software|the )", text
    ):
        return []
    # The heading may be wrapped: "The following addresses\nfailed:".
    failed = re.search(r"following\s+address(?:\(es\)|es)?\s+failed:[ \t]*$", text, re.M)
    delayed = re.search(
        r"address(?:\(es\)|es)? to which the message has not yet been delivered", text
    )
    if failed:
        kind: Kind = "hard"  # Exim says "This is a permanent error" above the list
        found = failed
    elif delayed:
        kind = "delay"
        found = delayed
    else:
        return []
    start = text.find("\n", found.end())
    if start < 0:
        return []
    section = until(
        text[start:],
        r"^-+ This is a copy of",
        r"^-+ The header of the original",
        r"^Reporting-MTA:",
        r"^Content-Type:",
        r"^The message identifier is",
        r"^If any of these addresses",
        r"^No action is required",
    )
    failures: list[Failure] = []
    # (address, reason lines, the alias it was generated from)
    entries: list[tuple[str, list[str], list[str]]] = []
    unindented = False
    for line in section.split("\n"):
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        generated = _GENERATED.match(line)
        quoted = _QUOTED.match(line)
        if quoted and (addr := address(quoted.group(1))):
            # GMX writes the address quoted, the reason unindented under it.
            unindented = True
            entries.append((addr, [], []))
        elif unindented and entries:
            entries[-1][1].append(line.strip())
        elif (angled := _ANGLED.match(line)) and (addr := address(angled.group(1))):
            # MXLogic's Exim writes the address and the reply on one line.
            entries.append((addr, [angled.group(2).strip()], []))
        elif indent <= 2 and (addr := address(line.strip().removesuffix(":"))):
            # Some Exim builds end the address line with a colon.
            entries.append((addr, [], []))
        elif generated and entries:
            if alias := address(generated.group(1)):
                entries[-1][2].append(alias)
        elif indent > 2 and entries:
            entries[-1][1].append(line.strip())
        elif indent <= 2 and not line.strip().startswith("("):
            break  # prose we do not know ends the list; "(generated from ...)" does not
    for recipient, lines, aliases in entries:
        reason = " ".join(lines)
        remote = re.search(r"\bhost ([^\s\[]+) \[", reason)
        failures.append(
            text_failure(
                recipient,
                reason,
                kind,
                remote.group(1) if remote else None,
                next(iter(aliases), None),
            )
        )
    return failures


_GENERATED = re.compile(r"^\s*\(generated from ([^)\s]+)\)\s*$")
_ANGLED = re.compile(r"^[ \t]{0,2}<([^<>\s]+@[^<>\s]+)>:[ \t]*(\S.*)$")
_QUOTED = re.compile(r'^[ \t]*"([^"\s]+@[^"\s]+)":[ \t]*$')
