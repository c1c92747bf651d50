"""OpenSMTPD's bounce in its plain-text forms (before it added a delivery-status
part): "This is the MAILER-DAEMON, please DO NOT REPLY to this e-mail.", then

- "An error has occurred while attempting to deliver a message for the following
  list of recipients:" (it gave up) or "A message is delayed for more than <time>
  for the following list of recipients:" (a warning: ``delay``), then one
  ``ADDR: report`` line per recipient;
- or, in the oldest releases, "An error has occurred while attempting to deliver a
  message.", then ``Recipient: ADDR`` and ``Reason:`` over the report;

ended by "Below is a copy of the original message:". A recipient it gave up on is
``soft`` unless its report says more (the reason decides).
"""

from __future__ import annotations

import re

from smtpeter.bounces.message import BounceMessage
from smtpeter.bounces.report import Failure, Kind
from smtpeter.bounces.text import ADDR, address, text_failure

_INTRO = re.compile(r"This is the MAILER-DAEMON, please DO NOT REPLY to this e-?mail\.")
_FAILED = re.compile(
    r"An error has occurred while attempting to deliver a message for\s+"
    r"the following list of recipients:"
)
_DELAYED = re.compile(
    r"A message is delayed for more than [^\n]*? for the following\s+list of recipients:"
)
_OLD = re.compile(
    rf"An error has occurred while attempting to deliver a message\.\s+"
    rf"^Recipient: <?(?P<a>{ADDR})>?[ \t]*\n^Reason:[ \t]*\n(?P<r>(?:^[^\n]*\S[^\n]*\n?)+)",
    re.M,
)
_END = re.compile(r"^[ \t]*Below is a copy of the original message:", re.M)
_LINE = re.compile(rf"^(?P<a>{ADDR}): (?P<r>.*)$")


def detect(msg: BounceMessage) -> list[Failure]:
    text = msg.text
    intro = _INTRO.search(text)
    if intro is None:
        return []
    end = _END.search(text, intro.end())
    body = text[intro.end() : end.start() if end else len(text)]
    if old := _OLD.search(body):
        recipient = address(old.group("a"))
        reason = " ".join(old.group("r").split())
        return [text_failure(recipient, reason, "soft", None)] if recipient else []
    kind: Kind
    if m := _FAILED.search(body):
        kind = "soft"
    elif m := _DELAYED.search(body):
        kind = "delay"
    else:
        return []
    failures: list[Failure] = []
    for line in body[m.end() :].split("\n"):
        line = line.strip()
        if not line:
            if failures:
                break
            continue
        found = _LINE.match(line)
        if found is None:
            break  # prose ("Please note that this is only a temporary failure report.")
        recipient = address(found.group("a"))
        if recipient is not None:
            failures.append(text_failure(recipient, found.group("r").strip(), kind, None))
    return failures
