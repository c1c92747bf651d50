"""The webhook outbox through the real store: every event of a login's message gets a
row per endpoint that wants its type, in the event's own transaction, whoever writes
it; nothing for other types, other logins or messages the store does not have."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from smtpeter.deliveries.logline import DeliveryResult
from smtpeter.events import Event
from smtpeter.store import MessageRecord
from smtpeter.store.migrations import MIGRATIONS
from smtpeter.store.sqlite import SQLiteStore
from smtpeter.store.webhooks import WebhookError
from tests.unit.test_store_api import _login

NOW = 1_800_000_000.0


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    store = SQLiteStore(str(tmp_path / "smtpeter.db"))
    for name in ("shop", "other"):
        store.create_login(_login(name))
    store.record_messages(
        [
            MessageRecord(
                queue_id=f"Q{uid}", message_id=f"<{uid}@t>", login=login,
                envelope_sender="s@example.com", recipients=("ann@example.org",),
                features=(), size_before=1, size_after=1, uid=uid, tags=("news",),
                metadata={"customer": "42"},
            )
            for uid, login in (("m1", "shop"), ("m2", "other"))
        ]
    )  # fmt: skip
    return store


def _event(type_: str, uid: str = "m1", **kw: object) -> Event:
    return Event(type_, uid, "2026-12-02T09:00:00.000000Z", **kw)  # type: ignore[arg-type]


def _due(store: SQLiteStore, webhook_id: int) -> list[tuple[str, str]]:
    rows = store.claim_webhook_rows(webhook_id, now=NOW, lease=60, limit=100)
    return [(r.event.type, r.event.message_uid) for r in rows]


def test_an_event_reaches_each_endpoint_of_its_login_that_wants_its_type(
    store: SQLiteStore,
) -> None:
    """Only the login's endpoints for the type get the event; unknown messages go nowhere."""
    clicks = store.add_webhook("shop", "https://a.example/h", ("click", "open"), "whsec_a")
    everything = store.add_webhook("shop", "https://b.example/h", (), "whsec_b")
    bounces = store.add_webhook("shop", "https://c.example/h", ("bounce",), "whsec_c")
    others = store.add_webhook("other", "https://d.example/h", (), "whsec_d")
    store.record_events(
        [
            _event("click", url="https://x.example/", user_agent="UA", client_ip="192.0.2.1"),
            _event("open"),
            _event("click", "nosuchmessage"),
        ]
    )
    assert _due(store, clicks.id) == [("click", "m1"), ("open", "m1")]
    assert _due(store, everything.id) == [("click", "m1"), ("open", "m1")]
    assert _due(store, bounces.id) == []
    assert _due(store, others.id) == []


def test_the_outbox_row_carries_what_the_payload_needs(store: SQLiteStore) -> None:
    """A claimed row carries the event with its message's login, ids, recipient and tags."""
    hook = store.add_webhook("shop", "https://a.example/h", (), "whsec_a")
    store.record_events([_event("click", url="https://x.example/", client_ip="192.0.2.1")])
    [row] = store.claim_webhook_rows(hook.id, now=NOW, lease=60, limit=10)
    e = row.event
    assert (e.login, e.message_id, row.queue_id, e.recipient) == (
        "shop", "<m1@t>", "Qm1", "ann@example.org"
    )  # fmt: skip
    assert (e.tags, e.metadata, e.url, e.client_ip) == (
        ("news",), {"customer": "42"}, "https://x.example/", "192.0.2.1"
    )  # fmt: skip
    assert e.id is not None and (row.attempts, row.first_attempt_at) == (0, NOW)


def test_every_writer_fills_the_outbox(store: SQLiteStore) -> None:
    """Bounces and delivery results reach the endpoint as the tracker's events do."""
    hook = store.add_webhook("shop", "https://a.example/h", ("bounce", "delivered"), "whsec_a")
    store.record_bounce("m1", "BQ1", [_event("bounce", recipient="ann@example.org")])
    result = DeliveryResult(
        queue_id="Qm1", recipient="ann@example.org", status="delivered", dsn="2.0.0",
        relay="mx[192.0.2.1]:25", delay=0.5, delays="0/0/0/0.5", reply="250 ok",
        postfix_status="sent", logged_at="2026-12-02T09:00:01.000000Z",
        original_recipient=None, agent="smtp", instance="postfix",
    )  # fmt: skip
    store.record_deliveries([result], "file:/var/log/mail.log", "1")
    assert _due(store, hook.id) == [("bounce", "m1"), ("delivered", "m1")]


def test_without_endpoints_no_row_is_written(store: SQLiteStore) -> None:
    """An endpoint gets the events that happen while it exists, not earlier ones."""
    store.record_events([_event("click")])
    hook = store.add_webhook("shop", "https://a.example/h", (), "whsec_a")
    store.record_events([_event("open")])
    assert _due(store, hook.id) == [("open", "m1")]


def test_backlog_counts_pending_failed_and_the_oldest(store: SQLiteStore) -> None:
    """`webhooks list` counts pending and failed events and dates the oldest pending."""
    hook = store.add_webhook("shop", "https://a.example/h", (), "whsec_a")
    assert store.webhook_backlog(hook.id).pending == 0
    assert store.webhook_backlog(hook.id).oldest_pending_at is None
    store.record_events([_event("click"), _event("open"), _event("click")])
    backlog = store.webhook_backlog(hook.id)
    assert (backlog.pending, backlog.failed) == (3, 0)
    assert backlog.oldest_pending_at is not None
    rows = store.claim_webhook_rows(hook.id, now=NOW, lease=60, limit=2)
    store.webhook_delivered([rows[0].id])
    store.webhook_attempt_failed(rows[1].id, "HTTP 500 Internal Server Error", None)
    backlog = store.webhook_backlog(hook.id)
    assert (backlog.pending, backlog.failed) == (1, 1)
    assert store.webhook_last_errors(hook.id) == ["HTTP 500 Internal Server Error"]
    assert store.retry_failed_webhooks(hook.id, NOW) == 1
    assert store.webhook_backlog(hook.id).failed == 0
    [again] = [r for r in store.claim_webhook_rows(hook.id, now=NOW, lease=60, limit=5)
               if r.id == rows[1].id]  # fmt: skip
    assert (again.attempts, again.first_attempt_at) == (0, NOW), "a fresh retry window"


def test_a_claim_hides_rows_until_its_lease_ends(store: SQLiteStore) -> None:
    """A claimed row is not sent twice at once; if its claimer dies it comes due again."""
    hook = store.add_webhook("shop", "https://a.example/h", (), "whsec_a")
    store.record_events([_event("click")])
    [row] = store.claim_webhook_rows(hook.id, now=NOW, lease=30, limit=10)
    assert store.claim_webhook_rows(hook.id, now=NOW + 29, lease=30, limit=10) == []
    [again] = store.claim_webhook_rows(hook.id, now=NOW + 30, lease=30, limit=10)
    assert again.id == row.id and again.first_attempt_at == NOW
    store.webhook_attempt_failed(row.id, "connection refused", NOW + 500)
    assert store.claim_webhook_rows(hook.id, now=NOW + 499, lease=30, limit=10) == []
    [third] = store.claim_webhook_rows(hook.id, now=NOW + 500, lease=30, limit=10)
    assert third.attempts == 1 and third.first_attempt_at == NOW


def test_removing_an_endpoint_or_its_login_drops_its_outbox(store: SQLiteStore) -> None:
    """A removed endpoint leaves nothing behind; deleting a login removes its endpoints."""
    first = store.add_webhook("shop", "https://a.example/h", (), "whsec_a")
    second = store.add_webhook("shop", "https://b.example/h", (), "whsec_b")
    store.record_events([_event("click")])
    assert store.remove_webhook(first.id) and not store.remove_webhook(first.id)
    assert store.webhook_backlog(first.id).pending == 0
    assert store.webhook_backlog(second.id).pending == 1
    store.delete_login("shop")
    assert store.webhooks() == [] and store.webhook_backlog(second.id).pending == 0


def test_a_duplicate_or_a_missing_login_is_refused(store: SQLiteStore) -> None:
    """add names what is wrong: an unknown login, a URL the login already has."""
    store.add_webhook("shop", "https://a.example/h", (), "whsec_a")
    with pytest.raises(WebhookError, match=r"already has an endpoint https://a.example/h"):
        store.add_webhook("shop", "https://a.example/h", ("click",), "whsec_x")
    with pytest.raises(WebhookError, match="no login named 'ghost'"):
        store.add_webhook("ghost", "https://a.example/h", (), "whsec_x")
    store.add_webhook("other", "https://a.example/h", (), "whsec_y")  # another login may
    assert [(h.login, h.types) for h in store.webhooks()] == [("other", ()), ("shop", ())]


def test_rotation_keeps_the_old_secret_for_the_overlap(store: SQLiteStore) -> None:
    """After rotate-secret both secrets sign until the overlap ends, then only the new."""
    hook = store.add_webhook("shop", "https://a.example/h", (), "whsec_old")
    rotated = store.rotate_webhook_secret(hook.id, "whsec_new", NOW + 3600)
    assert rotated.signing_secrets(NOW) == ["whsec_new", "whsec_old"]
    assert rotated.signing_secrets(NOW + 3600) == ["whsec_new"]
    assert store.webhooks("shop")[0].secret == "whsec_new"


def test_a_pruned_event_is_dropped_from_the_outbox(store: SQLiteStore) -> None:
    """Retention that deletes an event before it was sent leaves no row stuck."""
    hook = store.add_webhook("shop", "https://a.example/h", (), "whsec_a")
    store.record_events([_event("click")])
    while store.prune_step("2100-01-01T00:00:00.000000Z"):
        pass
    assert store.claim_webhook_rows(hook.id, now=NOW, lease=60, limit=10) == []
    assert store.webhook_backlog(hook.id).pending == 0


def test_a_store_of_the_previous_schema_upgrades(tmp_path: Path) -> None:
    """A store of schema 9 with events in it opens with the webhook tables added."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for script in MIGRATIONS[:9]:
        conn.executescript(script)
    assert "webhook" not in MIGRATIONS[8] and "CREATE TABLE webhooks" in MIGRATIONS[9]
    conn.execute("PRAGMA user_version = 9")
    conn.execute("INSERT INTO events (type, occurred_at, message_uid) VALUES ('open', 'x', 'u')")
    conn.commit()
    conn.close()
    store = SQLiteStore(str(path))
    assert store.schema_version() == len(MIGRATIONS)
    assert store.webhooks() == []


def test_the_trigger_probes_only_the_empty_webhooks_table_on_the_hot_path(
    store: SQLiteStore,
) -> None:
    """With no endpoint a click write pays one probe of an empty table (issue 17)."""
    conn = sqlite3.connect(store.path)
    (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'events_webhooks'").fetchone()
    assert "WHEN EXISTS (SELECT 1 FROM webhooks)" in sql
    assert conn.execute(
        "SELECT name FROM sqlite_master WHERE tbl_name = 'webhook_outbox' AND type = 'index'"
    ).fetchall() == [("webhook_outbox_due",)]
