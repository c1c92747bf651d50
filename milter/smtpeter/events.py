"""Events: what happened to a message after it left us (opened, clicked, bounced)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# bounce: a hard or soft bounce (detail["kind"]); delay: a delivery-delay notice;
# autoreply: a vacation or out-of-office reply; complaint: a recipient reported the
# message as spam (an RFC 5965 feedback report). Only bounces count as bounces.
# delivered, deferred, failed: a recipient's delivery result as Postfix logged it
# (smtpeter deliveries): status=sent, deferred (each attempt; detail["attempt"]),
# bounced (or, for a recipient still deferred, the message expired in the queue).
# unsubscribe: a recipient unsubscribed (List-Unsubscribe): detail["how"] is
# "one-click" (RFC 8058 POST), "confirmation-page" (the tracker's page's form) or
# "mailto"; the recipient is the one the token names (none for a message sent to
# several recipients, which share one List-Unsubscribe header).
EventType = Literal[
    "open", "click", "bounce", "delay", "autoreply", "complaint", "delivered", "deferred", "failed",
    "unsubscribe",
]  # fmt: skip
EVENT_TYPES: tuple[str, ...] = (
    "open", "click", "bounce", "delay", "autoreply", "complaint", "delivered", "deferred", "failed",
    "unsubscribe",
)  # fmt: skip


@dataclass(frozen=True)
class Event:
    type: EventType
    message_uid: str
    # ISO 8601 UTC, e.g. 2026-11-23T23:41:54.123456Z
    occurred_at: str
    url: str | None = None
    user_agent: str | None = None
    client_ip: str | None = None
    # Known for bounces; for opens and clicks, the message's recipient when it had one.
    recipient: str | None = None
    # Extra facts, e.g. a bounce's status code and diagnostic.
    detail: dict[str, str] = field(default_factory=dict)
    # Filled in when read back from the store; id is the cursor of events(before=).
    login: str | None = None
    message_id: str | None = None
    id: int | None = None
    # The message's x-smtpeter-tags and x-smtpeter-metadata, carried on its events.
    tags: tuple[str, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)
