"""stats() on a generated store equals a recount in plain Python of the rows that were
put in: several logins (and messages with none) over several days, every type of
event, events of unknown messages, messages without a uid; with and without the login
and since filters, since also in the middle of a day."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import get_args

import pytest

from smtpeter.events import Event, EventType
from smtpeter.store import MessageRecord, Store
from smtpeter.store.sqlite import SQLiteStore

LOGINS = ("shop", "news", "bank", "club", None)
DAYS = [f"2026-11-{d:02d}" for d in range(1, 9)]
TYPES: tuple[EventType, ...] = get_args(EventType)


def _time(rng: random.Random, day: str) -> str:
    h, m, s, us = rng.randrange(24), rng.randrange(60), rng.randrange(60), rng.randrange(10**6)
    return f"{day}T{h:02d}:{m:02d}:{s:02d}.{us:06d}Z"


@pytest.fixture(scope="module", params=["tail", "indexed"])
def generated(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> tuple[Store, list[MessageRecord], list[Event]]:
    """The events in the order written. "tail": none in message_events (read from the
    tail above the watermark); "indexed": the writers index every 300, and a third of
    the events come before their message (another node's tracker), so they are
    orphans first, then claimed by the message."""
    rng = random.Random(20261117)
    indexed = request.param == "indexed"
    store = SQLiteStore(
        str(tmp_path_factory.mktemp("recount") / "smtpeter.db"), index_lag=300 if indexed else 0
    )
    messages: list[MessageRecord] = []
    events: list[Event] = []
    for i in range(3000):
        login = rng.choices(LOGINS, weights=(8, 4, 2, 1, 1))[0]
        uid = None if rng.random() < 0.03 else f"u{i}"
        m = MessageRecord(
            queue_id=f"Q{i:05X}", message_id=f"<{i}@gen.test>", login=login,
            envelope_sender="s@example.com",
            recipients=tuple(f"r{j}@example.org" for j in range(rng.choice((1, 1, 2, 3)))),
            features=(), size_before=1, size_after=1,
            created_at=_time(rng, rng.choice(DAYS)), uid=uid,
        )  # fmt: skip
        messages.append(m)
        if uid is None:
            continue
        for _ in range(rng.choice((0, 0, 1, 2, 3, 5, 8))):
            t = rng.choice(TYPES)
            events.append(Event(t, uid, _time(rng, rng.choice(DAYS)), recipient="x@example.org"))
    for k in range(200):  # events whose message the store never saw
        events.append(Event(rng.choice(TYPES), f"unknown{k}", _time(rng, rng.choice(DAYS))))
    rng.shuffle(events)
    # Delivery results come only for a message the store has (record_deliveries).
    first = len(events) // 3 if indexed else 0
    delivery = ("delivered", "deferred")
    early = [e for e in events[:first] if e.type not in delivery]
    late = [e for e in events[:first] if e.type in delivery] + events[first:]
    for b in range(0, len(early), 500):
        store.record_events(early[b : b + 500])
    for m in messages:
        store.record_message(m)
    for b in range(0, len(late), 500):
        store.record_events(late[b : b + 500])
    events = early + late
    status = store.upkeep_status()
    assert (status["events_not_indexed"] == len(events)) != indexed, status
    assert len(events) > 5000 and {e.type for e in events} == set(TYPES)
    return store, messages, events


def recount(
    messages: list[MessageRecord], events: list[Event], login: str | None, since: str | None
) -> list[dict[str, object]]:
    by_uid: dict[str, list[Event]] = defaultdict(list)
    for e in events:
        by_uid[e.message_uid].append(e)
    rows: dict[tuple[str, str], dict[str, object]] = {}
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0, 0])
    for m in messages:
        if login is not None and m.login != login:
            continue
        if since is not None and m.created_at < since:
            continue
        key = (m.login or "-", m.created_at[:10])
        mine = by_uid[m.uid] if m.uid is not None else []
        c = counts[key]
        c[0] += 1
        c[1] += any(e.type == "open" for e in mine)
        c[2] += any(e.type == "click" for e in mine)
        c[3] += sum(e.type == "bounce" for e in mine)
        c[4] += sum(e.type == "delivered" for e in mine)
        c[5] += sum(e.type == "deferred" for e in mine)
    for (name, day), c in counts.items():
        rows[(day, name)] = {
            "login": name, "day": day, "messages": c[0],
            "unique_opens": c[1], "unique_clicks": c[2], "bounces": c[3],
            "delivered": c[4], "deferred": c[5],
        }  # fmt: skip
    return [rows[k] for k in sorted(rows)]


@pytest.mark.parametrize("login", [None, "shop", "club", "nobody"])
@pytest.mark.parametrize(
    "since", [None, "2026-11-04", "2026-11-04T13:17:42.5Z", "2026-11-08T23:00:00Z", "2027-01-01"]
)
def test_stats_equal_a_recount(
    generated: tuple[Store, list[MessageRecord], list[Event]], login: str | None, since: str | None
) -> None:
    store, messages, events = generated
    expected = recount(messages, events, login, since)
    assert store.stats(login=login, since=since) == expected
    if login is None and since is None:
        assert len(expected) == 5 * len(DAYS)
        for column in ("bounces", "delivered", "deferred"):
            assert sum(int(str(r[column])) for r in expected) > 100, column


def test_a_partial_first_day_counts_only_its_own_messages_bounces(
    generated: tuple[Store, list[MessageRecord], list[Event]],
) -> None:
    store, messages, events = generated
    since = "2026-11-04T13:17:42.5Z"
    first = [r for r in store.stats(since=since) if r["day"] == "2026-11-04"]
    whole = [r for r in store.stats() if r["day"] == "2026-11-04"]
    assert first == [r for r in recount(messages, events, None, since) if r["day"] == "2026-11-04"]
    assert sum(int(str(r["bounces"])) for r in first) < sum(int(str(r["bounces"])) for r in whole)


@pytest.mark.parametrize("how", ["uid", "message_id", "queue_id"])
def test_events_of_a_message_by_each_of_its_names(
    generated: tuple[Store, list[MessageRecord], list[Event]], how: str
) -> None:
    store, messages, events = generated
    rng = random.Random(how)
    for m in rng.sample([m for m in messages if m.uid is not None], 40):
        value = {"uid": m.uid, "message_id": m.message_id, "queue_id": m.queue_id}[how]
        assert value is not None
        got = [(e.type, e.occurred_at) for e in store.events(message=value)]
        # Newest first: the reverse of the order they were recorded in.
        want = [(e.type, e.occurred_at) for e in reversed(events) if e.message_uid == m.uid]
        assert got == want
        by_type = [e.type for e in store.events(message=value, type="bounce")]
        assert by_type == ["bounce"] * sum(t == "bounce" for t, _ in want)
    assert [e.message_uid for e in store.events(message="unknown3")] == ["unknown3"] * sum(
        e.message_uid == "unknown3" for e in events
    )
