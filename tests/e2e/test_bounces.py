"""Bounce tracking end to end: Postfix itself bounces a message sent with
trackbounces; the DSN comes back to the signed return path, the bounce processor
(run by Postfix's pipe, as user smtpeter) records it and forwards it to the sender
through Postfix's sendmail(1)."""

from __future__ import annotations

import pwd
import re
import smtplib
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smtpeter.local.stack import BOUNCE_DOMAIN, LocalStack
from smtpeter.store import Store
from smtpeter.tracker.keys import KeyRing
from tests.e2e.conftest import MakeLogin
from tests.e2e.smtp import connect, events, find_delivered, parse, send, simple

pytestmark = pytest.mark.e2e

DSN = (
    b"From: MAILER-DAEMON@mx.example.org\r\nTo: whoever\r\nSubject: Undelivered Mail\r\n"
    b"Date: Tue, 1 Dec 2026 10:00:00 +0100\r\nMessage-ID: <dsn1@mx.example.org>\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"\r\n\r\n'
    b"--b1\r\nContent-Type: text/plain\r\n\r\nIt bounced.\r\n"
    b"--b1\r\nContent-Type: message/delivery-status\r\n\r\n"
    b"Reporting-MTA: dns; mx.example.org\r\nArrival-Date: Tue, 1 Dec 2026 09:59:58 +0100\r\n\r\n"
    b"Final-Recipient: rfc822; gone@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n"
    b"Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n"
    b"--b1--\r\n"
)


def wait_events(stack: LocalStack, *args: str, timeout: float = 30) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = events(stack, *args)
        if found:
            return found
        stack.flush()
        time.sleep(0.3)
    return []


def bounce_cli(
    stack: LocalStack, recipient: str, data: bytes, *, user: str = "smtpeter"
) -> subprocess.CompletedProcess[bytes]:
    """Run the processor as Postfix's pipe does: as user smtpeter, message on stdin."""
    return subprocess.run(
        ["runuser", "-u", user, "--", sys.executable, "-m", "smtpeter",
         "--config", str(stack.config_file), "bounce", "--recipient", recipient,
         "--sender", "", "--queue-id", "TEST1"],
        input=data, capture_output=True, timeout=60,
    )  # fmt: skip


def message_uid(store: Store, mark: str) -> str:
    """The uid the milter gave the message sent with this marker."""
    [record] = [m for m in store.messages(limit=50) if m.message_id == f"<{mark}@test.example>"]
    assert record.uid is not None
    return record.uid


def return_path_for(stack: LocalStack, store: Store, uid: str) -> str:
    signer = KeyRing.from_config(store, stack.config().tracker).signer()
    return f"b+{signer.sign_return_path(uid)}@{BOUNCE_DOMAIN}"


@pytest.mark.parametrize(
    ("local", "kind", "status"),
    [("reject-user", "hard", "5.1.1"), ("defer-user", "soft", "4.2.1")],
)
def test_postfix_bounce_is_recorded_and_forwarded(
    stack: LocalStack, make_login: MakeLogin, local: str, kind: str, status: str
) -> None:
    user, password = make_login(trackbounces=True)
    failing = f"{local}-{user}@example.org"
    mark = send(
        stack, user, password, simple("will bounce"), sender="owner@example.com",
        recipients=(failing,),
    )  # fmt: skip
    found = wait_events(stack, "--login", user, "--type", "bounce")
    assert len(found) == 1, found
    event = found[0]
    assert event["recipient"] == failing
    detail = event["detail"]
    assert isinstance(detail, dict)
    assert detail["kind"] == kind and detail["status"] == status
    assert event["message_id"] == f"<{mark}@test.example>"

    # The sender gets the bounce, as if there had been no tracking: with the null
    # sender, and the original message's Message-ID inside.
    forwarded = parse(find_delivered(stack, mark))
    assert forwarded.get_all("Return-Path") == ["<>"]  # the sink's: the envelope sender
    assert forwarded["Delivered-To"] == "owner@example.com"
    assert forwarded.get_content_type() == "multipart/report"
    # It went back into Postfix through sendmail(1), run by the processor as user
    # smtpeter: pickup's Received line, and pickup's log line with the null sender.
    received = re.search(r"\(Postfix, from userid (\d+)\)\s+id (\w+);", forwarded["Received"])
    assert received is not None, forwarded["Received"]
    uid, queue_id = received.groups()
    assert int(uid) == pwd.getpwnam("smtpeter").pw_uid
    log = stack.log_file("postfix").read_text()
    assert re.search(rf"postfix/pickup\[\d+\]: {queue_id}: uid={uid} from=<>\n", log), log


def smtp_bounce(stack: LocalStack, return_path: str, data: bytes) -> str:
    """A remote MX returns ``data`` to the return path over SMTP; Postfix's queue id."""
    with connect(stack, stack.ports.smtp) as client:
        assert client.mail("<>")[0] == 250
        assert client.rcpt(return_path)[0] == 250
        code, reply = client.data(data)
        assert code == 250, reply
    m = re.search(rb"queued as (\w+)", reply)
    assert m is not None, reply
    return m.group(1).decode()


def wait_piped(stack: LocalStack, queue_id: str, timeout: float = 30) -> None:
    """Until Postfix logs that pipe(8) handed ``queue_id`` to the bounce processor and
    the processor exited (so everything it records is in the store)."""
    pattern = re.compile(rf"postfix/pipe\[\d+\]: {queue_id}: .*status=sent")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pattern.search(stack.log_file("postfix").read_text()):
            return
        time.sleep(0.2)
    raise AssertionError(f"no pipe delivery of {queue_id} in the Postfix log")


def test_bounce_from_a_remote_mta_over_smtp_counts_once_however_often_it_comes(
    stack: LocalStack, make_login: MakeLogin, store: Store
) -> None:
    """A remote MX returns a DSN to the return path: accepted without AUTH for the
    bounce domain only, recorded with its reason, forwarded. The same DSN delivered
    again (a new Postfix queue id) records nothing and reaches the sender no second
    time."""
    user, password = make_login(trackbounces=True)
    mark = send(
        stack, user, password, simple("remote"), sender="owner2@example.com",
        recipients=("gone@example.org",),
    )  # fmt: skip
    uid = message_uid(store, mark)
    return_path = return_path_for(stack, store, uid)
    dsn = DSN.replace(b"It bounced.", f"About {mark}".encode())
    first = smtp_bounce(stack, return_path.upper(), dsn)  # case changed on the way back
    [event] = wait_events(stack, "--login", user, "--type", "bounce")
    assert event["recipient"] == "gone@example.org"
    detail = event["detail"]
    assert isinstance(detail, dict)
    assert (detail["kind"], detail["reason"], detail["queue_id"]) == ("hard", "user-unknown", first)
    find_delivered(stack, "Delivered-To: owner2@example.com\n")

    again = smtp_bounce(stack, return_path, dsn)
    assert again != first
    wait_piped(stack, again)
    assert len(events(stack, "--login", user, "--type", "bounce")) == 1
    # Absence of a second forward, proven by a later arrival for the same sender.
    later = send(stack, user, password, simple("later"), recipients=("owner2@example.com",))
    find_delivered(stack, later)
    to_owner = [
        p for p in stack.delivered() if b"Delivered-To: owner2@example.com" in p.read_bytes()
    ]
    assert sorted(later.encode() in p.read_bytes() for p in to_owner) == [False, True]


def test_a_bounce_naming_a_recipient_the_message_never_had_is_not_recorded(
    stack: LocalStack, make_login: MakeLogin, store: Store
) -> None:
    """Bounce poisoning: a DSN to a genuine return path that names another address
    records no bounce (the processor says so), while one naming the real recipient
    does."""
    user, password = make_login(trackbounces=True)
    mark = send(
        stack, user, password, simple("poison"), sender="", recipients=("real@example.org",)
    )
    return_path = return_path_for(stack, store, message_uid(store, mark))
    result = bounce_cli(stack, return_path, DSN)
    assert result.returncode == 0, result.stderr
    assert b"names gone@example.org, which it was never sent to: not recorded" in result.stderr
    real = DSN.replace(b"gone@example.org", b"real@example.org")
    assert bounce_cli(stack, return_path, real).returncode == 0
    [event] = events(stack, "--login", user, "--type", "bounce")
    assert event["recipient"] == "real@example.org"


def test_tampered_return_path_is_dropped_without_backscatter(
    stack: LocalStack, make_login: MakeLogin, store: Store
) -> None:
    user, password = make_login(trackbounces=True)
    mark = send(stack, user, password, simple("tampered"), sender="owner3@example.com")
    uid = message_uid(store, mark)
    good = return_path_for(stack, store, uid)
    local, domain = good.split("@")
    bad = local[:-1] + ("a" if local[-1] != "a" else "b") + "@" + domain
    result = bounce_cli(stack, bad, DSN)
    assert result.returncode == 0
    assert b"dropped: tampered, unknown or expired return path" in result.stderr
    for garbage in ("b+nonsense@" + BOUNCE_DOMAIN, "someone@" + BOUNCE_DOMAIN, "x@other.org"):
        result = bounce_cli(stack, garbage, DSN)
        assert result.returncode == 0 and b"dropped" in result.stderr
    # Absence, proven by a later arrival: a message to the same sender, sent after
    # the drops, has arrived, and it is the only mail for that sender.
    later = send(stack, user, password, simple("later"), recipients=("owner3@example.com",))
    find_delivered(stack, later)
    assert [e for e in events(stack, "--login", user)
            if e["type"] not in ("delivered", "deferred", "failed")] == []  # fmt: skip
    to_owner = [
        p for p in stack.delivered() if b"Delivered-To: owner3@example.com" in p.read_bytes()
    ]
    assert [later.encode() in p.read_bytes() for p in to_owner] == [True]


@pytest.mark.parametrize("data", [b"", b"\x00\xff garbage \r\n\r\n\x80", b"Subject: hi\r\n\r\nno"])
def test_empty_and_garbage_input_never_fail_permanently(
    stack: LocalStack, make_login: MakeLogin, store: Store, data: bytes
) -> None:
    user, password = make_login(trackbounces=True)
    mark = send(stack, user, password, simple("garbage"), sender="")  # null sender: no forward
    uid = message_uid(store, mark)
    result = bounce_cli(stack, return_path_for(stack, store, uid), data)
    assert result.returncode == 0, result.stderr
    assert events(stack, "--login", user, "--type", "bounce") == []


def test_store_outage_is_a_temporary_failure(
    stack: LocalStack, make_login: MakeLogin, store: Store
) -> None:
    user, password = make_login(trackbounces=True)
    mark = send(
        stack, user, password, simple("outage"), sender="", recipients=("gone@example.org",)
    )
    uid = message_uid(store, mark)
    return_path = return_path_for(stack, store, uid)
    with sqlite3.connect(store.path) as conn:
        conn.execute("ALTER TABLE events RENAME TO events_away")
    try:
        result = bounce_cli(stack, return_path, DSN)
        assert result.returncode == 75, result.stderr  # EX_TEMPFAIL: Postfix retries
        assert b"store unavailable, will retry" in result.stderr
    finally:
        with sqlite3.connect(store.path) as conn:
            conn.execute("ALTER TABLE events_away RENAME TO events")
    assert bounce_cli(stack, return_path, DSN).returncode == 0
    assert len(events(stack, "--login", user, "--type", "bounce")) == 1


def test_a_feedback_report_becomes_a_complaint(
    stack: LocalStack, make_login: MakeLogin, store: Store
) -> None:
    """An RFC 5965 abuse report to the return path is a complaint event for the
    recipient, listed by `smtpeter events --type complaint`, and no bounce."""
    user, password = make_login(trackbounces=True)
    mark = send(stack, user, password, simple("fbl"), sender="", recipients=("gone@example.org",))
    return_path = return_path_for(stack, store, message_uid(store, mark))
    arf = (Path(__file__).parents[1] / "data" / "bounces" / "arf-abuse.eml").read_bytes()
    result = bounce_cli(stack, return_path, arf)
    assert result.returncode == 0, result.stderr
    [event] = events(stack, "--login", user, "--type", "complaint")
    assert event["recipient"] == "gone@example.org"
    detail = event["detail"]
    assert isinstance(detail, dict) and detail["feedback_type"] == "abuse"
    assert events(stack, "--login", user, "--type", "bounce") == []


def test_a_feedback_report_to_the_feedback_address_over_smtp_is_a_complaint(
    stack: LocalStack, make_login: MakeLogin, store: Store
) -> None:
    """A provider's feedback loop sends its report over SMTP to the registered address
    at the bounce domain (fbl@, as the local stack configures it), not to the return
    path: Postfix pipes it to the processor, which finds the message by the signed
    return path in the report's Original-Mail-From and records the complaint, which
    suppresses the recipient for the login (refused at the next RCPT)."""
    user, password = make_login(trackbounces=True)
    mark = send(stack, user, password, simple("fbl2"), recipients=("gone@example.org",))
    return_path = return_path_for(stack, store, message_uid(store, mark))
    arf = (Path(__file__).parents[1] / "data" / "bounces" / "arf-abuse.eml").read_bytes()
    arf = arf.replace(b"b+token@bounces.example.com", return_path.encode())
    feedback = f"fbl@{BOUNCE_DOMAIN}"
    assert stack.config().bounces.feedback_address == feedback
    wait_piped(stack, smtp_bounce(stack, feedback, arf.replace(b"\n", b"\r\n")))
    [event] = events(stack, "--login", user, "--type", "complaint")
    assert event["recipient"] == "gone@example.org"
    assert events(stack, "--login", user, "--type", "bounce") == []
    with connect(stack, stack.ports.submission) as client:
        client.login(user, password)
        assert client.mail("<a@example.com>")[0] == 250
        code, reply = client.rcpt("<gone@example.org>")
    assert code == 550 and b"suppressed for login" in reply and b"after a complaint" in reply


def test_tags_and_metadata_ride_on_the_bounce_event(
    stack: LocalStack, make_login: MakeLogin, store: Store
) -> None:
    """Tags and metadata sent in x-smtpeter-* headers through Postfix are on the bounce
    event `smtpeter events --json` shows, and never reach the recipient; a tag with a
    space is refused at the end of data with a 550 naming the header."""
    user, password = make_login(trackbounces=True)
    raw = simple("tagged", X_SMTPeter_Tags="newsletter, 2026-12",
                 X_SMTPeter_Metadata='{"customer": "42"}')  # fmt: skip
    mark = send(stack, user, password, raw, recipients=("gone@example.org",))
    assert b"x-smtpeter" not in find_delivered(stack, mark).lower()
    return_path = return_path_for(stack, store, message_uid(store, mark))
    assert bounce_cli(stack, return_path, DSN).returncode == 0
    [event] = events(stack, "--login", user, "--type", "bounce")
    assert (event["tags"], event["metadata"]) == (["newsletter", "2026-12"], {"customer": "42"})
    with pytest.raises(smtplib.SMTPDataError) as err:
        send(stack, user, password, simple("bad", X_SMTPeter_Tags="news letter"))
    assert err.value.smtp_code == 550
    assert b"5.6.0 X-SMTPeter-Tags: invalid tag" in err.value.smtp_error
