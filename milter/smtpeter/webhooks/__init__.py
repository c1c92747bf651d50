"""Signed webhooks: every event of a login's messages POSTed to its endpoints.

The outbox is written by the store (a trigger, in the event's own transaction); the
dispatcher (dispatcher.py) delivers it: targets.py decides where a URL may lead
(never a private address unless allowed), signing.py signs each body, payload.py
builds it, client.py makes the one HTTP request.
"""

from __future__ import annotations

from smtpeter.events import EVENT_TYPES

# The event types an endpoint can ask for: every type the store records.
WEBHOOK_TYPES: tuple[str, ...] = EVENT_TYPES


def parse_types(text: str | None) -> tuple[str, ...]:
    """``click,open`` as a tuple in WEBHOOK_TYPES' order; None or ``all``: () (every
    type). ValueError names an unknown type."""
    if text is None or text.strip() in ("", "all", "*"):
        return ()
    wanted = {t.strip().lower() for t in text.split(",") if t.strip()}
    unknown = sorted(wanted - set(WEBHOOK_TYPES))
    if unknown:
        raise ValueError(
            f"unknown event type {', '.join(unknown)} (known: {', '.join(WEBHOOK_TYPES)})"
        )
    return tuple(t for t in WEBHOOK_TYPES if t in wanted)
