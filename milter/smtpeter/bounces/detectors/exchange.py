"""Exchange / Office 365 plain NDRs: "Delivery has failed to these recipients or
groups:", the remote reply in the administrators' section."""

from __future__ import annotations

import re

from smtpeter.bounces.message import BounceMessage
from smtpeter.bounces.report import MAX_FAILURES, Failure
from smtpeter.bounces.text import (
    ADDR,
    address,
    clip,
    failed_kind,
    status_of,
    until,
)

EXCHANGE_LINE = (
    # Office 365 also writes "addr<mailto:addr>" (the link of its HTML part as text).
    re.compile(rf"\s*<?(?:mailto:)?(?P<a>{ADDR})>?\s*(?:[(<](?:mailto:)?{ADDR}[)>])?\s*"),
    re.compile(rf"\s*[^@<>()\n]{{1,80}}?\s*[(<](?:mailto:)?(?P<a>{ADDR})[)>]\s*"),
)


def detect(msg: BounceMessage) -> list[Failure]:
    text = msg.text
    m = re.search(r"Delivery has failed to these recipients or groups:", text)
    if not m:
        return []
    rest = text[m.end() :]
    diag_at = re.search(r"Diagnostic information for administrators:", rest)
    listing = until(rest, r"Diagnostic information for administrators:", r"Original message")
    diagnostics = until(rest[diag_at.end() :], r"Original message") if diag_at else ""
    generating = re.search(r"Generating server:\s*(\S+)", diagnostics)
    recipients: list[str] = []
    for line in listing.split("\n"):
        for rx in EXCHANGE_LINE:
            if (lm := rx.fullmatch(line)) and (addr := address(lm.group("a"))):
                if addr not in recipients:
                    recipients.append(addr)
                break
    # In the administrators' section each address is followed by the remote reply.
    reasons: dict[str, str] = {}
    diag_lines = [line.strip() for line in diagnostics.split("\n")]
    for i, line in enumerate(diag_lines):
        addr = address(line) if "@" in line else None
        if addr and addr not in reasons:
            following = [x for x in diag_lines[i + 1 : i + 4] if x]
            if following:
                reasons[addr] = following[0]
    remote = re.search(r"\b(?:Remote server|Receiving server):[ \t]*(\S+)", diagnostics, re.I)
    failures: list[Failure] = []
    for recipient in recipients[:MAX_FAILURES]:
        reason = reasons.get(recipient)
        status = status_of(reason)
        failures.append(
            Failure(
                recipient,
                status,
                failed_kind(status, "unknown", reason),
                clip(reason),
                generating.group(1) if generating else None,
                remote.group(1) if remote else None,
            )
        )
    return failures
