"""SQLite store (WAL mode), shared by the auth daemon, the milter workers and the CLI.

Each thread gets its own connection: libmilter calls us from a pool of OS threads and
sqlite3 connections must not cross threads.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from smtpeter.features import FeatureSet
from smtpeter.logins import Login, LoginError
from smtpeter.store.migrations import MIGRATIONS


class StoreError(Exception):
    """The store cannot be reached or used (missing, locked, corrupt, read-only)."""


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


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_LOGIN_COLUMNS = (
    "name, password_hash, enabled, inlinecss, trackclicks, trackopens, trackbounces, "
    "created_at, updated_at"
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
        ),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class SQLiteStore:
    def __init__(self, path: str, *, busy_timeout: float = 5.0, create: bool = True) -> None:
        self.path = path
        self._busy_timeout = busy_timeout
        self._local = threading.local()
        if not create and not os.path.exists(path):
            raise StoreError(f"cannot open store {path}: no such file")
        if create:
            directory = os.path.dirname(path) or "."
            try:
                os.makedirs(directory, exist_ok=True)
            except OSError as e:
                raise StoreError(f"cannot create store directory {directory}: {e.strerror}") from e
        with self._errors("open"):
            self._migrate()

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as e:
            raise StoreError(f"store {self.path}: {what} failed: {e}") from e

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=True
            )
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _migrate(self) -> None:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise StoreError(
                    f"store {self.path} has schema version {version}, newer than this "
                    f"smtpeter knows ({len(MIGRATIONS)}): upgrade smtpeter"
                )
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in script.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def schema_version(self) -> int:
        with self._errors("read"):
            return int(self._conn().execute("PRAGMA user_version").fetchone()[0])

    # -- logins -------------------------------------------------------------------

    def get_login(self, name: str) -> Login | None:
        with self._errors("login lookup"):
            row = (
                self._conn()
                .execute(f"SELECT {_LOGIN_COLUMNS} FROM logins WHERE name = ?", (name,))
                .fetchone()
            )
        return _login(row) if row is not None else None

    def list_logins(self) -> list[Login]:
        with self._errors("login list"):
            rows = self._conn().execute(f"SELECT {_LOGIN_COLUMNS} FROM logins ORDER BY name")
            return [_login(r) for r in rows]

    def create_login(self, login: Login) -> Login:
        now = _now()
        f = login.features
        try:
            with self._errors("login create"):
                self._conn().execute(
                    f"INSERT INTO logins ({_LOGIN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        login.name,
                        login.password_hash,
                        int(login.enabled),
                        int(f.inlinecss),
                        int(f.trackclicks),
                        int(f.trackopens),
                        int(f.trackbounces),
                        now,
                        now,
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
    ) -> Login:
        sets: list[str] = []
        args: list[object] = []
        if password_hash is not None:
            sets.append("password_hash = ?")
            args.append(password_hash)
        if enabled is not None:
            sets.append("enabled = ?")
            args.append(int(enabled))
        for feature, on in (features or {}).items():
            if feature not in FeatureSet.__dataclass_fields__:
                raise LoginError(f"unknown feature {feature!r}")
            sets.append(f"{feature} = ?")
            args.append(int(on))
        sets.append("updated_at = ?")
        args.append(_now())
        with self._errors("login update"):
            cur = self._conn().execute(
                f"UPDATE logins SET {', '.join(sets)} WHERE name = ?", (*args, name)
            )
        if cur.rowcount == 0:
            raise LoginError(f"no login named {name!r}")
        updated = self.get_login(name)
        assert updated is not None
        return updated

    def delete_login(self, name: str) -> None:
        with self._errors("login delete"):
            cur = self._conn().execute("DELETE FROM logins WHERE name = ?", (name,))
        if cur.rowcount == 0:
            raise LoginError(f"no login named {name!r}")

    # -- messages -----------------------------------------------------------------

    def record_message(self, m: MessageRecord) -> None:
        with self._errors("message record"):
            self._conn().execute(
                "INSERT INTO messages (queue_id, message_id, login, envelope_sender, recipients,"
                " features, size_before, size_after, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    m.queue_id,
                    m.message_id,
                    m.login,
                    m.envelope_sender,
                    json.dumps(list(m.recipients)),
                    json.dumps(list(m.features)),
                    m.size_before,
                    m.size_after,
                    m.created_at or _now(),
                ),
            )

    def messages(self, *, queue_id: str | None = None, limit: int = 100) -> list[MessageRecord]:
        where, args = ("WHERE queue_id = ?", [queue_id]) if queue_id else ("", [])
        with self._errors("message list"):
            rows = self._conn().execute(
                "SELECT queue_id, message_id, login, envelope_sender, recipients, features,"
                f" size_before, size_after, created_at FROM messages {where}"
                " ORDER BY id DESC LIMIT ?",
                (*args, limit),
            )
            return [
                MessageRecord(
                    queue_id=r["queue_id"],
                    message_id=r["message_id"],
                    login=r["login"],
                    envelope_sender=r["envelope_sender"],
                    recipients=tuple(json.loads(r["recipients"])),
                    features=tuple(json.loads(r["features"])),
                    size_before=r["size_before"],
                    size_after=r["size_after"],
                    created_at=r["created_at"],
                )
                for r in rows
            ]
