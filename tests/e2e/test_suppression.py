"""The suppression list end to end: Postfix bounces a message (the sink refuses the
recipient with 550 5.1.1), the DSN comes back through the bounce processor, and the
next message of that login to that recipient is refused at RCPT by our milter with the
reason, while its other recipients are delivered; `smtpeter suppressions remove`
and the login's policy off let it through again."""

from __future__ import annotations

import json
import re
import smtplib
import subprocess
import sys

import pytest

from smtpeter.local.stack import LocalStack
from tests.e2e.conftest import MakeLogin
from tests.e2e.smtp import connect, find_delivered, marker, send, simple, with_marker
from tests.e2e.test_bounces import wait_events

pytestmark = pytest.mark.e2e


def smtpeter(stack: LocalStack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "smtpeter", "--config", str(stack.config_file), *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def send_to(
    stack: LocalStack, user: str, password: str, recipients: list[str]
) -> tuple[str, dict[str, tuple[int, bytes]]]:
    """One message over STARTTLS + AUTH; its marker and the recipients Postfix refused
    (address: (code, reply))."""
    mark = marker()
    with connect(stack, stack.ports.submission) as client:
        client.user, client.password = user, password
        client.auth("PLAIN", client.auth_plain, initial_response_ok=True)
        try:
            refused = client.sendmail("shop@example.com", recipients, with_marker(simple(), mark))
        except smtplib.SMTPRecipientsRefused as e:  # all of them
            refused = e.recipients
    return mark, refused


def test_a_hard_bounced_recipient_is_refused_at_rcpt_until_removed(
    stack: LocalStack, make_login: MakeLogin
) -> None:
    user, password = make_login(trackbounces=True)
    gone = f"reject-user-{user}@example.org"
    send(stack, user, password, simple("first"), sender="owner@example.com", recipients=(gone,))
    [bounce] = wait_events(stack, "--login", user, "--type", "bounce")
    assert bounce["recipient"] == gone

    listed = smtpeter(stack, "suppressions", "list", "--login", user, "--json")
    assert listed.returncode == 0, listed.stderr
    [entry] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (entry["address"], entry["reason"], entry["status"]) == (gone, "user-unknown", "5.1.1")

    other = f"ok-{user}@example.org"
    mark, refused = send_to(stack, user, password, [gone, other])
    assert list(refused) == [gone]
    code, reply = refused[gone]
    assert code == 550
    assert re.fullmatch(
        rf"5\.1\.1 <{re.escape(gone)}>: suppressed for login {re.escape(user)} after a hard"
        r" bounce \(5\.1\.1 user unknown\) on \d{4}-\d\d-\d\d",
        reply.decode(),
    ), reply
    delivered = find_delivered(stack, mark)
    assert f"Delivered-To: {other}".encode() in delivered

    # Another login still mails the address; this one does once it is taken off.
    user2, password2 = make_login()
    assert send_to(stack, user2, password2, [gone])[1] == {}
    removed = smtpeter(stack, "suppressions", "remove", gone, "--login", user)
    assert removed.returncode == 0, removed.stderr
    assert send_to(stack, user, password, [gone])[1] == {}


def test_a_login_with_the_policy_off_sends_to_its_suppressed_recipients(
    stack: LocalStack, make_login: MakeLogin
) -> None:
    user, password = make_login()
    address = f"ann-{user}@example.org"
    assert smtpeter(stack, "suppressions", "add", address, "--login", user).returncode == 0
    _, refused = send_to(stack, user, password, [address])
    assert refused[address][0] == 550
    assert smtpeter(stack, "login", "set", user, "--suppression", "off").returncode == 0
    mark, refused = send_to(stack, user, password, [address])
    assert refused == {}
    find_delivered(stack, mark)
