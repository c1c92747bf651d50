"""The store's upkeep, in small steps: the backfill an upgrade leaves, and retention.

Each step is one short transaction run by :class:`SQLiteStore` (which holds the write
lock for it), so the daemons writing messages and events wait a few milliseconds at
most, never for the whole job. The caller loops, pausing between steps (see
:func:`smtpeter.store.upkeep.run`).

Progress is kept in ``store_state``, so a step interrupted anywhere (a crash, a stop)
leaves the store consistent and the next run goes on where it was:

``backfill_messages``
    the highest message id an upgrade found that is not yet counted (its flags NULL);
    counted downwards, a batch at a time, into daily_stats.
``backfill_events``
    the highest event id an upgrade found not yet in event_logins; filled downwards,
    a bounce's identity kept in bounce_reports on the way.
``pruned_before``
    the oldest time retention kept: stats takes a day before it whole from
    daily_stats.
"""

from __future__ import annotations

import sqlite3

_COUNT_MESSAGES = """
    INSERT INTO daily_stats (day, login, messages, unique_opens, unique_clicks, bounces)
    SELECT substr(m.created_at, 1, 10), COALESCE(m.login, '-'), COUNT(*),
           SUM(EXISTS (SELECT 1 FROM events e WHERE e.message_uid = m.uid AND e.type = 'open')),
           SUM(EXISTS (SELECT 1 FROM events e WHERE e.message_uid = m.uid AND e.type = 'click')),
           SUM((SELECT COUNT(*) FROM events e
                WHERE e.message_uid = m.uid AND e.type = 'bounce'))
    FROM messages m
    WHERE m.id > ? AND m.id <= ? AND m.opened IS NULL
    GROUP BY 1, 2
    ON CONFLICT (day, login) DO UPDATE SET
        messages = messages + excluded.messages,
        unique_opens = unique_opens + excluded.unique_opens,
        unique_clicks = unique_clicks + excluded.unique_clicks,
        bounces = bounces + excluded.bounces
"""
# The flags as counted above (the write lock is held: no event can come in between).
# The update trigger ignores a change from NULL, so nothing is counted twice.
_FLAG_MESSAGES = """
    UPDATE messages SET
        opened = EXISTS (SELECT 1 FROM events e
                         WHERE e.message_uid = messages.uid AND e.type = 'open'),
        clicked = EXISTS (SELECT 1 FROM events e
                          WHERE e.message_uid = messages.uid AND e.type = 'click'),
        bounces = (SELECT COUNT(*) FROM events e
                   WHERE e.message_uid = messages.uid AND e.type = 'bounce')
    WHERE id > ? AND id <= ? AND opened IS NULL
"""
_LOGIN_EVENTS = """
    INSERT INTO event_logins (login, event_id)
    SELECT m.login, e.id FROM events e CROSS JOIN messages m ON m.uid = e.message_uid
    WHERE e.id > ? AND e.id <= ? AND m.login IS NOT NULL
    ON CONFLICT (login, event_id) DO NOTHING
"""
_KEEP_BOUNCE_IDS = """
    INSERT INTO bounce_reports (identity, message_uid, recorded_at)
    SELECT message_uid || ' ' || json_extract(detail, '$.bounce_id'), message_uid,
           MIN(occurred_at)
    FROM events
    WHERE id > ? AND id <= ? AND type IN ('bounce', 'delay', 'autoreply')
      AND COALESCE(json_extract(detail, '$.bounce_id'), '') != ''
    GROUP BY message_uid, json_extract(detail, '$.bounce_id')
    ON CONFLICT (identity) DO NOTHING
"""


def state(conn: sqlite3.Connection, name: str) -> str | None:
    """One value of store_state, or None when it is not set (nothing left to do)."""
    row = conn.execute("SELECT value FROM store_state WHERE name = ?", (name,)).fetchone()
    return str(row[0]) if row is not None else None


def _set(conn: sqlite3.Connection, name: str, value: str | None) -> None:
    if value is None:
        conn.execute("DELETE FROM store_state WHERE name = ?", (name,))
    else:
        conn.execute(
            "INSERT INTO store_state (name, value) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, value),
        )


def backfill_step(conn: sqlite3.Connection, batch: int) -> int:
    """One batch of the upgrade's backfill, messages first; the ids covered (0: done).
    Run inside a write transaction."""
    top = int(state(conn, "backfill_messages") or 0)
    if top > 0:
        low = max(top - batch, 0)
        conn.execute(_COUNT_MESSAGES, (low, top))
        conn.execute(_FLAG_MESSAGES, (low, top))
        _set(conn, "backfill_messages", str(low) if low > 0 else None)
        return top - low
    top = int(state(conn, "backfill_events") or 0)
    if top > 0:
        # Events are many and cheap to update: five times the batch.
        low = max(top - 5 * batch, 0)
        conn.execute(_LOGIN_EVENTS, (low, top))
        conn.execute(_KEEP_BOUNCE_IDS, (low, top))
        _set(conn, "backfill_events", str(low) if low > 0 else None)
        return top - low
    return 0


def prune_step(conn: sqlite3.Connection, before: str, batch: int) -> int:
    """Delete one batch of what is older than ``before``; the rows deleted (0: done).
    Run inside a write transaction. Messages go with their events; then events of
    messages the store never had (or pruned); then bounce identities."""
    uids = conn.execute(
        "SELECT id, uid FROM messages WHERE created_at < ? ORDER BY created_at LIMIT ?",
        (before, batch),
    ).fetchall()
    deleted = 0
    if uids:
        # Events first: the trigger that drops their event_logins rows reads the
        # message's login.
        deleted += conn.executemany(
            "DELETE FROM events WHERE message_uid = ?", [(r[1],) for r in uids if r[1]]
        ).rowcount
        deleted += conn.executemany(
            "DELETE FROM messages WHERE id = ?", [(r[0],) for r in uids]
        ).rowcount
    else:
        # By the (type, occurred_at) index, one range per type.
        deleted += conn.execute(
            "DELETE FROM events WHERE id IN (SELECT id FROM events"
            " WHERE type IN ('open', 'click', 'bounce', 'delay', 'autoreply')"
            " AND occurred_at < ? LIMIT ?)",
            (before, batch * 10),
        ).rowcount
        if not deleted:
            deleted += conn.execute(
                "DELETE FROM bounce_reports WHERE identity IN (SELECT identity FROM"
                " bounce_reports WHERE recorded_at < ? LIMIT ?)",
                (before, batch * 10),
            ).rowcount
    if (state(conn, "pruned_before") or "") < before:
        _set(conn, "pruned_before", before)
    return deleted
