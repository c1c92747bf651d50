"""RFC 3464 delivery status notifications (and RFC 6533's global ones): the
authoritative format. A DSN that only reports delivered or relayed recipients yields
no failures, and the human-readable text beside it is not second-guessed."""

from __future__ import annotations

import dataclasses
import re

from smtpeter.bounces.message import BounceMessage
from smtpeter.bounces.report import Failure, Kind
from smtpeter.bounces.text import (
    ENHANCED,
    Block,
    address,
    clip,
    failed_kind,
    field_blocks,
    mta,
    status_of,
)


def dsn_records(blocks: list[Block]) -> tuple[dict[str, str], list[dict[str, str]]]:
    """The per-message fields and the per-recipient records.

    Blocks without a recipient field are per-message. A block holding several
    recipients without the blank lines between them is split where a recipient
    field repeats.
    """
    message: dict[str, str] = {}
    records: list[dict[str, str]] = []
    for block in blocks:
        if not any(n in ("final-recipient", "original-recipient") for n, _ in block):
            for name, value in block:
                message.setdefault(name, value)
            continue
        record: dict[str, str] = {}
        last = ""
        for name, value in block:
            # Original-Recipient comes before Final-Recipient as RFC 3464 orders it;
            # Amazon SES writes it right after: then it is the same recipient's.
            starts = name == "original-recipient" and (
                "original-recipient" in record
                or ("final-recipient" in record and last != "final-recipient")
            )
            starts = starts or (name == "final-recipient" and "final-recipient" in record)
            if starts:
                records.append(record)
                record = {}
            record.setdefault(name, value)
            last = name
        records.append(record)
    return message, records


def detect(msg: BounceMessage) -> list[Failure] | None:
    """Failures from the delivery-status parts; None when there is no such part with
    at least one recipient."""
    failures: list[Failure] = []
    seen = False
    for status_text in msg.statuses:
        message, records = dsn_records(field_blocks(status_text))
        reporting = mta(message.get("reporting-mta"))
        for record in records:
            recipient = (
                address(record.get("original-recipient", ""))
                or address(record.get("final-recipient", ""))
                or _local_part(record.get("final-recipient", ""))
            )
            if recipient is None:
                continue
            seen = True
            action = (record.get("action", "").split() or [""])[0].lower()
            if "action" not in record:
                # No Action at all (an old sendmail's report): the Status class says
                # what happened.
                cls = (status_of(record.get("status")) or " ")[0]
                action = {"5": "failed", "4": "delayed"}.get(cls, "")
            # RFC 3464 says "failed" and "delayed"; some MTAs write "failure" or, as
            # OpenSMTPD does, "error" (flufl.bounce reads them the same way).
            if action.startswith(("fail", "error")):
                action = "failed"
            elif action.startswith("delay"):
                action = "delayed"
            else:
                continue
            diagnostic = (
                clip(record.get("diagnostic-code"))
                or _status_comment(record.get("status"))
                or _text_reason(msg.text, recipient)
            )
            status = _dsn_status(record.get("status"), diagnostic)
            kind: Kind = "delay" if action == "delayed" else failed_kind(status, "unknown")
            failures.append(
                Failure(
                    recipient=recipient,
                    status=status,
                    kind=kind,
                    diagnostic=diagnostic,
                    reporting_mta=reporting,
                    remote_mta=mta(record.get("remote-mta")),
                )
            )
    return failures if seen else None


# The fields of RFC 3464's per-message and per-recipient blocks, and the one an old
# sendmail adds.
_DSN_FIELDS = frozenset(
    {"reporting-mta", "dsn-gateway", "received-from-mta", "arrival-date", "original-envelope-id",
     "final-recipient", "original-recipient", "action", "status", "remote-mta",
     "diagnostic-code", "last-attempt-date", "will-retry-until", "x-actual-recipient"}
)  # fmt: skip


def detect_text(msg: BounceMessage) -> list[Failure]:
    """Delivery-status fields in the text itself, when no detector of a format read
    the message: a multipart/report whose boundary never comes (an old sendmail), a
    report pasted into a plain message."""
    statuses = [s for s in map(_status_fields_in, msg.texts) if s]
    if not statuses:
        return []
    return detect(dataclasses.replace(msg, statuses=statuses)) or []


def _status_fields_in(text: str) -> str:
    """The delivery-status blocks of a text, as a delivery-status part's body would
    give them; "" unless a block has a Final-Recipient and a Status. Only RFC 3464's
    fields are kept, so the headers of a returned message in the same text are not
    read as the report's."""
    blocks = [[(n, v) for n, v in block if n in _DSN_FIELDS] for block in field_blocks(text)]
    blocks = [b for b in blocks if b]
    if not any({"final-recipient", "status"} <= {n for n, _ in b} for b in blocks):
        return ""
    return "\n\n".join("\n".join(f"{n}: {v}" for n, v in b) for b in blocks)


def _dsn_status(field: str | None, diagnostic: str | None) -> str | None:
    """The Status field; the Diagnostic-Code's code when Status is missing, is only
    the class (``5.0.0``, as Exim writes) and the remote reply was more precise, or is
    the remote's permanent code made transient."""
    reply = diagnostic.partition(";")[2] if diagnostic and ";" in diagnostic else diagnostic
    status = status_of(field)
    detail = status_of(reply)
    if status is None:
        return detail
    if detail and status.endswith(".0.0") and detail[0] == status[0]:
        return detail
    if detail and status[0] == "4" and detail == f"5{status[1:]}" and ENHANCED.search(reply or ""):
        # The remote's own enhanced code is permanent and the reporter softened it
        # (Postfix's soft_bounce: "Status: 4.5.0" for a "550 5.5.0" reply that
        # finally bounced).
        return detail
    return status


def _text_reason(text: str, recipient: str) -> str | None:
    """The reason a report without a Diagnostic-Code gives in its own text, on the
    recipient's line: ``addr: 550 5.1.1 ...`` or ``addr: Domain does not exist``
    (OpenSMTPD's report lists each recipient so above its delivery-status part), or
    in Gmail's sentence about it."""
    if "@" not in recipient or recipient.lower() not in text.lower():
        return None
    addr = re.escape(recipient)
    m = re.search(rf"^[ \t]*<?{addr}>?:[ \t]+(\S[^\n]*)$", text, re.I | re.M) or re.search(
        # Gmail: "Your message wasn't delivered to ADDR because the address couldn't be
        # found ...".
        rf"(?:wasn't|was not) delivered to {addr} because (\S[^\n]*)",
        text,
        re.I,
    )
    return clip(m.group(1)) if m else None


def _status_comment(field: str | None) -> str | None:
    """The comment of a Status field, ``5.0.0 (recipient reached disk quota)`` as PMDF
    writes it without a Diagnostic-Code: the only reason such a report gives."""
    m = re.search(r"\((.+)\)", field or "")
    return clip(m.group(1)) if m else None


_LOCAL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}")


def _local_part(field: str) -> str | None:
    """A recipient given without a domain (``rfc822; dave``, as some MTAs report a
    local delivery): the bare local part, which the bounce processor matches against
    the message's own recipients."""
    typ, sep, value = field.partition(";")
    if sep and typ.strip().lower() != "rfc822":
        return None
    value = (value if sep else typ).strip().strip("<>")
    return value if _LOCAL.fullmatch(value) else None
