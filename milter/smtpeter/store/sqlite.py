"""SQLite store (WAL mode), shared by the auth daemon, the milter workers and the CLI.

Each thread gets its own connection: libmilter calls us from a pool of OS threads and
sqlite3 connections must not cross threads.

A locked database (another process writing, a checkpoint, WAL recovery after a crash)
is ridden out here, not passed on: every statement, BEGIN and COMMIT included, waits
in SQLite's busy handler (``busy_timeout``) and is then retried with backoff until the
operation's budget (``retry_seconds``) is spent. Only then does the caller get a
StoreError, which a mail client sees as a 4xx, and application mail libraries
(nodemailer, smtplib, PHPMailer) do not retry those.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import random
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from smtpeter import addresses
from smtpeter.deliveries.logline import DeliveryResult, Expiry
from smtpeter.events import Event
from smtpeter.features import FeatureSet
from smtpeter.logins import Login, LoginError
from smtpeter.store import maintenance
from smtpeter.store.migrations import MIGRATIONS
from smtpeter.store.rows import EVENT_COLUMNS, event_from_row
from smtpeter.store.webhooks import WebhookStore
from smtpeter.tracker.signing import SigningKey

log = logging.getLogger("smtpeter.store")

# Sleeps between retries of a locked statement: doubling from the first to the last,
# with jitter, so competing processes do not retry in step.
_BACKOFF_FIRST = 0.01
_BACKOFF_MAX = 0.5
# A wait may run this much past the budget rather than reset the busy timeout for
# every statement of an operation that starts with less than busy_timeout left.
_SLACK_MS = 100


class StoreError(Exception):
    """The store cannot be reached or used (missing, locked, corrupt, read-only)."""


def _locked(e: sqlite3.Error) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED (any extended code): worth waiting for."""
    if not isinstance(e, sqlite3.OperationalError):
        return False
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    text = str(e)
    return "database is locked" in text or "database is busy" in text


class _Connection(sqlite3.Connection):
    """A connection whose execute and executemany retry while the database is locked,
    within the budget of the store operation using it (set by SQLiteStore._use).

    Retrying one statement is always safe here: an autocommit statement that failed
    with SQLITE_BUSY changed nothing, a BEGIN IMMEDIATE that failed took no lock, and a
    COMMIT that failed with SQLITE_BUSY leaves the transaction open, to be committed by
    trying again (SQLite's documented remedy).
    """

    store_path = ""
    operation = ""
    deadline = 0.0
    busy_ms = 0  # the busy timeout this connection has now
    config_busy_ms = 0  # ... and the configured one
    retries = True

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        return self._retrying(sql, lambda: sqlite3.Connection.execute(self, sql, parameters))

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> sqlite3.Cursor:
        rows = list(parameters)  # a generator could be run only once
        return self._retrying(sql, lambda: sqlite3.Connection.executemany(self, sql, rows))

    def _wait_at_most(self, ms: int) -> None:
        if ms != self.busy_ms:
            super().execute(f"PRAGMA busy_timeout = {ms}")
            self.busy_ms = ms

    def _retrying(self, sql: str, run: Callable[[], sqlite3.Cursor]) -> sqlite3.Cursor:
        started = time.monotonic()
        attempts = 0
        backoff = _BACKOFF_FIRST
        verb = last = ""
        while True:
            attempts += 1
            if self.retries:
                left_ms = int((self.deadline - time.monotonic()) * 1000)
                want = self.config_busy_ms
                if left_ms + _SLACK_MS < want:
                    want = max(left_ms, 0)
                self._wait_at_most(want)
            try:
                cursor = run()
            except sqlite3.Error as e:
                left = self.deadline - time.monotonic()
                if not (self.retries and _locked(e)):
                    raise
                verb = sql.split(None, 1)[0].upper() if sql.strip() else "statement"
                if left <= 0:
                    raise sqlite3.OperationalError(
                        f"{e} ({verb}: gave up after {attempts} attempts in "
                        f"{time.monotonic() - started:.2f} s)"
                    ) from e
                last = str(e)
                time.sleep(min(backoff * random.uniform(0.5, 1.0), left))
                backoff = min(backoff * 2, _BACKOFF_MAX)
                continue
            if attempts > 1:
                log.warning(
                    "store %s: %s: %s waited for a lock (%s): done after %d attempts in %.2f s",
                    self.store_path,
                    self.operation,
                    verb,
                    last,
                    attempts,
                    time.monotonic() - started,
                )
            return cursor


@dataclass(frozen=True)
class MessageRecord:
    queue_id: str
    message_id: str | None
    login: str | None
    envelope_sender: str
    recipients: tuple[str, ...]
    features: tuple[str, ...]
    size_before: int
    size_after: int
    created_at: str = ""
    # Features asked for but not applied, each "feature: reason" (signed mail, a
    # document too deep for the inliner, the size limit, ...).
    skipped: tuple[str, ...] = ()
    # Public id used in tracking links (random, unique across relay nodes).
    uid: str | None = None
    # x-smtpeter-tags and x-smtpeter-metadata, carried on every event of the message.
    tags: tuple[str, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _where(filters: list[tuple[str, object | None]]) -> tuple[str, list[object]]:
    """A WHERE clause of the filters whose value is not None; the value fills every
    ``?`` of its clause."""
    clauses: list[str] = []
    args: list[object] = []
    for clause, value in filters:
        if value is not None:
            clauses.append(clause)
            args += [value] * clause.count("?")
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), args


_LOGIN_COLUMNS = (
    "name, password_hash, enabled, inlinecss, trackclicks, trackopens, trackbounces, "
    "rewrite_signed, suppression, created_at, updated_at, unsubscribe"
)


def _login(row: sqlite3.Row) -> Login:
    return Login(
        name=row["name"],
        password_hash=row["password_hash"],
        enabled=bool(row["enabled"]),
        features=FeatureSet(
            inlinecss=bool(row["inlinecss"]),
            trackclicks=bool(row["trackclicks"]),
            trackopens=bool(row["trackopens"]),
            trackbounces=bool(row["trackbounces"]),
            unsubscribe=bool(row["unsubscribe"]),
        ),
        rewrite_signed=bool(row["rewrite_signed"]),
        suppression=row["suppression"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


SUPPRESSION_POLICIES: tuple[str, ...] = ("refuse", "off")


def check_suppression(policy: str) -> str:
    if policy not in SUPPRESSION_POLICIES:
        raise LoginError(
            f"invalid suppression policy {policy!r}: use {' or '.join(SUPPRESSION_POLICIES)}"
        )
    return policy


@dataclass(frozen=True)
class Suppression:
    """An address a login's mail is no longer sent to, and why."""

    login: str
    address: str
    #: A bounce reason (user-unknown, ...), "complaint", "unsubscribe" (the recipient
    #: unsubscribed), "soft-bounces: <reason>" or what an admin gave with
    #: `suppressions add`.
    reason: str
    status: str | None
    message_uid: str | None
    created_at: str


_SUPPRESSION_COLUMNS = "login, address, reason, status, message_uid, created_at"


def _suppression(row: sqlite3.Row) -> Suppression:
    return Suppression(
        login=row["login"],
        address=row["address"],
        reason=row["reason"],
        status=row["status"],
        message_uid=row["message_uid"],
        created_at=row["created_at"],
    )


# The schema's trigger counts the message (its flags, daily_stats) as it goes in.
_INSERT_MESSAGE = (
    "INSERT INTO messages (uid, queue_id, message_id, login, envelope_sender, recipients,"
    " features, size_before, size_after, created_at, skipped, tags, metadata)"
    " VALUES (:uid, :queue_id, :message_id, :login, :sender, :recipients, :features,"
    " :size_before, :size_after, :created_at, :skipped, :tags, :metadata)"
)
# Events that came before their message (another node's tracker) get its login; until
# migration 8's switch (after it, the messages_counted trigger does so).
_CLAIM_EVENTS = (
    "INSERT INTO event_logins (login, event_id)"
    " SELECT :login, id FROM events WHERE message_uid = :uid"
    " ON CONFLICT (login, event_id) DO NOTHING"
)
# The index of a message's events (message_events) is brought up to date by the
# writer whose batch leaves this many events or more above its watermark, up to
# INDEX_BATCH_MAX in one transaction: ~40,000 events a second on a 10M store
# (bench/README.md), so ~0.25-0.5 s of write lock.
INDEX_LAG = 10000
INDEX_BATCH_MAX = 20000
# The events the writers may have written, not indexed yet, when migration 8's switch
# takes the write lock: it indexes them first, under the lock (a few milliseconds).
SWITCH_LAG = 2000
# A store of at most this many events switches when it is opened (its old index drops
# in milliseconds).
SWITCH_AT_OPEN = 10000
# The message m (joined to an event) has the tag given as the parameter.
_TAGGED = "EXISTS (SELECT 1 FROM message_tags t WHERE t.tag = ? AND t.message_id = m.id)"
# With its message's row id, found once here (NULL when the message is not here yet).
_INSERT_EVENT = (
    "INSERT INTO events (type, occurred_at, message_uid, recipient, url, user_agent,"
    " client_ip, detail, message_id) SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8,"
    " (SELECT id FROM messages WHERE uid = ?3)"
)


def _event_row(e: Event) -> tuple[object, ...]:
    return (
        e.type,
        e.occurred_at,
        e.message_uid,
        e.recipient,
        e.url,
        e.user_agent,
        e.client_ip,
        json.dumps(e.detail, sort_keys=True),
    )


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE (the write lock at once, so no deadlock upgrading a read lock)
    ... COMMIT, or ROLLBACK on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _state(conn: sqlite3.Connection, name: str) -> int:
    """A backfill watermark of store_state; 0 when that backfill is done."""
    return int(maintenance.state(conn, name) or 0)


def _next_day(day: str) -> str:
    return (datetime.strptime(day, "%Y-%m-%d") + timedelta(days=1)).strftime("%Y-%m-%d")


def _stats_live(
    conn: sqlite3.Connection, login: str | None, since: str | None, until_day: str | None
) -> list[dict[str, object]]:
    """stats counted from the messages themselves: their flags where a trigger or the
    backfill set them, else (an upgrade's backfill not done, so the old (message_uid,
    type) index is still there) probes of that index."""
    where, args = _where(
        [("m.login = ?", login), ("m.created_at >= ?", since), ("m.created_at < ?", until_day)]
    )
    if maintenance.switched(conn):
        # Every message has its flags once the backfill is done.
        sql = (
            "SELECT COALESCE(m.login, '-') AS login, substr(m.created_at, 1, 10) AS day,"
            " COUNT(*) AS messages, SUM(m.opened) AS unique_opens,"
            " SUM(m.clicked) AS unique_clicks, SUM(m.bounces) AS bounces,"
            " SUM(m.delivered) AS delivered, SUM(m.deferred) AS deferred"
            f" FROM messages m {where} GROUP BY 1, 2 ORDER BY 2, 1"
        )
        return [dict(r) for r in conn.execute(sql, args)]
    sql = (
        "SELECT login, day, COUNT(*) AS messages, SUM(opened) AS unique_opens,"
        " SUM(clicked) AS unique_clicks, SUM(bounces) AS bounces,"
        " SUM(delivered) AS delivered, SUM(deferred) AS deferred FROM ("
        "  SELECT COALESCE(m.login, '-') AS login, substr(m.created_at, 1, 10) AS day,"
        "  COALESCE(m.opened, EXISTS (SELECT 1 FROM events e"
        "    WHERE e.message_uid = m.uid AND e.type = 'open')) AS opened,"
        "  COALESCE(m.clicked, EXISTS (SELECT 1 FROM events e"
        "    WHERE e.message_uid = m.uid AND e.type = 'click')) AS clicked,"
        "  COALESCE(m.bounces, (SELECT COUNT(*) FROM events e"
        "    WHERE e.message_uid = m.uid AND e.type = 'bounce')) AS bounces,"
        "  m.delivered, m.deferred"
        f"  FROM messages m {where}"
        ") GROUP BY login, day ORDER BY day, login"
    )
    return [dict(r) for r in conn.execute(sql, args)]


def _results_of(
    conn: sqlite3.Connection, message_row: int, uid: str, types: tuple[str, ...]
) -> list[tuple[str, str]]:
    """(type, recipient) of the message's delivery results of these types, oldest
    first: by message_events, then the tail not indexed yet (or, before migration 8's
    switch, by the old index)."""
    marks = ", ".join("?" * len(types))
    if maintenance.switched(conn):
        sql = (
            "WITH t(id, uid) AS (SELECT ?, ?) SELECT type, recipient FROM events"
            f" WHERE id IN ({maintenance.message_event_ids('t')})"
            # Unary +: not by the (type, occurred_at) index, which would read every
            # delivery result of the store to keep this message's.
            f" AND +type IN ({marks}) ORDER BY id"
        )
        args: tuple[object, ...] = (message_row, uid, maintenance.indexed(conn), *types)
    else:
        sql = (
            f"SELECT type, recipient FROM events WHERE message_uid = ? AND type IN ({marks})"
            " ORDER BY id"
        )
        args = (uid, *types)
    return [(r[0], r[1]) for r in conn.execute(sql, args)]


def _delivery_events(
    conn: sqlite3.Connection, message_row: int, uid: str, result: DeliveryResult | Expiry
) -> list[Event]:
    when = result.logged_at or _now()
    if isinstance(result, Expiry):
        # Every recipient whose last result is a deferral has failed now.
        last: dict[str, str] = {}
        for type_, recipient in _results_of(
            conn, message_row, uid, ("delivered", "deferred", "failed")
        ):
            last[recipient] = type_
        word = "force-expired" if result.forced else "expired"
        return [
            Event("failed", uid, when, recipient=recipient,
                  detail={"postfix_status": word, "reason": "expired"})
            for recipient, type_ in last.items()
            if type_ == "deferred"
        ]  # fmt: skip
    detail = {
        "dsn": result.dsn,
        "relay": result.relay,
        "delay": f"{result.delay:g}",
        "delays": result.delays,
        "reply": result.reply,
        "postfix_status": result.postfix_status,
    }
    if result.original_recipient:
        detail["original_recipient"] = result.original_recipient
    if result.status == "deferred":
        earlier = _results_of(conn, message_row, uid, ("deferred",))
        detail["attempt"] = str(1 + sum(r == result.recipient for _, r in earlier))
    return [Event(result.status, uid, when, recipient=result.recipient, detail=detail)]


class SQLiteStore(WebhookStore):
    def __init__(
        self,
        path: str,
        *,
        busy_timeout: float = 1.0,
        retry_seconds: float = 5.0,
        create: bool = True,
        index_lag: int = INDEX_LAG,
    ) -> None:
        self.path = path
        self._index_lag = index_lag
        # Migration 8's switch, once seen: it is never undone, so the writers stop
        # asking after every batch.
        self._switched = False
        self._busy_timeout = busy_timeout
        self._retry_seconds = retry_seconds
        # Connections are pooled, each used by one caller at a time. Not one per
        # thread: libmilter runs a session's callbacks on different OS threads.
        self._pool: queue.SimpleQueue[_Connection] = queue.SimpleQueue()
        if not create and not os.path.exists(path):
            raise StoreError(f"cannot open store {path}: no such file")
        if create:
            directory = os.path.dirname(path) or "."
            try:
                os.makedirs(directory, exist_ok=True)
            except OSError as e:
                raise StoreError(f"cannot create store directory {directory}: {e.strerror}") from e
        new = create and not os.path.exists(path)
        with self._use("open") as conn:
            self._migrate(conn)
        if new:
            self._give_to_directory_owner()

    def _give_to_directory_owner(self) -> None:
        """A database that root creates (e.g. `smtpeter login create` run before the
        daemons ever started) belongs to the owner of its directory, the service user:
        otherwise the daemons could not write it. SQLite then gives the -wal and -shm
        files it creates as root to the database file's owner too."""
        if os.geteuid() != 0:
            return
        info = os.stat(os.path.dirname(os.path.abspath(self.path)))
        if info.st_uid != 0:
            os.chown(self.path, info.st_uid, info.st_gid)

    def _connect(self, what: str, deadline: float) -> _Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=self._busy_timeout,
            isolation_level=None,
            check_same_thread=False,
            factory=_Connection,
        )
        conn.store_path = self.path
        conn.busy_ms = conn.config_busy_ms = int(self._busy_timeout * 1000)
        # 0: no retries; each statement waits busy_timeout and fails.
        conn.retries = self._retry_seconds > 0
        conn.operation, conn.deadline = what, deadline
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    @contextmanager
    def _use(self, what: str) -> Iterator[sqlite3.Connection]:
        """A connection for one operation; sqlite3 errors become StoreError.

        Its statements retry while the database is locked, until ``retry_seconds``
        after the operation began."""
        deadline = time.monotonic() + self._retry_seconds
        try:
            try:
                conn = self._pool.get_nowait()
                conn.operation, conn.deadline = what, deadline
            except queue.Empty:
                conn = self._connect(what, deadline)
            yield conn
        except sqlite3.Error as e:
            raise StoreError(f"store {self.path}: {what} failed: {e}") from e
        # Only a connection that raised nothing goes back: a broken one is dropped.
        self._pool.put(conn)

    def close(self) -> None:
        while True:
            try:
                self._pool.get_nowait().close()
            except queue.Empty:
                return

    def _migrate(self, conn: sqlite3.Connection) -> None:
        with _transaction(conn):
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise StoreError(
                    f"store {self.path} has schema version {version}, newer than this "
                    f"smtpeter knows ({len(MIGRATIONS)}): upgrade smtpeter"
                )
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in maintenance.statements(script):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number}")
            # A new store, or a small one with every event indexed, switches at once.
            # A large one's old index is dropped by `store upkeep` (switch_index), which
            # reads it first without the lock: not here, at a daemon's start, where a
            # cold cache would hold the lock for seconds.
            top = conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0]
            if top <= SWITCH_AT_OPEN and maintenance.switch_step(conn):
                log.info("store %s: a message's events are read by message_events", self.path)

    def schema_version(self) -> int:
        with self._use("read") as conn:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])

    # -- logins -------------------------------------------------------------------

    def get_login(self, name: str) -> Login | None:
        with self._use("login lookup") as conn:
            row = conn.execute(
                f"SELECT {_LOGIN_COLUMNS} FROM logins WHERE name = ?", (name,)
            ).fetchone()
        return _login(row) if row is not None else None

    def list_logins(self) -> list[Login]:
        with self._use("login list") as conn:
            rows = conn.execute(f"SELECT {_LOGIN_COLUMNS} FROM logins ORDER BY name")
            return [_login(r) for r in rows]

    def create_login(self, login: Login) -> Login:
        check_suppression(login.suppression)
        now = _now()
        f = login.features
        try:
            with self._use("login create") as conn:
                conn.execute(
                    f"INSERT INTO logins ({_LOGIN_COLUMNS})"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        login.name,
                        login.password_hash,
                        int(login.enabled),
                        int(f.inlinecss),
                        int(f.trackclicks),
                        int(f.trackopens),
                        int(f.trackbounces),
                        int(login.rewrite_signed),
                        login.suppression,
                        now,
                        now,
                        int(f.unsubscribe),
                    ),
                )
        except StoreError as e:
            if isinstance(e.__cause__, sqlite3.IntegrityError):
                raise LoginError(f"login {login.name!r} already exists") from None
            raise
        created = self.get_login(login.name)
        assert created is not None
        return created

    def update_login(
        self,
        name: str,
        *,
        password_hash: str | None = None,
        enabled: bool | None = None,
        features: dict[str, bool] | None = None,
        rewrite_signed: bool | None = None,
        suppression: str | None = None,
    ) -> Login:
        sets: list[str] = []
        args: list[object] = []
        if suppression is not None:
            sets.append("suppression = ?")
            args.append(check_suppression(suppression))
        if password_hash is not None:
            sets.append("password_hash = ?")
            args.append(password_hash)
        if enabled is not None:
            sets.append("enabled = ?")
            args.append(int(enabled))
        if rewrite_signed is not None:
            sets.append("rewrite_signed = ?")
            args.append(int(rewrite_signed))
        for feature, on in (features or {}).items():
            if feature not in FeatureSet.__dataclass_fields__:
                raise LoginError(f"unknown feature {feature!r}")
            sets.append(f"{feature} = ?")
            args.append(int(on))
        sets.append("updated_at = ?")
        args.append(_now())
        with self._use("login update") as conn:
            cur = conn.execute(f"UPDATE logins SET {', '.join(sets)} WHERE name = ?", (*args, name))
        if cur.rowcount == 0:
            raise LoginError(f"no login named {name!r}")
        updated = self.get_login(name)
        assert updated is not None
        return updated

    # -- the suppression list ---------------------------------------------------------

    def suppress(
        self,
        login: str,
        address: str,
        reason: str,
        *,
        status: str | None = None,
        message_uid: str | None = None,
    ) -> bool:
        """Suppress ``address`` for ``login``; False (the first entry kept) if it was."""
        with self._use("suppression add") as conn:
            cur = conn.execute(
                "INSERT INTO suppressions (login, address, reason, status, message_uid,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (login, address) DO NOTHING",
                (login, addresses.key(address), reason, status, message_uid, _now()),
            )
        return cur.rowcount > 0

    def count_soft_bounce(self, login: str, address: str, message_uid: str, reason: str) -> int:
        """Count a soft bounce of ``address`` (once per message); how many messages to
        it have soft-bounced so far."""
        address = addresses.key(address)
        with self._use("soft bounce count") as conn, _transaction(conn):
            conn.execute(
                "INSERT INTO soft_bounces (login, address, message_uid, reason)"
                " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (login, address, message_uid, reason),
            )
            row = conn.execute(
                "SELECT COUNT(*) FROM soft_bounces WHERE login = ? AND address = ?",
                (login, address),
            ).fetchone()
        return int(row[0])

    def suppression(self, login: str, address: str) -> Suppression | None:
        """The entry that suppresses ``address`` for ``login``, if any."""
        with self._use("suppression lookup") as conn:
            row = conn.execute(
                f"SELECT {_SUPPRESSION_COLUMNS} FROM suppressions WHERE login = ? AND address = ?",
                (login, addresses.key(address)),
            ).fetchone()
        return _suppression(row) if row is not None else None

    def suppressions(self, *, login: str | None = None, limit: int = 1000) -> list[Suppression]:
        """Entries, newest first, of one login or all."""
        where, args = _where([("login = ?", login)])
        with self._use("suppression list") as conn:
            rows = conn.execute(
                f"SELECT {_SUPPRESSION_COLUMNS} FROM suppressions {where}"
                " ORDER BY created_at DESC, login, address LIMIT ?",
                (*args, limit),
            )
            return [_suppression(r) for r in rows]

    def unsuppress(self, login: str, address: str) -> bool:
        """Take ``address`` off ``login``'s list, and forget its soft bounces; False if it
        was not on it."""
        address = addresses.key(address)
        with self._use("suppression remove") as conn, _transaction(conn):
            cur = conn.execute(
                "DELETE FROM suppressions WHERE login = ? AND address = ?", (login, address)
            )
            conn.execute(
                "DELETE FROM soft_bounces WHERE login = ? AND address = ?", (login, address)
            )
        return cur.rowcount > 0

    def delete_login(self, name: str) -> None:
        with self._use("login delete") as conn:
            cur = conn.execute("DELETE FROM logins WHERE name = ?", (name,))
        if cur.rowcount == 0:
            raise LoginError(f"no login named {name!r}")

    # -- messages -----------------------------------------------------------------

    def record_message(self, m: MessageRecord) -> None:
        self.record_messages([m])

    def record_messages(self, records: list[MessageRecord]) -> None:
        """Write messages in one transaction. Each is counted in daily_stats at once
        (a trigger), with any events already stored for its uid (another node's
        tracker may have written them first), and those events get its login."""
        if not records:
            return
        rows = [
            {
                "uid": m.uid,
                "queue_id": m.queue_id,
                "message_id": m.message_id,
                "login": m.login,
                "sender": m.envelope_sender,
                "recipients": json.dumps(list(m.recipients)),
                "features": json.dumps(list(m.features)),
                "size_before": m.size_before,
                "size_after": m.size_after,
                "created_at": m.created_at or _now(),
                "skipped": json.dumps(list(m.skipped)),
                "tags": json.dumps(list(m.tags)) if m.tags else None,
                "metadata": json.dumps(m.metadata, ensure_ascii=False) if m.metadata else None,
            }
            for m in records
        ]
        with self._use("message record") as conn, _transaction(conn):
            conn.executemany(_INSERT_MESSAGE, rows)
            if not maintenance.switched(conn):
                conn.executemany(_CLAIM_EVENTS, [r for r in rows if r["uid"] and r["login"]])

    def messages(
        self,
        *,
        queue_id: str | None = None,
        uid: str | None = None,
        message_id: str | None = None,
        limit: int = 100,
    ) -> list[MessageRecord]:
        """Messages, newest first, by queue id, uid or Message-ID (each indexed)."""
        where, args = _where(
            [
                ("queue_id = ?", queue_id or None),
                ("uid = ?", uid or None),
                ("message_id = ?", message_id or None),
            ]
        )
        with self._use("message list") as conn:
            rows = conn.execute(
                "SELECT uid, queue_id, message_id, login, envelope_sender, recipients, features,"
                " size_before, size_after, created_at, skipped, tags, metadata"
                f" FROM messages {where}"
                " ORDER BY id DESC LIMIT ?",
                (*args, limit),
            )
            return [
                MessageRecord(
                    uid=r["uid"],
                    queue_id=r["queue_id"],
                    message_id=r["message_id"],
                    login=r["login"],
                    envelope_sender=r["envelope_sender"],
                    recipients=tuple(json.loads(r["recipients"])),
                    features=tuple(json.loads(r["features"])),
                    size_before=r["size_before"],
                    size_after=r["size_after"],
                    created_at=r["created_at"],
                    skipped=tuple(json.loads(r["skipped"])),
                    tags=tuple(json.loads(r["tags"] or "[]")),
                    metadata=json.loads(r["metadata"] or "{}"),
                )
                for r in rows
            ]

    # -- signing keys -------------------------------------------------------------

    def signing_keys(self) -> list[SigningKey]:
        with self._use("signing key list") as conn:
            rows = conn.execute(
                "SELECT kid, secret, created_at, retired_at FROM signing_keys ORDER BY created_at"
            )
            return [
                SigningKey(r["kid"], bytes(r["secret"]), r["created_at"], r["retired_at"])
                for r in rows
            ]

    def add_signing_key(self, key: SigningKey, *, retire_others: bool = False) -> None:
        """Store a new key; with retire_others, every active key is retired at its creation."""
        with self._use("signing key add") as conn, _transaction(conn):
            if retire_others:
                conn.execute(
                    "UPDATE signing_keys SET retired_at = ? WHERE retired_at IS NULL",
                    (key.created_at,),
                )
            conn.execute(
                "INSERT INTO signing_keys (kid, secret, created_at, retired_at)"
                " VALUES (?, ?, ?, ?)",
                (key.kid, key.secret, key.created_at, key.retired_at),
            )

    def delete_signing_keys_retired_before(self, when: float) -> int:
        with self._use("signing key purge") as conn:
            cur = conn.execute(
                "DELETE FROM signing_keys WHERE retired_at IS NOT NULL AND retired_at < ?", (when,)
            )
            return cur.rowcount

    # -- events -------------------------------------------------------------------

    def record_events(self, events: list[Event]) -> None:
        """Write a batch of events in one transaction (counted in daily_stats by the
        schema's triggers)."""
        if not events:
            return
        with self._use("event record") as conn:
            with _transaction(conn):
                conn.executemany(_INSERT_EVENT, [_event_row(e) for e in events])
                self._switched = self._switched or maintenance.switched(conn)
                behind = (
                    self._index_lag > 0
                    and self._switched
                    and maintenance.index_lag(conn) >= self._index_lag
                )
            # The index of a message's events is brought up to date in a transaction of
            # its own, so the write lock is let go in between. (Before migration 8's
            # switch, `store upkeep` fills it: the old index is read meanwhile.)
            if behind:
                with _transaction(conn):
                    maintenance.index_step(conn, INDEX_BATCH_MAX)

    def record_bounce(self, message_uid: str, key: str, events: list[Event]) -> bool:
        """Record a bounce's events unless this bounce of this message was recorded
        before; False, and nothing written, if it was. ``key`` tells bounces apart
        (for now Postfix's queue id of the bounce: a retry of the same delivery).
        One primary-key lookup in bounce_reports, plus, while an upgrade's backfill
        has not reached the older events, a look at the message's own events."""
        with self._use("bounce record") as conn, _transaction(conn):
            if (
                _state(conn, "backfill_events") > 0
                and conn.execute(
                    "SELECT 1 FROM events WHERE message_uid = ?"
                    " AND type IN ('bounce', 'delay', 'autoreply')"
                    " AND json_extract(detail, '$.bounce_id') = ?",
                    (message_uid, key),
                ).fetchone()
            ):
                return False
            cur = conn.execute(
                "INSERT INTO bounce_reports (identity, message_uid, recorded_at, forwarded)"
                " VALUES (?, ?, ?, 0) ON CONFLICT (identity) DO NOTHING",
                (f"{message_uid} {key}", message_uid, _now()),
            )
            if cur.rowcount == 0:
                return False
            conn.executemany(_INSERT_EVENT, [_event_row(e) for e in events])
            return True

    # -- delivery results (smtpeter deliveries) --------------------------------------

    def delivery_cursor(self, source: str) -> str | None:
        """Where the delivery reader of ``source`` (e.g. ``file:/var/log/mail.log``) is:
        the cursor recorded with its last results, None before its first."""
        with self._use("delivery cursor") as conn:
            return maintenance.state(conn, f"deliveries {source}")

    def record_deliveries(
        self, results: list[DeliveryResult | Expiry], source: str, cursor: str
    ) -> int:
        """Record Postfix's delivery results of the messages this store has (by queue
        id, the newest message with it), and the reader's cursor after them, in one
        transaction: after a crash the reader resumes right after the last line
        recorded, so no result is recorded twice or skipped. A result of a message
        that never went through the milter (the MX's other mail) is left out. An
        expired message fails each recipient still deferred. The events written."""
        with self._use("delivery record") as conn, _transaction(conn):
            written = 0
            for result in results:
                row = conn.execute(
                    "SELECT id, uid FROM messages WHERE queue_id = ? AND uid IS NOT NULL"
                    " ORDER BY id DESC LIMIT 1",
                    (result.queue_id,),
                ).fetchone()
                if row is None:
                    continue
                for event in _delivery_events(conn, row["id"], row["uid"], result):
                    conn.execute(_INSERT_EVENT, _event_row(event))
                    written += 1
            maintenance.set_state(conn, f"deliveries {source}", cursor)
            return written

    def bounce_forwarded(self, message_uid: str, key: str) -> bool:
        """Whether the bounce ``key`` of this message was forwarded to its sender (a
        bounce recorded by an earlier version counts as forwarded; one never recorded
        as not)."""
        with self._use("bounce lookup") as conn:
            row = conn.execute(
                "SELECT COALESCE(forwarded, 1) FROM bounce_reports WHERE identity = ?",
                (f"{message_uid} {key}",),
            ).fetchone()
        return bool(row and row[0])

    def mark_bounce_forwarded(self, message_uid: str, key: str) -> None:
        """The bounce ``key`` of this message reached its sender: never forward it again."""
        with self._use("bounce forwarded") as conn, _transaction(conn):
            conn.execute(
                "UPDATE bounce_reports SET forwarded = 1 WHERE identity = ?",
                (f"{message_uid} {key}",),
            )

    def events(
        self,
        *,
        login: str | None = None,
        message: str | None = None,
        type: str | None = None,
        since: str | None = None,
        before: int | None = None,
        limit: int = 1000,
        tag: str | None = None,
        after: int | None = None,
    ) -> list[Event]:
        """Events, newest first: in the reverse of the order the store recorded them
        (the tracker writes them as they come; a batch held back by a store outage
        comes in later than its times say). ``message`` matches a message's uid,
        Message-ID or queue id. ``before`` is a cursor: the ``id`` of the last event
        of the previous page. ``after`` instead: the events recorded after that id,
        oldest first (``events --follow``).

        Each page is read by an index in this order: events by id, a login's events
        by (login, event id), a message's events by uid; ``since`` with ``type`` by
        (type, occurred_at). So a page costs the same however large the store.

        The recipient of an open or click is the message's recipient when it had
        exactly one (a message to several shares one body, so they cannot be told apart).
        """
        # With neither message nor since, a unary + keeps SQLite from reading every
        # event of the type by the (type, occurred_at) index to sort them all: the
        # events are read newest first and filtered, up to a page.
        unbounded = message is None and since is None
        filters: list[tuple[str, object | None]] = [
            ("+e.type = ?" if unbounded else "e.type = ?", type),
            ("e.occurred_at >= ?", since),
            # A primary-key probe of message_tags per event read (newest first, up to
            # a page of matches).
            (_TAGGED, tag),
        ]
        source = "events e"
        key = "e.id"  # the order of the page, and what the cursor is compared with
        pre: list[object] = []
        with_ = ""  # a WITH clause the source reads from
        with self._use("event list") as conn:
            if message is not None and maintenance.switched(conn):
                # The message resolved each way by its own index, then its events'
                # ids from message_events, orphan_events (events of a message this
                # store does not have) and the tail not indexed yet (by id).
                # (The given text is a uid too, of no message here: its events'
                # tail; orphan_events has the rest.)
                with_ = (
                    "WITH t(id, uid) AS (SELECT id, uid FROM messages WHERE uid = ?"
                    " UNION SELECT id, uid FROM messages WHERE message_id = ?"
                    " UNION SELECT id, uid FROM messages WHERE queue_id = ?"
                    " UNION SELECT NULL, ?),"
                    f" x(id) AS ({maintenance.message_event_ids('t')}"
                    "  UNION SELECT event_id FROM orphan_events WHERE message_uid = ?) "
                )
                pre = [message, message, message, message, maintenance.indexed(conn), message]
                source = "x CROSS JOIN events e ON e.id = x.id"
                if login is not None:
                    filters.append(("m.login = ?", login))
            elif message is not None:
                # The message is resolved first, each way by its own index, then its
                # events by uid: no OR across the join that no index could serve.
                # CROSS JOIN keeps that order (SQLite does not reorder it).
                source = (
                    "(SELECT ? AS uid UNION SELECT uid FROM messages WHERE message_id = ?"
                    " UNION SELECT uid FROM messages WHERE queue_id = ?) t"
                    " CROSS JOIN events e ON e.message_uid = t.uid"
                )
                pre = [message, message, message]
                if login is not None:
                    filters.append(("m.login = ?", login))
            elif login is not None:
                if _state(conn, "backfill_events") > 0:
                    # Older events are not all in event_logins until the backfill
                    # is done: found through their message meanwhile.
                    filters.append(("m.login = ?", login))
                else:
                    source = (
                        "event_logins l CROSS JOIN events e ON e.id = l.event_id AND l.login = ?"
                    )
                    pre = [login]
                    key = "l.event_id"
            where, args = _where([*filters, (f"{key} < ?", before), (f"{key} > ?", after)])
            rows = conn.execute(
                f"{with_}SELECT {EVENT_COLUMNS}"
                f" FROM {source} LEFT JOIN messages m ON m.uid = e.message_uid {where}"
                f" ORDER BY {key} {'ASC' if after is not None else 'DESC'} LIMIT ?",
                (*pre, *args, limit),
            )
            return [event_from_row(r) for r in rows]

    def _tag_stats(self, tag: str, login: str | None, since: str | None) -> list[dict[str, object]]:
        """stats() of the messages with ``tag``: their own counters, read through
        message_tags (by tag, then the messages in the order they came), so the cost
        follows the tag's messages, not the store."""
        where, args = _where(
            [("t.tag = ?", tag), ("m.created_at >= ?", since), ("m.login = ?", login)]
        )
        with self._use("stats") as conn:
            rows = conn.execute(
                "SELECT COALESCE(m.login, '-') AS login, substr(m.created_at, 1, 10) AS day,"
                " COUNT(*) AS messages, SUM(COALESCE(m.opened, 0)) AS unique_opens,"
                " SUM(COALESCE(m.clicked, 0)) AS unique_clicks,"
                " SUM(COALESCE(m.bounces, 0)) AS bounces,"
                " SUM(m.delivered) AS delivered, SUM(m.deferred) AS deferred"
                " FROM message_tags t CROSS JOIN messages m ON m.id = t.message_id"
                f" {where} GROUP BY 1, 2 ORDER BY 1, 2",
                args,
            )
            return [dict(r) for r in rows]

    def bounce_reasons(
        self, *, login: str | None = None, since: str | None = None, tag: str | None = None
    ) -> list[dict[str, object]]:
        """Bounces and complaints recorded since ``since``, per login, event type, kind
        (hard, soft; a complaint's kind is ``complaint``) and reason (a complaint's is
        its feedback type): the events and the distinct recipients they name. By when
        the bounce came back, not when the message was sent; read by the (type,
        occurred_at) index, so the cost follows the bounces in the window."""
        where, args = _where(
            [
                ("e.type IN ('bounce', 'complaint')", True),
                ("e.occurred_at >= ?", since),
                ("m.login = ?", login),
                (_TAGGED, tag),
            ]
        )
        with self._use("bounce reasons") as conn:
            rows = conn.execute(
                "SELECT COALESCE(m.login, '-') AS login, e.type AS type,"
                " COALESCE(json_extract(e.detail, '$.kind'), e.type) AS kind,"
                " COALESCE(json_extract(e.detail, '$.reason'),"
                "   json_extract(e.detail, '$.feedback_type'), '-') AS reason,"
                " COUNT(*) AS events, COUNT(DISTINCT lower(e.recipient)) AS recipients"
                f" FROM events e LEFT JOIN messages m ON m.uid = e.message_uid {where}"
                " GROUP BY 1, 2, 3, 4 ORDER BY 1, 5 DESC, 2, 3, 4",
                args,
            )
            return [dict(r) for r in rows]

    def stats(
        self, *, login: str | None = None, since: str | None = None, tag: str | None = None
    ) -> list[dict[str, object]]:
        """Per login and per day the messages were sent: messages, unique opens, unique
        clicks (distinct messages opened or clicked), bounces (bounce events of those
        messages), delivered and deferred (the delivery results recorded for them: a
        recipient delivered, a delivery attempt deferred).

        Whole days come from daily_stats, the counters the schema's triggers keep as
        messages and events are written: one row read per row returned. A window that
        starts inside a day counts that day's messages from ``since`` on live (a day's
        messages at most, by index), unless that day was pruned (retention_days): then
        the day's row is given whole. While an upgrade's backfill has not counted every
        older message yet, everything is counted live (correct, slower)."""
        if tag is not None:
            return self._tag_stats(tag, login, since)
        with self._use("stats") as conn:
            if _state(conn, "backfill_messages") > 0:
                return _stats_live(conn, login, since, None)
            rows: list[dict[str, object]] = []
            first_day = None
            if since is not None:
                first_day = since[:10]
                pruned_before = maintenance.state(conn, "pruned_before")
                if since[10:] > "T00:00:00.000000Z" and not (
                    pruned_before and since < pruned_before
                ):
                    next_day = _next_day(first_day)
                    rows = _stats_live(conn, login, since, next_day)
                    first_day = next_day
            where, args = _where([("login = ?", login), ("day >= ?", first_day)])
            rows += [
                dict(r)
                for r in conn.execute(
                    "SELECT login, day, messages, unique_opens, unique_clicks, bounces,"
                    f" delivered, deferred FROM daily_stats {where} ORDER BY day, login",
                    args,
                )
            ]
            return rows

    # -- upkeep: the upgrade's backfill and retention -----------------------------

    def backfill_pending(self) -> bool:
        """Whether an upgrade left older rows to count (see :meth:`backfill`)."""
        with self._use("backfill check") as conn:
            return _state(conn, "backfill_messages") > 0 or _state(conn, "backfill_events") > 0

    def upkeep_status(self) -> dict[str, object]:
        """What upkeep has left: the highest message and event ids still to backfill
        (None: done), the events not yet in the index of a message's events, whether
        that index is the one read (migration 8's switch), and the time retention last
        pruned to."""
        with self._use("upkeep status") as conn:
            return {
                "backfill_messages_through_id": maintenance.state(conn, "backfill_messages"),
                "backfill_events_through_id": maintenance.state(conn, "backfill_events"),
                "events_not_indexed": maintenance.index_lag(conn),
                "message_events_read": maintenance.switched(conn),
                "pruned_before": maintenance.state(conn, "pruned_before"),
            }

    def index_step(self, batch: int = INDEX_LAG) -> int:
        """Index one batch of events above the watermark into message_events, in one
        short transaction; the events covered (0: caught up)."""
        with self._use("index") as conn, _transaction(conn):
            return maintenance.index_step(conn, batch)

    def switch_index(self) -> float | None:
        """Migration 8's switch (the old by-uid index of events dropped) once the
        backfill is done and every event is indexed but what the writers wrote since
        (SWITCH_LAG at most, indexed first under the lock); the seconds it held the write
        lock, None when it could not run (not ready, done before, or the writers wrote
        more than that while the old index was read).

        The old index is read whole first, without the lock: dropping it visits each
        of its pages, and any the machine's cache no longer holds would be read from
        disk with the lock held (on 12.8M events measured: 17.9 s cold, 0.65 s after
        the read)."""
        with self._use("index switch") as conn:
            if not maintenance.switch_ready(conn, SWITCH_LAG):
                return None
            started = time.monotonic()
            entries = maintenance.read_old_index(conn)
            read = time.monotonic() - started
            started = time.monotonic()
            with _transaction(conn):
                # The writers went on meanwhile: what they wrote is indexed first, unless
                # they wrote too much (then the caller indexes again and retries).
                if not maintenance.switch_ready(conn, SWITCH_LAG):
                    return None
                maintenance.index_step(conn, SWITCH_LAG)
                if not maintenance.switch_step(conn):
                    return None
            held = time.monotonic() - started
        log.info(
            "store %s: a message's events are read by message_events; the old index"
            " (%d entries) read in %.1f s without the lock, then dropped holding it %.2f s",
            self.path,
            entries,
            read,
            held,
        )
        return held

    def backfill_step(self, batch: int = 2000) -> int:
        """Count one batch of the messages an upgrade found (their flags and daily_stats
        rows), or else give one batch of older events their login, in one short
        transaction; the number of rows done, 0 when nothing is left."""
        with self._use("backfill") as conn, _transaction(conn):
            return maintenance.backfill_step(conn, batch)

    def prune_step(self, before: str, batch: int = 1000) -> int:
        """Delete up to ``batch`` messages created before ``before`` with their events
        (then old events of unknown messages, then old bounce identities), in one short
        transaction; the rows deleted, 0 when nothing is left. daily_stats keeps the
        history."""
        with self._use("prune") as conn, _transaction(conn):
            return maintenance.prune_step(conn, before, batch)
