"""SMTPeter's four listeners on the relay stack: 25, 587, 465 (implicit TLS) and
2525 behave the same for API clients; port 25 is also the bounce domain's MX, in
plaintext or over STARTTLS; no listener relays for anyone unauthenticated."""

from __future__ import annotations

import base64
import smtplib
import socket
import ssl

import pytest

from smtpeter.local.stack import BOUNCE_DOMAIN, LocalStack
from smtpeter.store import Store
from tests.e2e.conftest import MakeLogin
from tests.e2e.openrelay import hostile_recipients, try_recipients
from tests.e2e.smtp import connect, find_delivered, marker, parse, send, simple

pytestmark = pytest.mark.e2e

LISTENERS = ["25", "587", "465", "2525"]
STYLED = "<html><head><style>p { color: #ff0000; }</style></head><body><p>x</p></body></html>"


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
@pytest.mark.parametrize("listener", LISTENERS)
def test_every_listener_applies_features_and_strips_headers(
    stack: LocalStack, make_login: MakeLogin, listener: str, mechanism: str
) -> None:
    user, password = make_login(inlinecss=True)
    raw = simple("via " + listener, html=STYLED, X_SMTPeter_TrackOpens="false")
    port = stack.ports.listener(listener)
    mark = send(stack, user, password, raw, port=port, mechanism=mechanism)
    data = find_delivered(stack, mark)
    assert b"x-smtpeter" not in data.lower()
    html = parse(data).get_body(preferencelist=("html",))
    assert html is not None and 'style="color: #ff0000' in str(html.get_content())


@pytest.mark.parametrize("listener", ["25", "587", "2525"])
def test_auth_is_offered_only_after_starttls(stack: LocalStack, listener: str) -> None:
    with connect(stack, stack.ports.listener(listener), starttls=False) as client:
        assert client.has_extn("starttls")
        assert not client.has_extn("auth"), "AUTH must not be offered before STARTTLS"
        code, reply = client.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0a\0b").decode())
        if listener == "25":
            # The bounce MX allows plaintext sessions; AUTH is simply not there.
            assert code == 503, reply
        else:
            assert code == 530 and b"STARTTLS" in reply


def test_465_speaks_tls_from_the_first_byte(stack: LocalStack) -> None:
    with socket.create_connection(("127.0.0.1", stack.ports.submissions), timeout=10) as raw:
        raw.settimeout(2)
        # A plaintext client gets no greeting: the server waits for a TLS handshake.
        with pytest.raises(TimeoutError):
            raw.recv(100)
    with connect(stack, stack.ports.submissions) as client:
        assert client.has_extn("auth") and not client.has_extn("starttls")


@pytest.mark.parametrize("listener", ["587", "465", "2525"])
def test_submission_listeners_refuse_mail_without_auth_at_mail(
    stack: LocalStack, listener: str
) -> None:
    with connect(stack, stack.ports.listener(listener)) as client:
        code, reply = client.mail("sender@example.com")
        assert (code, reply) == (530, b"5.7.0 <sender@example.com>: Sender address rejected: "
                                      b"Authentication required")  # fmt: skip
    if listener != "465":
        # And without TLS first, nothing at all.
        with connect(stack, stack.ports.listener(listener), starttls=False) as client:
            code, reply = client.mail("sender@example.com")
            assert code == 530 and b"STARTTLS" in reply


@pytest.mark.parametrize("listener", LISTENERS)
def test_wrong_password_is_535_on_every_listener(
    stack: LocalStack, make_login: MakeLogin, listener: str
) -> None:
    user, password = make_login()
    with (
        connect(stack, stack.ports.listener(listener)) as client,
        pytest.raises(smtplib.SMTPAuthenticationError) as err,
    ):
        client.login(user, password + "x")
    assert err.value.smtp_code == 535


@pytest.mark.parametrize("tls", [False, True])
def test_port_25_takes_a_dsn_from_an_mta_without_tls(
    stack: LocalStack, make_login: MakeLogin, store: Store, tls: bool
) -> None:
    """RFC 3207 section 4: a publicly referenced MX must not require STARTTLS. A
    remote MTA that has no TLS still returns its bounce, and it is processed."""
    from tests.e2e.test_bounces import DSN, message_uid, return_path_for, wait_events

    user, password = make_login(trackbounces=True)
    mark = send(
        stack, user, password, simple("plaintext dsn"), sender="owner@example.com",
        recipients=("gone@example.org",),
    )  # fmt: skip
    return_path = return_path_for(stack, store, message_uid(store, mark))
    with connect(stack, stack.ports.smtp, starttls=tls) as client:
        assert client.has_extn("auth") is tls  # AUTH still only after STARTTLS
        assert client.mail("<>")[0] == 250
        assert client.rcpt(return_path)[0] == 250
        assert client.data(DSN)[0] == 250
    [event] = wait_events(stack, "--login", user, "--type", "bounce")
    assert event["recipient"] == "gone@example.org"
    assert event["message_id"] == f"<{mark}@test.example>"


@pytest.mark.parametrize("listener", LISTENERS)
def test_no_listener_is_an_open_relay(
    stack: LocalStack, make_login: MakeLogin, listener: str
) -> None:
    port = stack.ports.listener(listener)
    hostile = hostile_recipients(BOUNCE_DOMAIN)
    user, password = make_login()
    attempts = []
    for starttls in [False, True] if listener != "465" else [True]:

        def session(starttls: bool = starttls) -> smtplib.SMTP:
            return connect(stack, port, starttls=starttls)

        for sender in ("<attacker@evil.example>", "<>"):
            attempts += try_recipients(session, hostile, sender=sender)
        # Credentials the listener must refuse (a name that is no login of ours).
        attempts += try_recipients(session, hostile, login=(f"{user}-not", password))
    accepted = [a for a in attempts if a.accepted]
    assert accepted == [], accepted
    # Below the bounce domain in particular: a 5xx at RCPT on port 25.
    if listener == "25":
        with connect(stack, port, starttls=False) as client:
            client.mail("<>")
            code, reply = client.rcpt(f"b+x@sub.{BOUNCE_DOMAIN}")
            assert code == 530, reply
    # Absence, proven without a sleep: a message sent after the battery has arrived.
    find_delivered(stack, send(stack, user, password, simple("after the battery"), port=port))
    relayed = [p for p in stack.delivered() if b"relay test" in p.read_bytes()]
    assert relayed == []


def test_locally_submitted_mail_is_stripped(stack: LocalStack) -> None:
    """sendmail(1) and pickup skip smtpd: our milter runs there too (non_smtpd_milters)."""
    import subprocess

    mark = marker()
    raw = (
        f"From: cron@example.com\nTo: rcpt@example.org\nSubject: local {mark}\n"
        f"Message-ID: <{mark}@test.example>\nX-SMTPeter-TrackOpens: true\n"
        "x-smtpeter-anything: secret\n\nlocal body\n"
    )
    sent = subprocess.run(
        ["sendmail", "-C", str(stack.postfix_dir), "-i", "-f", "cron@example.com",
         "rcpt@example.org"],
        input=raw.encode(), capture_output=True, timeout=60,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    data = find_delivered(stack, mark)
    assert b"x-smtpeter" not in data.lower() and b"local body" in data


def test_tls_is_really_required_for_submission(stack: LocalStack) -> None:
    # An old or broken client that cannot do TLS 1.2 gets no session at all on 465.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, OSError)):
        smtplib.SMTP_SSL("127.0.0.1", stack.ports.submissions, timeout=10, context=context)
