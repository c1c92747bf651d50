"""The store's own API read back as the CLI and the daemons read it: logins, the
message log, signing keys, events' fields, the errors a sysadmin sees, and the
store file a root-run command creates."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from smtpeter.events import Event
from smtpeter.features import FeatureSet
from smtpeter.logins import Login, LoginError
from smtpeter.store import MessageRecord, StoreError
from smtpeter.store.maintenance import statements as _statements
from smtpeter.store.migrations import MIGRATIONS
from smtpeter.store.sqlite import SQLiteStore, _locked
from smtpeter.tracker.signing import SigningKey


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    return SQLiteStore(str(tmp_path / "smtpeter.db"))


def _login(name: str, **features: bool) -> Login:
    return Login(
        name=name, password_hash=f"$argon2id$hash-of-{name}", enabled=True,
        features=FeatureSet(**features), rewrite_signed=False, created_at="", updated_at="",
    )  # fmt: skip


def test_a_login_reads_back_as_created(store: SQLiteStore) -> None:
    """Every field of a new login is stored, with creation and update times set."""
    created = store.create_login(_login("shop", inlinecss=True, trackopens=True))
    got = store.get_login("shop")
    assert got == created
    assert got is not None
    assert (got.name, got.password_hash, got.enabled, got.rewrite_signed) == (
        "shop", "$argon2id$hash-of-shop", True, False,
    )  # fmt: skip
    assert got.features == FeatureSet(inlinecss=True, trackopens=True)
    assert got.created_at == got.updated_at and got.created_at.endswith("Z")
    assert got.created_at[:4] >= "2026" and "T" in got.created_at
    assert store.get_login("nobody") is None


def test_logins_are_listed_by_name(store: SQLiteStore) -> None:
    """list_logins gives every login, sorted by name, each whole."""
    for name in ("zeta", "alpha", "mid"):
        store.create_login(_login(name, trackclicks=name == "mid"))
    listed = store.list_logins()
    assert [x.name for x in listed] == ["alpha", "mid", "zeta"]
    assert [x.features.trackclicks for x in listed] == [False, True, False]
    assert [x.password_hash for x in listed] == [
        f"$argon2id$hash-of-{n}" for n in ("alpha", "mid", "zeta")
    ]


def test_a_second_login_of_the_same_name_is_refused(store: SQLiteStore) -> None:
    """Creating a login that exists says so by name and leaves the first one as it was."""
    store.create_login(_login("shop"))
    with pytest.raises(LoginError, match="login 'shop' already exists"):
        store.create_login(_login("shop", trackbounces=True))
    got = store.get_login("shop")
    assert got is not None and not got.features.trackbounces


def test_update_changes_only_what_it_is_given(store: SQLiteStore) -> None:
    """Each field update touches that field alone and moves updated_at."""
    first = store.create_login(_login("shop", inlinecss=True))
    up = store.update_login("shop", password_hash="$argon2id$new")
    assert up.password_hash == "$argon2id$new"
    assert (up.enabled, up.features, up.rewrite_signed) == (True, first.features, False)
    assert up.updated_at >= first.updated_at and up.created_at == first.created_at
    up = store.update_login("shop", enabled=False)
    assert (up.enabled, up.password_hash) == (False, "$argon2id$new")
    up = store.update_login("shop", enabled=True, rewrite_signed=True)
    assert (up.enabled, up.rewrite_signed) == (True, True)
    up = store.update_login("shop", features={"trackclicks": True, "inlinecss": False})
    assert up.features == FeatureSet(trackclicks=True)
    up = store.update_login("shop")
    assert up.features == FeatureSet(trackclicks=True) and up.password_hash == "$argon2id$new"


def test_update_and_delete_name_what_is_wrong(store: SQLiteStore) -> None:
    """An unknown login or feature is refused by name; nothing is changed."""
    store.create_login(_login("shop"))
    with pytest.raises(LoginError, match="no login named 'nobody'"):
        store.update_login("nobody", enabled=False)
    with pytest.raises(LoginError, match="unknown feature 'teleport'"):
        store.update_login("shop", features={"teleport": True})
    with pytest.raises(LoginError, match="no login named 'nobody'"):
        store.delete_login("nobody")
    assert [x.name for x in store.list_logins()] == ["shop"]
    store.delete_login("shop")
    assert store.get_login("shop") is None and store.list_logins() == []


def _record(i: int, **kw: object) -> MessageRecord:
    fields: dict[str, object] = dict(
        queue_id=f"Q{i}", message_id=f"<{i}@t>", login="shop", envelope_sender=f"s{i}@example.com",
        recipients=(f"r{i}@example.org", "x@example.org"), features=("trackclicks",),
        size_before=100 + i, size_after=200 + i, created_at=f"2026-11-01T10:00:0{i}.000000Z",
        skipped=("inlinecss: signed",), uid=f"u{i}",
    )  # fmt: skip
    fields.update(kw)
    return MessageRecord(**fields)  # type: ignore[arg-type]


def test_messages_read_back_whole_newest_first_and_by_filter(store: SQLiteStore) -> None:
    """The message log keeps every field; it lists newest first, by queue id or uid,
    up to the limit."""
    records = [_record(i) for i in range(5)]
    store.record_messages(records)
    assert store.messages() == list(reversed(records))
    assert store.messages(queue_id="Q3") == [records[3]]
    assert store.messages(uid="u1") == [records[1]]
    assert store.messages(queue_id="Q3", uid="u1") == []
    assert store.messages(limit=2) == [records[4], records[3]]
    assert len(store.messages()) == 5 and len(_many(store)) == 100


def _many(store: SQLiteStore) -> list[MessageRecord]:
    store.record_messages([_record(i, queue_id=f"M{i}", uid=f"m{i}") for i in range(150)])
    return store.messages()  # the default limit


def test_a_message_without_a_time_gets_now(store: SQLiteStore) -> None:
    """record_message stamps a message given no time with the current UTC time."""
    store.record_message(_record(1, created_at=""))
    (m,) = store.messages()
    assert m.created_at.endswith("Z") and len(m.created_at) == len("2026-11-01T10:00:00.000000Z")
    assert m.created_at[:4] >= "2026" and m.created_at[4] == "-" and m.created_at[10] == "T"


def test_events_read_back_with_every_field(store: SQLiteStore) -> None:
    """An event keeps its URL, user agent, client address, recipient and detail; it
    comes back with its message's login and Message-ID, and the single recipient of
    a message to one address stands in for an open's missing recipient."""
    store.record_message(_record(1, recipients=("only@example.org",)))
    store.record_events(
        [
            Event("click", "u1", "2026-11-02T00:00:00Z", url="https://e.example/x",
                  user_agent="UA/1", client_ip="192.0.2.1", detail={"b": "2", "a": "1"}),
            Event("open", "u1", "2026-11-02T00:00:01Z"),
            Event("bounce", "u1", "2026-11-02T00:00:02Z", recipient="other@example.org"),
        ]
    )  # fmt: skip
    bounce, opened, click = store.events()
    assert (click.url, click.user_agent, click.client_ip, click.detail) == (
        "https://e.example/x", "UA/1", "192.0.2.1", {"a": "1", "b": "2"},
    )  # fmt: skip
    assert (click.login, click.message_id, click.message_uid) == ("shop", "<1@t>", "u1")
    assert (click.type, click.occurred_at) == ("click", "2026-11-02T00:00:00Z")
    assert opened.recipient == "only@example.org"
    assert bounce.recipient == "other@example.org"
    assert click.id is not None and bounce.id is not None and bounce.id > click.id
    with sqlite3.connect(store.path) as raw:
        (detail,) = raw.execute("SELECT detail FROM events WHERE type = 'click'").fetchone()
    assert detail == '{"a": "1", "b": "2"}'  # stored with sorted keys: one spelling


def test_events_default_to_a_page_of_1000(store: SQLiteStore) -> None:
    """Without a limit, events gives the newest 1000."""
    store.record_events([Event("open", "u", f"2026-11-02T00:{i // 60:02d}:{i % 60:02d}Z")
                         for i in range(1005)])  # fmt: skip
    page = store.events()
    assert len(page) == 1000 and page[0].occurred_at == "2026-11-02T00:16:44Z"


def test_signing_keys_rotate_and_purge(store: SQLiteStore) -> None:
    """Keys list oldest first with their secrets; adding with retire_others retires the
    active ones at the new key's creation; purging deletes only keys retired before
    the given time."""
    store.add_signing_key(SigningKey("k1", b"\x00secret1", 100.0, None))
    store.add_signing_key(SigningKey("k0", b"secret0", 50.0, 60.0))
    store.add_signing_key(SigningKey("k2", b"secret2", 200.0, None), retire_others=True)
    assert store.signing_keys() == [
        SigningKey("k0", b"secret0", 50.0, 60.0),
        SigningKey("k1", b"\x00secret1", 100.0, 200.0),
        SigningKey("k2", b"secret2", 200.0, None),
    ]
    store.add_signing_key(SigningKey("k3", b"secret3", 300.0, None))
    assert [k.retired_at for k in store.signing_keys()] == [60.0, 200.0, None, None]
    assert store.delete_signing_keys_retired_before(60.0) == 0
    assert store.delete_signing_keys_retired_before(150.0) == 1
    assert [k.kid for k in store.signing_keys()] == ["k1", "k2", "k3"]
    assert store.delete_signing_keys_retired_before(10**9) == 1
    assert [k.kid for k in store.signing_keys()] == ["k2", "k3"]


def test_a_failed_key_rotation_changes_nothing(store: SQLiteStore) -> None:
    """A key whose id exists already is refused, and the active keys stay active."""
    store.add_signing_key(SigningKey("k1", b"s1", 100.0, None))
    with pytest.raises(StoreError, match="signing key add failed"):
        store.add_signing_key(SigningKey("k1", b"s2", 200.0, None), retire_others=True)
    assert store.signing_keys() == [SigningKey("k1", b"s1", 100.0, None)]


def test_opening_errors_say_what_and_where(tmp_path: Path) -> None:
    """A missing store (when it must exist), an uncreatable directory and a store of a
    newer schema each give a StoreError naming the path and the problem."""
    missing = tmp_path / "none" / "smtpeter.db"
    with pytest.raises(StoreError, match=f"cannot open store {missing}: no such file"):
        SQLiteStore(str(missing), create=False)
    assert not missing.parent.exists()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match=f"cannot create store directory {blocker}: "):
        SQLiteStore(str(blocker / "smtpeter.db"))
    newer = tmp_path / "newer.db"
    raw = sqlite3.connect(newer)
    raw.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    raw.close()
    with pytest.raises(
        StoreError,
        match=f"has schema version {len(MIGRATIONS) + 1}, newer than this smtpeter knows "
        rf"\({len(MIGRATIONS)}\): upgrade smtpeter",
    ):
        SQLiteStore(str(newer))


def test_a_relative_store_path_is_created_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bare file name makes the store in the current directory."""
    monkeypatch.chdir(tmp_path)
    store = SQLiteStore("smtpeter.db")
    assert store.schema_version() == len(MIGRATIONS)
    assert (tmp_path / "smtpeter.db").is_file()


def test_the_store_is_in_wal_mode_with_normal_sync(store: SQLiteStore) -> None:
    """The daemons' readers never block the writer: WAL journal, synchronous NORMAL."""
    with store._use("check") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create files for another user")
def test_a_store_made_by_root_belongs_to_its_directory_owner(tmp_path: Path) -> None:
    """A store root creates in the service user's directory is the service user's, so
    the daemons can write it; in root's own directory it stays root's."""
    service = tmp_path / "svc"
    service.mkdir()
    os.chown(service, 65534, 65534)
    SQLiteStore(str(service / "smtpeter.db"))
    info = os.stat(service / "smtpeter.db")
    assert (info.st_uid, info.st_gid) == (65534, 65534)
    SQLiteStore(str(tmp_path / "root.db"))
    assert os.stat(tmp_path / "root.db").st_uid == 0
    # Opened again, an existing store is not given away.
    os.chown(service / "smtpeter.db", 0, 0)
    SQLiteStore(str(service / "smtpeter.db"))
    assert os.stat(service / "smtpeter.db").st_uid == 0


@pytest.mark.parametrize(
    ("operation", "call"),
    [
        ("login lookup", lambda s: s.get_login("shop")),
        ("login list", lambda s: s.list_logins()),
        ("login create", lambda s: s.create_login(_login("shop"))),
        ("login update", lambda s: s.update_login("shop", enabled=False)),
        ("login delete", lambda s: s.delete_login("shop")),
        ("message record", lambda s: s.record_message(_record(1))),
        ("message list", lambda s: s.messages()),
        ("signing key list", lambda s: s.signing_keys()),
        ("signing key add", lambda s: s.add_signing_key(SigningKey("k", b"s", 1.0, None))),
        ("signing key purge", lambda s: s.delete_signing_keys_retired_before(1.0)),
        ("event record", lambda s: s.record_events([Event("open", "u1", "2026-11-02T00:00:00Z")])),
        ("bounce record", lambda s: s.record_bounce("u1", "Q1", [])),
        ("event list", lambda s: s.events(login="shop")),
        ("stats", lambda s: s.stats()),
        ("backfill", lambda s: s.backfill_step()),
        ("prune", lambda s: s.prune_step("2026-11-01")),
        ("upkeep status", lambda s: s.upkeep_status()),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_a_failing_operation_says_which_one_and_where(
    store: SQLiteStore, operation: str, call: Callable[[SQLiteStore], object]
) -> None:
    """What an operator reads when the store breaks: the store's path, the operation
    that failed and SQLite's reason."""
    with sqlite3.connect(store.path) as raw:
        for table in ("logins", "messages", "events", "signing_keys", "bounce_reports",
                      "store_state", "daily_stats", "event_logins"):  # fmt: skip
            raw.execute(f"DROP TABLE {table}")
    with pytest.raises(StoreError) as caught:
        call(store)
    assert str(caught.value).startswith(f"store {store.path}: {operation} failed: ")
    assert "no such table" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "code", "locked"),
    [
        ("database is locked", None, True),
        ("database is busy", None, True),
        ("disk I/O error", None, False),
        ("database is locked", sqlite3.SQLITE_IOERR, False),
        ("recovering", sqlite3.SQLITE_BUSY | (1 << 8), True),  # SQLITE_BUSY_RECOVERY
        ("shared cache", sqlite3.SQLITE_LOCKED | (1 << 8), True),  # SQLITE_LOCKED_SHAREDCACHE
        ("no such table: x", sqlite3.SQLITE_ERROR, False),
    ],
)
def test_what_counts_as_a_lock_worth_waiting_for(text: str, code: int | None, locked: bool) -> None:
    """BUSY and LOCKED in any extended form are waited out; SQLite's own code decides
    over the message, which is read only when there is no code."""
    error = sqlite3.OperationalError(text)
    if code is not None:
        error.sqlite_errorcode = code
    assert _locked(error) is locked
    assert _locked(sqlite3.IntegrityError("database is locked")) is False


def test_migration_scripts_split_at_complete_statements() -> None:
    """A trigger's body keeps its inner semicolons; empty pieces are dropped."""
    script = """
    CREATE TABLE a (x);
    ;
    CREATE TRIGGER t AFTER INSERT ON a BEGIN UPDATE a SET x = 1; DELETE FROM a; END;
      ;
    """
    got = [" ".join(s.split()) for s in _statements(script)]
    assert got == [
        "CREATE TABLE a (x);",
        "CREATE TRIGGER t AFTER INSERT ON a BEGIN UPDATE a SET x = 1; DELETE FROM a; END;",
    ]
    conn = sqlite3.connect(":memory:")
    for statement in _statements(script):
        conn.execute(statement)
    conn.execute("INSERT INTO a VALUES (0)")
    assert conn.execute("SELECT COUNT(*) FROM a").fetchone() == (0,)


def test_times_are_utc_whatever_the_local_zone(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Logins' and messages' times are UTC (the Z they end with), not the host's zone."""
    monkeypatch.setenv("TZ", "XST-5:30")
    time.tzset()
    try:
        before = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M")
        created = store.create_login(_login("shop")).created_at
        store.record_message(_record(1, created_at=""))
        after = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M")
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    for stamp in (created, store.messages()[0].created_at):
        assert before <= stamp[:16] <= after, stamp
