"""Add-on mode on a real existing MX (tests/e2e/mx.py: Postfix with virtual mailboxes
delivered by Dovecot's LMTP, its users on submission through Dovecot's SASL, a
content milter and OpenDKIM). Before and after `smtpeter postfix setup --mode addon`
the MX works as it did; smtpeter logins get their features on the API's own
listeners; with smtpeter stopped the MX still works and only the API defers;
--undo gives the files back byte for byte.

The tests run in order on one MX (module scope): setup, then outage, then undo."""

from __future__ import annotations

import shutil
import smtplib
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from smtpeter import logins
from smtpeter.features import FeatureSet
from smtpeter.local.stack import LocalStack, Ports, free_port
from smtpeter.logins import Login
from smtpeter.store import Store, open_store
from smtpeter.tracker.keys import KeyRing
from tests.e2e.mx import ExistingMX, running_mx
from tests.e2e.openrelay import hostile_recipients, try_recipients

pytestmark = pytest.mark.e2e

ALICE = "alice@hosted.example"
BOB = "bob@hosted.example"
OUTSIDE = "someone@example.org"
BOUNCES = "bounces.hosted.example"
STYLED = "<html><head><style>p { color: #ff0000; }</style></head><body><p>x</p></body></html>"


class Addon:
    """The MX, our daemons beside it, and the API's two listeners' ports."""

    def __init__(self, mx: ExistingMX, ours: LocalStack, store: Store) -> None:
        self.mx, self.ours, self.store = mx, ours, store
        self.api = {"465": free_port(), "2525": free_port()}
        self.before: dict[str, bytes] = {}
        self.login, self.password = "shop", logins.generate_password()

    def setup(self, *args: str) -> subprocess.CompletedProcess[str]:
        listeners = ",".join(f"{p}=127.0.0.1:{port}" for p, port in self.api.items())
        return subprocess.run(
            [sys.executable, "-m", "smtpeter", "--config", str(self.ours.config_file),
             "postfix", "setup", "--postfix-dir", str(self.mx.postfix_dir), *args,
             "--listeners", listeners],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    def files(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in (self.mx.main_cf, self.mx.master_cf)}


@pytest.fixture(scope="module")
def addon() -> Iterator[Addon]:
    with running_mx() as mx:
        root = Path(tempfile.mkdtemp(prefix="smtpeter-addon-"))
        root.chmod(0o755)
        sockets = mx.queue_dir / "smtpeter"
        sockets.mkdir(mode=0o755)
        ours = LocalStack(
            root=root,
            ports=Ports.free(),
            settings={
                "auth": {"socket": str(sockets / "auth.sock"), "failure_delay": 0.3},
                "milter": {"socket": f"unix:{sockets / 'milter.sock'}", "workers": 1},
                "bounces": {"domain": BOUNCES},
            },
        )
        try:
            ours.prepare()
            for component in ("authd", "milter"):
                ours.start_component(component)
            store = open_store(ours.config().store)
            a = Addon(mx, ours, store)
            store.create_login(
                Login(a.login, logins.hash_password(a.password), features=FeatureSet(
                    inlinecss=True, trackbounces=True))
            )  # fmt: skip
            yield a
        finally:
            ours.stop()
            shutil.rmtree(root, ignore_errors=True)


def tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def session(port: int, *, starttls: bool = True, implicit: bool = False) -> smtplib.SMTP:
    if implicit:
        client: smtplib.SMTP = smtplib.SMTP_SSL("127.0.0.1", port, timeout=30, context=tls())
    else:
        client = smtplib.SMTP("127.0.0.1", port, timeout=30)
        if starttls:
            client.starttls(context=tls())
    client.ehlo("client.example.net")
    return client


def message(sender: str, to: str, *, html: bool = False) -> tuple[str, bytes]:
    mark = uuid.uuid4().hex
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, f"test {mark}"
    msg["Message-ID"] = f"<{mark}@test.example>"
    msg["X-SMTPeter-InlineCSS"] = "true"
    msg["x-smtpeter-tags"] = "must-not-arrive"
    if html:
        msg.set_content("plain\n")
        msg.add_alternative(STYLED, subtype="html")
    else:
        msg.set_content(f"body {mark}\n")
    return mark, bytes(msg)


def as_mailbox_user(a: Addon, to: str = OUTSIDE) -> tuple[str, bytes]:
    """Alice submits on the MX's own submission port with her Dovecot password."""
    mark, raw = message(ALICE, to, html=True)
    with session(a.mx.submission_port) as client:
        client.login(ALICE, a.mx.users[ALICE])
        client.sendmail(ALICE, [to], raw)
    return mark, a.mx.wait_for(a.mx.sunk if to == OUTSIDE else lambda: a.mx.mailbox(to), mark)


def inbound(a: Addon) -> bytes:
    """The outside world delivers to Bob on port 25, in plaintext."""
    mark, raw = message("friend@example.net", BOB)
    with session(a.mx.smtp_port, starttls=False) as client:
        client.sendmail("friend@example.net", [BOB], raw)
    return a.mx.wait_for(lambda: a.mx.mailbox(BOB), mark)


def assert_untouched_mailbox_mail(a: Addon, data: bytes) -> None:
    assert b"X-Second-Milter: seen" in data  # the MX's own milter still runs
    assert b"DKIM-Signature:" in data and a.mx.dkim_verify(data)
    assert b'style="color' not in data  # no feature for a mailbox user


def test_before_setup_the_mx_works(addon: Addon) -> None:
    addon.before = addon.files()
    _, data = as_mailbox_user(addon)
    assert_untouched_mailbox_mail(addon, data)
    assert b"X-SMTPeter-InlineCSS" in data  # no smtpeter yet: nothing strips it
    assert b"friend@example.net" in inbound(addon)


def test_setup_merges_into_the_mx(addon: Addon) -> None:
    dry = addon.setup("--mode", "addon", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert addon.files() == addon.before
    result = addon.setup("--mode", "addon")
    assert result.returncode == 0, result.stderr
    assert "`postfix check` passed" in result.stdout
    services = addon.mx.postconf("-M")
    # The MX's own services are exactly as they were.
    for key in (addon.mx.smtp_service, addon.mx.submission_service):
        before = subprocess.run(
            ["postconf", "-c", str(addon.mx.postfix_dir), "-M", key],
            capture_output=True,
            text=True,
        ).stdout
        assert "smtpeter" not in before
    assert "milter_macro_daemon_name=ORIGINATING" in services
    assert "smtpd_sasl_path=private/auth" in services
    milters = addon.mx.postconf("-h", "smtpd_milters").strip()
    assert milters.endswith(f"{addon.mx.second_milter}, {addon.mx.opendkim_milter}")
    assert milters.startswith("{ unix:smtpeter/milter.sock")


def test_mailbox_user_mail_arrives_as_before_without_smtpeter_headers(addon: Addon) -> None:
    mark, data = as_mailbox_user(addon)
    assert_untouched_mailbox_mail(addon, data)
    assert b"x-smtpeter" not in data.lower()
    # Not the API's mail: not in smtpeter's store.
    assert not [m for m in addon.store.messages(limit=100) if mark in (m.message_id or "")]
    # Mail between mailboxes is delivered by LMTP as before.
    _, local = as_mailbox_user(addon, to=BOB)
    assert b"x-smtpeter" not in local.lower()


def test_inbound_mail_is_delivered_and_stripped(addon: Addon) -> None:
    data = inbound(addon)
    assert b"X-Second-Milter: seen" in data and b"x-smtpeter" not in data.lower()


@pytest.mark.parametrize("listener", ["465", "2525"])
def test_api_logins_get_their_features_signed_after_rewriting(addon: Addon, listener: str) -> None:
    mark, raw = message("shop@hosted.example", OUTSIDE, html=True)
    with session(addon.api[listener], implicit=listener == "465") as client:
        client.login(addon.login, addon.password)
        client.sendmail("shop@hosted.example", [OUTSIDE], raw)
    data = addon.mx.wait_for(addon.mx.sunk, mark)
    assert b"x-smtpeter" not in data.lower()
    assert b'style=3D"color: #ff0000' in data  # inlined (quoted-printable)
    assert b"X-Second-Milter: seen" in data
    # OpenDKIM runs after our milter: the signature covers what recipients get.
    assert addon.mx.dkim_verify(data)
    [record] = [m for m in addon.store.messages(limit=100) if mark in (m.message_id or "")]
    assert record.login == addon.login and "inlinecss" in record.features


def test_mailbox_credentials_do_not_work_on_the_api_listeners(addon: Addon) -> None:
    for listener, port in addon.api.items():
        with (
            session(port, implicit=listener == "465") as client,
            pytest.raises(smtplib.SMTPAuthenticationError) as err,
        ):
            client.login(ALICE, addon.mx.users[ALICE])
        assert err.value.smtp_code == 535


def test_a_bounce_reaches_the_bounce_domain_on_the_mx_in_plaintext(addon: Addon) -> None:
    mark, raw = message(ALICE, OUTSIDE)
    with session(addon.api["2525"]) as client:
        client.login(addon.login, addon.password)
        client.sendmail(ALICE, [OUTSIDE], raw)
    addon.mx.wait_for(addon.mx.sunk, mark)
    [record] = [m for m in addon.store.messages(limit=100) if mark in (m.message_id or "")]
    signer = KeyRing.from_config(addon.store, addon.ours.config().tracker).signer()
    assert record.uid is not None
    return_path = f"b+{signer.sign_return_path(record.uid)}@{BOUNCES}"
    dsn = (
        "From: MAILER-DAEMON@mx.example.org\r\nSubject: Undelivered\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nbounced\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org\r\n"
        f"\r\nFinal-Recipient: rfc822; {OUTSIDE}\r\nAction: failed\r\nStatus: 5.1.1\r\n--b--\r\n"
    )
    with session(addon.mx.smtp_port, starttls=False) as client:
        client.sendmail("<>", [return_path], dsn.encode())
    deadline = time.monotonic() + 30
    bounces: list[object] = []
    while time.monotonic() < deadline and not bounces:
        bounces = [e for e in addon.store.events(message=record.uid) if e.type == "bounce"]
        addon.mx.flush()
        time.sleep(0.3)
    assert bounces, addon.mx.queue()
    # Forwarded to the original sender, a mailbox of the MX, with the null sender.
    forwarded = addon.mx.wait_for(
        lambda: addon.mx.mailbox(ALICE), "Final-Recipient: rfc822; " + OUTSIDE
    )
    assert b"Return-Path: <>" in forwarded
    # The hard bounce put the address on the login's suppression list; taken off
    # again, as an admin would, for the other tests of this MX that mail it.
    entry = addon.store.suppression(addon.login, OUTSIDE)
    assert entry is not None and entry.reason == "user-unknown"
    assert addon.store.unsuppress(addon.login, OUTSIDE)


@pytest.mark.parametrize("where", ["mx-25", "mx-587", "api-465", "api-2525"])
def test_no_listener_relays_for_strangers_or_mailbox_users(addon: Addon, where: str) -> None:
    kind, name = where.split("-")
    if kind == "mx":
        port = addon.mx.smtp_port if name == "25" else addon.mx.submission_port
    else:
        port = addon.api[name]
    implicit = name == "465"
    attempts = []
    for starttls in [True] if implicit or name != "25" else [False, True]:

        def open_session(starttls: bool = starttls) -> smtplib.SMTP:
            return session(port, starttls=starttls, implicit=implicit)

        attempts += try_recipients(open_session, hostile_recipients(BOUNCES))
        if kind == "api":
            # A mailbox user's credentials are refused here and relay nothing.
            attempts += try_recipients(
                open_session, hostile_recipients(BOUNCES), login=(ALICE, addon.mx.users[ALICE])
            )
    assert [a for a in attempts if a.accepted] == []
    # Absence, proven without a sleep: mail sent after the battery has arrived.
    as_mailbox_user(addon)
    assert not [p for p in addon.mx.sunk() if b"relay test" in p.read_bytes()]


def api_attempt(addon: Addon) -> int:
    """Send one message through the API; the reply code it was refused with."""
    mark, raw = message("shop@hosted.example", OUTSIDE)
    try:
        with session(addon.api["2525"]) as client:
            client.login(addon.login, addon.password)
            client.sendmail("shop@hosted.example", [OUTSIDE], raw)
    except smtplib.SMTPResponseException as e:
        code = e.smtp_code
    except smtplib.SMTPRecipientsRefused as e:
        code = e.recipients[OUTSIDE][0]
    else:
        code = 250
    # Absence, proven without a sleep: mail sent after it has arrived.
    inbound(addon)
    assert not [p for p in addon.mx.sunk() if mark.encode() in p.read_bytes()]
    return code


def test_with_smtpeter_stopped_the_mx_works_and_the_api_defers(addon: Addon) -> None:
    try:
        # The auth daemon down: AUTH on the API is a temporary failure.
        addon.ours.stop_component("authd")
        assert api_attempt(addon) == 454
        assert b"friend@example.net" in inbound(addon)
        # The milter down too: the API's listeners defer every session (4xx), the
        # MX's own services do not wait on smtpeter.
        addon.ours.stop_component("milter")
        assert 400 <= api_attempt(addon) < 500
        assert b"friend@example.net" in inbound(addon)
        _, data = as_mailbox_user(addon)
        assert b"X-Second-Milter: seen" in data and addon.mx.dkim_verify(data)
    finally:
        for component in ("authd", "milter"):
            addon.ours.start_component(component)
    assert api_attempt_ok(addon)


def api_attempt_ok(addon: Addon) -> bool:
    mark, raw = message("shop@hosted.example", OUTSIDE)
    with session(addon.api["2525"]) as client:
        client.login(addon.login, addon.password)
        client.sendmail("shop@hosted.example", [OUTSIDE], raw)
    return bool(addon.mx.wait_for(addon.mx.sunk, mark))


def test_undo_restores_the_files_byte_for_byte(addon: Addon) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "smtpeter", "--config", str(addon.ours.config_file), "postfix",
         "setup", "--postfix-dir", str(addon.mx.postfix_dir), "--undo"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert addon.files() == addon.before
    _, data = as_mailbox_user(addon)
    assert_untouched_mailbox_mail(addon, data)
    assert b"friend@example.net" in inbound(addon)
