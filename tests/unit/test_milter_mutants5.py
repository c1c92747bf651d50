"""The recipient path of the milter (the suppression list at RCPT): who is refused and who
never is, the exact log lines, a deleted login, and the login's record read once a
message (and again after a failed read). Through pymilter's TestCtx (PostfixCtx) and a
real SQLite store."""

from __future__ import annotations

import logging
import re
import sqlite3
from io import BytesIO

import Milter
import pytest
from Milter import testctx

from smtpeter.relay.milter import RelayContext
from tests.unit.test_milter_mutants import LOGGER, QID, log_lines
from tests.unit.test_milter_testctx import PostfixCtx, feed, message
from tests.unit.test_milter_testctx import relay as relay

REFUSAL = (
    r"suppressed for login plain after a hard bounce \(5\.1\.1 user unknown\) on \d{4}-\d\d-\d\d"
)


def session(login: str) -> PostfixCtx:
    """A connection on smtpeter's own listener, authenticated as ``login``."""
    ctx = PostfixCtx()
    ctx._setsymval("i", QID)
    ctx._setsymval("{daemon_name}", "smtpeter")
    ctx._setsymval("{auth_authen}", login)
    assert ctx._connect(ip="192.0.2.1") == Milter.CONTINUE
    return ctx


def rcpt(ctx: PostfixCtx, address: str) -> int:
    rc: int = ctx._envrcpt(f"<{address}>")
    return rc


def end_of_headers(ctx: PostfixCtx) -> int:
    """DATA and the headers of a plain message, as TestCtx._feedFile sends them."""
    msg = testctx.mime.message_from_file(BytesIO(message()))
    ctx._msg, ctx._body, ctx._bodyreplaced, ctx._headerschanged = msg, None, False, False
    assert ctx._data() == Milter.CONTINUE
    for name, value in msg.items():
        assert ctx._header(name, value) == Milter.CONTINUE
    rc: int = ctx._eoh()
    return rc


def suppress_gone(relay: RelayContext) -> None:
    relay.store.suppress("plain", "gone@example.org", "user-unknown", status="5.1.1")


@pytest.mark.parametrize(
    ("daemon", "expected"), [("smtpd", Milter.ACCEPT), ("smtpeter", Milter.REJECT)]
)
def test_a_mailbox_user_of_the_mx_with_a_logins_name_is_never_refused(
    relay: RelayContext, daemon: str, expected: int
) -> None:
    """A user authenticated by the MX's own SASL on another listener, named like one of our
    logins, sends to that login's suppressed address; the same login on smtpeter's
    listener is refused."""
    relay.store.suppress("plain", "b@example.org", "user-unknown", status="5.1.1")
    rc, ctx = feed(message(), login="plain", daemon=daemon)
    assert rc == expected
    if daemon == "smtpd":
        assert ctx._reply is None
        assert relay.store.messages(queue_id=QID) == []  # not ours to record


def test_the_refusal_is_logged_with_queue_id_login_and_reason(
    relay: RelayContext, caplog: pytest.LogCaptureFixture
) -> None:
    """One info line per refused recipient, prefixed as Postfix's are, with the reply's text;
    an accepted recipient logs nothing at RCPT."""
    suppress_gone(relay)
    caplog.set_level(logging.INFO, logger=LOGGER)
    ctx = session("plain")
    assert ctx._envfrom("<a@example.com>") == Milter.CONTINUE
    assert rcpt(ctx, "Gone@Example.ORG") == Milter.REJECT
    assert rcpt(ctx, "ok@example.org") == Milter.CONTINUE
    [line] = log_lines(caplog)
    assert re.fullmatch(
        rf"{QID}: login=plain refused <Gone@Example\.ORG>: <gone@example\.org>: {REFUSAL}", line
    ), line


def test_a_list_that_cannot_be_read_is_logged_with_the_stores_error(
    relay: RelayContext, caplog: pytest.LogCaptureFixture
) -> None:
    """The warning names the recipient accepted and says what the store said."""
    suppress_gone(relay)
    with sqlite3.connect(relay.store.path) as conn:
        conn.execute("ALTER TABLE suppressions RENAME TO away")
    ctx = session("plain")
    assert ctx._envfrom("<a@example.com>") == Milter.CONTINUE
    assert rcpt(ctx, "gone@example.org") == Milter.CONTINUE
    [record] = [r for r in caplog.records if r.name == LOGGER]
    assert record.levelno == logging.WARNING
    assert re.fullmatch(
        rf"{QID}: login=plain suppression list not read, <gone@example\.org> accepted: .*"
        r"no such table: suppressions.*",
        record.getMessage(),
    ), record.getMessage()


def test_a_login_deleted_after_auth_is_refused_at_end_of_headers_not_at_rcpt(
    relay: RelayContext, caplog: pytest.LogCaptureFixture
) -> None:
    """RCPT of a deleted login is accepted without a warning (no list to apply); the message
    is then refused once, as for any deleted login."""
    suppress_gone(relay)
    ctx = session("plain")
    relay.store.delete_login("plain")
    assert ctx._envfrom("<a@example.com>") == Milter.CONTINUE
    assert rcpt(ctx, "gone@example.org") == Milter.CONTINUE
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert end_of_headers(ctx) == Milter.REJECT
    assert ctx._reply == ("550", "5.7.1", "This SMTP login is disabled")


def test_the_policy_read_at_the_first_rcpt_holds_for_the_message_and_the_next_reads_again(
    relay: RelayContext,
) -> None:
    """The login's record is read once a message: turning the policy off while a message is
    in flight changes nothing for its later recipients; the next message on the same
    connection reads it again and is not refused."""
    suppress_gone(relay)
    relay.store.suppress("plain", "left@example.org", "complaint")
    ctx = session("plain")
    assert ctx._envfrom("<a@example.com>") == Milter.CONTINUE
    assert rcpt(ctx, "gone@example.org") == Milter.REJECT
    relay.store.update_login("plain", suppression="off")
    assert rcpt(ctx, "left@example.org") == Milter.REJECT
    assert ctx._envfrom("<a@example.com>") == Milter.CONTINUE
    assert rcpt(ctx, "gone@example.org") == Milter.CONTINUE


def test_a_failed_read_of_the_login_is_tried_again_at_the_next_rcpt(
    relay: RelayContext,
) -> None:
    """A store that could not read the login at the first RCPT (accepted) is asked again at
    the next one, which is refused once the store answers."""
    suppress_gone(relay)
    relay.store.suppress("plain", "left@example.org", "complaint")
    ctx = session("plain")
    assert ctx._envfrom("<a@example.com>") == Milter.CONTINUE
    with sqlite3.connect(relay.store.path) as conn:
        conn.execute("ALTER TABLE logins RENAME TO away")
    assert rcpt(ctx, "gone@example.org") == Milter.CONTINUE
    with sqlite3.connect(relay.store.path) as conn:
        conn.execute("ALTER TABLE away RENAME TO logins")
    assert rcpt(ctx, "left@example.org") == Milter.REJECT
