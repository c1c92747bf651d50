"""Delivery results end to end: a message to two recipients through the real Postfix,
one taken by the sink and one deferred by it (450), and `smtpeter deliveries` (part
of the local stack) reading Postfix's own log records a delivered event with the
sink's reply and a numbered deferred event, each once."""

from __future__ import annotations

import pytest

from smtpeter.local.stack import LocalStack
from tests.e2e.conftest import MakeLogin
from tests.e2e.smtp import find_delivered, marker, send, simple
from tests.e2e.test_bounces import wait_events

pytestmark = pytest.mark.e2e


def test_each_recipient_gets_its_delivery_result(stack: LocalStack, make_login: MakeLogin) -> None:
    """The delivered recipient gets `delivered` (2.0.0, the sink as relay, its reply);
    the one the sink defers gets `deferred` with attempt 1 and Postfix's 4.x.x; both
    under the message's login, read with `smtpeter events --type`."""
    user, password = make_login()
    tag = marker()
    ok, later = f"dl-{tag}@example.org", f"defer-{tag}@example.org"
    mark = send(stack, user, password, simple(), recipients=(ok, later))
    find_delivered(stack, mark)
    delivered = [e for e in wait_events(stack, "--type", "delivered", "--login", user)
                 if e["recipient"] == ok]  # fmt: skip
    assert len(delivered) == 1, delivered
    detail = delivered[0]["detail"]
    assert isinstance(detail, dict)
    assert detail["dsn"] == "2.0.0" and detail["postfix_status"] == "sent"
    assert detail["relay"].endswith(f":{stack.ports.sink}"), detail
    assert detail["reply"].startswith("250"), detail
    deferred = [e for e in wait_events(stack, "--type", "deferred", "--login", user)
                if e["recipient"] == later]  # fmt: skip
    assert deferred, "no deferred event"
    first = deferred[-1]["detail"]
    assert isinstance(first, dict)
    assert first["attempt"] == "1" and first["dsn"].startswith("4."), first
    assert "450" in first["reply"], first
    # The same message's events by its Message-ID: each result once.
    both = [e for e in wait_events(stack, "--message", f"<{mark}@test.example>")
            if e["type"] in ("delivered", "deferred")]  # fmt: skip
    assert sorted(str(e["recipient"]) for e in both if e["type"] == "delivered") == [ok]
