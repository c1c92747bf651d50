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
    """A page with more after it ends with the command for the next one; running the
    printed commands one after another lists every event of the login once, newest
    first, and the last page says no more."""
    _fill(conf)
    result = run(conf, "events", "--login", "shop", "--limit", "4", "--json")
    seen: list[str] = []
    pages = 0
    while True:
        assert result.returncode == 0, result.stderr
        seen += [json.loads(line)["url"] for line in result.stdout.splitlines()]
        pages += 1
        if "more: " not in result.stderr:
            break
        words = shlex.split(result.stderr.split("more: ", 1)[1])
        assert words[:3] == ["smtpeter", "--config", str(conf)]
        result = subprocess.run(
            [sys.executable, "-m", *words], capture_output=True, text=True, timeout=60
        )
    want = [f"https://example.com/{i}" for i in reversed(range(25)) if (i % 10) % 2]
    assert seen == want
    # 12 events: three full pages, and the third says nothing of a next one.
    assert (len(want), pages) == (12, 3)


def test_events_show_100_by_default_and_say_when_there_are_more(conf: Path) -> None:
    """Without --limit a page is 100 events; "more:" comes only when there are more."""
    _fill(conf)  # 25 events
    store = open_store(load(str(conf)).store)
    store.record_events([Event("open", "u1", "2026-11-07T10:00:00Z") for _ in range(75)])
    result = run(conf, "events", "--json")
    assert len(result.stdout.splitlines()) == 100 and "more: " not in result.stderr
    store.record_events([Event("open", "u1", "2026-11-07T11:00:00Z")])
    result = run(conf, "events", "--json")
    assert len(result.stdout.splitlines()) == 100
    assert result.stderr.startswith("more: smtpeter --config "), result.stderr
    assert result.stderr.rstrip().endswith("--json --before 2"), result.stderr
    bad = run(conf, "events", "--limit", "0")
    assert bad.returncode == 2 and "invalid --limit '0'" in bad.stderr


def test_events_follow_prints_new_events_as_they_are_recorded(conf: Path) -> None:
    """--follow prints the newest page oldest first, then each new event of the filter
    as it is recorded, and stops cleanly on Ctrl-C."""
    import signal
    import time

    _fill(conf)
    store = open_store(load(str(conf)).store)
    follow = subprocess.Popen(
        [sys.executable, "-m", "smtpeter", "--config", str(conf), "events", "--login", "shop",
         "--limit", "3", "--json", "--follow", "--interval", "0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert follow.stdout is not None
    try:
        first = [json.loads(follow.stdout.readline())["url"] for _ in range(3)]
        assert first == [f"https://example.com/{i}" for i in (19, 21, 23)]
        # news's event comes before the last shop one: once that is printed, news's
        # would have been too.
        store.record_events([Event("click", "u1", "2026-11-08T10:00:00Z", url="https://x/a")])
        store.record_events([Event("click", "u2", "2026-11-08T10:00:01Z", url="https://x/news")])
        time.sleep(0.3)
        store.record_events([Event("click", "u3", "2026-11-08T10:00:02Z", url="https://x/b")])
        later = [json.loads(follow.stdout.readline())["url"] for _ in range(2)]
        assert later == ["https://x/a", "https://x/b"]
    finally:
        follow.send_signal(signal.SIGINT)
        out, err = follow.communicate(timeout=30)
    assert follow.returncode == 0, err
    assert out == "" and "Traceback" not in err


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
