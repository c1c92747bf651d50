"""Password guessing against the real stack: Postfix, STARTTLS, smtplib, our auth daemon.

A stack of its own (the guesses would otherwise pace 127.0.0.1 for every other test):
one wrong password after another from 127.0.0.1 over parallel connections, then the
right one from 127.0.0.2."""

from __future__ import annotations

import base64
import os
import re
import shutil
import smtplib
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from smtpeter import logins
from smtpeter.features import FeatureSet
from smtpeter.local.stack import LocalStack, Ports
from smtpeter.logins import Login
from smtpeter.store import open_store
from tests.e2e.smtp import connect, tls_context

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
FILTER = ROOT / "packaging" / "fail2ban" / "filter.d" / "smtpeter-auth.conf"

THROTTLE_AFTER = 10
INTERVAL = 1.0
FAILURE_DELAY = 0.3
CONNECTIONS = 16
ATTACK_SECONDS = 12.0
# A paced guess waits for its slot, a second or more once the schedule is running; one
# refused unchecked (over the reply budget) is answered at once, and a free one after
# the failure delay. (Which replies were checked is the daemon's to say: its log.)
PACED_AT_LEAST = 0.8 * INTERVAL
LOGIN = "victim"


@dataclass
class Stack:
    stack: LocalStack
    password: str


def _make_stack(settings: dict[str, object]) -> LocalStack:
    if os.geteuid() != 0 or shutil.which("postfix") is None:
        pytest.fail("end-to-end tests run a private Postfix as root: run scripts/bootstrap")
    root = Path(tempfile.mkdtemp(prefix="smtpeter-e2e-throttle-"))
    root.chmod(0o755)
    return LocalStack(
        root=root,
        ports=Ports.free(),
        settings={"auth": settings, "milter": {"workers": 1}},
        listeners=("587",),
    )


@pytest.fixture(scope="module")
def throttled() -> Iterator[Stack]:
    stack = _make_stack(
        {
            "failure_delay": FAILURE_DELAY,
            "throttle_after": THROTTLE_AFTER,
            "throttle_interval": INTERVAL,
            # Not reached here (the unit tests lock out): the pacing is what is measured.
            "lockout_after": 1000,
            # Loopback is exempt by default; here it stands for the Internet.
            "throttle_exempt": [],
        }
    )
    try:
        stack.start()
        store = open_store(stack.config().store)
        password = logins.generate_password()
        store.create_login(Login(LOGIN, logins.hash_password(password), True, FeatureSet()))
        yield Stack(stack, password)
    finally:
        stack.stop()
        shutil.rmtree(stack.root, ignore_errors=True)


def _plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


@dataclass(frozen=True)
class Reply:
    sent: float
    answered: float
    code: int

    @property
    def took(self) -> float:
        return self.answered - self.sent


def guess_in_parallel(
    stack: LocalStack, seconds: float, connections: int, per_session: int = 5
) -> list[Reply]:
    """Wrong passwords for LOGIN from 127.0.0.1, back to back on ``connections``
    sessions at once (each STARTTLS, a few AUTHs, QUIT, again) for ``seconds``."""
    replies: list[Reply] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds
    errors: list[Exception] = []

    def worker(k: int) -> None:
        n = 0
        try:
            while time.monotonic() < stop:
                with connect(stack, stack.ports.submission) as client:
                    for _ in range(per_session):
                        if time.monotonic() >= stop:
                            break
                        n += 1
                        sent = time.monotonic()
                        code, _ = client.docmd("AUTH", "PLAIN " + _plain(LOGIN, f"no-{k}-{n}"))
                        with lock:
                            replies.append(Reply(sent, time.monotonic(), code))
        except (OSError, smtplib.SMTPException) as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return sorted(replies, key=lambda r: r.answered)


def paced_rate(replies: list[Reply]) -> tuple[float, list[Reply]]:
    """Checked guesses a second, sustained, once pacing runs (the guesses that waited for
    a slot of their own), and those guesses."""
    paced = [r for r in replies if r.took >= PACED_AT_LEAST]
    span = paced[-1].answered - paced[0].answered
    return (len(paced) - 1) / span, paced


def checked_by_daemon(stack: LocalStack) -> list[str]:
    """The daemon's lines for wrong passwords it checked from 127.0.0.1."""
    log = stack.log_file("authd").read_text()
    return re.findall(r"^.* auth failure rip=127\.0\.0\.1 .* reason=bad-password .*$", log, re.M)


def test_guesses_are_paced_across_connections_and_another_address_logs_in(
    throttled: Stack,
) -> None:
    stack = throttled.stack
    started = time.monotonic()
    replies = guess_in_parallel(stack, ATTACK_SECONDS, CONNECTIONS)
    elapsed = time.monotonic() - started
    assert {r.code for r in replies} == {535}
    rate, paced = paced_rate(replies)
    checked = len(checked_by_daemon(stack))
    print(
        f"\n{len(replies)} wrong passwords in {elapsed:.1f} s"
        f" ({len(replies) / elapsed:.1f} answered/s), {checked} checked:"
        f" {rate:.2f} checked/s after the first {THROTTLE_AFTER}"
    )
    # The daemon checked the free ones, then one a slot: the paced replies seen here
    # and the first slot's (which waited for nothing).
    assert THROTTLE_AFTER + len(paced) <= checked <= THROTTLE_AFTER + len(paced) + 2
    assert checked - THROTTLE_AFTER <= elapsed / INTERVAL + 1
    assert len(paced) >= ATTACK_SECONDS / INTERVAL * 0.6  # the schedule kept going
    assert rate <= 1.1 / INTERVAL
    # No burst either: in any 4 s, at most 5 checks (the schedule's slots are exactly
    # INTERVAL apart; a reply may leave late, by as much as the hammered daemon lags).
    times = [r.answered for r in paced]
    for start in times:
        window = [t for t in times if start <= t < start + 4 * INTERVAL]
        assert len(window) <= 5, [round(t - times[0], 2) for t in times]
    # Every reply came well within Postfix's 10 s (no 454 either: the daemon answered).
    assert max(r.took for r in replies) < 9.5

    # The daemon's count agrees: every failure logged, the checked ones as bad-password.
    log = stack.log_file("authd").read_text()
    lines = re.findall(r"^.* auth failure rip=127\.0\.0\.1 .*$", log, re.M)
    assert len(lines) == len(replies)
    bad = [line for line in lines if "reason=bad-password" in line]
    assert all(f'login="{LOGIN}"' in line for line in lines)
    counts = [int(m) for m in re.findall(r" failures=(\d+) locked=no ", "\n".join(lines))]
    assert max(counts) == len(bad)  # refusals are logged, not counted

    # The right password from another address still works, however many guesses the
    # login has had (it waits throttle_interval at most, for the login's count).
    client = smtplib.SMTP(
        "127.0.0.1", stack.ports.submission, timeout=30, source_address=("127.0.0.2", 0)
    )
    with client:
        client.ehlo("other.example.net")
        client.starttls(context=tls_context(stack))
        client.ehlo("other.example.net")
        sent = time.monotonic()
        code, reply = client.docmd("AUTH", "PLAIN " + _plain(LOGIN, throttled.password))
        took = time.monotonic() - sent
        assert code == 235, reply
        assert took < INTERVAL + 1.0
        assert client.mail("sender@example.com")[0] == 250
    log = stack.log_file("authd").read_text()
    assert re.search(rf"auth result=ok login={LOGIN} mech=PLAIN rip=127\.0\.0\.2 ", log)


def test_fail2ban_filter_reads_the_daemon_log(throttled: Stack, tmp_path: Path) -> None:
    """The filter on the lines the daemon wrote above (fail2ban-regex when installed)."""
    log_file = throttled.stack.log_file("authd")
    failures = [line for line in log_file.read_text().splitlines() if " auth failure " in line]
    assert failures, "run after the guessing test"
    if shutil.which("fail2ban-regex") is None:
        from tests.unit.test_auth_throttle import _filter_regex

        pattern = _filter_regex()
        matches = [pattern.match(line.split(" ", 1)[1]) for line in failures]
        hosts = {m.group("host") for m in matches if m}
        assert len(hosts) == 1 and all(matches)
        assert hosts == {"127.0.0.1"}
        return
    conf = tmp_path / "filter.d"
    conf.mkdir()
    shutil.copy(FILTER, conf)
    shutil.copy("/etc/fail2ban/filter.d/common.conf", conf)
    result = subprocess.run(
        ["fail2ban-regex", "-v", str(log_file), str(conf / FILTER.name)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    m = re.search(r"Lines: (\d+) lines, (\d+) ignored, (\d+) matched", result.stdout)
    assert m and int(m.group(3)) == len(failures), result.stdout
    hosts = set(re.findall(r"^\|\s+(\S+)\s+\w{3} \w{3} ", result.stdout, re.M))
    assert hosts == {"127.0.0.1"}, result.stdout
