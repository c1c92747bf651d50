"""`smtpeter events` a page at a time and `smtpeter store` as a sysadmin runs them: a
real process on a real store."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

from smtpeter.config import load
from smtpeter.events import Event
from smtpeter.store import MessageRecord, open_store
from tests.unit.test_cli import conf, run

__all__ = ["conf"]


def _fill(conf: Path) -> None:
    store = open_store(load(str(conf)).store)
    store.record_messages(
        [
            MessageRecord(
                queue_id=f"Q{i}", message_id=f"<{i}@t>", login="shop" if i % 2 else "news",
                envelope_sender="s@example.com", recipients=("r@example.org",), features=(),
                size_before=1, size_after=1, created_at=f"2026-11-0{1 + i % 5}T10:00:00Z",
                uid=f"u{i}",
            )
            for i in range(10)
        ]
    )  # fmt: skip
    store.record_events([Event("click", f"u{i % 10}", f"2026-11-06T10:{i:02d}:00Z",
                               url=f"https://example.com/{i}") for i in range(25)])  # fmt: skip


def test_events_page_by_page_with_the_printed_command(conf: Path) -> None:
    """A full page ends with the command for the next one; running the printed commands
    one after another lists every event of the login once, newest first."""
    _fill(conf)
    result = run(conf, "events", "--login", "shop", "--limit", "4", "--json")
    seen: list[str] = []
    while True:
        assert result.returncode == 0, result.stderr
        seen += [json.loads(line)["url"] for line in result.stdout.splitlines()]
        if "next page: " not in result.stderr:
            break
        words = shlex.split(result.stderr.split("next page: ", 1)[1])
        assert words[:3] == ["smtpeter", "--config", str(conf)]
        result = subprocess.run(
            [sys.executable, "-m", *words], capture_output=True, text=True, timeout=60
        )
    want = [f"https://example.com/{i}" for i in reversed(range(25)) if (i % 10) % 2]
    assert seen == want


def test_store_status_and_upkeep(conf: Path) -> None:
    """store status says nothing is left to do on a new store; upkeep with a retention
    prunes the old messages and says how many rows went, and stats keep their counts."""
    _fill(conf)
    status = run(conf, "store", "status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["backfill_messages_through_id"] is None
    stats = run(conf, "stats", "--json").stdout
    done = run(conf, "store", "upkeep", "--retention-days", "1", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["pruned"] == 10 + 25
    assert run(conf, "events", "--json").stdout == ""
    assert run(conf, "stats", "--json").stdout == stats
    bad = run(conf, "store", "upkeep", "--retention-days", "-1")
    assert bad.returncode == 64 and "--retention-days must be >= 0" in bad.stderr
