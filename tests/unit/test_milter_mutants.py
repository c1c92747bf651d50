"""The milter's observable details, through pymilter's TestCtx with Postfix's chgheader
(PostfixCtx) and a real SQLite store: the exact sizes, ids and envelope recorded, the
queue id whichever stage Postfix first sends it at, reply texts, header edits, the
size limit's boundary, and the log lines an operator greps for."""

from __future__ import annotations

import dataclasses
import logging
import re
import shutil
import sqlite3
import subprocess
import threading
import time
from io import BytesIO
from pathlib import Path

import Milter
import pytest
from Milter import testctx

from smtpeter import config as configmod
from smtpeter.config import FeaturesConfig
from smtpeter.relay.milter import SIZE_MARGIN, RelayContext, postfix_size_limit
from smtpeter.relay.pipeline import Pipeline
from tests import mimedata
from tests.unit.test_milter_hostile import DEEP
from tests.unit.test_milter_hostile import logins as logins
from tests.unit.test_milter_testctx import STYLED, PostfixCtx, delivered_headers, feed, message
from tests.unit.test_milter_testctx import relay as relay

QID = "4F3A21B0C9"
LOGGER = "smtpeter.milter"


def log_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def fed_body(ctx: testctx.TestCtx) -> bytes:
    """The body as delivered (TestCtx hands the body over with LF line endings)."""
    body: bytes = ctx._body.getvalue().split(b"\n\n", 1)[1]
    return body


def header_block_size(raw: bytes) -> int:
    """The header lines of ``raw`` (CRLF), as Postfix counts them, without the blank line."""
    return raw.index(b"\r\n\r\n") + 2


# --- what is recorded ---------------------------------------------------------------


def test_record_has_exact_sizes_ids_and_envelope(relay: RelayContext) -> None:
    """The stored row says exactly how big the message was before and after our edits."""
    stripped = ["X-SMTPeter-Tags: caf\u00e9", "x-smtpeter-inlinecss: true"]
    raw = message(*stripped)
    rc, ctx = feed(raw, login="plain")
    assert rc == Milter.ACCEPT and ctx._bodyreplaced
    [record] = relay.store.messages(queue_id=QID)
    old_body = (STYLED + "\n").encode()
    before = header_block_size(raw) + len(old_body)
    removed = sum(len(h.encode()) + 2 for h in stripped)
    assert record.size_before == before
    assert record.size_after == before - removed + len(fed_body(ctx)) - len(old_body)
    assert record.size_after != record.size_before - removed  # the body did change size
    assert re.fullmatch(r"[a-z2-7]{16}", record.uid or "")
    assert (record.queue_id, record.login, record.message_id) == (QID, "plain", "<t1@example.com>")
    assert record.envelope_sender == "<a@example.com>"
    assert (record.features, record.skipped) == (("inlinecss",), ())


def test_two_messages_get_different_uids(relay: RelayContext) -> None:
    """Each message gets its own tracking uid."""
    feed(message(), login="plain")
    feed(message(), login="plain")
    first, second = relay.store.messages(queue_id=QID)
    assert first.uid != second.uid


def test_without_a_queue_id_the_record_says_noqueue(relay: RelayContext) -> None:
    """Without the i macro the row (and the log) say NOQUEUE; every recipient is kept."""
    ctx = PostfixCtx()
    ctx._setsymval("{daemon_name}", "smtpeter")
    ctx._setsymval("{auth_authen}", "plain")
    ctx._connect(ip="192.0.2.1")
    rc = ctx._feedFile(BytesIO(message()), "a@example.com", "b@example.org", "c@example.net")
    assert rc == Milter.ACCEPT
    [record] = relay.store.messages(queue_id="NOQUEUE")
    assert record.recipients == ("<b@example.org>", "<c@example.net>")


def _feed_knowing_queue_id_at(stages: set[int], raw: bytes, login: str) -> tuple[int, PostfixCtx]:
    """Feed a message whose queue id Postfix sends only at ``stages`` (as with
    smtpd_delay_open_until_valid_rcpt, or milter_*_macros that leave i out)."""
    ctx = PostfixCtx()
    ctx._setsymval("i", QID)
    ctx._setsymval("{daemon_name}", "smtpeter")
    ctx._setsymval("{auth_authen}", login)
    ctx._connect(ip="192.0.2.1")
    for stage in (Milter.M_ENVFROM, Milter.M_ENVRCPT, Milter.M_EOH, Milter.M_EOM):
        if stage not in stages:
            ctx._symlist[stage] = [b"{auth_authen}", b"{daemon_name}"]
    rc = ctx._feedFile(BytesIO(raw), "a@example.com", "b@example.org")
    return rc, ctx


STAGES = {
    "mail": {Milter.M_ENVFROM},
    "rcpt": {Milter.M_ENVRCPT, Milter.M_EOH, Milter.M_EOM},
    "eoh": {Milter.M_EOH},
    "eom": {Milter.M_EOM},
}


@pytest.mark.parametrize("stages", STAGES.values(), ids=STAGES.keys())
def test_the_queue_id_is_recorded_whenever_postfix_sends_it(
    relay: RelayContext, stages: set[int]
) -> None:
    """The row carries the queue id whether Postfix sent it at MAIL, RCPT, EOH or EOM."""
    rc, _ = _feed_knowing_queue_id_at(stages, message(), "plain")
    assert rc == Milter.ACCEPT
    assert len(relay.store.messages(queue_id=QID)) == 1


@pytest.mark.parametrize(
    ("stages", "prefix"),
    [(STAGES["mail"], QID), (STAGES["rcpt"], QID), (STAGES["eoh"], QID), (set(), "NOQUEUE")],
    ids=["mail", "rcpt", "eoh", "never"],
)
def test_a_rejection_at_end_of_headers_is_logged_with_the_queue_id(
    relay: RelayContext, caplog: pytest.LogCaptureFixture, stages: set[int], prefix: str
) -> None:
    """An operator finds a refused message in the log by its queue id (or NOQUEUE)."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    rc, _ = _feed_knowing_queue_id_at(stages, message(), "off")
    assert rc == Milter.REJECT
    assert log_lines(caplog) == [
        f"{prefix}: login=off rejected: login is disabled or was deleted after AUTH"
    ]


# --- replies ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("login", "reply"),
    [
        ("off", ("550", "5.7.1", "This SMTP login is disabled")),
        ("plain", ("451", "4.3.0", "Temporary failure looking up the login, try again later")),
    ],
    ids=["disabled", "store-fault"],
)
def test_reply_texts_at_end_of_headers(
    relay: RelayContext, login: str, reply: tuple[str, str, str]
) -> None:
    """The client is told exactly why: a disabled login, or a fault of ours to retry."""
    if reply[0] == "451":
        with sqlite3.connect(relay.store.path) as conn:
            conn.execute("DROP TABLE logins")
    _, ctx = feed(message(), login=login)
    assert ctx._reply == reply


def test_an_unknown_instruction_reply_is_cut_at_120_characters(relay: RelayContext) -> None:
    """The 550 names the header and gives the reason, cut to 120 characters."""
    rc, ctx = feed(message("x-smtpeter-trackclick: true"), login="plain")
    assert rc == Milter.REJECT
    code, xcode, text = ctx._reply
    name, reason = text.split(": ", 1)
    assert (code, xcode, name) == ("550", "5.6.0", "x-smtpeter-trackclick")
    assert reason.startswith("unknown instruction (known: x-smtpeter-inlinecss, ")
    assert len(reason) == 120 and reason.endswith("...")


def test_a_store_fault_at_end_of_message_is_a_temporary_failure(
    relay: RelayContext, caplog: pytest.LogCaptureFixture
) -> None:
    """If the message cannot be recorded the client is told to retry (451), not lost."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    with sqlite3.connect(relay.store.path) as conn:
        conn.execute("DROP TABLE messages")
    rc, ctx = feed(message(), login="plain")
    assert rc == Milter.TEMPFAIL
    assert ctx._reply == (
        "451",
        "4.3.0",
        "Temporary failure processing the message, try again later",
    )
    [line] = log_lines(caplog)
    assert line.startswith(f"{QID}: login=plain temporary failure: ")
    assert "messages" in line


def _eom_without_eoh(login: str | None) -> tuple[int, PostfixCtx]:
    """Drive the callbacks out of order: end of message without end of headers."""
    ctx = PostfixCtx()
    ctx._setsymval("i", QID)
    ctx._setsymval("{daemon_name}", "smtpeter")
    if login is not None:
        ctx._setsymval("{auth_authen}", login)
    ctx._connect(ip="192.0.2.1")
    ctx._msg = testctx.mime.message_from_file(BytesIO(message()))
    assert ctx._envfrom("<a@example.com>") == Milter.CONTINUE
    assert ctx._envrcpt("<b@example.org>") == Milter.CONTINUE
    return ctx._eom(), ctx


@pytest.mark.parametrize(
    ("login", "rc", "line"),
    [
        ("plain", Milter.TEMPFAIL, f"{QID}: login=plain temporary failure: unexpected error"),
        (None, Milter.ACCEPT, f"{QID}: login=- unexpected error, message passed on as it is"),
    ],
    ids=["api", "servers-own-mail"],
)
def test_an_unexpected_fault_tempfails_api_mail_and_passes_other_mail(
    relay: RelayContext,
    caplog: pytest.LogCaptureFixture,
    login: str | None,
    rc: int,
    line: str,
) -> None:
    """A bug of ours makes an API client retry (451) but never bounces the server's own mail."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    got, ctx = _eom_without_eoh(login)
    assert got == rc
    if rc == Milter.TEMPFAIL:
        assert ctx._reply == (
            "451",
            "4.3.0",
            "Temporary failure processing the message, try again later",
        )
    else:
        assert ctx._reply is None
    [record] = [r for r in caplog.records if r.name == LOGGER]
    assert record.getMessage() == line
    assert record.exc_info is not None
    assert str(record.exc_info[1]) == "end of message without end of headers"


# --- header edits ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "cte_header",
    ["Content-Transfer-Encoding: 8bit", "content-transfer-encoding: 8bit", None],
    ids=["present", "lower-case", "absent"],
)
def test_a_changed_transfer_encoding_is_set_once(
    relay: RelayContext, cte_header: str | None
) -> None:
    """The rewritten body's Content-Transfer-Encoding is in the header exactly once."""
    extra = [cte_header] if cte_header else []
    rc, ctx = feed(message(*extra), login="inliner")
    assert rc == Milter.ACCEPT and ctx._bodyreplaced
    ctes = [(n, v) for n, v in ctx._msg.items() if n.lower() == "content-transfer-encoding"]
    assert [v for _, v in ctes] == ["quoted-printable"]


# --- the size limit ----------------------------------------------------------------------


def _grown_size(relay: RelayContext, raw: bytes) -> int:
    relay.size_limit = 0
    feed(raw, login="inliner")
    [record] = relay.store.messages(queue_id=QID, limit=1)
    assert record.size_after > record.size_before
    return record.size_after


def test_the_size_limit_boundary(relay: RelayContext) -> None:
    """A rewrite is applied up to exactly message_size_limit minus the margin, not a byte more."""
    raw = message()
    grown = _grown_size(relay, raw)
    relay.size_limit = grown + SIZE_MARGIN
    _, ctx = feed(raw, login="inliner")
    assert ctx._bodyreplaced
    relay.size_limit = grown + SIZE_MARGIN - 1
    _, ctx = feed(raw, login="inliner")
    assert not ctx._bodyreplaced
    [record] = relay.store.messages(queue_id=QID, limit=1)
    assert record.skipped == (
        f"inlinecss: the rewritten message would be {grown} bytes, over message_size_limit "
        f"{grown + SIZE_MARGIN - 1}",
    )
    assert record.features == ()
    assert record.size_after == record.size_before


def test_a_rewrite_that_shrinks_the_message_is_applied_whatever_the_limit(
    relay: RelayContext,
) -> None:
    """A message already near the limit still gets a rewrite that makes it smaller."""
    repeated = "p { color: red; }\n" * 100  # inlined once, the style block emptied
    raw = message(html=f"<html><head><style>{repeated}</style></head><body><p>x</p></body></html>")
    relay.size_limit = 1
    rc, ctx = feed(raw, login="inliner")
    assert rc == Milter.ACCEPT and ctx._bodyreplaced
    [record] = relay.store.messages(queue_id=QID)
    assert record.size_after < record.size_before
    assert record.features == ("inlinecss",)


# --- the feature thread --------------------------------------------------------------------


def test_html_work_never_runs_on_two_threads_at_once(tmp_path: Path) -> None:
    """lxml is not thread-safe: the feature thread runs one message's HTML work at a time."""
    cfg = configmod.parse(
        {"store": {"sqlite_path": f"{tmp_path}/s.db"}, "milter": {"message_size_limit": 0}}, "test"
    )
    ctx = RelayContext.create(cfg)
    try:
        second_started = threading.Event()
        first = ctx.features_thread.submit(second_started.wait, 0.3)
        second = ctx.features_thread.submit(second_started.set)
        assert first.result(timeout=5) is False, "the second task ran during the first"
        second.result(timeout=5)
        assert ctx.size_limit == 0
    finally:
        ctx.features_thread.shutdown()


# --- log lines -----------------------------------------------------------------------------

ACCEPTED = re.compile(
    r"(?P<prefix>.*) accepted: from=(?P<sender>\S*) nrcpt=(?P<nrcpt>\d+) "
    r"features=(?P<features>\S+) applied=(?P<applied>\S+) stripped=(?P<stripped>\d+) "
    r"size=(?P<before>\d+)->(?P<after>\d+) ms=(?P<ms>\d+\.\d)"
)


def test_the_accepted_line_says_who_what_and_how_long(
    relay: RelayContext, caplog: pytest.LogCaptureFixture
) -> None:
    """One line per message: sender, recipients, features asked and applied, sizes, time."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    raw = message("X-SMTPeter-Tags: one", "x-smtpeter-tags: two", "x-smtpeter-inlinecss: true")
    ctx = PostfixCtx()
    ctx._setsymval("i", QID)
    ctx._setsymval("{daemon_name}", "smtpeter")
    ctx._setsymval("{auth_authen}", "plain")
    ctx._connect(ip="192.0.2.1")
    started = time.monotonic()
    rc = ctx._feedFile(BytesIO(raw), "a\r@example.com", "b@example.org", "c@example.net")
    elapsed_ms = (time.monotonic() - started) * 1000
    assert rc == Milter.ACCEPT
    [line] = log_lines(caplog)
    m = ACCEPTED.fullmatch(line)
    assert m is not None, line
    [record] = relay.store.messages(queue_id=QID)
    assert m["prefix"] == f"{QID}: login=plain"
    assert m["sender"] == "<a\\x0d@example.com>"  # escaped: no fake log line
    assert (m["nrcpt"], m["features"], m["applied"], m["stripped"]) == (
        "2",
        "inlinecss",
        "inlinecss",
        "3",
    )
    assert (int(m["before"]), int(m["after"])) == (record.size_before, record.size_after)
    assert 0 < float(m["ms"]) <= elapsed_ms + 0.1  # fmt: skip


@pytest.mark.parametrize(
    ("login", "daemon", "prefix"),
    [(None, "smtpeter", f"{QID}: login=-"), ("alice", "ORIGINATING", f"{QID}: login=(alice)")],
    ids=["unauthenticated", "servers-own-sasl"],
)
def test_the_servers_own_mail_is_logged_as_such(
    relay: RelayContext,
    caplog: pytest.LogCaptureFixture,
    login: str | None,
    daemon: str,
    prefix: str,
) -> None:
    """A login we did not authenticate is shown in parentheses; none as '-'; no features."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    feed(message("x-smtpeter-trackopens: maybe"), login=login, daemon=daemon)
    [line] = log_lines(caplog)
    m = ACCEPTED.fullmatch(line)
    assert m is not None, line
    assert m["prefix"] == prefix
    assert (m["features"], m["applied"], m["stripped"]) == ("none", "none", "1")


def test_a_skipped_feature_is_logged_as_asked_not_applied(
    relay: RelayContext, caplog: pytest.LogCaptureFixture
) -> None:
    """DKIM-signed mail: the line shows inlinecss asked, nothing applied, and why."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    feed(message("DKIM-Signature: v=1; d=example.com; b=abc"), login="inliner")
    accepted, skipped = log_lines(caplog)
    m = ACCEPTED.fullmatch(accepted)
    assert m is not None, accepted
    assert (m["features"], m["applied"], m["stripped"]) == ("inlinecss", "none", "0")
    assert skipped == f"{QID}: login=inliner skipped inlinecss: the message is DKIM-signed"


@pytest.mark.parametrize(
    ("headers", "line"),
    [
        (
            ["x-smtpeter-trackopens: may\x7fbe"],
            'rejected: x-smtpeter-trackopens: invalid value "may?be" (expected true or false)',
        ),
        (
            [f"x-smtpeter-tags: {i}" for i in range(101)],
            "rejected: 101 x-smtpeter-* headers (at most 100)",
        ),
        (["x-smtpeter-trackbounces: true"], None),
    ],
    ids=["invalid-value", "too-many", "no-bounce-domain"],
)
def test_refusals_and_warnings_are_logged(
    relay: RelayContext, caplog: pytest.LogCaptureFixture, headers: list[str], line: str | None
) -> None:
    """Each refusal at end of headers, and a feature that cannot work, leaves one clear line."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    feed(message(*headers), login="plain")
    lines = log_lines(caplog)
    if line is None:
        assert lines[:1] == [
            f"{QID}: login=plain trackbounces asked for, but bounces.domain is not set"
        ]
    else:
        assert lines == [f"{QID}: login=plain {line}"]


def test_a_flood_left_in_place_is_logged(
    relay: RelayContext, caplog: pytest.LogCaptureFixture
) -> None:
    """The operator learns why x-smtpeter-* headers went out on the server's own mail."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    feed(message(*[f"x-smtpeter-n{i}: v" for i in range(150)]), login=None)
    warning, accepted = log_lines(caplog)
    assert warning == (
        f"{QID}: login=- 150 x-smtpeter-* headers left in place "
        "(more than milter.max_instruction_headers)"
    )
    m = ACCEPTED.fullmatch(accepted)
    assert m is not None and m["stripped"] == "0"
    assert int(m["before"]) == int(m["after"])


def test_a_store_fault_at_end_of_headers_is_logged(
    relay: RelayContext, caplog: pytest.LogCaptureFixture
) -> None:
    """The log says the login lookup failed and why; at RCPT, the suppression list not
    read is a warning and the recipient is accepted (never a tempfail of its own)."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    with sqlite3.connect(relay.store.path) as conn:
        conn.execute("DROP TABLE logins")
    feed(message(), login="plain")
    rcpt, line = log_lines(caplog)
    assert rcpt.startswith(f"{QID}: login=plain suppression list not read, <b@example.org>")
    assert line.startswith(f"{QID}: login=plain temporary failure: ") and "logins" in line


def test_a_feature_timeout_is_logged_with_the_limit(
    relay: RelayContext, caplog: pytest.LogCaptureFixture
) -> None:
    """The log says the features took longer than milter.feature_timeout."""
    relay.config = dataclasses.replace(relay.config, features=FeaturesConfig(inliner="premailer"))
    relay.pipeline = Pipeline(relay.config, None)
    relay.config = dataclasses.replace(
        relay.config, milter=dataclasses.replace(relay.config.milter, feature_timeout=0.001)
    )
    caplog.set_level(logging.INFO, logger=LOGGER)
    rc, _ = feed(message(html=mimedata.newsletter_html()), login="inliner")
    assert rc == Milter.TEMPFAIL
    assert log_lines(caplog) == [
        f"{QID}: login=inliner temporary failure: features took longer than 0 s"
    ]


def test_no_instruction_header_is_left_after_a_rewrite(relay: RelayContext) -> None:
    """After a rewrite no x-smtpeter-* header remains and no other header is lost."""
    raw = message("x-smtpeter-inlinecss: true", "X-Keep: 1")
    _, ctx = feed(raw, login="plain")
    assert ctx._bodyreplaced
    kept = delivered_headers(ctx)
    assert "x-keep" in kept and not [h for h in kept if h.startswith("x-smtpeter-")]


# --- more edge cases --------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("postconf") is None, reason="needs Postfix's postconf")
def test_the_size_limit_is_read_from_postfix(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With milter.message_size_limit unset, the limit is the system Postfix's, read quietly."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    cfg = configmod.parse({"store": {"sqlite_path": str(tmp_path / "s.db")}}, "test")
    ctx = RelayContext.create(cfg)
    ctx.features_thread.shutdown()
    postconf = subprocess.run(
        ["postconf", "-h", "message_size_limit"], capture_output=True, text=True, check=True
    )
    assert ctx.size_limit == int(postconf.stdout) == postfix_size_limit()
    assert log_lines(caplog) == []


def test_without_postconf_the_postfix_default_is_assumed_and_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """On a host without postconf the limit is Postfix's default, with a warning saying so."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert postfix_size_limit() == 10240000
    assert log_lines(caplog) == [
        "cannot read Postfix's message_size_limit (postconf); assuming 10240000 bytes: set "
        "milter.message_size_limit"
    ]


@pytest.mark.parametrize(("login", "daemon"), [("inliner", "smtpeter"), (None, "smtpeter")])
def test_a_header_that_is_not_utf8_does_not_fail_the_message(
    relay: RelayContext, login: str | None, daemon: str
) -> None:
    """A raw Latin-1 header byte neither tempfails API mail nor stops the stripping."""
    raw = message("X-Note: cafe", "x-smtpeter-tags: a").replace(b"X-Note: cafe", b"X-Note: caf\xe9")
    rc, ctx = feed(raw, login=login, daemon=daemon)
    assert rc == Milter.ACCEPT
    assert "x-smtpeter-tags" not in delivered_headers(ctx)
    assert ctx._bodyreplaced == (login is not None)
    if login is not None:
        [record] = relay.store.messages(queue_id=QID)
        assert record.size_before == header_block_size(raw) + len((STYLED + "\n").encode())


def test_every_skip_is_recorded_not_only_the_last(logins: RelayContext) -> None:
    """A part too deep to inline and a rewrite over the size limit are both recorded."""
    raw = message(html=DEEP)
    logins.size_limit = len(raw) + SIZE_MARGIN
    rc, ctx = feed(raw, login="all")
    assert rc == Milter.ACCEPT and not ctx._bodyreplaced
    [record] = logins.store.messages(queue_id=QID)
    assert record.skipped[0].startswith("inlinecss: elements nested 12000 deep")
    assert [s.split(":")[0] for s in record.skipped[1:]] == [
        "inlinecss",
        "trackclicks",
        "trackopens",
    ]
    assert all("over message_size_limit" in s for s in record.skipped[1:])


def test_a_failed_inliner_is_not_recorded_as_applied(relay: RelayContext) -> None:
    """When the inliner fails and only link tracking is applied, the row says trackclicks only."""
    html = '<html><style>p { color: url("x</style><p style="{{{"><a href="https://e.org/">l</a></p>'
    raw = message("x-smtpeter-inlinecss: true", "x-smtpeter-trackclicks: true", html=html)
    rc, ctx = feed(raw, login="plain")
    assert rc == Milter.ACCEPT and ctx._bodyreplaced
    [record] = relay.store.messages(queue_id=QID)
    assert record.features == ("trackclicks",)
    assert record.skipped == ("inlinecss: the inliner failed: InlineError: Invalid qualified rule",)


def test_a_rewrite_that_keeps_the_size_is_applied_whatever_the_limit(relay: RelayContext) -> None:
    """A rewrite whose growth equals the stripped headers adds nothing and is applied."""
    html = "<html><head><style>p { color: #ff0000; }</style></head><body>" + "<p>x</p>" * 20
    relay.size_limit = 0
    feed(message(html=html + "</body></html>"), login="inliner")
    [first] = relay.store.messages(queue_id=QID)
    growth = first.size_after - first.size_before
    name = "x-smtpeter-images"  # removed without effect, any value
    raw = message(f"{name}: " + "a" * (growth - len(name) - 4), html=html + "</body></html>")
    relay.size_limit = 1
    rc, ctx = feed(raw, login="inliner")
    assert rc == Milter.ACCEPT and ctx._bodyreplaced
    [record, _] = relay.store.messages(queue_id=QID)
    assert record.size_after == record.size_before
    assert record.features == ("inlinecss",)


def test_several_features_are_listed_comma_separated(
    relay: RelayContext, caplog: pytest.LogCaptureFixture
) -> None:
    """The accepted line lists several features asked and applied as a,b."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    link = '<p><a href="https://e.org/">l</a></p>'
    html = f"<html><head><style>p {{ color: red; }}</style></head><body>{link}</body></html>"
    feed(message("x-smtpeter-trackclicks: true", html=html), login="inliner")
    m = ACCEPTED.fullmatch(log_lines(caplog)[0])
    assert m is not None
    assert (m["features"], m["applied"]) == ("inlinecss,trackclicks", "inlinecss,trackclicks")
