"""The JSON body of a webhook request: one event.

    {"id": 4711, "type": "click", "occurred_at": "2026-12-02T09:15:02.120534Z",
     "login": "shop", "message_uid": "...", "queue_id": "4dQm1x2Zb3z9", "message_id":
     "<a1@shop.example>", "recipient": "ann@example.org", "tags": ["newsletter"],
     "metadata": {"customer": "42"}, "url": "https://shop.example/offer",
     "user_agent": "...", "client_ip": "198.51.100.7", "detail": {}}

``id`` is the event's id in the store: delivery is at least once, so a receiver drops
an id it has seen. ``url`` (a click's link), ``user_agent`` and ``client_ip`` (opens
and clicks) appear when the event has them; ``detail`` holds the type's own facts (a
bounce's kind, reason, status and diagnostic; a delivery result's dsn, relay, reply;
a complaint's feedback type). Keys are sorted, the text is UTF-8.
"""

from __future__ import annotations

import json
from typing import Any

from smtpeter.events import Event


def event_payload(event: Event, queue_id: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": event.id,
        "type": event.type,
        "occurred_at": event.occurred_at,
        "login": event.login,
        "message_uid": event.message_uid,
        "queue_id": queue_id,
        "message_id": event.message_id,
        "recipient": event.recipient,
        "tags": list(event.tags),
        "metadata": event.metadata,
        "detail": event.detail,
    }
    for key in ("url", "user_agent", "client_ip"):
        value = getattr(event, key)
        if value is not None:
            out[key] = value
    return out


def trial_payload(login: str, occurred_at: str) -> dict[str, Any]:
    """What `smtpeter webhooks test` sends: type "test", id 0, no message."""
    return {
        "id": 0,
        "type": "test",
        "occurred_at": occurred_at,
        "login": login,
        "message_uid": None,
        "queue_id": None,
        "message_id": None,
        "recipient": None,
        "tags": [],
        "metadata": {},
        "detail": {"note": "a test event sent by `smtpeter webhooks test`"},
    }


def body(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
