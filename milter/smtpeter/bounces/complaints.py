"""Complaints: RFC 5965 feedback reports (ARF), as mailbox providers' feedback loops
send them when a recipient marks a message as spam.

A report is a ``multipart/report; report-type=feedback-report`` whose second part,
``message/feedback-report``, names the feedback type, the reporting MTA, the
original recipient (``Original-Rcpt-To``, often left out or redacted by the
provider) and when the message arrived; the third part returns the message or its
headers. Nothing here is a bounce: a complaint never says anything about whether an
address exists. Parsed with the standard library's email package (made for MIME;
the report's fields are RFC 822 style headers of their own).
"""

from __future__ import annotations

import email
import email.policy
import logging
from dataclasses import dataclass
from email.message import Message

from smtpeter import addresses
from smtpeter.bounces.message import BounceMessage, header_of, read
from smtpeter.bounces.text import message_id

log = logging.getLogger("smtpeter.bounce")


@dataclass(frozen=True)
class Complaint:
    feedback_type: str
    """``abuse``, ``fraud``, ``virus``, ``other``, ... lower-cased."""
    recipient: str | None
    """The original recipient, bare and lower-cased, when the report gives one."""
    reporting_mta: str | None
    user_agent: str | None
    arrival_date: str | None
    return_paths: tuple[str, ...] = ()
    """Where the message came from, as the report gives it: its Original-Mail-From,
    then the returned message's Return-Path (bare); our signed return path when the
    message went out with trackbounces."""
    message_id: str | None = None
    """The returned message's Message-ID (with its angle brackets)."""


def _bare(value: str) -> str | None:
    address = value.strip().strip("<>").strip()
    if address.lower().startswith("rfc822;"):
        address = address[7:].strip().strip("<>")
    return address.lower() if "@" in address and " " not in address else None


def _values(fields: Message, name: str) -> list[str]:
    """A field's values as text, bytes that are not ASCII read as UTF-8 (for such a
    field the email package gives a Header object, not a string)."""
    return [
        value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        for key, value in fields.raw_items()
        if key.lower() == name.lower()
    ]


def _value(fields: Message, name: str) -> str:
    return next(iter(_values(fields, name)), "")


def _fields(part: Message) -> Message | None:
    """The report's fields: the body of the message/feedback-report part, which the
    email package reads either as a sub-message or as text."""
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        return payload[0]
    raw = part.get_payload(decode=True)
    if isinstance(raw, bytes):
        return email.message_from_bytes(raw.lstrip(b"\r\n"), policy=email.policy.compat32)
    return None


def read_complaint(raw: bytes) -> Complaint | None:
    """The complaint in ``raw``, or None when it is no feedback report; never raises."""
    return complaint_in(read(raw))


def complaint_in(parsed: BounceMessage | None) -> Complaint | None:
    """The complaint in a message :func:`smtpeter.bounces.message.read` parsed (the
    bounce processor parses each message once); never raises."""
    if parsed is None:
        return None
    try:
        return _read(parsed.top)
    except Exception:  # a bad message must never stop the bounce processor
        log.warning("feedback report reading failed", exc_info=True)
        return None


def _returned(msg: Message) -> Message | None:
    """The returned message or its headers (the report's third part), as a message."""
    for part in msg.walk():
        ptype = part.get_content_type()
        # The email package reads every message/* part as a sub-message, headers only too.
        if ptype in ("message/rfc822", "message/global", "message/global-headers"):
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                return inner[0]
        elif ptype == "text/rfc822-headers":
            raw = part.get_payload(decode=True)
            if isinstance(raw, bytes):
                return email.message_from_bytes(raw.lstrip(b"\r\n"), policy=email.policy.compat32)
    return None


def _read(msg: Message) -> Complaint | None:
    if msg.get_content_type() != "multipart/report":
        return None
    if (msg.get_param("report-type") or "").lower() != "feedback-report":  # type: ignore[union-attr]
        return None
    for part in msg.walk():
        if part.get_content_type() != "message/feedback-report":
            continue
        fields = _fields(part)
        if fields is None:
            return None
        recipients = [a for a in map(_bare, _values(fields, "Original-Rcpt-To")) if a]
        mta = " ".join(_value(fields, "Reporting-MTA").split()) or None
        if mta and ";" in mta:
            mta = mta.split(";", 1)[1].strip() or None
        returned = _returned(msg)
        paths = [_value(fields, "Original-Mail-From")]
        paths += [str(v) for v in (returned.get_all("Return-Path") or [])] if returned else []
        bare = [addresses.key(p) for p in paths]
        return Complaint(
            feedback_type=(_value(fields, "Feedback-Type").strip() or "other").lower()[:64],
            recipient=recipients[0] if len(recipients) == 1 else None,
            reporting_mta=mta,
            user_agent=" ".join(_value(fields, "User-Agent").split())[:200] or None,
            arrival_date=" ".join(_value(fields, "Arrival-Date").split()) or None,
            return_paths=tuple(dict.fromkeys(p for p in bare if "@" in p)),
            message_id=message_id(header_of(returned, "message-id")) if returned else None,
        )
    return None
