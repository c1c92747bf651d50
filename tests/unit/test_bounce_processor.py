"""The bounce processor's forwarding, with a real store and a real sendmail stand-in
(a small shell script, run as a subprocess): a forward that fails in any way is a
temporary failure (75, Postfix keeps the bounce and retries), it says what ran and
how it failed, and the retry records nothing twice."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from smtpeter import config as configmod
from smtpeter.bounces import processor
from smtpeter.bounces.processor import EX_OK, EX_TEMPFAIL, process
from smtpeter.store import MessageRecord, Store, open_store
from smtpeter.tracker.keys import KeyRing

DOMAIN = "bounces.example.com"
UID = "k3xq7m2pw9r4t6ya"
SENDER = "owner@example.com"
DSN = (
    b"From: MAILER-DAEMON@mx.example.org\nTo: whoever\nSubject: Undelivered Mail\n"
    b"MIME-Version: 1.0\n"
    b'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"\n\n'
    b"--b1\nContent-Type: text/plain\n\nIt bounced.\n"
    b"--b1\nContent-Type: message/delivery-status\n\n"
    b"Reporting-MTA: dns; mx.example.org\n\n"
    b"Final-Recipient: rfc822; gone@example.org\nAction: failed\nStatus: 5.1.1\n"
    b"Diagnostic-Code: smtp; 550 5.1.1 user unknown\n"
    b"--b1--\n.\nafter a line of one dot\n"
)


def script(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


@pytest.fixture
def good_sendmail(tmp_path: Path) -> Path:
    """Takes the message: writes its arguments (one a line) and stdin beside itself."""
    out = tmp_path / "sent"
    out.mkdir()
    return script(
        tmp_path,
        "sendmail-ok",
        f'n=$(ls {out} | wc -l)\nprintf "%s\\n" "$@" > {out}/$n.argv\ncat > {out}/$n.msg\n',
    )


def sent(tmp_path: Path) -> list[tuple[list[str], bytes]]:
    out = tmp_path / "sent"
    return [
        (p.read_text().splitlines(), p.with_suffix(".msg").read_bytes())
        for p in sorted(out.glob("*.argv"))
    ]


def make_config(tmp_path: Path, sendmail: str | Path, **bounces: object) -> configmod.Config:
    return configmod.parse(
        {
            "store": {"sqlite_path": str(tmp_path / "smtpeter.db")},
            "bounces": {"domain": DOMAIN, "sendmail": str(sendmail), **bounces},
        },
        "test",
    )


@pytest.fixture
def store(tmp_path: Path) -> Store:
    cfg = make_config(tmp_path, "/usr/sbin/sendmail")
    s = open_store(cfg.store)
    s.record_message(
        MessageRecord(
            queue_id="4XyZ1", message_id="<m1@example.com>", login="alice",
            envelope_sender=SENDER,
            recipients=("gone@example.org", "full@example.org", "slow@example.org",
                        "odd@example.org"),
            features=("trackbounces",), size_before=100, size_after=120, uid=UID,
        )
    )  # fmt: skip
    return s


def return_path(store: Store, cfg: configmod.Config) -> str:
    signer = KeyRing.from_config(store, cfg.tracker).signer()
    return f"b+{signer.sign_return_path(UID)}@{DOMAIN}"


def bounces(store: Store) -> list[str]:
    return [e.detail["status"] for e in store.events(message=UID, type="bounce")]


def test_forward_hands_the_bounce_to_sendmail_with_the_null_sender(
    tmp_path: Path, store: Store, good_sendmail: Path
) -> None:
    cfg = make_config(tmp_path, good_sendmail)
    outcome = process(DSN, return_path(store, cfg), cfg, bounce_id="B1", store=store)
    assert outcome.status == EX_OK, outcome.what
    assert f"forwarded to {SENDER}" in outcome.what
    [(argv, message)] = sent(tmp_path)
    assert argv == ["-G", "-i", "-f", "<>", "--", SENDER]
    assert message == DSN
    assert bounces(store) == ["5.1.1"]


def test_sendmail_words_are_split_like_a_command_line(
    tmp_path: Path, store: Store, good_sendmail: Path
) -> None:
    cfg = make_config(tmp_path, f"{good_sendmail} -oi 'two words'")
    assert process(DSN, return_path(store, cfg), cfg, bounce_id="B1", store=store).status == 0
    [(argv, _)] = sent(tmp_path)
    assert argv == ["-oi", "two words", "-G", "-i", "-f", "<>", "--", SENDER]


@pytest.mark.parametrize(
    ("name", "body", "expected"),
    [
        ("sendmail-fails", "cat >/dev/null\necho 'postdrop: fatal: no way' >&2\nexit 75\n",
         ["exit status 75", "stderr: postdrop: fatal: no way"]),
        ("sendmail-dies", "kill -9 $$\n", ["killed by signal 9"]),
        ("sendmail-missing", None, ["cannot run", "No such file or directory"]),
        ("sendmail-not-executable", "", ["cannot run", "Permission denied"]),
    ],
)  # fmt: skip
def test_a_failed_forward_is_retried_and_the_retry_records_nothing_twice(
    tmp_path: Path,
    store: Store,
    good_sendmail: Path,
    name: str,
    body: str | None,
    expected: list[str],
) -> None:
    sendmail = tmp_path / name
    if body is not None:
        script(tmp_path, name, body)
        if name == "sendmail-not-executable":
            sendmail.chmod(0o644)
    cfg = make_config(tmp_path, sendmail)
    rcpt = return_path(store, cfg)
    outcome = process(DSN, rcpt, cfg, bounce_id="B1", store=store)
    assert outcome.status == EX_TEMPFAIL
    assert f"forwarding to {SENDER} failed, will retry" in outcome.what
    # What ran, where, and how it failed.
    assert f"{sendmail} -G -i -f '<>' -- {SENDER} (MAIL_CONFIG=" in outcome.what
    for text in expected:
        assert text in outcome.what
    assert bounces(store) == ["5.1.1"]  # recorded at once; the forward is what is retried
    assert sent(tmp_path) == []

    # Postfix retries the same bounce (same queue id), sendmail works this time.
    fixed = dataclasses.replace(cfg.bounces, sendmail=str(good_sendmail))
    cfg = dataclasses.replace(cfg, bounces=fixed)
    outcome = process(DSN, rcpt, cfg, bounce_id="B1", store=store)
    assert outcome.status == EX_OK, outcome.what
    assert bounces(store) == ["5.1.1"]
    assert len(sent(tmp_path)) == 1
    # A second retry (say the first success was not reported back) adds nothing and
    # forwards nothing again.
    outcome = process(DSN, rcpt, cfg, bounce_id="B1", store=store)
    assert outcome.status == EX_OK and "forwarded before" in outcome.what
    assert bounces(store) == ["5.1.1"]
    assert len(sent(tmp_path)) == 1


def test_a_sendmail_that_hangs_is_killed_and_retried(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(processor, "FORWARD_TIMEOUT", 0.5)
    cfg = make_config(tmp_path, script(tmp_path, "sendmail-hangs", "exec sleep 30\n"))
    outcome = process(DSN, return_path(store, cfg), cfg, bounce_id="B1", store=store)
    assert outcome.status == EX_TEMPFAIL
    assert "no exit within 0.5 s, killed" in outcome.what


def test_nothing_is_forwarded_for_a_null_sender_or_with_forward_off(
    tmp_path: Path, store: Store
) -> None:
    missing = tmp_path / "no-sendmail"
    cfg = make_config(tmp_path, missing, forward=False)
    outcome = process(DSN, return_path(store, cfg), cfg, bounce_id="B1", store=store)
    assert outcome.status == EX_OK and "forwarded" not in outcome.what
    store.record_message(
        MessageRecord(
            queue_id="4XyZ2", message_id=None, login="alice", envelope_sender="",
            recipients=("x@example.org",), features=(), size_before=1, size_after=1,
            uid="n0u11sender00000",
        )
    )  # fmt: skip
    cfg = make_config(tmp_path, missing)
    signer = KeyRing.from_config(store, cfg.tracker).signer()
    rcpt = f"b+{signer.sign_return_path('n0u11sender00000')}@{DOMAIN}"
    outcome = process(DSN, rcpt, cfg, bounce_id="B2", store=store)
    assert outcome.status == EX_OK and "forwarded" not in outcome.what


@pytest.mark.parametrize("value", ["", "   ", "/usr/sbin/sendmail 'unbalanced"])
def test_sendmail_setting_must_be_a_command(tmp_path: Path, value: str) -> None:
    with pytest.raises(configmod.ConfigError, match=r"bounces\.sendmail"):
        make_config(tmp_path, value)


def test_the_command_exits_75_and_logs_what_failed(tmp_path: Path, store: Store) -> None:
    """`smtpeter bounce` as Postfix's pipe runs it: exit status 75 and one log line
    with the command, its exit status and its stderr."""
    failing = script(tmp_path, "sendmail-fails", "echo 'sendmail: fatal: queue full' >&2\nexit 1\n")
    cfg = make_config(tmp_path, failing)
    config_file = tmp_path / "smtpeter.yaml"
    config_file.write_text(
        yaml.safe_dump({"store": {"sqlite_path": cfg.store.sqlite_path},
                        "bounces": {"domain": DOMAIN, "sendmail": str(failing)}})
    )  # fmt: skip
    command = [sys.executable, "-m", "smtpeter", "--config", str(config_file), "bounce",
               "--queue-id", "B7", "--sender", "",
               "--recipient", return_path(store, cfg)]  # fmt: skip
    result = subprocess.run(command, input=DSN, capture_output=True, timeout=60)
    assert result.returncode == EX_TEMPFAIL, result.stderr
    [line] = [x for x in result.stderr.decode().splitlines() if "forwarding" in x]
    assert f"{failing} -G -i -f '<>' -- {SENDER}" in line
    assert "exit status 1, stderr: sendmail: fatal: queue full" in line
    assert bounces(store) == ["5.1.1"]
