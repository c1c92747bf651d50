"""Password-guessing throttle: its rules on a fake clock, then the auth daemon on its real
unix socket, spoken to as Postfix speaks, from several client addresses."""

from __future__ import annotations

import asyncio
import configparser
import heapq
import io
import itertools
import logging
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from smtpeter import logsetup
from smtpeter.auth.server import FAIL_REASON
from smtpeter.auth.throttle import MAX_REPLY_SECONDS, Admission, Throttle
from tests.unit.test_auth_server import (
    Client,
    FakeStore,
    plain,
    run,
    running,
)

ROOT = Path(__file__).resolve().parents[2]
FILTER = ROOT / "packaging" / "fail2ban" / "filter.d" / "smtpeter-auth.conf"
JAIL = ROOT / "packaging" / "fail2ban" / "jail.d" / "smtpeter-auth.conf"

ATTACKER = "203.0.113.66"
OTHER = "198.51.100.20"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(clock: Clock, **kwargs: float) -> Throttle:
    settings: dict[str, float] = {
        "throttle_after": 10,
        "throttle_interval": 1.0,
        "lockout_after": 30,
        "lockout_seconds": 600.0,
    }
    settings.update(kwargs)
    return Throttle(
        throttle_after=int(settings["throttle_after"]),
        throttle_interval=settings["throttle_interval"],
        lockout_after=int(settings["lockout_after"]),
        lockout_seconds=settings["lockout_seconds"],
        max_entries=int(settings.get("max_entries", 1000)),
        clock=clock,
    )


def fail_once(throttle: Throttle, address: str | None, login: str | None = "alice") -> float:
    """One attempt that fails; returns the wait it was given."""
    admission = throttle.admit(address, login)
    assert admission.refused is None
    throttle.release(admission)
    throttle.fail(address, login)
    return admission.wait


# -- the rules, on a fake clock ----------------------------------------------------------


def test_first_failures_are_not_paced(clock: Clock) -> None:
    throttle = make(clock)
    waits = [fail_once(throttle, ATTACKER) for _ in range(10)]
    assert waits == [0.0] * 10
    assert throttle.standing(ATTACKER, "alice").failures == 10


def test_after_the_threshold_one_check_per_interval_shared_by_all_attempts(clock: Clock) -> None:
    throttle = make(clock, lockout_after=0)
    for _ in range(10):
        fail_once(throttle, ATTACKER, login=None)
    # Twenty attempts at the same instant, as from twenty connections: they get one slot
    # a second each, up to the reply budget; the rest are refused, taking no slot.
    admissions = [throttle.admit(ATTACKER, None) for _ in range(20)]
    admitted = [a for a in admissions if a.refused is None]
    assert [a.wait for a in admitted] == [float(i) for i in range(int(MAX_REPLY_SECONDS) + 1)]
    assert all(a.refused == "throttled" for a in admissions[len(admitted) :])
    for a in admitted:
        throttle.release(a)
        throttle.fail(ATTACKER, None)
    # The schedule goes on from where it was: the next slot is 9 s away, over budget.
    assert throttle.admit(ATTACKER, None).refused == "throttled"
    clock.now += 1.5
    assert throttle.admit(ATTACKER, None).wait == pytest.approx(7.5)


def test_sustained_rate_with_many_parallel_guessers(clock: Clock) -> None:
    """60 simulated connections guessing back to back for 120 s: checks per second."""
    throttle = make(clock, lockout_after=0)
    checks: list[float] = []
    # (time, what happens, connection): "send" a guess or "check" its password.
    events: list[tuple[float, str, int, Admission | None]] = [
        (clock.now, "send", n, None) for n in range(60)
    ]
    end = clock.now + 120
    while events:
        at, what, n, admission = heapq.heappop(events)
        clock.now = at
        if what == "check":
            assert admission is not None
            checks.append(at)
            throttle.release(admission)
            throttle.fail(ATTACKER, None)
            heapq.heappush(events, (at + 0.02, "send", n, None))
        elif at < end:
            admission = throttle.admit(ATTACKER, None)
            if admission.refused is not None:
                # Refused at once; the client tries again.
                heapq.heappush(events, (at + 0.05, "send", n, None))
            else:
                heapq.heappush(events, (at + admission.wait, "check", n, admission))
    after = sorted(checks)[10:]
    gaps = [b - a for a, b in itertools.pairwise(after)]
    assert min(gaps) >= 1.0 - 1e-9
    within = [t for t in checks if t <= end]
    assert 10 + 115 <= len(within) <= 10 + 120 + 1


def test_parallel_attempts_of_a_failing_address_count_before_they_are_checked(
    clock: Clock,
) -> None:
    throttle = make(clock)
    fail_once(throttle, ATTACKER)
    # One failure so far, 20 guesses at once: 9 are checked, 11 held (no slot taken).
    admissions = [throttle.admit(ATTACKER, "alice") for _ in range(20)]
    checked = [a for a in admissions if not a.hold]
    assert len(checked) == 9 and {a.wait for a in checked} == {0.0}
    assert all(a.hold and a.refused is None for a in admissions[9:])
    # The 9 fail: the held ones are paced now, one slot a second from now.
    for a in checked:
        throttle.release(a)
        throttle.fail(ATTACKER, "alice")
    again = [throttle.admit(ATTACKER, "alice") for _ in range(11)]
    assert [a.wait for a in again[:9]] == [float(i) for i in range(9)]
    assert {a.refused for a in again[9:]} == {"throttled"}


def test_a_burst_from_a_clean_address_attacks_with_exactly_the_free_guesses(
    clock: Clock,
) -> None:
    """The first volley of a parallel attack: no failure yet, 30 guesses at once."""
    throttle = make(clock)
    admissions = [throttle.admit(ATTACKER, "alice") for _ in range(30)]
    assert sum(not a.hold for a in admissions) == 10
    for a in admissions[:10]:
        throttle.release(a)
        throttle.fail(ATTACKER, "alice")
    assert throttle.admit(ATTACKER, "alice").wait == 0.0  # first slot: now
    assert throttle.admit(ATTACKER, "alice").wait == 1.0


def test_a_clean_address_is_never_paced(clock: Clock) -> None:
    """A busy sender with no failure is never paced: one login after another, or a
    burst that only waits for the checks ahead of it."""
    throttle = make(clock)
    for _ in range(200):
        admission = throttle.admit(OTHER, "alice")
        assert admission.wait == 0 and not admission.hold and admission.refused is None
        throttle.release(admission)
    burst = [throttle.admit(OTHER, "alice") for _ in range(25)]
    assert sum(not a.hold for a in burst) == 10
    for a in burst[:10]:
        throttle.release(a)  # right passwords
    burst = [throttle.admit(OTHER, "alice") for _ in range(15)]
    assert sum(not a.hold for a in burst) == 10
    assert {a.wait for a in burst if not a.hold} == {0.0}
    for a in burst:
        throttle.release(a)
    assert len(throttle) == 0  # and takes no memory


def test_lockout_then_paced_then_forgotten(clock: Clock) -> None:
    throttle = make(clock, throttle_interval=0.001)
    for _ in range(29):
        fail_once(throttle, ATTACKER, None)
        clock.now += 0.01
    assert not throttle.locked(ATTACKER)
    standing = throttle.fail(ATTACKER, None)
    assert standing.locked and standing.lock_started and standing.failures == 30
    refused = throttle.admit(ATTACKER, None)
    assert refused.refused == "locked"
    assert throttle.lock_remaining(ATTACKER) == pytest.approx(600.0)
    # Refusals are not counted; the lock does not move.
    assert throttle.standing(ATTACKER, None).failures == 30
    clock.now += 599
    assert throttle.locked(ATTACKER)
    clock.now += 1.5
    assert not throttle.locked(ATTACKER)
    # Still paced: the count is back at throttle_after, 20 more failures lock again.
    assert throttle.standing(ATTACKER, None).failures == 10
    for _ in range(19):
        clock.now += 0.01
        fail_once(throttle, ATTACKER, None)
    assert not throttle.locked(ATTACKER)
    clock.now += 0.01
    assert throttle.fail(ATTACKER, None).lock_started
    # A quiet lockout_seconds after the lock ended, the address is forgotten.
    clock.now += 600 + 600 + 1
    assert throttle.standing(ATTACKER, None).failures == 0
    assert len(throttle) == 0


def test_failures_are_forgotten_after_a_quiet_period(clock: Clock) -> None:
    throttle = make(clock)
    for _ in range(12):
        fail_once(throttle, ATTACKER)
    clock.now += 599
    assert throttle.standing(ATTACKER, None).failures == 12
    clock.now += 2
    assert throttle.standing(ATTACKER, None).failures == 0
    assert throttle.admit(ATTACKER, None).wait == 0


def test_a_success_resets_nothing(clock: Clock) -> None:
    throttle = make(clock)
    for _ in range(12):
        fail_once(throttle, ATTACKER, "victim")
    # The guesser logs in to a login of its own: still paced.
    ok = throttle.admit(ATTACKER, "own")
    throttle.release(ok)
    assert throttle.standing(ATTACKER, "victim").failures == 12
    assert throttle.admit(ATTACKER, "victim").wait > 0


def test_login_failures_only_delay_and_never_refuse(clock: Clock) -> None:
    throttle = make(clock, lockout_after=3)
    # 50 addresses guess at one login, 2 failures each: no address is paced or locked.
    for n in range(50):
        for _ in range(2):
            fail_once(throttle, f"192.0.2.{n}", "alice")
    assert throttle.standing("192.0.2.1", "alice").login_failures == 100
    # Anyone trying alice now waits throttle_interval before the check, never refused.
    waits = []
    for _ in range(30):
        waits.append(throttle.admit(OTHER, "alice"))
        throttle.release(waits[-1])  # the right password
    assert {a.wait for a in waits} == {1.0}
    assert {a.refused for a in waits} == {None}
    # Other logins are not affected.
    assert throttle.admit(OTHER, "bob").wait == 0
    # Nor does the login add to a paced address's schedule, which spaces its checks.
    throttle = make(clock, lockout_after=0)
    for n in range(10):
        fail_once(throttle, f"192.0.2.{n}", "alice")
        fail_once(throttle, ATTACKER, "bob")
    assert [throttle.admit(ATTACKER, "alice").wait for _ in range(3)] == [0.0, 1.0, 2.0]
    assert throttle.admit(OTHER, "alice").wait == 1.0


def test_lockout_comes_at_the_threshold_even_from_a_paced_schedule(clock: Clock) -> None:
    throttle = make(clock, throttle_after=2, lockout_after=5)
    waits = [fail_once(throttle, ATTACKER, None) for _ in range(4)]
    assert waits == [0.0, 0.0, 0.0, 1.0]
    assert not throttle.locked(ATTACKER)
    waiting = throttle.admit(ATTACKER, None)  # waiting for its slot
    assert waiting.wait == 2.0
    assert throttle.fail(ATTACKER, None).lock_started
    assert throttle.admit(ATTACKER, None).refused == "locked"
    throttle.release(waiting)


def test_tables_are_bounded(clock: Clock) -> None:
    throttle = make(clock, max_entries=100)
    for n in range(1000):
        fail_once(throttle, f"10.0.{n // 256}.{n % 256}", f"user{n}")
        clock.now += 0.001
    assert len(throttle) == 100
    assert throttle.logins_tracked == 100
    # The least recently seen went first.
    assert throttle.standing("10.0.0.0", None).failures == 0
    assert throttle.standing("10.0.3.231", None).failures == 1


def test_address_keys() -> None:
    throttle = Throttle()
    assert throttle.address_key("192.0.2.1") == "192.0.2.1"
    assert throttle.address_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert throttle.address_key("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert throttle.address_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert throttle.address_key("2001:db8:1:3::1") != throttle.address_key("2001:db8:1:2::1")
    assert Throttle(ipv6_prefix=128).address_key("2001:db8::1") == "2001:db8::1"
    assert throttle.address_key(None) == "unknown"
    assert throttle.address_key("not an address") == "not an address"
    # Loopback is exempt by default, as Postfix exempts $mynetworks.
    assert throttle.address_key("127.0.0.1") is None
    assert throttle.address_key("::1") is None
    assert throttle.address_key("::ffff:127.0.0.2") is None
    assert Throttle(exempt=()).address_key("127.0.0.1") == "127.0.0.1"
    assert Throttle(exempt=["192.0.2.0/24"]).address_key("192.0.2.9") is None


def test_an_exempt_address_is_never_paced_nor_locked_but_counts_per_login(clock: Clock) -> None:
    throttle = make(clock, lockout_after=12)
    local = throttle.address_key("127.0.0.1")
    for _ in range(50):
        assert fail_once(throttle, local, "alice") == 0
    assert not throttle.locked(local)
    assert len(throttle) == 0
    standing = throttle.standing(local, "alice")
    assert standing.failures == 0 and standing.login_failures == 50
    assert throttle.admit(OTHER, "alice").wait == 1.0  # the login's bounded delay


@pytest.mark.parametrize(
    "kwargs",
    [
        {"throttle_after": -1},
        {"lockout_after": -1},
        {"throttle_interval": 0},
        {"throttle_interval": MAX_REPLY_SECONDS + 1},
        {"lockout_seconds": 0},
        {"max_entries": 0},
        {"ipv6_prefix": 129},
        {"exempt": ["not a network"]},
    ],
)
def test_invalid_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Throttle(**kwargs)  # type: ignore[arg-type]


# -- the daemon, over its socket ---------------------------------------------------------


@pytest.fixture
def sock_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="smtpeter-thr-", dir="/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class TimedStore(FakeStore):
    """Remembers when each password was checked, and for which client (by password)."""

    def __init__(self) -> None:
        super().__init__()
        self.checks: list[tuple[float, str]] = []

    def verify(self, password_hash: str, password: str) -> bool:
        with self.lock:
            self.checks.append((time.monotonic(), password))
        return super().verify(password_hash, password)


async def auth_from(
    client: Client, request_id: int, rip: str, resp: str, mech: str = "PLAIN"
) -> None:
    line = f"AUTH\t{request_id}\t{mech}\tservice=smtp\tnologin\tlip=192.0.2.1\trip={rip}\tsecured"
    if resp:
        line += f"\tresp={resp}"
    await client.send(line)


async def guess(client: Client, request_id: int, rip: str, password: str) -> tuple[str, float]:
    """One AUTH PLAIN for alice; the reply and how long it took."""
    started = time.monotonic()
    await auth_from(client, request_id, rip, plain("alice", password))
    reply = await client.readline(timeout=15)
    return reply, time.monotonic() - started


async def burst(client: Client, attempts: list[tuple[str, str]]) -> dict[int, tuple[str, float]]:
    """Several AUTH PLAIN for alice at once on one connection, as (rip, password):
    {request id: (reply, seconds it took)}."""
    started = time.monotonic()
    for n, (rip, password) in enumerate(attempts):
        await auth_from(client, n + 1, rip, plain("alice", password))
    replies = {}
    for _ in attempts:
        reply = await client.readline(timeout=15)
        replies[int(reply.split("\t")[1])] = (reply, time.monotonic() - started)
    return replies


def test_parallel_guesses_are_checked_at_most_once_a_second(sock_dir: str) -> None:
    store = TimedStore()
    replies: list[tuple[str, float]] = []

    async def body() -> None:
        throttle = Throttle(throttle_after=10, throttle_interval=1.0, lockout_after=0)
        async with running(store, sock_dir, throttle=throttle) as (_, connect):
            first = await connect()
            await first.handshake()
            for n in range(10):
                reply, _ = await guess(first, n + 1, ATTACKER, f"wrong-{n}")
                assert reply == f"FAIL\t{n + 1}\tuser=alice\treason={FAIL_REASON}"
            free = len(store.checks)
            assert free == 10

            # Twelve connections (twelve smtpd processes) guess at once.
            clients = [await connect() for _ in range(12)]
            for client in clients:
                await client.handshake()
            started = time.monotonic()
            replies.extend(
                await asyncio.gather(
                    *(guess(client, 1, ATTACKER, f"p{c}") for c, client in enumerate(clients))
                )
            )
            elapsed = time.monotonic() - started
            paced = [t for t, _ in store.checks[free:]]
            gaps = [b - a for a, b in itertools.pairwise(paced)]
            # One check a second, across the connections, as long as the budget lasts.
            assert int(MAX_REPLY_SECONDS) <= len(paced) <= int(MAX_REPLY_SECONDS) + 1
            assert min(gaps) >= 0.95, gaps
            assert len(paced) / elapsed <= 1.0 + 1 / elapsed
            assert {r for r, _ in replies} == {f"FAIL\t1\tuser=alice\treason={FAIL_REASON}"}
            times = sorted(took for _, took in replies)
            # Those over budget were refused at once, unchecked; the rest under 10 s.
            assert times[: 12 - len(paced)] == pytest.approx([0.0] * (12 - len(paced)), abs=0.2)
            assert times[-1] < 10

    run(body())


def test_lockout_refuses_the_right_password_but_not_from_another_address(sock_dir: str) -> None:
    store = TimedStore()

    async def body() -> None:
        throttle = Throttle(
            throttle_after=3, throttle_interval=0.05, lockout_after=6, lockout_seconds=60
        )
        async with running(store, sock_dir, throttle=throttle) as (server, connect):
            client = await connect()
            await client.handshake()
            for n in range(6):
                reply, _ = await guess(client, n + 1, ATTACKER, f"wrong-{n}")
                assert reply.startswith("FAIL")
            assert server.throttle.locked(ATTACKER)
            checked = len(store.checks)
            # The right password from the locked address: FAIL at once, never checked.
            reply, took = await guess(client, 10, ATTACKER, "secret")
            assert reply == f"FAIL\t10\tuser=alice\treason={FAIL_REASON}"
            assert took < 0.05 and len(store.checks) == checked
            # LOGIN from it fails at AUTH, without asking for the password.
            await auth_from(client, 11, ATTACKER, "", mech="LOGIN")
            assert await client.readline() == f"FAIL\t11\treason={FAIL_REASON}"
            # The same login from another address works, after the login's bounded delay.
            other = await connect()
            await other.handshake()
            started = time.monotonic()
            await auth_from(other, 1, OTHER, plain("alice", "secret"))
            assert await other.readline() == "OK\t1\tuser=alice"
            assert 0.04 <= time.monotonic() - started < 1.0

    run(body())


def test_login_delay_from_many_addresses_is_bounded(sock_dir: str) -> None:
    store = TimedStore()

    async def body() -> None:
        throttle = Throttle(throttle_after=5, throttle_interval=0.5, lockout_after=3)
        async with running(store, sock_dir, throttle=throttle) as (_, connect):
            client = await connect()
            await client.handshake()
            # 12 addresses, 2 guesses each: none is locked, alice has 24 failures.
            attempts = [(f"192.0.2.{n + 1}", f"w{k}") for n in range(12) for k in range(2)]
            failed = await burst(client, attempts)
            assert all(r.startswith("FAIL") for r, _ in failed.values())
            other = await connect()
            await other.handshake()
            replies = await burst(other, [(OTHER, "secret")] * 5)
            for n, (reply, took) in replies.items():
                assert reply == f"OK\t{n}\tuser=alice"
                assert 0.45 <= took < 1.5

    run(body())


def test_table_stays_bounded_over_the_socket(sock_dir: str) -> None:
    store = TimedStore()

    async def body() -> None:
        throttle = Throttle(max_entries=50)
        async with running(store, sock_dir, throttle=throttle, failure_delay=0) as (
            server,
            connect,
        ):
            client = await connect()
            await client.handshake()
            for n in range(200):
                await auth_from(client, n + 1, f"10.1.{n // 250}.{n % 250}", plain(f"u{n}", "x"))
            for _ in range(200):
                assert (await client.readline()).startswith("FAIL")
            assert len(server.throttle) == 50
            assert server.throttle.logins_tracked == 50

    run(body())


# -- log lines and the fail2ban filter ---------------------------------------------------


def _daemon_log_lines(sock_dir: str) -> list[str]:
    """Real lines from the daemon, formatted as `smtpeter authd` writes them."""
    store = TimedStore()
    stream: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            stream.append(self.format(record))

    # The daemon's own format, taken from logsetup without keeping its root handler.
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    logsetup.setup("info", stream=io.StringIO())
    formatter = root.handlers[0].formatter
    root.handlers[:] = saved
    root.setLevel(level)
    handler = Collect()
    handler.setFormatter(formatter)
    auth_logger = logging.getLogger("smtpeter.auth")
    auth_logger.addHandler(handler)
    auth_logger.setLevel(logging.INFO)

    async def body() -> None:
        throttle = Throttle(
            throttle_after=2, throttle_interval=0.05, lockout_after=4, lockout_seconds=60
        )
        async with running(store, sock_dir, throttle=throttle) as (_, connect):
            client = await connect()
            await client.handshake()
            for n in range(4):
                await guess(client, n + 1, ATTACKER, "wrong")
            await guess(client, 5, ATTACKER, "secret")  # locked: refused
            # An odd name, trying to pose as another address in the line.
            odd = 'x" rip=192.0.2.99 locked=no login="y'
            await auth_from(client, 6, OTHER, plain(odd, "p"))
            await client.readline()
            await auth_from(client, 7, "2001:db8::5", plain("bob", "nope"))
            await client.readline()

    try:
        run(body())
    finally:
        auth_logger.removeHandler(handler)
        auth_logger.setLevel(logging.NOTSET)
    return stream


def test_failure_lines(sock_dir: str) -> None:
    lines = _daemon_log_lines(sock_dir)
    failures = [line for line in lines if " auth failure " in line]
    assert len(failures) == 7
    assert re.search(
        r"smtpeter\.auth\[\d+\]: WARNING auth failure rip=203\.0\.113\.66 failures=1 locked=no"
        r' login="alice" login_failures=1 reason=bad-password mech=PLAIN cuid=\d+ id=1$',
        failures[0],
    ), failures[0]
    assert "failures=4 locked=yes" in failures[3]
    assert "failures=4 locked=yes" in failures[4] and "reason=locked" in failures[4]
    assert any("auth lockout rip=203.0.113.66 failures=4 seconds=60" in line for line in lines)
    assert 'login="x\\" rip=192.0.2.99 locked=no login=\\"y"' in failures[5]
    assert failures[5].split(" auth failure ")[1].startswith(f"rip={OTHER} failures=1 ")
    assert "secret" not in "\n".join(lines)


def _filter_regex() -> re.Pattern[str]:
    """The filter's failregex as Python sees it, fail2ban's prefix simplified."""
    parser = configparser.RawConfigParser()
    parser.read(FILTER)
    definition = parser["Definition"]
    regex = definition["failregex"].strip()
    regex = regex.replace("%(__prefix_line)s", r"\s*(?:\S+\s+)?(?:\S+\[\d+\]:\s+)?")
    regex = regex.replace("%(_stamp)s", definition["_stamp"])
    regex = regex.replace("<HOST>", r"(?P<host>[0-9a-fA-F.:]+)")
    regex = regex.replace("<F-USER>", "(?P<user>").replace("</F-USER>", ")")
    return re.compile(regex)


def test_fail2ban_filter_reads_the_daemon_lines(sock_dir: str, tmp_path: Path) -> None:
    lines = _daemon_log_lines(sock_dir)
    failures = [line for line in lines if " auth failure " in line]
    expected = [ATTACKER] * 5 + [OTHER, "2001:db8::5"]
    # fail2ban strips the leading date before matching.
    pattern = _filter_regex()
    hosts = []
    for line in lines:
        m = pattern.match(line.split(" ", 1)[1])
        if m:
            hosts.append(m.group("host"))
    assert hosts == expected
    # The same lines as the journal gives them to fail2ban.
    journal = [f"mx1 smtpeter[812]: {line}" for line in failures]
    assert [m.group("host") for m in map(pattern.match, journal) if m] == expected

    if shutil.which("fail2ban-regex") is None:
        return  # the Python check above stands in for it
    # fail2ban itself: the filter next to fail2ban's common.conf, on the real lines.
    conf = tmp_path / "filter.d"
    conf.mkdir()
    shutil.copy(FILTER, conf)
    shutil.copy("/etc/fail2ban/filter.d/common.conf", conf)
    log = tmp_path / "authd.log"
    log.write_text("\n".join(lines) + "\n")
    result = subprocess.run(
        ["fail2ban-regex", "-v", str(log), str(conf / FILTER.name)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    m = re.search(r"Lines: (\d+) lines, (\d+) ignored, (\d+) matched", result.stdout)
    assert m and int(m.group(3)) == len(failures), result.stdout
    matched = re.findall(r"^\|\s+(\S+)\s+\w{3} \w{3} ", result.stdout, re.M)
    assert sorted(set(matched)) == sorted(set(expected)), result.stdout


def test_jail_example_is_disabled_and_names_the_filter() -> None:
    parser = configparser.RawConfigParser()
    parser.read(JAIL)
    jail = parser["smtpeter-auth"]
    assert jail["enabled"] == "false"
    assert jail["filter"] == FILTER.stem
    assert int(jail["maxretry"]) >= 5


def test_throttle_is_only_used_on_the_event_loop_thread(sock_dir: str) -> None:
    """The throttle has no lock: every call must come from the event loop's thread."""
    store = TimedStore()
    seen: set[int] = set()
    original = Throttle.fail

    def fail(self: Throttle, address: str, login: str | None) -> object:
        seen.add(threading.get_ident())
        return original(self, address, login)

    async def body() -> None:
        async with running(store, sock_dir) as (_, connect):
            client = await connect()
            await client.handshake()
            await guess(client, 1, ATTACKER, "wrong")
            seen.discard(threading.get_ident())

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Throttle, "fail", fail)
        run(body())
    assert seen == set()
