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

from smtpeter.events import Event
from smtpeter.relay.headers import HeaderError, parse_metadata, parse_tags
from smtpeter.relay.milter import RelayContext
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
