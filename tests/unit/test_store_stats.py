"""`smtpeter stats` on a real SQLite store, with every kind of event: each column
counts what its name says, and only that."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from smtpeter.config import load
from smtpeter.events import Event, EventType
from smtpeter.store import MessageRecord, Store, open_store


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    path = tmp_path / "smtpeter.yaml"
    path.write_text(f"store:\n  sqlite_path: {tmp_path / 'smtpeter.db'}\n")
    return path


def message(store: Store, uid: str, login: str, day: str) -> None:
    store.record_message(
        MessageRecord(
            queue_id=f"Q{uid}", message_id=f"<{uid}@test>", login=login,
            envelope_sender="s@example.com", recipients=("r@example.org",), features=(),
            size_before=1, size_after=1, created_at=f"{day}T10:00:00.000000Z", uid=uid,
        )
    )  # fmt: skip


def events(store: Store, uid: str, *types: EventType) -> None:
    store.record_events(
        [
            Event(t, uid, f"2026-11-20T12:00:0{i}.000000Z", recipient=f"x{i}@example.org")
            for i, t in enumerate(types)
        ]
    )


def filled(conf: Path) -> Store:
    store = open_store(load(conf).store)
    # shop, day 1: three messages. m1 opened twice and clicked, bounced for two
    # recipients; m2 only delayed and auto-replied to; m3 nothing.
    for uid in ("m1", "m2", "m3"):
        message(store, uid, "shop", "2026-11-01")
    events(store, "m1", "open", "open", "click", "bounce", "bounce")
    events(store, "m2", "delay", "delay", "autoreply")
    # shop, day 2: one message, a bounce and a delay.
    message(store, "m4", "shop", "2026-11-02")
    events(store, "m4", "bounce", "delay", "click")
    # news, day 1: one message, delays only.
    message(store, "m5", "news", "2026-11-01")
    events(store, "m5", "delay", "delay", "delay")
    # Delivery results: m1 delivered to one recipient, deferred twice then failed for
    # the other; m3 deferred once, then delivered; m4 failed at once.
    events(store, "m1", "delivered", "deferred", "deferred", "failed")
    events(store, "m3", "deferred", "delivered")
    events(store, "m4", "failed")
    return store


EXPECTED = [
    {"login": "news", "day": "2026-11-01", "messages": 1, "unique_opens": 0,
     "unique_clicks": 0, "bounces": 0, "delivered": 0, "deferred": 0},
    {"login": "shop", "day": "2026-11-01", "messages": 3, "unique_opens": 1,
     "unique_clicks": 1, "bounces": 2, "delivered": 2, "deferred": 3},
    {"login": "shop", "day": "2026-11-02", "messages": 1, "unique_opens": 0,
     "unique_clicks": 1, "bounces": 1, "delivered": 0, "deferred": 0},
]  # fmt: skip


def test_each_column_counts_only_its_own_kind_of_event(conf: Path) -> None:
    assert filled(conf).stats() == EXPECTED


def test_stats_for_one_login_and_a_window(conf: Path) -> None:
    store = filled(conf)
    assert store.stats(login="shop", since="2026-11-02T00:00:00Z") == EXPECTED[2:]


def test_the_stats_command_prints_the_same(conf: Path) -> None:
    filled(conf)
    result = subprocess.run(
        [sys.executable, "-m", "smtpeter", "--config", str(conf), "stats", "--json",
         "--since", "2026-10-01"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [json.loads(line) for line in result.stdout.splitlines()] == EXPECTED


def reasoned(store: Store) -> None:
    """shop: m1 bounced hard twice for ann (two reports) and soft for bob, and drew a
    complaint; news: m5 bounced soft for cy, long ago. Delays are not bounces."""
    message(store, "m1", "shop", "2026-11-01")
    message(store, "m5", "news", "2026-11-01")

    def bounce(uid: str, when: str, to: str, kind: str, reason: str) -> Event:
        return Event("bounce", uid, when, recipient=to, detail={"kind": kind, "reason": reason})

    store.record_events(
        [
            bounce("m1", "2026-11-20T10:00:00.000000Z", "ann@example.org", "hard", "user-unknown"),
            bounce("m1", "2026-11-21T10:00:00.000000Z", "Ann@example.org", "hard", "user-unknown"),
            bounce("m1", "2026-11-20T11:00:00.000000Z", "bob@example.org", "soft", "mailbox-full"),
            Event("complaint", "m1", "2026-11-22T10:00:00.000000Z", recipient="cy@example.org",
                  detail={"feedback_type": "abuse"}),
            Event("delay", "m1", "2026-11-20T09:00:00.000000Z", recipient="dee@example.org",
                  detail={"kind": "delay"}),
            bounce("m5", "2026-11-02T10:00:00.000000Z", "cy@example.org", "soft", "blocked"),
        ]
    )  # fmt: skip


def test_bounces_by_reason_count_events_and_distinct_recipients(conf: Path) -> None:
    """--reasons: per login, kind and reason, how many bounces and how many distinct
    recipients (ann twice is one recipient); a complaint by its feedback type; delays
    never; --since by when the bounce came back, --login one login."""
    store = open_store(load(conf).store)
    reasoned(store)
    assert store.bounce_reasons() == [
        {"login": "news", "type": "bounce", "kind": "soft", "reason": "blocked", "events": 1,
         "recipients": 1},
        {"login": "shop", "type": "bounce", "kind": "hard", "reason": "user-unknown",
         "events": 2, "recipients": 1},
        {"login": "shop", "type": "bounce", "kind": "soft", "reason": "mailbox-full",
         "events": 1, "recipients": 1},
        {"login": "shop", "type": "complaint", "kind": "complaint", "reason": "abuse",
         "events": 1, "recipients": 1},
    ]  # fmt: skip
    since = store.bounce_reasons(since="2026-11-21T00:00:00.000000Z")
    assert [(r["kind"], r["events"]) for r in since] == [("hard", 1), ("complaint", 1)]
    assert {r["login"] for r in store.bounce_reasons(login="news")} == {"news"}


def test_the_stats_reasons_command_prints_a_table_and_json(conf: Path) -> None:
    """`smtpeter stats --reasons` prints the same rows, as a table or JSON lines."""
    reasoned(open_store(load(conf).store))
    base = [sys.executable, "-m", "smtpeter", "--config", str(conf), "stats", "--reasons"]
    table = subprocess.run([*base, "--login", "shop"], capture_output=True, text=True,
                           timeout=60)  # fmt: skip
    assert table.returncode == 0, table.stderr
    lines = [line.split() for line in table.stdout.splitlines()]
    assert lines == [
        ["LOGIN", "TYPE", "KIND", "REASON", "EVENTS", "RECIPIENTS"],
        ["shop", "bounce", "hard", "user-unknown", "2", "1"],
        ["shop", "bounce", "soft", "mailbox-full", "1", "1"],
        ["shop", "complaint", "complaint", "abuse", "1", "1"],
    ]
    js = subprocess.run([*base, "--json"], capture_output=True, text=True, timeout=60)
    assert [json.loads(line)["reason"] for line in js.stdout.splitlines()] == [
        "blocked", "user-unknown", "mailbox-full", "abuse",
    ]  # fmt: skip


def test_the_stats_table_has_a_heading_and_a_row_a_day(conf: Path) -> None:
    """Without --json: one heading, then one line per login and day, in columns."""
    filled(conf)
    result = subprocess.run(
        [sys.executable, "-m", "smtpeter", "--config", str(conf), "stats"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [line.split() for line in result.stdout.splitlines()] == [
        ["LOGIN", "DAY", "MESSAGES", "OPENED", "CLICKED", "BOUNCES", "DELIVERED", "DEFERRED"],
        *([str(r[k]) for k in ("login", "day", "messages", "unique_opens", "unique_clicks",
                               "bounces", "delivered", "deferred")] for r in EXPECTED),
    ]  # fmt: skip
