"""The existing-MX fixture (tests/e2e/mx.py) works as the mail server it imitates:
submission with Dovecot SASL over STARTTLS, both milters and DKIM signing on the way
out, LMTP delivery into the hosted mailboxes, and no open relay."""

from __future__ import annotations

import re
import smtplib
import ssl
import uuid
from collections.abc import Iterator
from email.message import EmailMessage

import pytest

from tests.e2e.mx import USERS, ExistingMX, running_mx

pytestmark = pytest.mark.e2e

ALICE = "alice@hosted.example"
BOB = "bob@hosted.example"
OUTSIDE = "someone@example.org"


@pytest.fixture(scope="module")
def mx() -> Iterator[ExistingMX]:
    with running_mx() as server:
        yield server


def _message(sender: str, rcpt: str) -> tuple[str, bytes]:
    mark = uuid.uuid4().hex
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = rcpt
    msg["Subject"] = "existing mx"
    msg["Message-ID"] = f"<{mark}@test.example>"
    msg.set_content("hello from the test\n")
    return mark, msg.as_bytes()


def _client(mx: ExistingMX, port: int, *, starttls: bool) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", port, timeout=30)
    client.ehlo("client.example.net")
    if starttls:
        client.starttls(context=ssl.create_default_context(cafile=str(mx.cert_file)))
        client.ehlo("client.example.net")
    return client


def test_submission_with_dovecot_password_is_signed_and_relayed(mx: ExistingMX) -> None:
    mark, raw = _message(ALICE, OUTSIDE)
    with _client(mx, mx.submission_port, starttls=True) as client:
        client.login(ALICE, USERS[ALICE])
        client.sendmail(ALICE, [OUTSIDE], raw)
    data = mx.wait_for(mx.sunk, mark)
    assert re.search(rb"^X-Second-Milter: seen$", data, re.M), data
    assert re.search(rb"^DKIM-Signature: .*\bd=hosted\.example;", data, re.M | re.S), data
    assert mx.dkim_verify(data)
    assert b"with ESMTPSA" in data


def test_submission_wrong_password_is_535(mx: ExistingMX) -> None:
    with _client(mx, mx.submission_port, starttls=True) as client:
        client.user, client.password = ALICE, "not-her-password"
        # One mechanism: login() would try LOGIN after PLAIN, paying Dovecot's
        # failure delay twice.
        with pytest.raises(smtplib.SMTPAuthenticationError) as err:
            client.auth("PLAIN", client.auth_plain, initial_response_ok=True)
    assert err.value.smtp_code == 535, err.value


def test_inbound_mail_is_delivered_by_lmtp(mx: ExistingMX) -> None:
    mark, raw = _message("sender@example.net", BOB)
    with _client(mx, mx.smtp_port, starttls=False) as client:
        assert not client.has_extn("auth"), "no SASL on port 25"
        client.sendmail("sender@example.net", [BOB], raw)
    data = mx.wait_for(lambda: mx.mailbox("bob"), mark)
    assert b"with LMTP" in data
    assert re.search(rb"^X-Second-Milter: seen$", data, re.M)
    assert b"DKIM-Signature:" not in data, "outside mail must not be signed"
    assert not any(mark.encode() in p.read_bytes() for p in mx.mailbox("alice"))


def test_port_25_is_not_an_open_relay(mx: ExistingMX) -> None:
    _, raw = _message("sender@example.net", OUTSIDE)
    with (
        _client(mx, mx.smtp_port, starttls=True) as client,
        pytest.raises(smtplib.SMTPRecipientsRefused) as err,
    ):
        client.sendmail("sender@example.net", [OUTSIDE], raw)
    code, reply = err.value.recipients[OUTSIDE]
    assert code == 454 and b"Relay access denied" in reply, (code, reply)


def test_submission_without_auth_is_refused(mx: ExistingMX) -> None:
    _, raw = _message(ALICE, OUTSIDE)
    with _client(mx, mx.submission_port, starttls=False) as client:
        assert not client.has_extn("auth"), "AUTH only after STARTTLS"
        code, reply = client.mail(ALICE)
        assert code == 530 and b"STARTTLS" in reply, (code, reply)
    # smtpd_delay_reject (the default) refuses at RCPT, not at MAIL.
    with (
        _client(mx, mx.submission_port, starttls=True) as client,
        pytest.raises(smtplib.SMTPRecipientsRefused) as err,
    ):
        client.sendmail(ALICE, [OUTSIDE], raw)
    code, reply = err.value.recipients[OUTSIDE]
    assert code == 554 and b"Access denied" in reply, (code, reply)


def test_config_is_what_setup_will_edit(mx: ExistingMX) -> None:
    assert mx.postconf("-h", "smtpd_milters").strip() == (
        f"{mx.second_milter}, {mx.opendkim_milter}"
    )
    assert mx.postconf("-P", f"{mx.submission_service}/syslog_name").strip() == (
        f"{mx.submission_service}/syslog_name = postfix/submission"
    )
    assert "smtpd_sasl_auth_enable" not in mx.postconf("-P", f"{mx.smtp_service}/")
    mx.reload()
    assert mx.postfix("status", check=False).returncode == 0
