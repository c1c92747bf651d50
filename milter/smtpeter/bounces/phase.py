"""When in the SMTP dialogue a failed recipient was refused, as the bounce shows it.

A server that took ``RCPT TO`` for a recipient and then refused the message in reply
to ``DATA`` or to its end refused the message, not the address: the recipient's
filter, a carrier's reception settings ("550 Unknown user" from Japanese mobile
carriers for a sender the recipient blocks), a content scanner. A refusal in reply
to ``MAIL FROM`` came before any recipient was named: it is about the sender.
:mod:`smtpeter.bounces.reasons` judges an address verdict given at either point by it.

The forms read, from the bounce's own text (never the returned original) and the
failure's diagnostic:

- Postfix: ``... said: 550 ... (in reply to end of DATA command)`` (or ``DATA
  command``, ``MAIL FROM command``), the recipient's paragraph of the bounce text;
- Exim: ``SMTP error from remote mail server after end of data:`` (or ``after
  DATA``, ``after pipelined DATA``, ``after MAIL FROM:<...>``) in the recipient's
  paragraph;
- Sendmail and Courier transcripts: the reply that follows ``>>> DATA`` or ``>>> .``.
  Sendmail writes ``>>> DATA`` also before the replies of pipelined ``RCPT``
  commands: a reply after ``>>> DATA`` followed by another reply, or by Sendmail's
  own verdict on a recipient (``550 5.1.1 <a@b>... User unknown``), was a ``RCPT``
  reply, not the DATA one;
- m-FILTER: its ``-------SMTP command`` section saying ``DATA``.

A form that names no recipient (a transcript reply "550 : User unknown", m-FILTER's
section) counts for the failure whose diagnostic is that reply, or for the only
failure of the report.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from smtpeter.bounces.message import BounceMessage
from smtpeter.bounces.report import Failure

# Matched against lower-cased text with its white space collapsed.
_NAMED: Final = re.compile(
    r"\(in reply to (?:end of )?data command\)"
    r"|error from remote mail server after (?:pipelined )?(?:end of data|data)\b"
)
_MAIL: Final = re.compile(
    r"\(in reply to mail from command\)|error from remote mail server after mail from:"
)
_COMMAND: Final = re.compile(r"^>>> ?(data|\.)\s*$", re.I)
# Sendmail's own line on a recipient a pipelined RCPT reply refused.
_RCPT_VERDICT: Final = re.compile(r"^[45]\d\d[ -][245]\.\d{1,3}\.\d{1,3} <[^<>\s]*>\.\.\. ")
_MFILTER: Final = re.compile(r"^-{3,}\s*smtp command\s*\n\s*data\s*$", re.I | re.M)
_TYPE: Final = re.compile(r"^[a-z0-9-]+;\s*", re.I)


def _flat(text: str) -> str:
    return " ".join(text.lower().split())


@dataclass(frozen=True)
class Evidence:
    """What one bounce's text says was refused after DATA or in reply to MAIL FROM."""

    paragraphs: tuple[str, ...]
    """Paragraphs that name DATA (Postfix, Exim), flattened."""
    replies: tuple[str, ...]
    """Replies to DATA or its end in a transcript (Sendmail, Courier), flattened."""
    section: bool
    """m-FILTER's "SMTP command: DATA"."""
    mail: tuple[str, ...]
    """Paragraphs that name MAIL FROM as the command refused (Postfix, Exim)."""


NONE: Final = Evidence((), (), False, ())
Stage = Literal["mail", "data"]


def _transcript_replies(lines: Sequence[str]) -> list[str]:
    found: list[str] = []
    for i, line in enumerate(lines):
        m = _COMMAND.match(line.strip())
        if m is None:
            continue
        replies: list[int] = []
        j = i + 1
        while j < len(lines) and lines[j].strip() and not lines[j].lstrip().startswith(">>>"):
            if lines[j].lstrip().startswith("<<<"):
                replies.append(j)
            j += 1
        if not replies:
            continue
        if m.group(1) == ".":
            # After the end of data every reply is about the message (LMTP gives one
            # a recipient).
            found.extend(_flat(lines[k].lstrip()[3:]) for k in replies)
            continue
        first = replies[0]
        after = lines[first + 1].strip() if first + 1 < len(lines) else ""
        if len(replies) == 1 and not _RCPT_VERDICT.match(after):
            found.append(_flat(lines[first].lstrip()[3:]))
    return found


def evidence(msg: BounceMessage) -> Evidence:
    """What ``msg``'s own text says about the command each refusal answered."""
    text = msg.text
    lowered = text.lower()
    if "data" not in lowered and "mail from" not in lowered:
        return NONE
    blocks = [_flat(block) for block in re.split(r"\n[ \t]*\n", text)]
    return Evidence(
        tuple(b for b in blocks if _NAMED.search(b)),
        tuple(_transcript_replies(text.splitlines())),
        bool(_MFILTER.search(text)),
        tuple(b for b in blocks if _MAIL.search(b)),
    )


def stage(failure: Failure, found: Evidence, only: bool) -> Stage | None:
    """``data`` when ``failure`` was refused after DATA, ``mail`` when in reply to MAIL
    FROM, by its diagnostic or by what the bounce's text says about it (``only``: it is
    the report's only failure); None when the bounce does not say."""
    diagnostic = _flat(failure.diagnostic or "")
    if _MAIL.search(diagnostic):
        return "mail"
    if _NAMED.search(diagnostic):
        return "data"
    names = [
        re.compile(rf"(?<![\w.+-]){re.escape(a.lower())}(?![\w-]|\.\w)")
        for a in (failure.recipient, failure.original)
        if a
    ]

    def names_in(text: str) -> bool:
        return any(n.search(text) for n in names)

    def named(paragraphs: tuple[str, ...]) -> bool:
        return bool(paragraphs) and (only or any(names_in(p) for p in paragraphs))

    if named(found.mail):
        return "mail"
    if named(found.paragraphs):
        return "data"
    if found.section and only:
        return "data"
    reply = _TYPE.sub("", diagnostic)
    for r in found.replies:
        if only or names_in(r) or (len(reply) >= 10 and reply in r):
            return "data"
    return None
