"""RFC 3464 delivery status notifications (and RFC 6533's global ones): the
authoritative format. A DSN that only reports delivered or relayed recipients yields
no failures, and the human-readable text beside it is not second-guessed."""

from __future__ import annotations

import re

from smtpeter.bounces.message import BounceMessage
from smtpeter.bounces.report import Failure, Kind
from smtpeter.bounces.text import (
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
            # RFC 3464 says "failed" and "delayed"; some MTAs write "failure" or, as
            # OpenSMTPD does, "error" (flufl.bounce reads them the same way).
            if action.startswith(("fail", "error")):
                action = "failed"
            elif action.startswith("delay"):
                action = "delayed"
            else:
                continue
            diagnostic = clip(record.get("diagnostic-code")) or _status_comment(
                record.get("status")
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


def _dsn_status(field: str | None, diagnostic: str | None) -> str | None:
    """The Status field; the Diagnostic-Code's code when Status is missing, or is only
    the class (``5.0.0``, as Exim writes) and the remote reply was more precise."""
    reply = diagnostic.partition(";")[2] if diagnostic and ";" in diagnostic else diagnostic
    status = status_of(field)
    detail = status_of(reply)
    if status is None:
        return detail
    if detail and status.endswith(".0.0") and detail[0] == status[0]:
        return detail
    return status


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
