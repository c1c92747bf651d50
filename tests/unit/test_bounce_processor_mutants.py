"""The bounce processor: what mutation testing (scripts/mutation) found unchecked.

Each failed recipient becomes one event of the right type with its fields (read back
through the store), delay notices and auto-replies never count as bounces; the return
path is recognised in every form Postfix may hand it over and anything else is
dropped with a log line saying why; the bounce goes to the right message and its
sender; a retry is recognised per message only when there is a queue id; and the
log line names what was recorded, forwarded, or why forwarding failed, exactly.
The store, the signing keys and sendmail (a shell script) are real."""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from smtpeter import config as configmod
from smtpeter.bounces.processor import EX_OK, EX_TEMPFAIL, process
from smtpeter.store import MessageRecord, Store, open_store
from smtpeter.tracker.keys import KeyRing
from tests.unit.test_bounce_detect import dsn, fixture_bytes
from tests.unit.test_bounce_processor import (
    DOMAIN,
    DSN,
    SENDER,
    UID,
    bounces,
    make_config,
    return_path,
    script,
    sent,
)
from tests.unit.test_bounce_processor import good_sendmail as good_sendmail
from tests.unit.test_bounce_processor import store as store

SUMMARY = f"message {UID} (queue id 4XyZ1, login alice): detector=dsn"
LONG_DIAGNOSTIC = "smtp; 550 5.1.1 " + "x" * 600
# One DSN with a recipient of every kind; the first one's kind cannot be told.
MIXED = dsn(
    "Reporting-MTA: dns; mx.example.org\n\n"
    "Final-Recipient: rfc822; odd@example.org\nAction: failed\n\n"
    "Final-Recipient: rfc822; gone@example.org\nAction: failed\nStatus: 5.1.1\n"
    f"Remote-MTA: dns; mx2.example.org\nDiagnostic-Code: {LONG_DIAGNOSTIC}\n\n"
    "Final-Recipient: rfc822; full@example.org\nAction: failed\nStatus: 4.2.2\n\n"
    "Final-Recipient: rfc822; slow@example.org\nAction: delayed\nStatus: 4.4.7\n"
)
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


Stored = list[tuple[str, str | None, dict[str, str]]]


#: Stands for the bounce's identity (a 32-hex digest) in the expected details.
KEY = "<identity>"


def stored(store: Store, uid: str = UID) -> Stored:
    """The message's events (type, recipient, detail), in a fixed order; a bounce_id
    that is an identity digest reads as KEY."""
    return in_order(
        [
            (e.type, e.recipient, {
                k: KEY if k == "bounce_id" and re.fullmatch(r"[0-9a-f]{32}", v) else v
                for k, v in e.detail.items()
            })
            for e in store.events(message=uid)
        ]
    )  # fmt: skip


def in_order(events: Stored) -> Stored:
    return sorted(events, key=repr)


def add_message(store: Store, uid: str, sender: str, *, login: str | None = "alice") -> None:
    store.record_message(
        MessageRecord(
            queue_id="4XyZ9", message_id=None, login=login, envelope_sender=sender,
            recipients=("a@example.org", "gone@example.org"), features=("trackbounces",),
            size_before=1, size_after=1, uid=uid,
        )
    )  # fmt: skip


def path_for(store: Store, cfg: configmod.Config, uid: str, *, days_ago: float = 0) -> str:
    """A return path for ``uid`` as the relay signed it ``days_ago`` days ago."""
    then = time.time() - days_ago * 86400

    ring = KeyRing.from_config(store, cfg.tracker, clock=lambda: then)
    return f"b+{ring.signer().sign_return_path(uid)}@{DOMAIN}"


@pytest.fixture
def far_from_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The machine's local time zone is 5.5 hours off UTC."""
    monkeypatch.setenv("TZ", "XST-5:30")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_each_failed_recipient_is_one_event_of_its_kind_with_its_fields(
    tmp_path: Path, store: Store, good_sendmail: Path, far_from_utc: None
) -> None:
    """Hard and soft failures are bounces, a delay notice is a delay, a recipient of
    unknown fate is skipped (not the ones after it); each event has the reported
    status, diagnostic (cut to 500 characters) and MTAs, and a UTC timestamp."""
    cfg = make_config(tmp_path, good_sendmail)
    outcome = process(MIXED, return_path(store, cfg), cfg, bounce_id="B9", store=store)
    assert outcome == type(outcome)(
        EX_OK,
        f"{SUMMARY} events=gone@example.org:hard/user-unknown,"
        f"full@example.org:soft/mailbox-full,slow@example.org:delay; forwarded to {SENDER}",
    )
    common = {
        "detector": "dsn",
        "bounce_id": KEY,
        "queue_id": "B9",
        "reporting_mta": "mx.example.org",
    }
    assert stored(store) == in_order([
        ("bounce", "gone@example.org", {**common, "kind": "hard", "status": "5.1.1",
         "reason": "user-unknown", "diagnostic": LONG_DIAGNOSTIC[:500],
         "remote_mta": "mx2.example.org"}),
        ("bounce", "full@example.org", {**common, "kind": "soft", "status": "4.2.2",
         "reason": "mailbox-full"}),
        ("delay", "slow@example.org", {**common, "kind": "delay", "status": "4.4.7"}),
    ])  # fmt: skip
    assert sum(int(str(row["bounces"])) for row in store.stats(login="alice")) == 2
    for event in store.events(message=UID):
        assert event.message_uid == UID
        assert TIMESTAMP.fullmatch(event.occurred_at), event.occurred_at
        when = datetime.strptime(event.occurred_at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        assert abs((datetime.now(UTC) - when).total_seconds()) < 60


@pytest.mark.parametrize(
    ("raw", "detector", "events", "expected"),
    [
        (fixture_bytes("vacation.eml"), "autoreply", "Jane.Roe@example.org:autoreply",
         [("autoreply", "Jane.Roe@example.org", {"kind": "autoreply", "detector": "autoreply",
           "bounce_id": KEY, "queue_id": "B1", "diagnostic": "Auto: Our May newsletter"})]),
        # No usable sender: one autoreply event for the message, for no one recipient.
        (b"From: undisclosed\nSubject: Out of office\n\nAway.\n", "autoreply", "-:autoreply",
         [("autoreply", None, {"kind": "autoreply", "bounce_id": KEY, "queue_id": "B1"})]),
        (fixture_bytes("human-reply.eml"), "none", "none", []),
    ],
    ids=["autoreply", "autoreply-without-sender", "human-reply"],
)  # fmt: skip
def test_auto_replies_are_recorded_as_such_and_other_mail_not_at_all(
    tmp_path: Path,
    store: Store,
    good_sendmail: Path,
    raw: bytes,
    detector: str,
    events: str,
    expected: Stored,
) -> None:
    """An auto-reply is one autoreply event (never a bounce), a human reply none; the
    log line names them, and the reply still reaches the sender."""
    cfg = make_config(tmp_path, good_sendmail)
    outcome = process(raw, return_path(store, cfg), cfg, bounce_id="B1", store=store)
    assert outcome.status == EX_OK
    assert outcome.what == (
        f"message {UID} (queue id 4XyZ1, login alice): detector={detector} events={events}"
        f"; forwarded to {SENDER}"
    )
    assert stored(store) == in_order(expected)
    for event in store.events(message=UID):
        assert TIMESTAMP.fullmatch(event.occurred_at) and event.message_uid == UID
    assert [message for _, message in sent(tmp_path)] == [raw]


def accepted_forms(rp: str) -> dict[str, str]:
    local, _, domain = rp.partition("@")
    return {
        "bare": rp,
        "angle-brackets-and-spaces": f" <{rp}> ",
        "upper-case": rp.upper(),
        "domain-upper-case": f"{local}@{domain.upper()}",
        "quoted-local-part": f'"{local}"@{domain}',
    }


@pytest.mark.parametrize(
    "form",
    ["bare", "angle-brackets-and-spaces", "upper-case", "domain-upper-case", "quoted-local-part"],
)
def test_a_return_path_is_recognised_in_every_form_postfix_may_give(
    tmp_path: Path, store: Store, good_sendmail: Path, form: str
) -> None:
    """Brackets, spaces, letter case and a quoted local part do not hide a genuine
    return path: its bounce is recorded and forwarded."""
    cfg = make_config(tmp_path, good_sendmail)
    outcome = process(DSN, accepted_forms(return_path(store, cfg))[form], cfg, store=store)
    assert (
        outcome.what
        == f"{SUMMARY} events=gone@example.org:hard/user-unknown; forwarded to {SENDER}"
    )
    assert bounces(store) == ["5.1.1"]


def test_a_prefix_that_looks_like_brackets_is_still_recognised(
    tmp_path: Path, store: Store, good_sendmail: Path
) -> None:
    """With prefix X, <X+token@domain> and "X+token"@domain are ours (only brackets
    and quotes are taken off, not the prefix's letters)."""
    cfg = make_config(tmp_path, good_sendmail, prefix="X")
    token = return_path(store, cfg).removeprefix("b+").partition("@")[0]
    second = DSN.replace(b"5.1.1", b"5.1.2")
    for rcpt, raw in ((f"<X+{token}@{DOMAIN}>", DSN), (f'"X+{token}"@{DOMAIN}', second)):
        assert process(raw, rcpt, cfg, bounce_id=rcpt, store=store).status == EX_OK
    assert sorted(bounces(store)) == ["5.1.1", "5.1.2"]


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda rp, t: f"b+{t}@other.example.com", "not ours"),
        (lambda rp, t: f"c+{t}@{DOMAIN}", "not ours"),
        (lambda rp, t: f"b@{DOMAIN}", "not ours"),
        (lambda rp, t: f"b-{t}@{DOMAIN}", "not ours"),
        (lambda rp, t: f"b+x+{t}@{DOMAIN}", "tampered"),
        (lambda rp, t: f'"b+{t}@x"@{DOMAIN}', "tampered"),
        (lambda rp, t: f"b+{t[:-1]}{'b' if t.endswith('a') else 'a'}@{DOMAIN}", "tampered"),
        (lambda rp, t: f"b+{t}.x@{DOMAIN}", "tampered"),
    ],
    ids=["other-domain", "other-prefix", "no-token", "no-plus", "two-plus", "at-in-quotes",
         "bad-mac", "five-parts"],
)  # fmt: skip
def test_anything_but_a_genuine_return_path_is_dropped_and_says_why(
    tmp_path: Path,
    store: Store,
    good_sendmail: Path,
    make: Callable[[str, str], str],
    why: str,
) -> None:
    """A bounce to another address, or to a token that does not verify, is dropped with
    exit 0 (no retry), records nothing, sends nothing, and the log line says which."""
    cfg = make_config(tmp_path, good_sendmail)
    rp = return_path(store, cfg)
    token = rp.removeprefix("b+").partition("@")[0]
    rcpt = make(rp, token)
    outcome = process(DSN, rcpt, cfg, bounce_id="B1", store=store)
    assert outcome.status == EX_OK
    assert outcome.what == (
        f"dropped: {rcpt} is not a return path of ours"
        if why == "not ours"
        else f"dropped: tampered, unknown or expired return path {rcpt}"
    )
    assert store.events(message=UID) == [] and sent(tmp_path) == []


def test_with_trackbounces_off_every_bounce_is_dropped(
    tmp_path: Path, store: Store, good_sendmail: Path
) -> None:
    """With bounces.domain null no address is a return path of ours (and nothing fails)."""
    signed = return_path(store, make_config(tmp_path, good_sendmail))
    cfg = configmod.parse(
        {"store": {"sqlite_path": store.path}, "bounces": {"sendmail": str(good_sendmail)}}, "t"
    )
    outcome = process(DSN, signed, cfg, bounce_id="B1", store=store)
    assert (outcome.status, outcome.what) == (
        EX_OK,
        f"dropped: {signed} is not a return path of ours",
    )
    assert store.events(message=UID) == [] and sent(tmp_path) == []


@pytest.mark.parametrize(("days_ago", "kept"), [(29, True), (33, False)])
def test_a_return_path_is_honoured_for_its_lifetime_and_no_longer(
    tmp_path: Path, store: Store, good_sendmail: Path, days_ago: int, kept: bool
) -> None:
    """bounces.address_lifetime_days (30) is in days: a bounce 29 days after sending is
    recorded, one 33 days after is dropped uncounted."""
    cfg = make_config(tmp_path, good_sendmail, address_lifetime_days=30)
    rcpt = path_for(store, cfg, UID, days_ago=days_ago)
    outcome = process(DSN, rcpt, cfg, bounce_id="B1", store=store)
    assert outcome.status == EX_OK
    if kept:
        assert outcome.what.startswith(SUMMARY), outcome.what
        assert bounces(store) == ["5.1.1"]
    else:
        assert outcome.what == f"dropped: tampered, unknown or expired return path {rcpt}"
        assert bounces(store) == [] and sent(tmp_path) == []


def test_a_genuine_return_path_of_an_unknown_message_is_dropped(
    tmp_path: Path, store: Store, good_sendmail: Path
) -> None:
    """A signed return path whose message is not in the store (pruned, or another
    store) records nothing, sends nothing, and the log line names the uid."""
    cfg = make_config(tmp_path, good_sendmail)
    rcpt = path_for(store, cfg, "n0such0message00")
    outcome = process(DSN, rcpt, cfg, bounce_id="B1", store=store)
    assert (outcome.status, outcome.what) == (
        EX_OK,
        f"dropped: no message n0such0message00 for return path {rcpt}",
    )
    assert store.events() == [] and sent(tmp_path) == []


def test_the_bounce_goes_to_its_own_message_not_the_newest(
    tmp_path: Path, store: Store, good_sendmail: Path
) -> None:
    """With a newer message in the store, a bounce for the older one is recorded for the
    older one and forwarded to the older one's sender."""
    add_message(store, "newer0message000", "newer@example.com")
    cfg = make_config(tmp_path, good_sendmail)
    outcome = process(DSN, return_path(store, cfg), cfg, bounce_id="B1", store=store)
    assert (
        outcome.what
        == f"{SUMMARY} events=gone@example.org:hard/user-unknown; forwarded to {SENDER}"
    )
    assert bounces(store) == ["5.1.1"]
    assert store.events(message="newer0message000") == []
    assert [argv[-1] for argv, _ in sent(tmp_path)] == [SENDER]


def test_one_bounce_to_two_return_paths_counts_for_both_messages(
    tmp_path: Path, store: Store, good_sendmail: Path
) -> None:
    """pipe(8) runs the processor once per recipient with the same queue id: a bounce
    addressed to the return paths of two messages is recorded for each, with the
    queue id kept for the operator."""
    add_message(store, "second0message00", "other@example.com")
    cfg = make_config(tmp_path, good_sendmail)
    for uid in (UID, "second0message00"):
        outcome = process(DSN, path_for(store, cfg, uid), cfg, bounce_id="Q1", store=store)
        assert outcome.status == EX_OK, outcome.what
    for uid in (UID, "second0message00"):
        [event] = store.events(message=uid, type="bounce")
        assert event.detail["queue_id"] == "Q1"
        assert re.fullmatch(r"[0-9a-f]{32}", event.detail["bounce_id"])
    assert len(sent(tmp_path)) == 2


def test_without_a_queue_id_each_bounce_is_recorded_once(
    tmp_path: Path, store: Store, good_sendmail: Path
) -> None:
    """Handed over without a queue id, two different bounces are both recorded (no
    queue_id in their events) and the first one delivered again is not."""
    cfg = make_config(tmp_path, good_sendmail)
    second = DSN.replace(b"5.1.1", b"5.2.2")
    for raw in (DSN, second, DSN):
        assert process(raw, return_path(store, cfg), cfg, store=store).status == EX_OK
    assert sorted(bounces(store)) == ["5.1.1", "5.2.2"]
    assert all("queue_id" not in e.detail for e in store.events(message=UID))
    assert len(sent(tmp_path)) == 2


def test_the_same_bounce_delivered_again_is_recorded_and_forwarded_once(
    tmp_path: Path, store: Store, good_sendmail: Path
) -> None:
    """Two bounces for the same message both count; the second delivered again under
    another queue id (a remote retry, a second MX) records and forwards nothing, and
    the log line says so."""
    cfg = make_config(tmp_path, good_sendmail)
    second = DSN.replace(b"5.1.1", b"5.2.2")
    outcomes = [
        process(raw, return_path(store, cfg), cfg, bounce_id=queue_id, store=store)
        for raw, queue_id in ((DSN, "Q1"), (second, "Q2"), (second, "Q3"))
    ]
    assert [o.status for o in outcomes] == [EX_OK] * 3
    assert sorted(
        (e.detail["status"], e.detail["queue_id"]) for e in store.events(message=UID)
    ) == [("5.1.1", "Q1"), ("5.2.2", "Q2")]
    assert [message for _, message in sent(tmp_path)] == [DSN, second]
    key = store.events(message=UID, type="bounce")[0].detail["bounce_id"]
    assert re.fullmatch(
        rf"dropped: bounce [0-9a-f]{{32}} of message {UID} was recorded and forwarded"
        r" before \(delivered again\)",
        outcomes[2].what,
    )
    assert key in {e.detail["bounce_id"] for e in store.events(message=UID)}


def test_the_configured_store_is_opened_when_none_is_given(
    tmp_path: Path, store: Store, good_sendmail: Path
) -> None:
    """As `smtpeter bounce` calls it (no store passed): the bounce lands in the store
    the configuration names."""
    cfg = make_config(tmp_path, good_sendmail)
    outcome = process(DSN, return_path(store, cfg), cfg, bounce_id="B1")
    assert outcome.status == EX_OK, outcome.what
    assert bounces(open_store(cfg.store)) == ["5.1.1"]


def test_a_store_that_cannot_be_opened_is_a_temporary_failure(
    tmp_path: Path, good_sendmail: Path
) -> None:
    """A store that cannot be opened gives 75 (Postfix keeps the bounce and retries),
    the reason in the log line, and nothing is forwarded yet."""
    cfg = configmod.parse(
        {"store": {"sqlite_path": str(tmp_path)},
         "bounces": {"domain": DOMAIN, "sendmail": str(good_sendmail)}}, "t",
    )  # fmt: skip
    outcome = process(DSN, f"b+x.y.z.w@{DOMAIN}", cfg, bounce_id="B1")
    assert outcome.status == EX_TEMPFAIL
    assert outcome.what.startswith(f"store unavailable, will retry: store {tmp_path}")
    assert sent(tmp_path) == []


@pytest.mark.parametrize(
    ("envelope_sender", "to"),
    [(" <Xena@example.org> ", "Xena@example.org"), ("<>", None), ("", None)],
)
def test_the_bounce_goes_to_the_bare_envelope_sender(
    tmp_path: Path, store: Store, good_sendmail: Path, envelope_sender: str, to: str | None
) -> None:
    """The stored envelope sender is used without brackets or spaces (its letters
    kept); a null sender gets nothing; a message without a login logs login -."""
    add_message(store, "xena0message0000", envelope_sender, login=None)
    cfg = make_config(tmp_path, good_sendmail)
    outcome = process(DSN, path_for(store, cfg, "xena0message0000"), cfg, store=store)
    head = "message xena0message0000 (queue id 4XyZ9, login -): detector=dsn"
    forwarded = f"; forwarded to {to}" if to else ""
    assert (outcome.status, outcome.what) == (
        EX_OK,
        f"{head} events=gone@example.org:hard/user-unknown{forwarded}",
    )
    assert [argv for argv, _ in sent(tmp_path)] == (
        [["-G", "-i", "-f", "<>", "--", to]] if to else []
    )


@pytest.mark.parametrize(
    ("stderr", "reported"),
    [
        ("printf 'first line\\n\\n   \\n  second line  \\n' >&2", "first line | second line"),
        ("", "(empty)"),
        ("printf '%0200d' 0 | tr 0 a >&2; printf '%01000d' 0 | tr 0 b >&2", "b" * 1000),
        ("printf '\\377not utf-8\\n' >&2", "\ufffdnot utf-8"),
    ],
    ids=["lines-joined", "empty", "last-1000-characters", "not-utf-8"],
)
@pytest.mark.parametrize("mail_config", [None, "/etc/postfix-out"])
def test_a_failed_forward_logs_the_command_its_status_and_its_stderr_exactly(
    tmp_path: Path,
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
    stderr: str,
    reported: str,
    mail_config: str | None,
) -> None:
    """The operator's log line after a failed forward: what was recorded, the sendmail
    command, the Postfix instance (MAIL_CONFIG, - when unset), the exit status and
    sendmail's stderr as one line (blank lines dropped, the last 1000 characters,
    bytes that are not UTF-8 shown as U+FFFD)."""
    if mail_config is None:
        monkeypatch.delenv("MAIL_CONFIG", raising=False)
    else:
        monkeypatch.setenv("MAIL_CONFIG", mail_config)
    failing = script(tmp_path, "sendmail-fails", f"cat >/dev/null\n{stderr}\nexit 3\n")
    cfg = make_config(tmp_path, failing)
    outcome = process(DSN, return_path(store, cfg), cfg, bounce_id="B1", store=store)
    assert outcome.status == EX_TEMPFAIL
    assert outcome.what == (
        f"{SUMMARY} events=gone@example.org:hard/user-unknown;"
        f" forwarding to {SENDER} failed, will retry: "
        f"{failing} -G -i -f '<>' -- {SENDER} (MAIL_CONFIG={mail_config or '-'}): "
        f"exit status 3, stderr: {reported}"
    )
    assert bounces(store) == ["5.1.1"]


def test_a_sendmail_that_cannot_run_is_reported_by_its_reason(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A missing sendmail is logged as 'cannot run: No such file or directory', the
    system's reason and nothing else."""
    monkeypatch.delenv("MAIL_CONFIG", raising=False)
    missing = tmp_path / "no-sendmail"
    cfg = make_config(tmp_path, missing)
    outcome = process(DSN, return_path(store, cfg), cfg, bounce_id="B1", store=store)
    assert outcome.status == EX_TEMPFAIL
    assert outcome.what.endswith(
        f"{missing} -G -i -f '<>' -- {SENDER} (MAIL_CONFIG=-): cannot run: "
        "No such file or directory"
    )


@pytest.mark.parametrize(
    ("sendmail", "reason"),
    [("", "bounces.sendmail is empty"),
     ("/usr/sbin/sendmail 'open", "bounces.sendmail \"/usr/sbin/sendmail 'open\": "
      "No closing quotation")],
    ids=["empty", "unbalanced-quote"],
)  # fmt: skip
def test_a_sendmail_setting_that_is_no_command_is_a_temporary_failure(
    tmp_path: Path, store: Store, sendmail: str, reason: str
) -> None:
    """A sendmail setting that slipped past the configuration check (built in code)
    still only defers the bounce (75) and says what is wrong with the setting."""
    cfg = make_config(tmp_path, "/usr/sbin/sendmail")
    cfg = dataclasses.replace(cfg, bounces=dataclasses.replace(cfg.bounces, sendmail=sendmail))
    outcome = process(DSN, return_path(store, cfg), cfg, bounce_id="B1", store=store)
    assert (outcome.status, outcome.what) == (
        EX_TEMPFAIL,
        f"{SUMMARY} events=gone@example.org:hard/user-unknown; forwarding to {SENDER} failed, "
        f"will retry: {reason}",
    )
