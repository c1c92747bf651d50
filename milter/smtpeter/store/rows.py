"""An event as the store reads it back: the columns every reader selects (the event
``e`` with its message ``m``) and the Event made of such a row. Shared by the event
list (store/sqlite.py) and the webhook outbox (store/webhooks.py), so an event reads
the same in `smtpeter events --json` and in a webhook's body."""

from __future__ import annotations

import json
import sqlite3

from smtpeter.events import Event

# The recipient of an open or click is the message's recipient when it had exactly one
# (a message to several shares one body, so they cannot be told apart).
EVENT_COLUMNS = (
    "e.id, e.type, e.occurred_at, e.message_uid, e.url, e.user_agent, e.client_ip,"
    " e.detail, m.login, m.message_id, m.tags, m.metadata,"
    " COALESCE(e.recipient, CASE WHEN json_array_length(m.recipients) = 1"
    "   THEN json_extract(m.recipients, '$[0]') END) AS recipient"
)


def event_from_row(r: sqlite3.Row) -> Event:
    """The Event of a row that selected EVENT_COLUMNS."""
    return Event(
        id=r["id"],
        type=r["type"],
        occurred_at=r["occurred_at"],
        message_uid=r["message_uid"],
        url=r["url"],
        user_agent=r["user_agent"],
        client_ip=r["client_ip"],
        recipient=r["recipient"],
        detail=json.loads(r["detail"]),
        login=r["login"],
        message_id=r["message_id"],
        tags=tuple(json.loads(r["tags"] or "[]")),
        metadata=json.loads(r["metadata"] or "{}"),
    )
