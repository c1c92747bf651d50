"""Schema migrations, applied in order; the schema version is SQLite's user_version.

Append new steps; never edit a step that has shipped.
"""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    # 1: logins and the per-message record.
    """
    CREATE TABLE logins (
        name          TEXT PRIMARY KEY,
        password_hash TEXT NOT NULL,
        enabled       INTEGER NOT NULL DEFAULT 1,
        inlinecss     INTEGER NOT NULL DEFAULT 0,
        trackclicks   INTEGER NOT NULL DEFAULT 0,
        trackopens    INTEGER NOT NULL DEFAULT 0,
        trackbounces  INTEGER NOT NULL DEFAULT 0,
        created_at    TEXT NOT NULL,
        updated_at    TEXT NOT NULL
    );
    CREATE TABLE messages (
        id              INTEGER PRIMARY KEY,
        queue_id        TEXT NOT NULL,
        message_id      TEXT,
        login           TEXT,
        envelope_sender TEXT NOT NULL,
        recipients      TEXT NOT NULL,
        features        TEXT NOT NULL,
        size_before     INTEGER NOT NULL,
        size_after      INTEGER NOT NULL,
        created_at      TEXT NOT NULL
    );
    CREATE INDEX messages_queue_id ON messages (queue_id);
    CREATE INDEX messages_login_created ON messages (login, created_at);
    """,
    # 2: tracking: a message's public uid, signing keys, events.
    """
    ALTER TABLE messages ADD COLUMN uid TEXT;
    CREATE UNIQUE INDEX messages_uid ON messages (uid);
    CREATE TABLE signing_keys (
        kid        TEXT PRIMARY KEY,
        secret     BLOB NOT NULL,
        created_at REAL NOT NULL,
        retired_at REAL
    );
    CREATE TABLE events (
        id          INTEGER PRIMARY KEY,
        type        TEXT NOT NULL,
        occurred_at TEXT NOT NULL,
        message_uid TEXT NOT NULL,
        recipient   TEXT,
        url         TEXT,
        user_agent  TEXT,
        client_ip   TEXT,
        detail      TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX events_message ON events (message_uid);
    CREATE INDEX events_type_time ON events (type, occurred_at);
    """,
    # 3: hostile input: a login may have DKIM-signed mail rewritten anyway; what a
    # message had skipped (feature: reason) is kept with it.
    """
    ALTER TABLE logins ADD COLUMN rewrite_signed INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN skipped TEXT NOT NULL DEFAULT '[]';
    """,
    # 4: indexes for the commands users run. stats --since reads messages by
    # created_at; events --message and the bounce processor's duplicate check find a
    # message by Message-ID or queue id, then its events by uid; stats counts a
    # message's events of one type from (message_uid, type) alone. The new events
    # index serves everything events_message did, so that one goes.
    """
    CREATE INDEX messages_created ON messages (created_at);
    CREATE INDEX messages_message_id ON messages (message_id);
    CREATE INDEX events_message_type ON events (message_uid, type);
    DROP INDEX events_message;
    """,
)
