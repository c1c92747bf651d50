"""The suppression list: what puts an address on it (hard bounces, complaints, repeated
soft bounces of a mailbox, never a block or a delay), the milter refusing it at RCPT
for the login that sent to it and for no one else, and `smtpeter suppressions`.
Real SQLite store, real bounce processor, the milter through pymilter's TestCtx, the
CLI as a subprocess."""

from __future__ import annotations

import dataclasses
import json
import re
import sqlite3
from io import BytesIO
from pathlib import Path

import Milter
import pytest
from Milter import testctx

from smtpeter.bounces.processor import EX_OK, process
from smtpeter.logins import Login, LoginError
from smtpeter.relay.milter import RelayContext
from smtpeter.store import MessageRecord, Store, Suppression
from smtpeter.suppression import refusal
from tests.unit.test_bounce_detect import dsn, fixture_bytes
from tests.unit.test_bounce_processor import make_config, return_path
from tests.unit.test_bounce_processor import store as store
from tests.unit.test_bounce_processor_mutants import path_for
from tests.unit.test_cli import run
from tests.unit.test_milter_testctx import PostfixCtx, message
from tests.unit.test_milter_testctx import relay as relay

QID = "4F3A21B0C9"


def report(recipient: str, status: str, diagnostic: str, *, arrival: str = "09:59:58") -> bytes:
    return dsn(
        f"Reporting-MTA: dns; mx.example.org\nArrival-Date: Tue, 1 Dec 2026 {arrival} +0000\n\n"
        f"Final-Recipient: rfc822; {recipient}\nAction: failed\nStatus: {status}\n"
        f"Diagnostic-Code: smtp; {diagnostic}\n"
    )


def add_message(s: Store, uid: str, recipients: tuple[str, ...], login: str | None) -> None:
    s.record_message(
        MessageRecord(
            queue_id="4XyZ8", message_id=None, login=login, envelope_sender="",
            recipients=recipients, features=("trackbounces",), size_before=1,
            size_after=1, uid=uid,
        )
    )  # fmt: skip


# -- what suppresses ---------------------------------------------------------------------


def test_a_hard_bounce_suppresses_the_address_for_the_login_that_sent(
    tmp_path: Path, store: Store
) -> None:
    """A 5.1.1 user unknown puts the recipient on alice's list, with status, reason, the
    message and the day; bob's list stays empty."""
    cfg = make_config(tmp_path, tmp_path / "no-sendmail", forward=False)
    raw = report("gone@example.org", "5.1.1", "550 5.1.1 <gone@example.org>: User unknown")
    assert process(raw, return_path(store, cfg), cfg, store=store).status == EX_OK
    entry = store.suppression("alice", "Gone@Example.org")
    assert entry is not None
    assert (entry.login, entry.address, entry.reason, entry.status, entry.message_uid) == (
        "alice", "gone@example.org", "user-unknown", "5.1.1", "k3xq7m2pw9r4t6ya",
    )  # fmt: skip
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", entry.created_at)
    assert store.suppression("bob", "gone@example.org") is None


@pytest.mark.parametrize(
    ("status", "diagnostic"),
    [
        ("5.2.2", "552 5.2.2 Mailbox full"),
        ("5.7.1", "554 5.7.1 Client host [192.0.2.1] blocked using zen.spamhaus.org"),
        ("5.7.1", "550 5.7.1 Message rejected as spam"),
        ("5.7.26", "550 5.7.26 This mail is unauthenticated"),
        ("4.4.7", "Delivery time expired"),
    ],
    ids=["mailbox-full", "blocked", "spam", "policy", "expired"],
)  # fmt: skip
def test_a_soft_bounce_or_a_block_never_suppresses_by_itself(
    tmp_path: Path, store: Store, status: str, diagnostic: str
) -> None:
    """A full mailbox, a block list, a spam or policy verdict, a timeout: recorded as a
    soft bounce, the address stays mailable."""
    cfg = make_config(tmp_path, tmp_path / "no-sendmail", forward=False)
    raw = report("gone@example.org", status, f"{diagnostic}")
    assert process(raw, return_path(store, cfg), cfg, store=store).status == EX_OK
    [event] = store.events(message="k3xq7m2pw9r4t6ya", type="bounce")
    assert event.detail["kind"] == "soft"
    assert store.suppressions() == []


def test_repeated_full_mailbox_bounces_of_different_messages_suppress_at_the_limit(
    tmp_path: Path, store: Store
) -> None:
    """With soft_bounce_limit 3: the same message bouncing twice counts once; the third
    message to bounce with a full mailbox suppresses it; blocks never count."""
    cfg = make_config(tmp_path, tmp_path / "no-sendmail", forward=False, soft_bounce_limit=3)
    uids = ["soft0message0001", "soft0message0002", "soft0message0003", "soft0message0004"]
    for uid in uids:
        add_message(store, uid, ("full@example.org",), "alice")
    full = report("full@example.org", "4.2.2", "452 4.2.2 Over quota")
    blocked = report("full@example.org", "5.7.1", "554 5.7.1 blocked using bl.example.net")
    steps = [(uids[0], full), (uids[0], full.replace(b"09:59:58", b"10:59:58")),
             (uids[1], blocked), (uids[1], full), (uids[2], blocked)]  # fmt: skip
    for uid, raw in steps:
        assert process(raw, path_for(store, cfg, uid), cfg, store=store).status == EX_OK
    assert store.suppression("alice", "full@example.org") is None  # 2 messages so far
    assert process(full, path_for(store, cfg, uids[3]), cfg, store=store).status == EX_OK
    entry = store.suppression("alice", "full@example.org")
    assert entry is not None and (entry.reason, entry.status) == (
        "soft-bounces: mailbox-full",
        "4.2.2",
    )


def test_a_soft_bounce_limit_of_0_never_suppresses(tmp_path: Path, store: Store) -> None:
    """0 turns counting off."""
    cfg = make_config(tmp_path, tmp_path / "no-sendmail", forward=False, soft_bounce_limit=0)
    for n in range(3):
        uid = f"zero0message000{n}"
        add_message(store, uid, ("full@example.org",), "alice")
        raw = report("full@example.org", "5.2.2", "552 5.2.2 Mailbox full")
        assert process(raw, path_for(store, cfg, uid), cfg, store=store).status == EX_OK
    assert store.suppressions() == []


def test_a_complaint_suppresses_and_mail_of_no_login_suppresses_nothing(
    tmp_path: Path, store: Store
) -> None:
    """An abuse report suppresses the recipient for the login; a bounce of a message
    no login of ours sent (the server's own mail) puts nothing on any list."""
    cfg = make_config(tmp_path, tmp_path / "no-sendmail", forward=False)
    assert (
        process(fixture_bytes("arf-abuse.eml"), return_path(store, cfg), cfg, store=store).status
        == 0
    )
    entry = store.suppression("alice", "gone@example.org")
    assert entry is not None and (entry.reason, entry.status) == ("complaint", None)
    add_message(store, "nologin000000000", ("x@example.org",), None)
    raw = report("x@example.org", "5.1.1", "550 5.1.1 User unknown")
    assert process(raw, path_for(store, cfg, "nologin000000000"), cfg, store=store).status == 0
    assert [e.address for e in store.suppressions()] == ["gone@example.org"]


# -- the store -------------------------------------------------------------------------


def test_the_first_entry_is_kept_and_removing_forgets_the_soft_bounces(store: Store) -> None:
    """Suppressing twice keeps the first reason; remove takes it off (False the second
    time) and starts the soft-bounce count again."""
    assert store.suppress("alice", "A@Example.org", "user-unknown", status="5.1.1")
    assert not store.suppress("alice", "a@example.org", "complaint")
    [entry] = store.suppressions(login="alice")
    assert (entry.address, entry.reason) == ("a@example.org", "user-unknown")
    assert store.count_soft_bounce("alice", "a@example.org", "m1", "mailbox-full") == 1
    assert store.count_soft_bounce("alice", "A@example.org", "m1", "mailbox-full") == 1
    assert store.count_soft_bounce("alice", "a@example.org", "m2", "mailbox-full") == 2
    assert store.unsuppress("alice", "A@EXAMPLE.ORG")
    assert not store.unsuppress("alice", "a@example.org")
    assert store.suppressions() == []
    assert store.count_soft_bounce("alice", "a@example.org", "m3", "mailbox-full") == 1


@pytest.mark.parametrize("written", [" <Ann@Example.org> ", "<ann@example.org>", "ANN@EXAMPLE.ORG"])
def test_an_address_as_pasted_from_a_log_is_the_same_entry(store: Store, written: str) -> None:
    """Angle brackets, surrounding space and letter case never make a second entry:
    the list, the lookup at RCPT and removal all find the bare, lower-cased address."""
    assert store.suppress("alice", written, "user-unknown")
    assert not store.suppress("alice", "ann@example.org", "complaint")
    assert [e.address for e in store.suppressions(login="alice")] == ["ann@example.org"]
    found = store.suppression("alice", "<ANN@example.org>")
    assert found is not None and found.reason == "user-unknown"
    assert store.unsuppress("alice", f" <{written.strip().strip('<>')}>")
    assert store.suppression("alice", "ann@example.org") is None


def test_a_login_policy_is_refuse_or_off(store: Store) -> None:
    """New logins refuse by default; anything but refuse or off is refused."""
    created = store.create_login(Login("carol", "x"))
    assert created.suppression == "refuse"
    assert store.update_login("carol", suppression="off").suppression == "off"
    with pytest.raises(LoginError, match="invalid suppression policy 'maybe'"):
        store.update_login("carol", suppression="maybe")
    with pytest.raises(LoginError, match="invalid suppression policy"):
        store.create_login(Login("dave", "x", suppression="sometimes"))


# -- the refusal ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "status", "expected"),
    [
        ("user-unknown", "5.1.1",
         "550 5.1.1 <a@example.org>: suppressed for login shop after a hard bounce (5.1.1 user"
         " unknown) on 2026-11-30"),
        ("host-unknown", "5.4.4",
         "550 5.4.4 <a@example.org>: suppressed for login shop after a hard bounce (5.4.4 host"
         " unknown) on 2026-11-30"),
        ("user-unknown", "4.4.1",
         "550 5.1.1 <a@example.org>: suppressed for login shop after a hard bounce (4.4.1 user"
         " unknown) on 2026-11-30"),
        ("complaint", None,
         "550 5.7.1 <a@example.org>: suppressed for login shop after a complaint on 2026-11-30"),
        ("soft-bounces: mailbox-full", "4.2.2",
         "550 5.2.2 <a@example.org>: suppressed for login shop after repeated soft bounces"
         " (4.2.2 mailbox full) on 2026-11-30"),
        ("asked to by the customer", None,
         "550 5.7.1 <a@example.org>: suppressed for login shop after being added to the list"
         " (asked to by the customer) on 2026-11-30"),
    ],
    ids=["hard", "host", "hard-under-4xx", "complaint", "soft-limit", "manual"],
)  # fmt: skip
def test_the_refusal_says_why_and_since_when(
    reason: str, status: str | None, expected: str
) -> None:
    """The RCPT reply names the address, the login, the cause and the day."""
    entry = Suppression("shop", "a@example.org", reason, status, "u1", "2026-11-30T08:00:00.0Z")
    assert " ".join(refusal(entry)) == expected


# -- the milter ------------------------------------------------------------------------------


def rcpts(relay: RelayContext, login: str | None, *recipients: str) -> list[tuple[int, object]]:
    """One message from ``login`` to ``recipients`` as Postfix sends it: each RCPT's
    return code and reply; then the message for the recipients not refused."""
    ctx = PostfixCtx()
    ctx._setsymval("i", QID)
    ctx._setsymval("{daemon_name}", "smtpeter")
    if login is not None:
        ctx._setsymval("{auth_authen}", login)
    assert ctx._connect(ip="192.0.2.1") == Milter.CONTINUE
    assert ctx._envfrom("<a@example.com>") == Milter.CONTINUE
    replies: list[tuple[int, object]] = []
    for rcpt in recipients:
        ctx._reply = None
        replies.append((ctx._envrcpt(f"<{rcpt}>"), ctx._reply))
    if any(rc == Milter.CONTINUE for rc, _ in replies):
        # The rest as TestCtx._feedFile does it (which would stop at the refused RCPT,
        # where Postfix goes on with the other recipients).
        msg = testctx.mime.message_from_file(BytesIO(message()))
        ctx._msg, ctx._body, ctx._bodyreplaced, ctx._headerschanged = msg, None, False, False
        assert ctx._data() == Milter.CONTINUE
        for name, value in msg.items():
            assert ctx._header(name, value) == Milter.CONTINUE
        assert ctx._eoh() == Milter.CONTINUE
        assert ctx._feed_body(BytesIO(msg.as_bytes().split(b"\n\n", 1)[1])) == Milter.CONTINUE
        assert ctx._eom() == Milter.ACCEPT
    return replies


def test_a_suppressed_recipient_is_refused_at_rcpt_and_the_others_go_on(
    relay: RelayContext,
) -> None:
    """For the login whose list has it: 550 with the reason at RCPT, in any letter case;
    the message goes to the others and is recorded with them only."""
    relay.store.suppress("plain", "gone@example.org", "user-unknown", status="5.1.1")
    [gone, ok] = rcpts(relay, "plain", "Gone@Example.ORG", "ok@example.org")
    assert gone[0] == Milter.REJECT
    assert gone[1] is not None and re.fullmatch(
        r"\('550', '5\.1\.1', '<gone@example\.org>: suppressed for login plain after a hard bounce"
        r" \(5\.1\.1 user unknown\) on \d{4}-\d\d-\d\d'\)",
        str(gone[1]),
    )
    assert ok == (Milter.CONTINUE, None)
    [m] = relay.store.messages(queue_id=QID)
    assert m.recipients == ("<ok@example.org>",)  # as Postfix gave it


def test_other_logins_unauthenticated_mail_and_policy_off_are_not_refused(
    relay: RelayContext,
) -> None:
    """The list is per login; mail of no login of ours is never refused; a login with
    policy off sends to its suppressed recipients."""
    relay.store.suppress("plain", "gone@example.org", "user-unknown", status="5.1.1")
    relay.store.create_login(Login("other", "x"))
    assert rcpts(relay, "other", "gone@example.org") == [(Milter.CONTINUE, None)]
    assert rcpts(relay, None, "gone@example.org") == [(Milter.CONTINUE, None)]
    relay.store.update_login("plain", suppression="off")
    assert rcpts(relay, "plain", "gone@example.org") == [(Milter.CONTINUE, None)]


def test_a_list_that_cannot_be_read_refuses_nothing(
    relay: RelayContext, caplog: pytest.LogCaptureFixture
) -> None:
    """A store fault at RCPT is a warning and the recipient is accepted (no 4xx of its
    own: the message still gets its one verdict at end of headers)."""
    relay.store.suppress("plain", "gone@example.org", "user-unknown", status="5.1.1")
    with sqlite3.connect(relay.store.path) as conn:
        conn.execute("ALTER TABLE suppressions RENAME TO away")
    assert rcpts(relay, "plain", "gone@example.org") == [(Milter.CONTINUE, None)]
    assert "suppression list not read, <gone@example.org> accepted" in caplog.text


# -- the command ------------------------------------------------------------------------------


def test_the_command_lists_adds_and_removes(tmp_path: Path, store: Store) -> None:
    """add, list (table and JSON), remove, with sysexits codes for a wrong login, a
    wrong address, and an address not on the list."""
    conf = tmp_path / "smtpeter.yaml"
    conf.write_text(f"store:\n  sqlite_path: {store.path}\n")
    store.create_login(Login("shop", "x"))
    added = run(conf, "suppressions", "add", "<Ann@Example.org>", "--login", "shop", "--json")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout) == {
        "login": "shop",
        "address": "ann@example.org",
        "added": True,
    }
    again = run(conf, "suppressions", "add", "ann@example.org", "--login", "shop")
    assert again.stdout == "ann@example.org was already suppressed for login shop\n"
    table = run(conf, "suppressions", "list")
    assert table.returncode == 0
    header, row = table.stdout.splitlines()
    assert header.split() == ["LOGIN", "ADDRESS", "SINCE", "STATUS", "REASON"]
    assert row.split()[:2] == ["shop", "ann@example.org"] and row.split()[3:] == ["-", "manual"]
    [line] = run(conf, "suppressions", "list", "--login", "shop", "--json").stdout.splitlines()
    data = json.loads(line)
    assert (data["address"], data["reason"], data["status"]) == ("ann@example.org", "manual", None)
    assert run(conf, "suppressions", "add", "x@example.org", "--login", "nobody").returncode == 67
    bad = run(conf, "suppressions", "add", "not an address", "--login", "shop")
    assert bad.returncode == 65 and "invalid address" in bad.stderr
    removed = run(conf, "suppressions", "remove", "ann@example.org", "--login", "shop")
    assert removed.stdout == "ann@example.org removed from the suppression list of login shop\n"
    missing = run(conf, "suppressions", "remove", "ann@example.org", "--login", "shop")
    assert missing.returncode == 67
    assert missing.stderr == "smtpeter: ann@example.org is not suppressed for login shop\n"
    assert run(conf, "suppressions", "list", "--json").stdout == ""


def test_login_create_and_set_take_the_policy(tmp_path: Path, store: Store) -> None:
    """--suppression on login create and login set, shown by login show."""
    conf = tmp_path / "smtpeter.yaml"
    conf.write_text(f"store:\n  sqlite_path: {store.path}\n")
    created = run(conf, "login", "create", "news", "--suppression", "off", "--json")
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["suppression"] == "off"
    assert run(conf, "login", "set", "news", "--suppression", "refuse").returncode == 0
    shown = run(conf, "login", "show", "news").stdout
    assert "suppressed recipients: refused at RCPT" in shown
    wrong = run(conf, "login", "set", "news", "--suppression", "sometimes")
    assert wrong.returncode == 2 and "invalid choice" in wrong.stderr
    assert dataclasses.replace(Login("x", "y")).suppression == "refuse"


def test_a_bounce_of_an_alias_target_counts_for_the_alias_the_message_went_to(
    tmp_path: Path, store: Store
) -> None:
    """Exim names the alias's target and "(generated from alias)": the bounce is the
    alias's, not dropped as a stranger, and the alias is what gets suppressed."""
    cfg = make_config(tmp_path, tmp_path / "no-sendmail", forward=False)
    add_message(store, "alias0message000", ("alias@example.org",), "alice")
    raw = (
        b"From: Mail Delivery System <Mailer-Daemon@mx.example.org>\n"
        b"Subject: Mail delivery failed: returning message to sender\n"
        b"Date: Wed, 15 May 2024 12:00:00 +0200\n\n"
        b"This message was created automatically by mail delivery software.\n\n"
        b"A message that you sent could not be delivered to one or more of its\n"
        b"recipients. This is a permanent error. The following address(es) failed:\n\n"
        b"  real@mail.example.net\n    (generated from alias@example.org)\n"
        b"    550 5.1.1 <real@mail.example.net>: User unknown\n"
    )
    assert process(raw, path_for(store, cfg, "alias0message000"), cfg, store=store).status == 0
    [event] = store.events(message="alias0message000", type="bounce")
    assert (event.recipient, event.detail["kind"]) == ("alias@example.org", "hard")
    assert store.suppression("alice", "alias@example.org") is not None
    assert store.suppression("alice", "real@mail.example.net") is None


def test_a_recipient_reported_without_a_domain_is_the_messages_one_of_that_name(
    tmp_path: Path, store: Store
) -> None:
    """A DSN naming "dave" alone counts for dave@example.org, the message's recipient;
    with two recipients of that name it is dropped as unknown."""
    cfg = make_config(tmp_path, tmp_path / "no-sendmail", forward=False)
    add_message(store, "dave0message0000", ("dave@example.org", "erin@example.org"), "alice")
    add_message(store, "two0daves0000000", ("dave@example.org", "dave@example.net"), "alice")
    raw = dsn("Reporting-MTA: dns; mx.example.org\n\n"
              "Final-Recipient: rfc822; dave\nAction: failed\nStatus: 5.1.1\n")  # fmt: skip
    for uid in ("dave0message0000", "two0daves0000000"):
        assert process(raw, path_for(store, cfg, uid), cfg, store=store).status == EX_OK
    [event] = store.events(message="dave0message0000", type="bounce")
    assert event.recipient == "dave@example.org"
    assert store.events(message="two0daves0000000") == []
