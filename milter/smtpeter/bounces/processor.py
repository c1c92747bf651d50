"""The bounce processor: Postfix's pipe transport runs it once per bounce that
reaches a signed return path (``smtpeter bounce --sender S --recipient R``, the
message on stdin).

1. The return path must verify (signed by one of our keys, not expired): anything
   else is dropped with a log line and counts nothing, so forged bounces cannot
   poison the statistics and we never send backscatter.
2. The message it belongs to is looked up; each failed recipient the bounce reports
   becomes an event (hard or soft bounce; delay notices and auto-replies are
   recorded as such, never as bounces).
3. The bounce is forwarded to the message's original envelope sender (unless that
   was empty), so the sender's own bounce handling keeps working.

Exit status, as Postfix's pipe reads it: 0 done (also for dropped input); 75
(EX_TEMPFAIL) when the store or the reinjection is unavailable, so Postfix keeps the
bounce and retries. Malformed input never makes this fail permanently.
"""

from __future__ import annotations

import logging
import smtplib
from dataclasses import dataclass
from datetime import UTC, datetime

from smtpeter.bounces.detect import Report, detect
from smtpeter.config import Config
from smtpeter.events import Event, EventType
from smtpeter.store import Store, StoreError, open_store
from smtpeter.tracker.keys import KeyRing

log = logging.getLogger("smtpeter.bounce")

EX_OK = 0
EX_TEMPFAIL = 75
_DAY = 86400.0
# Postfix's message_size_limit default; a bounce carrying more is cut for parsing.
MAX_INPUT = 10 * 1024 * 1024


@dataclass(frozen=True)
class Outcome:
    status: int
    what: str


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _token(recipient: str, cfg: Config) -> str | None:
    """The token of ``<prefix>+<token>@<domain>``, or None if it is not one of ours."""
    domain = cfg.bounces.domain
    local, _, rcpt_domain = recipient.strip().strip("<>").rpartition("@")
    if domain is None or rcpt_domain.lower() != domain.lower():
        return None
    prefix, plus, token = local.strip('"').partition("+")
    if not plus or prefix.lower() != cfg.bounces.prefix.lower():
        return None
    return token


def _events(report: Report, uid: str, bounce_id: str) -> list[Event]:
    now = _now()
    events: list[Event] = []
    for failure in report.failures:
        kind = failure.kind
        event_type: EventType = (
            "bounce" if kind in ("hard", "soft") else ("delay" if kind == "delay" else "autoreply")
        )
        if kind == "unknown":
            continue
        detail = {"kind": kind, "detector": report.detector, "bounce_id": bounce_id}
        for key, value in (
            ("status", failure.status),
            ("diagnostic", failure.diagnostic),
            ("reporting_mta", failure.reporting_mta),
            ("remote_mta", failure.remote_mta),
        ):
            if value:
                detail[key] = value[:500]
        events.append(
            Event(
                type=event_type,
                message_uid=uid,
                occurred_at=now,
                recipient=failure.recipient,
                detail=detail,
            )
        )
    if not report.failures and report.detector == "autoreply":
        events.append(
            Event(
                type="autoreply",
                message_uid=uid,
                occurred_at=now,
                detail={"kind": "autoreply", "bounce_id": bounce_id},
            )
        )
    return events


def _forward(raw: bytes, to: str, cfg: Config) -> None:
    """Hand the bounce back to Postfix for the original sender, with the null sender
    (a bounce must never bounce)."""
    with smtplib.SMTP(cfg.bounces.reinject_host, cfg.bounces.reinject_port, timeout=60) as smtp:
        smtp.sendmail("", [to], raw)  # MAIL FROM:<>


def process(
    raw: bytes, recipient: str, cfg: Config, *, bounce_id: str = "", store: Store | None = None
) -> Outcome:
    """Handle one bounce. ``bounce_id`` (Postfix's queue id of the bounce) makes a
    retry after a failed forward record nothing twice."""
    token = _token(recipient, cfg)
    if token is None:
        return Outcome(EX_OK, f"dropped: {recipient!r} is not a return path of ours")
    try:
        store = store or open_store(cfg.store)
        signer = KeyRing.from_config(store, cfg.tracker).signer()
        uid = signer.verify_return_path(token, cfg.bounces.address_lifetime_days * _DAY)
        if uid is None:
            return Outcome(EX_OK, f"dropped: tampered, unknown or expired return path {recipient}")
        messages = store.messages(uid=uid, limit=1)
        if not messages:
            return Outcome(EX_OK, f"dropped: no message {uid} for return path {recipient}")
        message = messages[0]
        report = detect(raw[:MAX_INPUT])
        events = _events(report, uid, bounce_id)
        seen = bounce_id and any(
            e.detail.get("bounce_id") == bounce_id for e in store.events(message=uid)
        )
        if not seen:
            store.record_events(events)
    except StoreError as e:
        return Outcome(EX_TEMPFAIL, f"store unavailable, will retry: {e}")
    kinds = ",".join(f"{e.recipient or '-'}:{e.detail.get('kind', e.type)}" for e in events)
    summary = (
        f"message {uid} (queue id {message.queue_id}, login {message.login or '-'}): "
        f"detector={report.detector} events={kinds or 'none'}"
    )
    sender = message.envelope_sender.strip().strip("<>")
    if cfg.bounces.forward and sender:
        try:
            _forward(raw, sender, cfg)
        except (OSError, smtplib.SMTPException) as e:
            # The events are recorded; a retry records them again, which is the lesser
            # harm than losing the sender's bounce.
            return Outcome(EX_TEMPFAIL, f"{summary}; forwarding to {sender} failed: {e}")
        summary += f"; forwarded to {sender}"
    return Outcome(EX_OK, summary)
