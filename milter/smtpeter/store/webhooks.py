"""The store's side of signed webhooks: a login's endpoints and the outbox.

The outbox rows are written by the schema (migration 10's trigger on events), in the
event's own transaction; this module reads them for the dispatcher
(smtpeter.webhooks.dispatcher) and records each attempt's outcome. SQLiteStore
inherits :class:`WebhookStore`; its methods use the store's ``_use`` (a connection
whose statements ride out a locked database) and ``_transaction`` (BEGIN IMMEDIATE).
"""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from smtpeter.events import Event

# A partial module while sqlite.py itself imports this one: used at call time only.
from smtpeter.store import sqlite as _sqlite
from smtpeter.store.rows import EVENT_COLUMNS, event_from_row


class WebhookError(Exception):
    """A webhook operation that cannot be done (no such login, a duplicate URL)."""


@dataclass(frozen=True)
class Webhook:
    """One endpoint of a login: where its events are POSTed and how they are signed."""

    id: int
    login: str
    url: str
    #: The event types it wants; () means every type.
    types: tuple[str, ...]
    secret: str
    #: During a rotation: the previous secret, still signed with until old_secret_until
    #: (unix seconds), so a receiver that has not switched yet keeps verifying.
    old_secret: str | None
    old_secret_until: float | None
    created_at: str

    def signing_secrets(self, now: float) -> list[str]:
        """The secrets each delivery is signed with now: the current one, and the old
        one while its overlap lasts."""
        keep_old = self.old_secret and self.old_secret_until and now < self.old_secret_until
        return [self.secret, self.old_secret] if keep_old and self.old_secret else [self.secret]


@dataclass(frozen=True)
class Backlog:
    """An endpoint's outbox: rows still to deliver, rows that ran out of retries, and
    when the oldest pending row was written (unix seconds; None with nothing pending)."""

    pending: int
    failed: int
    oldest_pending_at: float | None


@dataclass(frozen=True)
class OutboxRow:
    """A claimed outbox row: the event to POST, with its message's facts."""

    id: int
    webhook_id: int
    #: Attempts made before this one, and when the first began (unix seconds).
    attempts: int
    first_attempt_at: float
    event: Event
    queue_id: str | None


_WEBHOOK_COLUMNS = "id, login, url, types, secret, old_secret, old_secret_until, created_at"


def _types_column(types: tuple[str, ...]) -> str:
    """The types as the trigger matches them: ",click,open," (or "*", every type)."""
    return "*" if not types else "," + ",".join(types) + ","


def _webhook(row: sqlite3.Row) -> Webhook:
    types = row["types"]
    return Webhook(
        id=row["id"],
        login=row["login"],
        url=row["url"],
        types=() if types == "*" else tuple(t for t in types.split(",") if t),
        secret=row["secret"],
        old_secret=row["old_secret"],
        old_secret_until=row["old_secret_until"],
        created_at=row["created_at"],
    )


def _now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _marks(n: int) -> str:
    return ", ".join("?" * n)


class WebhookStore:
    """Webhook endpoints and the outbox; a base class of SQLiteStore."""

    if TYPE_CHECKING:

        def _use(self, what: str) -> AbstractContextManager[sqlite3.Connection]: ...

    @staticmethod
    def _tx(conn: sqlite3.Connection) -> AbstractContextManager[None]:
        return _sqlite._transaction(conn)

    # -- endpoints ------------------------------------------------------------------

    def add_webhook(self, login: str, url: str, types: tuple[str, ...], secret: str) -> Webhook:
        """A new endpoint of ``login``; WebhookError if the login does not exist or
        already has an endpoint with this URL. Events from now on reach it."""
        with self._use("webhook add") as conn, self._tx(conn):
            if conn.execute("SELECT 1 FROM logins WHERE name = ?", (login,)).fetchone() is None:
                raise WebhookError(f"no login named {login!r}")
            try:
                cur = conn.execute(
                    "INSERT INTO webhooks (login, url, types, secret, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (login, url, _types_column(types), secret, _now_text()),
                )
            except sqlite3.IntegrityError:
                raise WebhookError(f"login {login!r} already has an endpoint {url}") from None
            row = conn.execute(
                f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks WHERE id = ?", (cur.lastrowid,)
            ).fetchone()
        return _webhook(row)

    def webhooks(self, login: str | None = None) -> list[Webhook]:
        """Endpoints of one login or of all, by login and then in the order added."""
        where, args = ("WHERE login = ?", (login,)) if login is not None else ("", ())
        with self._use("webhook list") as conn:
            rows = conn.execute(
                f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks {where} ORDER BY login, id", args
            )
            return [_webhook(r) for r in rows]

    def get_webhook(self, webhook_id: int) -> Webhook | None:
        with self._use("webhook lookup") as conn:
            row = conn.execute(
                f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks WHERE id = ?", (webhook_id,)
            ).fetchone()
        return _webhook(row) if row is not None else None

    def remove_webhook(self, webhook_id: int) -> bool:
        """Remove an endpoint and its outbox rows (a trigger); False if it was not there."""
        with self._use("webhook remove") as conn, self._tx(conn):
            cur = conn.execute("DELETE FROM webhooks WHERE id = ?", (webhook_id,))
        return cur.rowcount > 0

    def rotate_webhook_secret(self, webhook_id: int, secret: str, old_until: float) -> Webhook:
        """Sign with ``secret`` from now on, and with the current one as well until
        ``old_until`` (unix seconds), so the receiver can switch at its own pace."""
        with self._use("webhook rotate") as conn, self._tx(conn):
            cur = conn.execute(
                "UPDATE webhooks SET old_secret = secret, old_secret_until = ?, secret = ?"
                " WHERE id = ?",
                (old_until, secret, webhook_id),
            )
            if cur.rowcount == 0:
                raise WebhookError(f"no webhook endpoint {webhook_id}")
            row = conn.execute(
                f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks WHERE id = ?", (webhook_id,)
            ).fetchone()
        return _webhook(row)

    def webhook_backlog(self, webhook_id: int) -> Backlog:
        """An endpoint's pending and failed rows (by the outbox's index, covering)."""
        # One statement: one snapshot, however the dispatcher deletes meanwhile.
        with self._use("webhook backlog") as conn:
            pending, failed, oldest_at = conn.execute(
                "SELECT (SELECT COUNT(*) FROM webhook_outbox WHERE webhook_id = ?1 AND failed = 0),"
                " (SELECT COUNT(*) FROM webhook_outbox WHERE webhook_id = ?1 AND failed = 1),"
                " (SELECT enqueued_at FROM webhook_outbox WHERE id = (SELECT MIN(id)"
                "   FROM webhook_outbox WHERE webhook_id = ?1 AND failed = 0))",
                (webhook_id,),
            ).fetchone()
        return Backlog(int(pending), int(failed), oldest_at)

    def retry_failed_webhooks(self, webhook_id: int, now: float) -> int:
        """Make an endpoint's failed rows due again, with a fresh retry window; how many."""
        with self._use("webhook retry") as conn, self._tx(conn):
            cur = conn.execute(
                "UPDATE webhook_outbox SET failed = 0, due_at = ?, attempts = 0,"
                " first_attempt_at = NULL WHERE webhook_id = ? AND failed = 1",
                (now, webhook_id),
            )
        return cur.rowcount

    # -- the dispatcher -------------------------------------------------------------

    def claim_webhook_rows(
        self, webhook_id: int, *, now: float, lease: float, limit: int
    ) -> list[OutboxRow]:
        """Up to ``limit`` of an endpoint's rows due at ``now``, oldest due first,
        claimed for ``lease`` seconds: no other claim sees them until then, and if the
        claimer dies they are due again then (delivery is at least once). A row whose
        event is gone (retention) is dropped here."""
        with self._use("webhook claim") as conn, self._tx(conn):
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM webhook_outbox WHERE webhook_id = ? AND failed = 0"
                    " AND due_at <= ? ORDER BY due_at LIMIT ?",
                    (webhook_id, now, limit),
                )
            ]
            if not ids:
                return []
            conn.execute(
                "UPDATE webhook_outbox SET due_at = ?, first_attempt_at ="
                f" COALESCE(first_attempt_at, ?) WHERE id IN ({_marks(len(ids))})",
                (now + lease, now, *ids),
            )
            rows = list(
                conn.execute(
                    "SELECT o.id AS outbox_id, o.webhook_id, o.attempts, o.first_attempt_at,"
                    f" m.queue_id, {EVENT_COLUMNS}"
                    " FROM webhook_outbox o LEFT JOIN events e ON e.id = o.event_id"
                    " LEFT JOIN messages m ON m.id = COALESCE(e.message_id,"
                    "   (SELECT id FROM messages WHERE uid = e.message_uid))"
                    f" WHERE o.id IN ({_marks(len(ids))}) ORDER BY o.due_at, o.id",
                    ids,
                )
            )
            gone = [r["outbox_id"] for r in rows if r["id"] is None]
            if gone:
                conn.execute(f"DELETE FROM webhook_outbox WHERE id IN ({_marks(len(gone))})", gone)
        return [_outbox_row(r) for r in rows if r["id"] is not None]

    def webhook_delivered(self, outbox_ids: list[int]) -> None:
        """These rows reached their endpoint (a 2xx): gone from the outbox."""
        if not outbox_ids:
            return
        with self._use("webhook delivered") as conn:
            conn.execute(
                f"DELETE FROM webhook_outbox WHERE id IN ({_marks(len(outbox_ids))})", outbox_ids
            )

    def webhook_attempt_failed(self, outbox_id: int, error: str, retry_at: float | None) -> None:
        """An attempt failed: try again at ``retry_at``, or (None: the retries ran
        out) keep the row marked failed."""
        with self._use("webhook attempt") as conn:
            conn.execute(
                "UPDATE webhook_outbox SET attempts = attempts + 1, last_error = ?,"
                " due_at = COALESCE(?, due_at), failed = ? WHERE id = ?",
                (error[:500], retry_at, int(retry_at is None), outbox_id),
            )

    def webhook_last_errors(self, webhook_id: int, limit: int = 1) -> list[str]:
        """The last errors of the endpoint's failed rows, newest rows first."""
        with self._use("webhook errors") as conn:
            rows = conn.execute(
                "SELECT last_error FROM webhook_outbox WHERE webhook_id = ? AND failed = 1"
                " ORDER BY id DESC LIMIT ?",
                (webhook_id, limit),
            )
            return [r[0] or "" for r in rows]


def _outbox_row(r: sqlite3.Row) -> OutboxRow:
    return OutboxRow(
        id=r["outbox_id"],
        webhook_id=r["webhook_id"],
        attempts=r["attempts"],
        first_attempt_at=r["first_attempt_at"],
        queue_id=r["queue_id"],
        event=event_from_row(r),
    )


__all__ = ["Backlog", "OutboxRow", "Webhook", "WebhookError", "WebhookStore"]
