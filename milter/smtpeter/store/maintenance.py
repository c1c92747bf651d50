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
``message_events``
    set (to ``read``) by migration 8's switch: the old by-uid index of events is gone
    and a message's events are read by message_events.
``indexed_events``
    the highest event id in message_events (or orphan_events): the index of a
    message's events is filled behind the writers, in sorted batches; readers read the
    events above it from the events table itself (a short tail, by id).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator

from smtpeter.events import EVENT_TYPES
from smtpeter.store.migrations import INDEX_SWITCH

_COUNT_MESSAGES = """
    INSERT INTO daily_stats (day, login, messages, unique_opens, unique_clicks, bounces,
                             delivered, deferred)
    SELECT substr(m.created_at, 1, 10), COALESCE(m.login, '-'), COUNT(*),
           SUM(EXISTS (SELECT 1 FROM events e WHERE e.message_uid = m.uid AND e.type = 'open')),
           SUM(EXISTS (SELECT 1 FROM events e WHERE e.message_uid = m.uid AND e.type = 'click')),
           SUM((SELECT COUNT(*) FROM events e
                WHERE e.message_uid = m.uid AND e.type = 'bounce')),
           SUM(m.delivered), SUM(m.deferred)
    FROM messages m
    WHERE m.id > ? AND m.id <= ? AND m.opened IS NULL
    GROUP BY 1, 2
    ON CONFLICT (day, login) DO UPDATE SET
        messages = messages + excluded.messages,
        unique_opens = unique_opens + excluded.unique_opens,
        unique_clicks = unique_clicks + excluded.unique_clicks,
        bounces = bounces + excluded.bounces,
        delivered = delivered + excluded.delivered,
        deferred = deferred + excluded.deferred
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


# A batch of events by id, into the index of a message's events in the index's own
# order: each leaf page is written once for all the batch's entries on it, however
# random the messages (the entries of recent messages are together at the end).
_INDEX_EVENTS = """
    INSERT INTO message_events (message_id, event_id)
    SELECT message_id, id FROM events
    WHERE id > ? AND id <= ? AND message_id IS NOT NULL ORDER BY 1, 2
    ON CONFLICT DO NOTHING
"""
# Those without their message's row id (written before migration 8, by a daemon of
# an earlier version, or before their message came): by the uid.
_INDEX_EVENTS_BY_UID = """
    INSERT INTO message_events (message_id, event_id)
    SELECT m.id, e.id FROM events e CROSS JOIN messages m ON m.uid = e.message_uid
    WHERE e.id > ? AND e.id <= ? AND e.message_id IS NULL ORDER BY 1, 2
    ON CONFLICT DO NOTHING
"""
# The events of that batch without a message here. The events_orphan trigger keeps
# them as they are written; this is for the events written before migration 8.
_KEEP_ORPHANS = """
    INSERT INTO orphan_events (message_uid, event_id)
    SELECT e.message_uid, e.id FROM events e
    WHERE e.id > ? AND e.id <= ?
      AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.uid = e.message_uid)
    ON CONFLICT DO NOTHING
"""


# Every event type, for a read of each one's range of the (type, occurred_at) index.
_EVERY_TYPE = ", ".join(f"'{t}'" for t in EVENT_TYPES)


def state(conn: sqlite3.Connection, name: str) -> str | None:
    """One value of store_state, or None when it is not set (nothing left to do)."""
    row = conn.execute("SELECT value FROM store_state WHERE name = ?", (name,)).fetchone()
    return str(row[0]) if row is not None else None


def set_state(conn: sqlite3.Connection, name: str, value: str | None) -> None:
    """Set (or, with None, delete) one value of store_state."""
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
        set_state(conn, "backfill_messages", str(low) if low > 0 else None)
        return top - low
    top = int(state(conn, "backfill_events") or 0)
    if top > 0:
        # Events are many and cheap to update: five times the batch.
        low = max(top - 5 * batch, 0)
        conn.execute(_LOGIN_EVENTS, (low, top))
        conn.execute(_KEEP_BOUNCE_IDS, (low, top))
        set_state(conn, "backfill_events", str(low) if low > 0 else None)
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
        if switched(conn):
            # The batch's messages as a table of (row id, uid), in one statement. (The
            # WITH inside: Python's sqlite3 counts no rows of a statement that does not
            # start with DELETE.)
            deleted += conn.execute(
                "DELETE FROM events WHERE id IN (WITH t(id, uid) AS"
                " (SELECT value ->> 0, value ->> 1 FROM json_each(?))"
                f" {message_event_ids('t')})",
                (json.dumps([[r[0], r[1]] for r in uids]), indexed(conn)),
            ).rowcount
            conn.executemany(
                "DELETE FROM message_events WHERE message_id = ?", [(r[0],) for r in uids]
            )
        else:
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
            f" WHERE type IN ({_EVERY_TYPE})"
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
        set_state(conn, "pruned_before", before)
    return deleted


def message_event_ids(messages: str) -> str:
    """SQL selecting the ids of the events of the messages in ``messages`` (a table or
    CTE with columns ``id``, the message's row id, and ``uid``), once migration 8's
    switch is done: those in message_events, and the tail not indexed yet, read by id
    above the watermark (the fragment's one parameter, :func:`indexed`). Every reader
    of a message's events reads them through this, so none can miss the tail."""
    return (
        f"SELECT me.event_id FROM {messages}"
        f" CROSS JOIN message_events me ON me.message_id = {messages}.id"
        f" UNION SELECT id FROM events WHERE id > ?"
        f" AND message_uid IN (SELECT uid FROM {messages})"
    )


def switched(conn: sqlite3.Connection) -> bool:
    """Whether the store reads a message's events from message_events (migration 8's
    switch is done), not from the old events(message_uid, type) index."""
    return state(conn, "message_events") is not None


def indexed(conn: sqlite3.Connection) -> int:
    """The watermark: every event up to this id is in message_events or orphan_events."""
    return int(state(conn, "indexed_events") or 0)


def index_lag(conn: sqlite3.Connection) -> int:
    """Events written and not yet indexed (the tail readers read by id)."""
    top = conn.execute("SELECT MAX(id) FROM events").fetchone()[0] or 0
    return max(int(top) - indexed(conn), 0)


def index_step(conn: sqlite3.Connection, batch: int) -> int:
    """Index up to ``batch`` events above the watermark; the events covered (0:
    caught up). Run inside a write transaction."""
    low = indexed(conn)
    top = conn.execute("SELECT MAX(id) FROM events").fetchone()[0] or 0
    high = min(int(top), low + batch)
    if high <= low:
        return 0
    conn.execute(_INDEX_EVENTS, (low, high))
    conn.execute(_INDEX_EVENTS_BY_UID, (low, high))
    if not switched(conn):
        conn.execute(_KEEP_ORPHANS, (low, high))
    set_state(conn, "indexed_events", str(high))
    return high - low


def switch_ready(conn: sqlite3.Connection, lag: int = 0) -> bool:
    """Whether migration 8's switch can run now: not done yet, migration 5's backfill
    done (it reads the old index) and at most ``lag`` events not indexed yet."""
    if switched(conn) or state(conn, "backfill_messages") or state(conn, "backfill_events"):
        return False
    return index_lag(conn) <= lag


def read_old_index(conn: sqlite3.Connection) -> int:
    """Read every page of the old events(message_uid, type) index, without a lock
    (outside a write transaction): dropping it visits each of its pages, and pages
    the machine has evicted from its cache are then read from disk with the write
    lock held (a 10M-entry index cold: 17.9 s of lock measured, warm: 0.65 s). The
    entries read."""
    row = conn.execute("SELECT COUNT(*) FROM events INDEXED BY events_message_type").fetchone()
    return int(row[0])


def switch_step(conn: sqlite3.Connection) -> bool:
    """Migration 8's second half (INDEX_SWITCH) once it can run: the backfill of
    migration 5 done (it reads the old index) and every event indexed. True if it ran
    now. Run inside a write transaction."""
    if not switch_ready(conn):
        return False
    # Debian builds SQLite with secure_delete on: dropping the old index would then
    # write zeros over each of its pages (on 10M events ~100,000 pages, 6.7 s of write
    # lock measured). FAST zeroes what it can without extra writes; the freed pages
    # keep their old index entries (uids and event types) until reused.
    secure = conn.execute("PRAGMA secure_delete").fetchone()[0]
    conn.execute("PRAGMA secure_delete = FAST")
    try:
        for statement in statements(INDEX_SWITCH):
            conn.execute(statement)
    finally:
        conn.execute(f"PRAGMA secure_delete = {int(secure)}")
    return True


def statements(script: str) -> Iterator[str]:
    """The statements of a migration script: split at each ``;`` that ends a complete
    statement (a trigger's body has several inside its BEGIN ... END)."""
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                yield pending
            pending = ""
    if pending.strip(" \n;"):
        yield pending
