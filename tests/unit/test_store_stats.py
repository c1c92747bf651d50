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
    return store


EXPECTED = [
    {"login": "news", "day": "2026-11-01", "messages": 1, "unique_opens": 0,
     "unique_clicks": 0, "bounces": 0},
    {"login": "shop", "day": "2026-11-01", "messages": 3, "unique_opens": 1,
     "unique_clicks": 1, "bounces": 2},
    {"login": "shop", "day": "2026-11-02", "messages": 1, "unique_opens": 0,
     "unique_clicks": 1, "bounces": 1},
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
