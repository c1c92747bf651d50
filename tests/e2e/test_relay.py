"""End to end on the real stack: submission, refusals, features, header stripping."""

from __future__ import annotations

import base64
import re
import smtplib
import sqlite3
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from smtpeter import logins
from smtpeter.local.stack import LocalStack
from smtpeter.logins import Login
from smtpeter.store import Store, open_store
from tests import mimedata
from tests.e2e.conftest import MakeLogin
from tests.e2e.smtp import (
    connect,
    delivered_paths,
    find_delivered,
    marker,
    parse,
    send,
    simple,
    with_marker,
)

pytestmark = pytest.mark.e2e

STYLED = (
    "<html><head><style>p.x { color: #ff0000; } "
    "@media (max-width: 600px) { p.x { color: #0000ff !important; } }</style></head>"
    '<body><p class="x">styled paragraph</p></body></html>'
)


def _html_of(data: bytes) -> str:
    msg = parse(data)
    part = msg.get_body(preferencelist=("html",))
    assert part is not None, "no HTML part delivered"
    content = part.get_content()
    assert isinstance(content, str)
    return content


def _inlined(html: str) -> bool:
    return bool(re.search(r'<p[^>]*style="[^"]*color: ?#ff0000', html))


# -- accepted submissions ---------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
@pytest.mark.parametrize("which", ["smtp", "submission"])
def test_authenticated_submission_is_delivered(
    stack: LocalStack, make_login: MakeLogin, which: str, mechanism: str
) -> None:
    user, password = make_login()
    port = getattr(stack.ports, which)
    mark = send(stack, user, password, simple("port test"), port=port, mechanism=mechanism)
    delivered = parse(find_delivered(stack, mark))
    assert delivered["Subject"] == "port test"


def test_swaks_submission_with_features(stack: LocalStack, make_login: MakeLogin) -> None:
    user, password = make_login(inlinecss=True)
    raw = simple("swaks", html=STYLED, X_SMTPeter_TrackOpens="false").decode()
    result = subprocess.run(
        [
            "swaks", "--server", f"127.0.0.1:{stack.ports.smtp}", "--tls",
            "--tls-ca-path", str(stack.cert_file), "--tls-verify",
            "--auth", "LOGIN", "--auth-user", user, "--auth-password", password,
            "--from", "sender@example.com", "--to", "rcpt@example.org",
            "--data", "-",
        ],
        input=raw.replace("Subject: swaks", "Subject: swaks\nMessage-ID: <swaks-1@test>"),
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "250 2.0.0 Ok: queued" in result.stdout
    data = find_delivered(stack, "swaks-1@test")
    assert b"x-smtpeter" not in data.lower()
    assert _inlined(_html_of(data))


# -- refused submissions ----------------------------------------------------------


def test_auth_before_starttls_is_refused(stack: LocalStack, make_login: MakeLogin) -> None:
    user, password = make_login()
    with connect(stack, stack.ports.submission, starttls=False) as client:
        assert not client.has_extn("auth"), "AUTH must not be offered before STARTTLS"
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        code, reply = client.docmd("AUTH", f"PLAIN {token}")
        assert (code, reply) == (530, b"5.7.0 Must issue a STARTTLS command first")
        code, reply = client.docmd("MAIL", "FROM:<sender@example.com>")
        assert code == 530 and b"STARTTLS" in reply, reply


def test_mail_without_auth_is_refused(stack: LocalStack) -> None:
    # With bounce tracking on, MAIL is accepted (bounces arrive unauthenticated) and
    # every recipient outside the bounce domain is refused.
    with connect(stack, stack.ports.smtp) as client:
        assert client.has_extn("auth")
        assert client.mail("sender@example.com")[0] == 250
        code, reply = client.rcpt("rcpt@example.org")
        assert (code, reply) == (530, b"5.7.0 <rcpt@example.org>: Recipient address rejected: "
                                      b"Authentication required")  # fmt: skip


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_wrong_password_and_unknown_login_get_the_same_535(
    stack: LocalStack, make_login: MakeLogin, mechanism: str
) -> None:
    user, password = make_login()
    replies: list[tuple[int, bytes]] = []
    for u, p in ((user, password + "x"), ("no-such-login", password)):
        with connect(stack, stack.ports.submission) as client:
            client.user, client.password = u, p
            with pytest.raises(smtplib.SMTPAuthenticationError) as err:
                client.auth(mechanism, getattr(client, f"auth_{mechanism.lower()}"))
            reply = err.value.smtp_error
            replies.append((err.value.smtp_code, reply if isinstance(reply, bytes) else b""))
    assert replies[0] == replies[1]
    assert replies[0][0] == 535 and replies[0][1].startswith(b"5.7.8")


def test_disabled_login_is_refused(stack: LocalStack, make_login: MakeLogin) -> None:
    user, password = make_login(enabled=False)
    with connect(stack, stack.ports.submission) as client:
        client.user, client.password = user, password
        with pytest.raises(smtplib.SMTPAuthenticationError) as err:
            client.auth("PLAIN", client.auth_plain)
        assert err.value.smtp_code == 535


def test_disabling_a_login_takes_effect_at_once(
    stack: LocalStack, make_login: MakeLogin, store: Store
) -> None:
    user, password = make_login()
    send(stack, user, password, simple("before disable"))  # now cached by the auth daemon
    store.update_login(user, enabled=False)
    with connect(stack, stack.ports.submission) as client:
        client.user, client.password = user, password
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.auth("PLAIN", client.auth_plain)


# -- features and headers ---------------------------------------------------------


@pytest.mark.parametrize(
    ("login_on", "header", "expect_inlined"),
    [
        (True, None, True),
        (False, None, False),
        (False, "true", True),
        (False, "TRUE", True),
        (True, "false", False),
        (True, " False ", False),
    ],
)
def test_inlinecss_login_setting_and_header_override(
    stack: LocalStack,
    make_login: MakeLogin,
    login_on: bool,
    header: str | None,
    expect_inlined: bool,
) -> None:
    user, password = make_login(inlinecss=login_on)
    extra = {} if header is None else {"X_SMTPeter_InlineCSS": header}
    mark = send(stack, user, password, simple("inline", html=STYLED, **extra))
    data = find_delivered(stack, mark)
    html = _html_of(data)
    assert _inlined(html) is expect_inlined
    assert b"x-smtpeter" not in data.lower()
    # The mobile override survives inlining.
    assert "@media" in html and "!important" in html


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("x-smtpeter-inlinecss", "maybe"),
        ("X-SMTPeter-TrackClicks", "1"),
        ("x-smtpeter-trackopens", ""),
    ],
)
def test_malformed_feature_header_is_refused_and_nothing_queued(
    stack: LocalStack, make_login: MakeLogin, name: str, value: str
) -> None:
    user, password = make_login()
    raw = simple("bad header").replace(b"Subject:", f"{name}: {value}\r\nSubject:".encode(), 1)
    with pytest.raises(smtplib.SMTPDataError) as err:
        send(stack, user, password, raw)
    assert err.value.smtp_code == 550
    reply = err.value.smtp_error
    text = reply.decode() if isinstance(reply, bytes) else reply
    assert name in text and f'"{value}"' in text
    # Absence, proven by a later arrival rather than a sleep.
    find_delivered(stack, send(stack, user, password, simple("after the refusal")))
    assert not [p for p in stack.delivered() if b"bad header" in p.read_bytes()]


def test_every_instruction_header_is_removed(stack: LocalStack, make_login: MakeLogin) -> None:
    user, password = make_login()
    head = (
        "X-SMTPeter-InlineCSS: false\r\n"
        "x-smtpeter-inlinecss: false\r\n"
        "X-SMTPETER-TRACKOPENS:\r\n  false\r\n"
        "x-smtpeter-tags: spring\r\n"
        "X-SMTPeter-Images: false\r\n"
        "x-smtpeter-preventscam: true\r\n"
        "X-Other: kept\r\n"
    )
    raw = simple("strip").replace(b"Subject:", head.encode() + b"Subject:", 1)
    mark = send(stack, user, password, raw)
    data = find_delivered(stack, mark)
    assert b"x-smtpeter" not in data.lower()
    assert parse(data)["X-Other"] == "kept"


def test_attachments_and_text_parts_arrive_byte_identical(
    stack: LocalStack, make_login: MakeLogin
) -> None:
    user, password = make_login(inlinecss=True)
    original = mimedata.mixed_related()
    mark = send(stack, user, password, original.raw)
    data = find_delivered(stack, mark)
    delivered = parse(data)
    sent = parse(original.raw)
    for want, got in zip(sent.walk(), delivered.walk(), strict=True):
        assert want.get_content_type() == got.get_content_type()
        if want.get_content_maintype() in ("image", "application"):
            assert got.get_payload(decode=True) == want.get_payload(decode=True)
        if want.get_content_type() == "text/plain":
            # The sink stores lines with LF, as Maildir does.
            assert got.get_content() == want.get_content().replace("\r\n", "\n")
    # The raw base64 of the PDF is passed through line for line.
    pdf_b64 = mimedata.b64(mimedata.pdf_bytes()).replace(b"\r\n", b"\n")
    assert pdf_b64 in data
    html = _html_of(data)
    assert 'style="' in html
    assert max(len(line) for line in data.split(b"\n")) <= 998


def test_signed_message_passes_untouched(stack: LocalStack, make_login: MakeLogin) -> None:
    user, password = make_login(inlinecss=True)
    original = mimedata.signed()
    mark = send(stack, user, password, original.raw)
    data = find_delivered(stack, mark)
    assert original.body.replace(b"\r\n", b"\n") in data


def test_summary_log_line(stack: LocalStack, make_login: MakeLogin) -> None:
    user, password = make_login(inlinecss=True)
    mark = send(stack, user, password, simple("log line", html=STYLED))
    find_delivered(stack, mark)
    log = stack.log_file("milter").read_text()
    line = next(line for line in reversed(log.splitlines()) if f"login={user} " in line)
    assert re.search(
        r"INFO [0-9A-F]{6,}: login=\S+ accepted: .*features=inlinecss applied=inlinecss "
        r"stripped=0 size=\d+->\d+ ms=\d+\.\d",
        line,
    ), line


# -- failures on our side: 4xx, nothing lost --------------------------------------


def test_milter_down_tempfails_and_the_retry_is_delivered(
    stack: LocalStack, make_login: MakeLogin
) -> None:
    user, password = make_login(inlinecss=True)
    raw = simple("milter down", html=STYLED)
    stack.stop_component("milter")
    try:
        # Postfix answers 4xx from the first command after it finds the milter
        # gone (STARTTLS, AUTH or MAIL, depending on timing); the client must retry.
        with pytest.raises(smtplib.SMTPResponseException) as err:
            send(stack, user, password, raw)
        assert 400 <= err.value.smtp_code < 500, err.value
    finally:
        stack.start_component("milter")
    # The retry goes through; once it has arrived, the refused try surely has not.
    mark = send(stack, user, password, raw)
    assert _inlined(_html_of(find_delivered(stack, mark)))
    assert [p for p in stack.delivered() if b"milter down" in p.read_bytes()] == [
        p for p in stack.delivered() if mark.encode() in p.read_bytes()
    ]


def test_auth_daemon_down_gives_454(own_stack: LocalStack) -> None:
    stack = own_stack
    store = open_store(stack.config().store)
    user, password = "outage", logins.generate_password()
    store.create_login(Login(user, logins.hash_password(password)))
    # The one smtpd process (own_stack) keeps its connection to the auth daemon and
    # serves the next session too. (A new smtpd that cannot reach the daemon exits at
    # once and Postfix pauses the service for a minute: clients then see a dropped
    # connection, also a temporary failure.)
    send(stack, user, password, simple("warm up"))
    stack.stop_component("authd")
    try:
        with connect(stack, stack.ports.submission) as client:
            client.user, client.password = user, password
            token = base64.b64encode(client.auth_plain().encode()).decode()
            code, reply = client.docmd("AUTH", f"PLAIN {token}")
            assert code == 454 and reply.startswith(b"4.7.0"), (code, reply)
    finally:
        stack.start_component("authd")
    mark = send(stack, user, password, simple("authd back"))
    find_delivered(stack, mark)


def test_nothing_left_behind(stack: LocalStack) -> None:
    """Every accepted message reached the sink: Postfix's queue is empty."""
    deadline = time.monotonic() + 20
    while not stack.queue_empty() and time.monotonic() < deadline:
        stack.flush()
        time.sleep(0.5)
    assert stack.queue_empty()
    assert delivered_paths(stack, "") == stack.delivered()


def test_store_outage_during_auth_gives_454_and_a_log_line(
    stack: LocalStack, make_login: MakeLogin, store: Store
) -> None:
    user, password = make_login()
    # Take the logins table away under the running auth daemon, as a broken or
    # half-migrated database would.
    with sqlite3.connect(store.path) as conn:
        conn.execute("ALTER TABLE logins RENAME TO logins_away")
    try:
        with connect(stack, stack.ports.submission) as client:
            client.user, client.password = user, password
            token = base64.b64encode(client.auth_plain().encode()).decode()
            code, reply = client.docmd("AUTH", f"PLAIN {token}")
            assert code == 454 and reply.startswith(b"4.7.0"), (code, reply)
    finally:
        with sqlite3.connect(store.path) as conn:
            conn.execute("ALTER TABLE logins_away RENAME TO logins")
    log = stack.log_file("authd").read_text()
    assert "no such table: logins" in log
    mark = send(stack, user, password, simple("store back"))
    find_delivered(stack, mark)


def test_concurrent_sessions_are_all_delivered(stack: LocalStack, make_login: MakeLogin) -> None:
    """20 sessions at once, several messages each: libmilter moves a session between OS
    threads under load, and no message may fail for it."""
    user, password = make_login(inlinecss=True)
    newsletter = mimedata.alternative().raw

    def session(_: int) -> list[str]:
        marks = []
        with connect(stack, stack.ports.submission) as client:
            client.login(user, password)
            for _ in range(5):
                mark = marker()
                client.sendmail("sender@example.com", ["rcpt@example.org"],
                                with_marker(newsletter, mark))  # fmt: skip
                marks.append(mark)
        return marks

    with ThreadPoolExecutor(max_workers=20) as pool:
        marks = [m for batch in pool.map(session, range(20)) for m in batch]
    for mark in marks:
        assert 'style="' in _html_of(find_delivered(stack, mark))


ODD_MESSAGES = {
    "no-mime": b"Subject: plain\r\n\r\nJust text, no MIME at all.\r\n",
    "empty-body": b"Subject: empty\r\nMIME-Version: 1.0\r\nContent-Type: text/html\r\n\r\n",
    "latin1-8bit-no-charset": (
        b"Subject: 8bit\r\nMIME-Version: 1.0\r\nContent-Type: text/html\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\n<p style='x'>caf\xe9</p>\r\n"
    ),
    "unknown-charset": (
        b"Subject: odd\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=x-no-such\r\n\r\n"
        b"<html><head><style>p{color:red}</style></head><body><p>x</p></body></html>\r\n"
    ),
    "long-line": (
        b"Subject: long\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        b"<html><head><style>td{color:red}</style></head><body><table><tr>"
        + b"<td>cell</td>" * 400
        + b"</tr></table></body></html>\r\n"
    ),
    "broken-multipart": (
        b'Subject: broken\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="x"\r\n'
        b"\r\n--x\r\nContent-Type: text/html\r\n\r\n<p>never closed</p>\r\n"
    ),
}


@pytest.mark.parametrize(
    "name",
    sorted(ODD_MESSAGES) + sorted(p.name for p in (mimedata.DATA_DIR / "bounces").glob("*.eml")),
)
def test_real_and_odd_messages_pass_with_every_feature_on(
    stack: LocalStack, make_login: MakeLogin, name: str
) -> None:
    """Mail in general, not only our fixtures: every message is delivered, keeps its
    MIME structure and attachments, and has no line over 998 characters."""
    user, password = make_login(inlinecss=True, trackclicks=True, trackopens=True)
    if name in ODD_MESSAGES:
        raw = ODD_MESSAGES[name]
    else:
        raw = (mimedata.DATA_DIR / "bounces" / name).read_bytes()
        raw = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    mark = send(stack, user, password, raw)
    data = find_delivered(stack, mark)
    assert max(len(line) for line in data.split(b"\n")) <= 998
    sent, got = parse(raw), parse(data)
    assert [p.get_content_type() for p in sent.walk()] == [p.get_content_type() for p in got.walk()]
    for want, have in zip(sent.walk(), got.walk(), strict=True):
        if not want.is_multipart() and want.get_content_maintype() not in ("text",):
            assert have.get_payload(decode=True) == want.get_payload(decode=True)
