"""x-smtpeter-tags and x-smtpeter-metadata: validated at the end of headers (a 550
naming the header and what is wrong), stripped like every instruction header, stored
with the message and carried on each of its events. The milter through pymilter's
TestCtx, a real SQLite store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import Milter
import pytest

from smtpeter import config as configmod
from smtpeter.events import Event
from smtpeter.relay.headers import HeaderError, parse_metadata, parse_tags
from smtpeter.relay.milter import RelayContext
from smtpeter.store import MessageRecord, Store, open_store
from tests.unit.test_milter_testctx import delivered_headers, feed, message
from tests.unit.test_milter_testctx import relay as relay


def test_tags_and_metadata_are_stored_and_carried_on_every_event(
    relay: RelayContext, tmp_path: Path
) -> None:
    """The tags (several headers add up, duplicates once) and the metadata go with the
    message and with its events, in `smtpeter events --json` too; the headers do not
    reach the recipient."""
    rc, ctx = feed(
        message(
            "X-SMTPeter-Tags: newsletter, 2026-12",
            "x-smtpeter-tags: newsletter,vip",
            'X-SMTPeter-Metadata: {"customer": "42", "plan": "gr\u00fcn"}',
        ),
        login="plain",
    )
    assert rc == Milter.ACCEPT
    assert not [h for h in delivered_headers(ctx) if h.startswith("x-smtpeter")]
    [record] = relay.store.messages(queue_id="4F3A21B0C9")
    assert record.tags == ("newsletter", "2026-12", "vip")
    assert record.metadata == {"customer": "42", "plan": "gr\u00fcn"}
    assert record.uid is not None
    relay.store.record_events([Event("open", record.uid, "2026-12-01T10:00:00.000000Z")])
    [event] = relay.store.events(message=record.uid)
    assert (event.tags, event.metadata) == (record.tags, record.metadata)
    conf = tmp_path / "c.yaml"
    conf.write_text(f"store:\n  sqlite_path: {relay.store.path}\n")
    out = subprocess.run(
        [sys.executable, "-m", "smtpeter", "--config", str(conf), "events", "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    [line] = out.stdout.splitlines()
    shown = json.loads(line)
    assert shown["tags"] == ["newsletter", "2026-12", "vip"]
    assert shown["metadata"] == {"customer": "42", "plan": "gr\u00fcn"}


def test_a_message_without_them_has_none(relay: RelayContext) -> None:
    """No header: no tags, no metadata (and events of older messages read the same)."""
    assert feed(message(), login="plain")[0] == Milter.ACCEPT
    [record] = relay.store.messages(queue_id="4F3A21B0C9")
    assert (record.tags, record.metadata) == ((), {})


@pytest.mark.parametrize(
    ("header", "says"),
    [
        ("X-SMTPeter-Tags: news letter", 'invalid tag "news letter" (no white space or ";"'),
        ("X-SMTPeter-Tags: a;b", 'invalid tag "a;b"'),
        ("X-SMTPeter-Tags: " + "x" * 65, "at most 64 characters"),
        ("X-SMTPeter-Tags: " + ",".join(f"t{i}" for i in range(21)), "21 tags (at most 20)"),
        ("X-SMTPeter-Metadata: {customer: 42}", "invalid JSON"),
        ('X-SMTPeter-Metadata: ["a"]', "expected a JSON object of string values"),
        ('X-SMTPeter-Metadata: {"customer": 42}', 'value of "customer" is not a string'),
        ('X-SMTPeter-Metadata: {"": "x"}', "keys are 1 to 64 characters"),
        ('X-SMTPeter-Metadata: {"k": "' + "v" * 2100 + '"}', "longer than 2048 bytes"),
    ],
    ids=["space", "semicolon", "long-tag", "too-many", "bad-json", "array", "number",
         "empty-key", "too-big"],
)  # fmt: skip
def test_an_invalid_value_is_a_550_naming_the_header(
    relay: RelayContext, header: str, says: str
) -> None:
    """The sender learns at end of data which header is wrong and why, before the body."""
    rc, ctx = feed(message(header), login="plain")
    assert rc == Milter.REJECT
    assert ctx._reply is not None
    code, xcode, text = ctx._reply
    assert (code, xcode) == ("550", "5.6.0")
    assert text.startswith(header.split(":")[0] + ": ") and says in text
    assert relay.store.messages(queue_id="4F3A21B0C9") == []


def test_two_metadata_headers_are_refused_and_folding_is_undone() -> None:
    """One JSON object a message; a folded header value reads as one line."""
    with pytest.raises(HeaderError, match="repeated header"):
        parse_metadata([("X-SMTPeter-Metadata", "{}"), ("x-smtpeter-metadata", "{}")])
    assert parse_metadata([("X-SMTPeter-Metadata", '{"a":\r\n "b"}')]) == {"a": "b"}
    assert parse_tags([("X-SMTPeter-Tags", "a,\r\n b, ,c")]) == ("a", "b", "c")


def tagged(store: Store, uid: str, login: str, day: str, tags: tuple[str, ...]) -> None:
    store.record_message(
        MessageRecord(
            queue_id=f"Q{uid}", message_id=f"<{uid}@test>", login=login,
            envelope_sender="s@example.com", recipients=("r@example.org",), features=(),
            size_before=1, size_after=1, created_at=f"{day}T10:00:00.000000Z", uid=uid,
            tags=tags,
        )
    )  # fmt: skip


def test_events_and_stats_by_tag(tmp_path: Path) -> None:
    """--tag: only the events and the per-day counts of the messages with that tag
    (per login and day, the counters the other stats give); retention drops a pruned
    message's tags with it."""
    store = open_store(configmod.parse({"store": {"sqlite_path": str(tmp_path / "s.db")}},
                                       "t").store)  # fmt: skip
    tagged(store, "m1", "shop", "2026-11-01", ("newsletter", "2026-11"))
    tagged(store, "m2", "shop", "2026-11-02", ("newsletter",))
    tagged(store, "m3", "shop", "2026-11-02", ("receipt",))
    tagged(store, "m4", "news", "2026-11-02", ())
    store.record_events(
        [Event("open", "m1", "2026-11-03T10:00:00.000000Z"),
         Event("click", "m2", "2026-11-03T10:00:01.000000Z"),
         Event("open", "m3", "2026-11-03T10:00:02.000000Z"),
         Event("bounce", "m2", "2026-11-03T10:00:03.000000Z", recipient="r@example.org",
               detail={"kind": "hard", "reason": "user-unknown"}),
         Event("open", "m4", "2026-11-03T10:00:04.000000Z"),
         Event("delivered", "m1", "2026-11-03T10:00:05.000000Z", recipient="r@example.org"),
         Event("deferred", "m2", "2026-11-03T10:00:06.000000Z", recipient="r@example.org"),
         Event("delivered", "m3", "2026-11-03T10:00:07.000000Z", recipient="r@example.org")]
    )  # fmt: skip
    newest_first = [(e.message_uid, e.type) for e in store.events(tag="newsletter")]
    assert newest_first == [
        ("m2", "deferred"), ("m1", "delivered"), ("m2", "bounce"), ("m2", "click"), ("m1", "open")
    ]  # fmt: skip
    assert [e.message_uid for e in store.events(tag="newsletter", limit=1, before=10**9)] == ["m2"]
    assert store.events(tag="nothing") == []
    assert store.stats(tag="newsletter") == [
        {"login": "shop", "day": "2026-11-01", "messages": 1, "unique_opens": 1,
         "unique_clicks": 0, "bounces": 0, "delivered": 1, "deferred": 0},
        {"login": "shop", "day": "2026-11-02", "messages": 1, "unique_opens": 0,
         "unique_clicks": 1, "bounces": 1, "delivered": 0, "deferred": 1},
    ]  # fmt: skip
    assert [r["day"] for r in store.stats(tag="newsletter", since="2026-11-02T00:00:00Z")] == [
        "2026-11-02"
    ]
    assert [r["reason"] for r in store.bounce_reasons(tag="newsletter")] == ["user-unknown"]
    assert store.bounce_reasons(tag="receipt") == []
    while store.prune_step("2026-11-02T00:00:00.000000Z", batch=10):
        pass
    assert [r["day"] for r in store.stats(tag="newsletter")] == ["2026-11-02"]
    assert [e.message_uid for e in store.events(tag="2026-11")] == []


def test_the_commands_take_tag(tmp_path: Path) -> None:
    """`smtpeter events --tag` and `smtpeter stats --tag`, as a sysadmin runs them; a
    full page names the next one with the tag in it."""
    db = tmp_path / "s.db"
    conf = tmp_path / "c.yaml"
    conf.write_text(f"store:\n  sqlite_path: {db}\n")
    store = open_store(configmod.parse({"store": {"sqlite_path": str(db)}}, "t").store)
    tagged(store, "m1", "shop", "2026-11-01", ("newsletter",))
    tagged(store, "m2", "shop", "2026-11-01", ("receipt",))
    store.record_events([Event("open", u, "2026-11-03T10:00:00.000000Z") for u in ("m1", "m2")])
    store.record_events([Event("click", "m1", "2026-11-03T11:00:00.000000Z", url="https://x/")])
    base = [sys.executable, "-m", "smtpeter", "--config", str(conf)]
    ev = subprocess.run([*base, "events", "--json", "--tag", "newsletter", "--limit", "1"],
                        capture_output=True, text=True, timeout=60)  # fmt: skip
    assert ev.returncode == 0, ev.stderr
    assert [json.loads(line)["type"] for line in ev.stdout.splitlines()] == ["click"]
    assert ev.stderr.startswith("more: ") and "--tag newsletter" in ev.stderr, ev.stderr
    assert ev.stderr.rstrip().endswith("--before 3"), ev.stderr
    st = subprocess.run([*base, "stats", "--json", "--tag", "receipt"], capture_output=True,
                        text=True, timeout=60)  # fmt: skip
    assert [json.loads(line)["unique_opens"] for line in st.stdout.splitlines()] == [1]


def test_the_limits_themselves_are_allowed() -> None:
    """Exactly 20 tags of exactly 64 characters, and metadata of exactly 2048 bytes with
    a key of exactly 64 characters, are accepted: the limits are "at most"."""
    tags = [f"{i:02d}" + "t" * 62 for i in range(20)]
    assert parse_tags([("X-SMTPeter-Tags", ",".join(tags))]) == tuple(tags)
    key = "k" * 64
    padding = 2048 - len(json.dumps({key: ""}))
    exact = json.dumps({key: "v" * padding})
    assert len(exact.encode()) == 2048
    assert parse_metadata([("X-SMTPeter-Metadata", exact)]) == {key: "v" * padding}


@pytest.mark.parametrize(
    ("header", "value", "message"),
    [
        ("X-SMTPeter-Metadata", '["a"]',
         "X-SMTPeter-Metadata: expected a JSON object of string values"),
        # A JSON error long enough to be cut at 80 characters (77 and "...").
        ("X-SMTPeter-Metadata", "{" + " " * 1990 + "x",
         "X-SMTPeter-Metadata: invalid JSON (Expecting property name enclosed in double"
         " quotes: line 1 column 1992 (char 1...)"),
        ("X-SMTPeter-Tags", "ok, " + "x" * 30 + " y",
         'X-SMTPeter-Tags: invalid tag "' + "x" * 21 + '..." (no white space or ";", at most'
         " 64 characters)"),
    ],
    ids=["not-an-object", "long-json-error", "long-bad-tag"],
)  # fmt: skip
def test_the_error_texts_in_full(header: str, value: str, message: str) -> None:
    """What the sender reads after 550 5.6.0, word for word, with long values cut."""
    parse = parse_metadata if header.endswith("Metadata") else parse_tags
    with pytest.raises(HeaderError) as err:
        parse([(header, value)])
    assert str(err.value) == message


def test_a_repeated_metadata_header_names_the_first_copy() -> None:
    """Two metadata headers: the error names the header as the sender wrote it first."""
    with pytest.raises(HeaderError) as err:
        parse_metadata([("X-SMTPeter-Metadata", "{}"), ("x-smtpeter-metadata", "{}")])
    assert str(err.value) == "X-SMTPeter-Metadata: repeated header (give one JSON object)"
