"""Zoho Mail's bounce and delay warning (both say "This message was created
automatically by mail delivery software/system."):

- the bounce: "... could not be delivered to one or more of its recipients. This is
  a permanent error.", then a line per recipient, ``ADDR <label>, ERROR_CODE :<reply
  code>, ERROR_CODE :<reply text>``;
- the warning: "THIS IS A WARNING MESSAGE ONLY.", "The following addresses had fatal
  errors", then ``[Status: Error, Address: <ADDR>, ResponseCode NNN, , <reply>]``
  lines and "Message will be retried for N more day(s)" (``delay``).

The diagnostic is the remote reply (code and text); the label (Zoho's own "Invalid
Address", "Error") is not part of it.
"""

from __future__ import annotations

import re

from smtpeter.bounces.message import BounceMessage
from smtpeter.bounces.report import Failure
from smtpeter.bounces.text import ADDR, address, text_failure

_GREETING = re.compile(
    r"This message was created automatically by mail delivery (?:software|system)\."
)
_FAILED = re.compile(
    rf"^(?P<a>{ADDR})[ \t]+[^,\n]*, ERROR_CODE :(?P<c>\d{{3}})?, ERROR_CODE :(?P<r>.*)$",
    re.M,
)
_WARNING = re.compile(r"THIS IS A WARNING MESSAGE ONLY\.")
_DELAYED = re.compile(
    rf"^\[Status: [^,\n]*, Address: <(?P<a>{ADDR})>, ResponseCode (?P<c>\d{{3}})?,"
    rf" ?[^,\n]*, (?P<r>[^\n]*?)\][ \t]*$",
    re.M,
)


def detect(msg: BounceMessage) -> list[Failure]:
    text = msg.text
    if _GREETING.search(text) is None:
        return []
    warning = _WARNING.search(text) is not None
    if warning and "Message will be retried for" in text:
        return _read(_DELAYED, text, delay=True)
    if warning or "This is a permanent error" not in text:
        return []
    return _read(_FAILED, text, delay=False)


def _read(line: re.Pattern[str], text: str, *, delay: bool) -> list[Failure]:
    failures: list[Failure] = []
    for m in line.finditer(text):
        recipient = address(m.group("a"))
        if recipient is None:
            continue
        reply = m.group("r").strip().lstrip(", ").strip()
        reason = " ".join(p for p in (m.group("c"), reply) if p) or None
        failures.append(text_failure(recipient, reason, "delay" if delay else "hard", None))
    return failures
