"""One-click unsubscribe end to end: a message sent through the real stack with
x-smtpeter-unsubscribe (or a login's --unsubscribe) is delivered with List-Unsubscribe
and List-Unsubscribe-Post; the link from the delivered copy POSTed to the real tracker
(as a mailbox provider does, RFC 8058), or the mailto written to over SMTP (Postfix
pipes it to the bounce processor), records the unsubscribe, and the login's next
message to that recipient is refused at RCPT."""

from __future__ import annotations

import http.client
import json
import re
import urllib.parse

import pytest

from smtpeter.local.stack import BOUNCE_DOMAIN, LocalStack
from tests.e2e.conftest import MakeLogin
from tests.e2e.smtp import connect, events, find_delivered, parse, send, simple
from tests.e2e.test_bounces import wait_piped
from tests.e2e.test_suppression import send_to, smtpeter

pytestmark = pytest.mark.e2e


def request(url: str, method: str, body: bytes | None = None) -> tuple[int, bytes]:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    headers = {"User-Agent": "smtpeter-e2e/1.0"}
    if body is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    try:
        conn.request(method, parts.path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def unsubscribe_headers(stack: LocalStack, mark: str) -> tuple[str, str]:
    """The delivered copy's https link and mailto address (and its List-Unsubscribe-Post
    checked)."""
    delivered = parse(find_delivered(stack, mark))
    assert delivered.get_all("List-Unsubscribe-Post") == ["List-Unsubscribe=One-Click"]
    [header] = delivered.get_all("List-Unsubscribe") or []
    url, mailto = re.findall(r"<([^>]*)>", str(header))
    assert url.startswith(stack.config().tracker.base_url + "/u/")
    assert mailto.startswith("mailto:unsubscribe+") and mailto.endswith(f"@{BOUNCE_DOMAIN}")
    assert not [n for n in delivered if n.lower().startswith("x-smtpeter-")]
    return url, mailto.removeprefix("mailto:")


def suppressed(stack: LocalStack, user: str) -> list[dict[str, object]]:
    listed = smtpeter(stack, "suppressions", "list", "--login", user, "--json")
    assert listed.returncode == 0, listed.stderr
    return [json.loads(line) for line in listed.stdout.splitlines()]


def assert_refused(stack: LocalStack, user: str, password: str, address: str) -> None:
    _, refused = send_to(stack, user, password, [address])
    assert list(refused) == [address]
    code, reply = refused[address]
    assert code == 550
    assert re.fullmatch(
        rf"5\.7\.1 <{re.escape(address)}>: suppressed for login {re.escape(user)} after the"
        r" recipient unsubscribed on \d{4}-\d\d-\d\d",
        reply.decode(),
    ), reply


def test_one_click_unsubscribe_from_the_delivered_message(
    stack: LocalStack, make_login: MakeLogin
) -> None:
    """The header gives the delivered message both RFC 8058 headers; a GET of its link
    (a link scanner) changes nothing; the provider's one-click POST records the
    unsubscribe, puts the recipient on the login's suppression list, and the next
    message of that login to them is refused at RCPT."""
    user, password = make_login()
    ann = f"ann-{user}@example.org"
    mark = send(
        stack, user, password, simple("news", X_SMTPeter_Unsubscribe="true"), recipients=(ann,)
    )
    url, _ = unsubscribe_headers(stack, mark)

    status, page = request(url, "GET")
    assert status == 200 and b"<form method=post>" in page

    status, _ = request(url, "POST", b"List-Unsubscribe=One-Click")
    assert status == 200
    found = events(stack, "--login", user, "--type", "unsubscribe")
    assert len(found) == 1, found  # the GET before it recorded nothing
    [event] = found
    assert event["recipient"] == ann
    assert event["detail"] == {"how": "one-click"}
    assert event["message_id"] == f"<{mark}@test.example>"
    [entry] = suppressed(stack, user)
    assert (entry["address"], entry["reason"]) == (ann, "unsubscribe")

    assert_refused(stack, user, password, ann)
    # A second POST (a retry) adds nothing.
    assert request(url, "POST", b"List-Unsubscribe=One-Click")[0] == 200
    assert len(events(stack, "--login", user, "--type", "unsubscribe")) == 1


def test_a_tampered_link_records_nothing(stack: LocalStack, make_login: MakeLogin) -> None:
    """A tampered link gets a 404 on GET and POST and unsubscribes no one; the genuine
    POST after it is the only unsubscribe recorded."""
    user, password = make_login(unsubscribe=True)
    ann = f"ann-{user}@example.org"
    url, _ = unsubscribe_headers(
        stack, send(stack, user, password, simple("news"), recipients=(ann,))
    )
    prefix, token = url.rsplit("/", 1)
    kid, payload, mac = token.split(".")
    for bad in (f"{prefix}/{kid}.{payload}.{mac[::-1]}", f"{prefix}/{kid}.{payload[:-2]}.{mac}"):
        assert request(bad, "GET")[0] == 404
        assert request(bad, "POST", b"List-Unsubscribe=One-Click")[0] == 404
    assert suppressed(stack, user) == []
    assert request(url, "POST", b"List-Unsubscribe=One-Click")[0] == 200
    assert len(events(stack, "--login", user, "--type", "unsubscribe")) == 1


def test_mail_to_the_mailto_unsubscribes_through_the_bounce_processor(
    stack: LocalStack, make_login: MakeLogin
) -> None:
    """A mail program without one-click writes to the mailto: Postfix pipes it to the
    bounce processor, which records the unsubscribe (how=mailto) and suppresses the
    recipient, and does not forward it to the sender as a bounce."""
    user, password = make_login(unsubscribe=True)
    bob = f"bob-{user}@example.org"
    owner = f"owner-{user}@example.com"
    mark = send(stack, user, password, simple("news"), sender=owner, recipients=(bob,))
    _, mailto = unsubscribe_headers(stack, mark)

    with connect(stack, stack.ports.smtp) as client:
        assert client.mail(bob)[0] == 250
        assert client.rcpt(mailto)[0] == 250
        code, reply = client.data(
            f"From: {bob}\r\nTo: {mailto}\r\nSubject: unsubscribe\r\n\r\nunsubscribe\r\n".encode()
        )
        assert code == 250, reply
    queue_id = re.search(rb"queued as (\w+)", reply)
    assert queue_id is not None, reply
    wait_piped(stack, queue_id.group(1).decode())

    [event] = events(stack, "--login", user, "--type", "unsubscribe")
    assert event["recipient"] == bob and event["detail"] == {"how": "mailto"}
    [entry] = suppressed(stack, user)
    assert (entry["address"], entry["reason"]) == (bob, "unsubscribe")
    assert_refused(stack, user, password, bob)
    # Nothing went back to the sender: a later message to them arrives, alone.
    later = send(stack, user, password, simple("marker"), recipients=(owner,))
    find_delivered(stack, later)
    to_owner = [p for p in stack.delivered() if f"Delivered-To: {owner}".encode() in p.read_bytes()]
    assert len(to_owner) == 1, to_owner
