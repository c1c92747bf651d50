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
    # 5: the store at 10 million events. stats reads per-login per-day counters
    # (daily_stats) that triggers keep up to date as messages and events are written;
    # a message's own flags (opened, clicked, bounces) say whether its first open or
    # click was counted yet. event_logins indexes events by their message's login
    # (events --login, newest first), bounce_reports keeps each bounce's identity
    # once (the bounce processor's duplicate check, one primary-key lookup).
    #
    # Every statement here is constant-time whatever the store's size: no index is
    # built over an existing table (on 10M events one takes seconds, with the write
    # lock held). What an existing store needs instead, flags and counters for its
    # messages, event_logins and bounce_reports rows for its events, is filled by the
    # backfill (store/maintenance.py) in short batches while the daemons run; until
    # then the readers count those rows the old way. The triggers live here, with the
    # schema, so every writer keeps the counters right, whichever process it is: a
    # daemon of the previous version still running during a package upgrade too
    # (its messages are counted on insert, its bounces' identities kept).
    """
    ALTER TABLE messages ADD COLUMN opened INTEGER;
    ALTER TABLE messages ADD COLUMN clicked INTEGER;
    ALTER TABLE messages ADD COLUMN bounces INTEGER;
    CREATE TABLE daily_stats (
        day           TEXT NOT NULL,
        login         TEXT NOT NULL,
        messages      INTEGER NOT NULL DEFAULT 0,
        unique_opens  INTEGER NOT NULL DEFAULT 0,
        unique_clicks INTEGER NOT NULL DEFAULT 0,
        bounces       INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (day, login)
    ) WITHOUT ROWID;
    CREATE INDEX daily_stats_login ON daily_stats (login, day);
    CREATE TABLE event_logins (
        login    TEXT NOT NULL,
        event_id INTEGER NOT NULL,
        PRIMARY KEY (login, event_id)
    ) WITHOUT ROWID;
    CREATE TABLE bounce_reports (
        identity    TEXT PRIMARY KEY,
        message_uid TEXT NOT NULL,
        recorded_at TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX bounce_reports_recorded ON bounce_reports (recorded_at);
    CREATE TABLE store_state (
        name  TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO store_state (name, value)
        SELECT 'backfill_messages', MAX(id) FROM messages HAVING MAX(id) IS NOT NULL;
    INSERT INTO store_state (name, value)
        SELECT 'backfill_events', MAX(id) FROM events HAVING MAX(id) IS NOT NULL;
    CREATE TRIGGER messages_counted AFTER INSERT ON messages
    BEGIN
        UPDATE messages SET
            opened = EXISTS (SELECT 1 FROM events
                             WHERE message_uid = NEW.uid AND type = 'open'),
            clicked = EXISTS (SELECT 1 FROM events
                              WHERE message_uid = NEW.uid AND type = 'click'),
            bounces = (SELECT COUNT(*) FROM events
                       WHERE message_uid = NEW.uid AND type = 'bounce')
        WHERE id = NEW.id;
        INSERT INTO daily_stats (day, login, messages, unique_opens, unique_clicks, bounces)
        SELECT substr(created_at, 1, 10), COALESCE(login, '-'), 1, opened, clicked, bounces
        FROM messages WHERE id = NEW.id
        ON CONFLICT (day, login) DO UPDATE SET
            messages = messages + 1,
            unique_opens = unique_opens + excluded.unique_opens,
            unique_clicks = unique_clicks + excluded.unique_clicks,
            bounces = bounces + excluded.bounces;
    END;
    CREATE TRIGGER messages_recounted AFTER UPDATE OF opened, clicked, bounces ON messages
    WHEN OLD.opened IS NOT NULL
    BEGIN
        UPDATE daily_stats SET
            unique_opens = unique_opens + NEW.opened - OLD.opened,
            unique_clicks = unique_clicks + NEW.clicked - OLD.clicked,
            bounces = bounces + NEW.bounces - OLD.bounces
        WHERE day = substr(NEW.created_at, 1, 10) AND login = COALESCE(NEW.login, '-');
    END;
    CREATE TRIGGER events_login AFTER INSERT ON events
    BEGIN
        INSERT INTO event_logins (login, event_id)
        SELECT login, NEW.id FROM messages WHERE uid = NEW.message_uid AND login IS NOT NULL;
    END;
    CREATE TRIGGER events_bounce_id AFTER INSERT ON events
    WHEN NEW.type IN ('bounce', 'delay', 'autoreply')
        AND COALESCE(json_extract(NEW.detail, '$.bounce_id'), '') != ''
    BEGIN
        INSERT INTO bounce_reports (identity, message_uid, recorded_at)
        VALUES (NEW.message_uid || ' ' || json_extract(NEW.detail, '$.bounce_id'),
                NEW.message_uid, NEW.occurred_at)
        ON CONFLICT (identity) DO NOTHING;
    END;
    CREATE TRIGGER events_open AFTER INSERT ON events WHEN NEW.type = 'open'
    BEGIN
        UPDATE messages SET opened = 1 WHERE uid = NEW.message_uid AND opened = 0;
    END;
    CREATE TRIGGER events_click AFTER INSERT ON events WHEN NEW.type = 'click'
    BEGIN
        UPDATE messages SET clicked = 1 WHERE uid = NEW.message_uid AND clicked = 0;
    END;
    CREATE TRIGGER events_bounce AFTER INSERT ON events WHEN NEW.type = 'bounce'
    BEGIN
        UPDATE messages SET bounces = bounces + 1
        WHERE uid = NEW.message_uid AND bounces IS NOT NULL;
    END;
    CREATE TRIGGER events_gone AFTER DELETE ON events
    BEGIN
        DELETE FROM event_logins WHERE event_id = OLD.id
            AND login = (SELECT login FROM messages WHERE uid = OLD.message_uid);
    END
    """,
    # 6: a bounce is forwarded to the original sender once, however often it is
    # delivered: 0 while recorded but not yet forwarded (the forward failed, Postfix
    # retries), 1 once done. NULL on the rows of earlier versions, which forwarded
    # on every delivery: counted as done, so an upgrade forwards nothing twice.
    #
    # The suppression list: a hard bounce or a complaint (or repeated soft bounces of
    # a mailbox, counted once per message in soft_bounces) suppresses an address for
    # the login that sent to it; a login's policy (suppression) is 'refuse' (the
    # milter refuses the address at RCPT) or 'off'.
    """
    ALTER TABLE bounce_reports ADD COLUMN forwarded INTEGER;
    ALTER TABLE logins ADD COLUMN suppression TEXT NOT NULL DEFAULT 'refuse';
    CREATE TABLE suppressions (
        login       TEXT NOT NULL,
        address     TEXT NOT NULL,
        reason      TEXT NOT NULL,
        status      TEXT,
        message_uid TEXT,
        created_at  TEXT NOT NULL,
        PRIMARY KEY (login, address)
    ) WITHOUT ROWID;
    CREATE TABLE soft_bounces (
        login       TEXT NOT NULL,
        address     TEXT NOT NULL,
        message_uid TEXT NOT NULL,
        reason      TEXT NOT NULL,
        PRIMARY KEY (login, address, message_uid)
    ) WITHOUT ROWID;
    """,
    # 7: a message's tags and metadata (x-smtpeter-tags, x-smtpeter-metadata), as JSON;
    # NULL on the messages of earlier versions (read as none). message_tags indexes
    # the tags (by tag, then the message's row id, which grows with time) for
    # `events --tag` and `stats --tag`; triggers keep it as messages come and go.
    """
    ALTER TABLE messages ADD COLUMN tags TEXT;
    ALTER TABLE messages ADD COLUMN metadata TEXT;
    CREATE TABLE message_tags (
        tag        TEXT NOT NULL,
        message_id INTEGER NOT NULL,
        PRIMARY KEY (tag, message_id)
    ) WITHOUT ROWID;
    CREATE TRIGGER messages_tagged AFTER INSERT ON messages WHEN NEW.tags IS NOT NULL
    BEGIN
        INSERT INTO message_tags (tag, message_id)
        SELECT value, NEW.id FROM json_each(NEW.tags) WHERE true
        ON CONFLICT DO NOTHING;
    END;
    CREATE TRIGGER messages_untagged AFTER DELETE ON messages WHEN OLD.tags IS NOT NULL
    BEGIN
        DELETE FROM message_tags
        WHERE message_id = OLD.id AND tag IN (SELECT value FROM json_each(OLD.tags));
    END
    """,
    # 8: a message's events by the message's row id, indexed in bulk (issue 17). The
    # events(message_uid, type) index took a random leaf of a 10M-entry B-tree for
    # every click (the uid is random): ~8,000 clicks/s. message_events is keyed by the
    # message's row id, which grows with time, and is filled behind the writers, a
    # sorted batch at a time (store/maintenance.py, index_step): an event with an id
    # above the watermark ``indexed_events`` is not in it yet and is found by reading
    # that short tail of the events table. orphan_events holds the events whose
    # message this store does not have (yet): another node's tracker wrote them first.
    #
    # An event written by this version carries its message's row id (message_id, NULL
    # when the message is not here yet, and on the rows of earlier versions): the
    # triggers and the index step find the message by it, not by the uid's index.
    #
    # The old index stays, and every reader uses it, until message_events has caught
    # up with an upgraded store's events (the backfill, `store upkeep`); then
    # INDEX_SWITCH below drops it. A new store switches at once.
    """
    ALTER TABLE events ADD COLUMN message_id INTEGER;
    DROP TRIGGER events_login;
    CREATE TRIGGER events_login AFTER INSERT ON events
    BEGIN
        INSERT INTO event_logins (login, event_id)
        SELECT login, NEW.id FROM messages
        WHERE id = COALESCE(NEW.message_id, (SELECT id FROM messages WHERE uid = NEW.message_uid))
          AND login IS NOT NULL;
    END;
    DROP TRIGGER events_open;
    DROP TRIGGER events_click;
    -- A message's first open or first click sets its flag (and, by messages_recounted,
    -- counts it in daily_stats); later ones change nothing.
    CREATE TRIGGER events_engaged AFTER INSERT ON events WHEN NEW.type IN ('open', 'click')
    BEGIN
        UPDATE messages SET
            opened = MAX(opened, NEW.type = 'open'),
            clicked = MAX(clicked, NEW.type = 'click')
        WHERE id = COALESCE(NEW.message_id, (SELECT id FROM messages WHERE uid = NEW.message_uid))
          AND CASE NEW.type WHEN 'open' THEN opened = 0 ELSE clicked = 0 END;
    END;
    DROP TRIGGER events_bounce;
    CREATE TRIGGER events_bounce AFTER INSERT ON events WHEN NEW.type = 'bounce'
    BEGIN
        UPDATE messages SET bounces = bounces + 1
        WHERE id = COALESCE(NEW.message_id, (SELECT id FROM messages WHERE uid = NEW.message_uid))
          AND bounces IS NOT NULL;
    END;
    CREATE TABLE message_events (
        message_id INTEGER NOT NULL,
        event_id   INTEGER NOT NULL,
        PRIMARY KEY (message_id, event_id)
    ) WITHOUT ROWID;
    CREATE TABLE orphan_events (
        message_uid TEXT NOT NULL,
        event_id    INTEGER NOT NULL,
        PRIMARY KEY (message_uid, event_id)
    ) WITHOUT ROWID;
    INSERT INTO store_state (name, value) VALUES ('indexed_events', '0');
    CREATE TRIGGER events_orphan AFTER INSERT ON events
    WHEN NEW.message_id IS NULL AND NOT EXISTS (SELECT 1 FROM messages WHERE uid = NEW.message_uid)
    BEGIN
        INSERT INTO orphan_events (message_uid, event_id) VALUES (NEW.message_uid, NEW.id)
        ON CONFLICT DO NOTHING;
    END;
    CREATE TRIGGER events_unorphaned AFTER DELETE ON events
    BEGIN
        DELETE FROM orphan_events WHERE message_uid = OLD.message_uid AND event_id = OLD.id;
    END
    """,
    # 9: delivery results in stats (issue 11): each message counts its delivered and
    # deferred events (delivered, deferred), and daily_stats their sums per login and
    # day the message was sent, kept by a trigger as the delivery reader records them.
    # The reader records results only for a message the store has. A message an
    # upgrade's backfill has not counted yet (opened NULL) is added to daily_stats by
    # the backfill with its counters.
    #
    # The results recorded under schema 8 are counted here: read by the (type,
    # occurred_at) index, as many rows as the reader wrote (a day's worth or so).
    """
    ALTER TABLE messages ADD COLUMN delivered INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN deferred INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE daily_stats ADD COLUMN delivered INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE daily_stats ADD COLUMN deferred INTEGER NOT NULL DEFAULT 0;
    UPDATE messages SET delivered = c.delivered, deferred = c.deferred
    FROM (SELECT m.id, SUM(e.type = 'delivered') AS delivered,
                 SUM(e.type = 'deferred') AS deferred
          FROM events e CROSS JOIN messages m ON m.id = COALESCE(
              e.message_id, (SELECT id FROM messages WHERE uid = e.message_uid))
          WHERE e.type IN ('delivered', 'deferred')
          GROUP BY 1) AS c
    WHERE messages.id = c.id;
    UPDATE daily_stats SET delivered = c.delivered, deferred = c.deferred
    FROM (SELECT substr(created_at, 1, 10) AS day, COALESCE(login, '-') AS login,
                 SUM(delivered) AS delivered, SUM(deferred) AS deferred
          FROM messages
          WHERE id IN (SELECT COALESCE(e.message_id,
                                       (SELECT id FROM messages WHERE uid = e.message_uid))
                       FROM events e WHERE e.type IN ('delivered', 'deferred'))
            AND opened IS NOT NULL
          GROUP BY 1, 2) AS c
    WHERE daily_stats.day = c.day AND daily_stats.login = c.login;
    CREATE TRIGGER events_delivery AFTER INSERT ON events
    WHEN NEW.type IN ('delivered', 'deferred')
    BEGIN
        UPDATE messages SET
            delivered = delivered + (NEW.type = 'delivered'),
            deferred = deferred + (NEW.type = 'deferred')
        WHERE id = COALESCE(NEW.message_id, (SELECT id FROM messages WHERE uid = NEW.message_uid));
        UPDATE daily_stats SET
            delivered = delivered + (NEW.type = 'delivered'),
            deferred = deferred + (NEW.type = 'deferred')
        WHERE (day, login) = (
            SELECT substr(created_at, 1, 10), COALESCE(login, '-') FROM messages
            WHERE id = COALESCE(NEW.message_id,
                                (SELECT id FROM messages WHERE uid = NEW.message_uid))
              AND opened IS NOT NULL);
    END
    """,
    # 10: signed webhooks (issue 11 part 2). A login's endpoints (webhooks), each with
    # the event types it wants (types: ",click,open,", or "*" for every type) and its
    # signing secret (during a rotation the old one too, until old_secret_until, unix
    # seconds). Every event of a message with a login gets one outbox row per endpoint
    # of that login that wants its type, written by a trigger, so it is in the event's
    # own transaction whichever process writes it (the tracker, the bounce processor,
    # the delivery reader, a daemon of an older version during an upgrade). With no
    # endpoint at all the trigger's WHEN is one probe of an empty table: clicks, the
    # store's hot path, pay nothing else. An event of a message this store does not
    # have (yet: another node's tracker) gets no outbox row.
    #
    # The dispatcher (smtpeter webhooks dispatch) claims due rows by moving due_at a
    # lease ahead, deletes a row once its endpoint answered 2xx, and otherwise sets
    # the next attempt (backoff) or, past the retry window counted from
    # first_attempt_at, failed = 1: a failed row stays, counted by `webhooks list`.
    # A row claimed by a dispatcher that died is due again when its lease runs out.
    # Times are unix seconds. webhook_outbox_due serves "the due rows of an endpoint"
    # and the per-endpoint pending and failed counts.
    """
    CREATE TABLE webhooks (
        id               INTEGER PRIMARY KEY,
        login            TEXT NOT NULL,
        url              TEXT NOT NULL,
        types            TEXT NOT NULL,
        secret           TEXT NOT NULL,
        old_secret       TEXT,
        old_secret_until REAL,
        created_at       TEXT NOT NULL,
        UNIQUE (login, url)
    );
    CREATE TABLE webhook_outbox (
        id               INTEGER PRIMARY KEY,
        webhook_id       INTEGER NOT NULL,
        event_id         INTEGER NOT NULL,
        enqueued_at      REAL NOT NULL,
        due_at           REAL NOT NULL DEFAULT 0,
        attempts         INTEGER NOT NULL DEFAULT 0,
        first_attempt_at REAL,
        failed           INTEGER NOT NULL DEFAULT 0,
        last_error       TEXT
    );
    CREATE INDEX webhook_outbox_due ON webhook_outbox (webhook_id, failed, due_at);
    CREATE TRIGGER events_webhooks AFTER INSERT ON events
    WHEN EXISTS (SELECT 1 FROM webhooks)
    BEGIN
        INSERT INTO webhook_outbox (webhook_id, event_id, enqueued_at)
        SELECT w.id, NEW.id, (julianday('now') - 2440587.5) * 86400.0
        FROM messages m CROSS JOIN webhooks w ON w.login = m.login
        WHERE m.id = COALESCE(NEW.message_id, (SELECT id FROM messages WHERE uid = NEW.message_uid))
          AND (w.types = '*' OR instr(w.types, ',' || NEW.type || ',') > 0);
    END;
    CREATE TRIGGER webhooks_gone AFTER DELETE ON webhooks
    BEGIN
        DELETE FROM webhook_outbox WHERE webhook_id = OLD.id;
    END;
    CREATE TRIGGER logins_webhooks_gone AFTER DELETE ON logins
    BEGIN
        DELETE FROM webhooks WHERE login = OLD.name;
    END
    """,
    # 11: one-click unsubscribe (issue 11 part 4): a login's default for the
    # unsubscribe feature (List-Unsubscribe and List-Unsubscribe-Post headers), off
    # for every existing login. Constant time: SQLite adds a column with a default
    # without rewriting the table.
    """
    ALTER TABLE logins ADD COLUMN unsubscribe INTEGER NOT NULL DEFAULT 0;
    """,
)

# The second half of migration 8, run by the index step once message_events holds
# every event up to the watermark and the backfill of migration 5 is done (it reads
# events by the old index): the old index goes, and a new message counts its events
# and takes their login from orphan_events instead of from that index, then moves them
# to message_events. Orphans whose message came before the switch are moved first.
INDEX_SWITCH = """
    INSERT INTO message_events (message_id, event_id)
    SELECT m.id, o.event_id FROM orphan_events o CROSS JOIN messages m ON m.uid = o.message_uid
    WHERE true ON CONFLICT DO NOTHING;
    DELETE FROM orphan_events
    WHERE EXISTS (SELECT 1 FROM messages m WHERE m.uid = orphan_events.message_uid);
    DROP INDEX events_message_type;
    INSERT INTO store_state (name, value) VALUES ('message_events', 'read');
    DROP TRIGGER messages_counted;
    CREATE TRIGGER messages_counted AFTER INSERT ON messages
    BEGIN
        UPDATE messages SET
            opened = EXISTS (SELECT 1 FROM orphan_events o CROSS JOIN events e ON e.id = o.event_id
                             WHERE o.message_uid = NEW.uid AND e.type = 'open'),
            clicked = EXISTS (SELECT 1 FROM orphan_events o CROSS JOIN events e ON e.id = o.event_id
                              WHERE o.message_uid = NEW.uid AND e.type = 'click'),
            bounces = (SELECT COUNT(*) FROM orphan_events o CROSS JOIN events e ON e.id = o.event_id
                       WHERE o.message_uid = NEW.uid AND e.type = 'bounce')
        WHERE id = NEW.id;
        INSERT INTO daily_stats (day, login, messages, unique_opens, unique_clicks, bounces)
        SELECT substr(created_at, 1, 10), COALESCE(login, '-'), 1, opened, clicked, bounces
        FROM messages WHERE id = NEW.id
        ON CONFLICT (day, login) DO UPDATE SET
            messages = messages + 1,
            unique_opens = unique_opens + excluded.unique_opens,
            unique_clicks = unique_clicks + excluded.unique_clicks,
            bounces = bounces + excluded.bounces;
        INSERT INTO event_logins (login, event_id)
        SELECT NEW.login, event_id FROM orphan_events
        WHERE message_uid = NEW.uid AND NEW.login IS NOT NULL
        ON CONFLICT (login, event_id) DO NOTHING;
        INSERT INTO message_events (message_id, event_id)
        SELECT NEW.id, event_id FROM orphan_events WHERE message_uid = NEW.uid
        ON CONFLICT DO NOTHING;
        DELETE FROM orphan_events WHERE message_uid = NEW.uid;
    END
"""
