"""What Postfix and the operator see of the auth daemon, found by mutation testing
(scripts/mutation, see tests/README.md): for each way an authentication ends, the reply
on the socket and the exact log lines (``auth result=...`` for people, ``auth
failure ...`` for fail2ban); timing rules (failure delay, hash workers); the socket's
group; how the daemon shuts down."""

from __future__ import annotations

import asyncio
import base64
import gc
import grp
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from smtpeter.auth import server as server_module
from smtpeter.auth.server import FAIL_REASON, AuthServer, Credentials
from smtpeter.auth.throttle import MAX_REPLY_SECONDS, Throttle
from tests.unit.test_auth_server import (
    DUMMY_HASH,
    LINE_TIMEOUT,
    Client,
    FakeStore,
    b64,
    plain,
    run,
    running,
)
from tests.unit.test_auth_server import sock_dir as sock_dir
from tests.unit.test_auth_server import store as store

RIP = "198.51.100.7"
FAIL = f"reason={FAIL_REASON}"
AUTH_PARAMS = f"service=smtp\tnologin\tlip=192.0.2.1\trip={RIP}\tsecured"


@contextmanager
def auth_log(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> Iterator[list[str]]:
    """The daemon's log messages (from ``level`` on), filled in when the block ends."""
    lines: list[str] = []
    with caplog.at_level(level, logger="smtpeter.auth"):
        yield lines
    lines.extend(
        r.getMessage()
        for r in caplog.records
        if r.name == "smtpeter.auth" and r.levelno >= level and "auth daemon" not in r.getMessage()
    )


def result_line(
    result: str, login: str, mech: str, *, rip: str = RIP, cached: bool = False, request_id: int = 1
) -> str:
    return (
        f"auth result={result} login={login} mech={mech} rip={rip}"
        f" cached={'yes' if cached else 'no'} cuid=1 id={request_id}"
    )


def failure_line(
    result: str,
    login: str,
    mech: str,
    *,
    rip: str = RIP,
    failures: int = 1,
    login_failures: int = 1,
    locked: bool = False,
    request_id: int = 1,
) -> str:
    return (
        f"auth failure rip={rip} failures={failures} locked={'yes' if locked else 'no'}"
        f" login={login} login_failures={login_failures} reason={result} mech={mech}"
        f" cuid=1 id={request_id}"
    )


def auth(
    mech: str, resp: str | None = None, *, params: str = AUTH_PARAMS, request_id: int = 1
) -> str:
    line = f"AUTH\t{request_id}\t{mech}\t{params}"
    return line if resp is None else f"{line}\tresp={resp}"


async def serving(
    store: FakeStore, sock_dir: str, **options: Any
) -> tuple[AuthServer, str, asyncio.Task[None]]:
    """An AuthServer on its unix socket in sock_dir, serving."""
    server = AuthServer(store.lookup, store.verify, DUMMY_HASH, **options)
    path = os.path.join(sock_dir, "auth")
    task = asyncio.create_task(server.serve_unix(path))
    await server.wait_serving()
    return server, path, task


async def connected(path: str) -> Client:
    """A client connected to the socket, past the handshake."""
    reader, writer = await asyncio.open_unix_connection(path)
    client = Client(reader, writer, None)
    await client.handshake()
    return client


async def converse(client: Client, steps: list[tuple[str, str]]) -> None:
    """Send each line and check the reply that comes back for it."""
    await client.handshake()
    for line, reply in steps:
        await client.send(line)
        assert await client.readline() == reply


LONG_NAME = b"n" * 300
USER_PROMPT = f"CONT\t1\t{b64(b'Username:')}"
PASS_PROMPT = f"CONT\t1\t{b64(b'Password:')}"

SCENARIOS: list[tuple[str, list[tuple[str, str]], list[str]]] = [
    (
        "plain-ok",
        [(auth("PLAIN", plain("alice", "secret")), "OK\t1\tuser=alice")],
        [result_line("ok", "alice", "PLAIN")],
    ),
    (
        "bad-password",
        [(auth("PLAIN", plain("alice", "nope")), f"FAIL\t1\tuser=alice\t{FAIL}")],
        [
            result_line("bad-password", "alice", "PLAIN"),
            failure_line("bad-password", '"alice"', "PLAIN"),
        ],
    ),
    (
        "unknown-login",
        [(auth("PLAIN", plain("nobody", "pw")), f"FAIL\t1\tuser=nobody\t{FAIL}")],
        [
            result_line("unknown-login", "nobody", "PLAIN"),
            failure_line("unknown-login", '"nobody"', "PLAIN"),
        ],
    ),
    (
        "disabled",
        [(auth("PLAIN", plain("carol", "s3cret")), f"FAIL\t1\tuser=carol\t{FAIL}")],
        [result_line("disabled", "carol", "PLAIN"), failure_line("disabled", '"carol"', "PLAIN")],
    ),
    (
        "authzid-mismatch",
        [(auth("PLAIN", plain("alice", "secret", "bob")), f"FAIL\t1\tuser=alice\t{FAIL}")],
        [
            result_line("authzid-mismatch", "alice", "PLAIN"),
            failure_line("authzid-mismatch", '"alice"', "PLAIN"),
        ],
    ),
    (
        "malformed-plain",
        [(auth("PLAIN", b64(b"alice\0secret")), f"FAIL\t1\t{FAIL}")],
        [
            result_line("malformed-plain", "-", "PLAIN"),
            failure_line("malformed-plain", "-", "PLAIN", login_failures=0),
        ],
    ),
    (
        "invalid-base64-auth",
        [(auth("PLAIN", "not*base64"), f"FAIL\t1\t{FAIL}")],
        [
            result_line("invalid-base64", "-", "PLAIN"),
            failure_line("invalid-base64", "-", "PLAIN", login_failures=0),
        ],
    ),
    (
        "invalid-base64-cont",
        [(auth("LOGIN"), USER_PROMPT), ("CONT\t1\t!!", f"FAIL\t1\t{FAIL}")],
        [
            result_line("invalid-base64", "-", "LOGIN"),
            failure_line("invalid-base64", "-", "LOGIN", login_failures=0),
        ],
    ),
    (
        "unknown-mechanism",
        [(auth("cram-md5"), f"FAIL\t1\t{FAIL}")],
        [
            result_line("unknown-mechanism", "-", "CRAM-MD5"),
            failure_line("unknown-mechanism", "-", "CRAM-MD5", login_failures=0),
        ],
    ),
    (
        "invalid-name-control",
        [(auth("PLAIN", b64(b"\0al\tice\0secret")), f"FAIL\t1\t{FAIL}")],
        [
            result_line("invalid-name", "al\\x09ice", "PLAIN"),
            failure_line("invalid-name", '"al\\x09ice"', "PLAIN", login_failures=0),
        ],
    ),
    (
        "invalid-name-long",
        [
            (auth("LOGIN", b64(LONG_NAME)), PASS_PROMPT),
            (f"CONT\t1\t{b64(b'pw')}", f"FAIL\t1\t{FAIL}"),
        ],
        [
            result_line("invalid-name", "n" * 64 + "...", "LOGIN"),
            failure_line("invalid-name", '"' + "n" * 64 + '..."', "LOGIN", login_failures=0),
        ],
    ),
    (
        "login-ok",
        [
            (auth("login"), USER_PROMPT),
            (f"CONT\t1\t{b64(b'bob')}", PASS_PROMPT),
            (f"CONT\t1\t{b64(b'hunter2')}", "OK\t1\tuser=bob"),
        ],
        [result_line("ok", "bob", "LOGIN")],
    ),
    (
        "login-nul-in-password",
        [
            (auth("LOGIN", b64(b"bob")), PASS_PROMPT),
            (f"CONT\t1\t{b64(b'hunter2')}", "OK\t1\tuser=bob"),
            (auth("LOGIN", b64(b"bob"), request_id=2), f"CONT\t2\t{b64(b'Password:')}"),
            ("CONT\t2\t" + b64(b"hunter2\0"), f"FAIL\t2\tuser=bob\t{FAIL}"),
        ],
        [
            result_line("ok", "bob", "LOGIN"),
            result_line("bad-password", "bob", "LOGIN", request_id=2),
            failure_line("bad-password", '"bob"', "LOGIN", request_id=2),
        ],
    ),
    (
        "no-rip",
        [
            (
                auth("PLAIN", plain("alice", "x"), params="service=smtp"),
                f"FAIL\t1\tuser=alice\t{FAIL}",
            )
        ],
        [
            result_line("bad-password", "alice", "PLAIN", rip="unknown"),
            failure_line("bad-password", '"alice"', "PLAIN", rip="unknown"),
        ],
    ),
    (
        "odd-rip",
        [
            (
                auth("PLAIN", plain("alice", "x"), params="rip=a\x01tb" + "c" * 80),
                f"FAIL\t1\tuser=alice\t{FAIL}",
            )
        ],
        [
            result_line("bad-password", "alice", "PLAIN", rip="a\\x09b" + "c" * 61 + "..."),
            failure_line("bad-password", '"alice"', "PLAIN", rip="a\\x09b" + "c" * 61 + "..."),
        ],
    ),
    (
        "cached",
        [
            (auth("PLAIN", plain("alice", "secret")), "OK\t1\tuser=alice"),
            (auth("PLAIN", plain("alice", "secret")), "OK\t1\tuser=alice"),
            (auth("PLAIN", plain("alice", "nope")), f"FAIL\t1\tuser=alice\t{FAIL}"),
            (auth("PLAIN", plain("alice", "secret")), "OK\t1\tuser=alice"),
        ],
        [
            result_line("ok", "alice", "PLAIN"),
            result_line("ok", "alice", "PLAIN", cached=True),
            result_line("bad-password", "alice", "PLAIN"),
            failure_line("bad-password", '"alice"', "PLAIN"),
            result_line("ok", "alice", "PLAIN", cached=True),
        ],
    ),
    (
        "long-mechanism",
        [(auth("X\x01" + "M" * 80), f"FAIL\t1\t{FAIL}")],
        [
            result_line("unknown-mechanism", "-", "X\\x01" + "M" * 62 + "..."),
            failure_line("unknown-mechanism", "-", "X\\x01" + "M" * 62 + "...", login_failures=0),
        ],
    ),
    (
        "name-with-space",
        [(auth("PLAIN", plain("john doe", "pw")), f"FAIL\t1\tuser=john doe\t{FAIL}")],
        [
            result_line("unknown-login", "john doe", "PLAIN"),
            failure_line("unknown-login", '"john doe"', "PLAIN"),
        ],
    ),
    (
        "cont-for-unknown-id",
        [("CONT\t5\tYQ==", f"FAIL\t5\t{FAIL}")],
        [
            "cuid=1: CONT for unknown request id 5",
            result_line("expired", "-", "?", rip="unknown", request_id=5),
        ],
    ),
]


@pytest.mark.parametrize(
    ("steps", "log"), [s[1:] for s in SCENARIOS], ids=[s[0] for s in SCENARIOS]
)
def test_each_outcome_has_its_reply_and_log_lines(
    store: FakeStore,
    sock_dir: str,
    caplog: pytest.LogCaptureFixture,
    steps: list[tuple[str, str]],
    log: list[str],
) -> None:
    """Each way an AUTH ends gives Postfix its exact reply and the log its exact lines."""

    async def body() -> None:
        async with running(store, sock_dir) as (_, connect):
            await converse(await connect(), steps)

    with auth_log(caplog) as lines:
        run(body())
    assert lines == log


def test_expired_request_is_logged_and_not_counted(
    store: FakeStore, sock_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A LOGIN left waiting expires with one result line, no failure line, and a late CONT fails."""

    async def body() -> None:
        async with running(store, sock_dir, request_timeout=0.1) as (server, connect):
            client = await connect()
            await converse(client, [(auth("LOGIN", b64(b"alice")), PASS_PROMPT)])
            await asyncio.sleep(0.3)
            assert server.throttle.standing(RIP, "alice").failures == 0
            await client.send(f"CONT\t1\t{b64(b'secret')}")
            assert await client.readline() == f"FAIL\t1\t{FAIL}"

    with auth_log(caplog) as lines:
        run(body())
    assert lines == [
        result_line("expired", "-", "LOGIN"),
        "cuid=1: CONT for unknown request id 1",
        result_line("expired", "-", "?", rip="unknown"),
    ]


def test_answered_cont_does_not_expire_later(
    store: FakeStore, sock_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Once the client answered a prompt, the request's timer no longer runs out."""

    async def body() -> None:
        async with running(store, sock_dir, request_timeout=0.3) as (_, connect):
            client = await connect()
            await converse(client, [(auth("LOGIN"), USER_PROMPT)])
            await asyncio.sleep(0.2)
            await client.send(f"CONT\t1\t{b64(b'alice')}")
            assert await client.readline() == PASS_PROMPT
            await asyncio.sleep(0.2)  # past the first prompt's timeout, not the second's
            await client.send(f"CONT\t1\t{b64(b'secret')}")
            assert await client.readline() == "OK\t1\tuser=alice"
            await asyncio.sleep(0.3)

    with auth_log(caplog) as lines:
        run(body())
    assert lines == [result_line("ok", "alice", "LOGIN")]


def test_cont_while_being_verified_closes(
    store: FakeStore, sock_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A CONT for a request not waiting for one is a protocol error: the connection closes."""
    release = threading.Event()

    def slow_verify(password_hash: str, password: str) -> bool:
        release.wait(LINE_TIMEOUT)
        return store.verify(password_hash, password)

    async def body() -> None:
        async with running(store, sock_dir, verify=slow_verify) as (_, connect):
            client = await connect()
            await client.handshake()
            await client.send(auth("PLAIN", plain("alice", "secret")))
            await client.send("CONT\t1\tYQ==")
            await client.assert_closed()
            release.set()

    with auth_log(caplog, logging.WARNING) as lines:
        run(body())
    assert (
        lines[0]
        == "cuid=1: protocol error, closing: CONT for request 1 that is not waiting for one"
    )


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        (["AUTH\t1\tLOGIN", "AUTH\t1\tLOGIN"], "AUTH id 1 is already in use"),
        (["VERSION\t1\t0"], "VERSION sent twice"),
        (["HELLO"], "unknown command 'HELLO'"),
    ],
)
def test_protocol_error_is_logged_with_its_reason(
    store: FakeStore,
    sock_dir: str,
    caplog: pytest.LogCaptureFixture,
    lines: list[str],
    reason: str,
) -> None:
    """A broken line closes the connection with a warning that says what was wrong."""

    async def body() -> None:
        async with running(store, sock_dir) as (_, connect):
            client = await connect()
            await client.handshake()
            for line in lines:
                await client.send(line)
            await asyncio.wait_for(client.reader.read(), LINE_TIMEOUT)

    with auth_log(caplog, logging.WARNING) as logged:
        run(body())
    assert logged == [f"cuid=1: protocol error, closing: {reason}"]


@pytest.mark.parametrize(
    ("first", "reason"),
    [
        ("VERSION\t2\t0", "unsupported protocol major version 2"),
        ("CPID\t1", "first line is not VERSION"),
    ],
)
def test_handshake_errors_are_logged(
    store: FakeStore, sock_dir: str, caplog: pytest.LogCaptureFixture, first: str, reason: str
) -> None:
    """A client that does not start with VERSION 1 is refused with a warning saying why."""

    async def body() -> None:
        async with running(store, sock_dir) as (_, connect):
            client = await connect()
            await client.send(first)
            data = await asyncio.wait_for(client.reader.read(), LINE_TIMEOUT)
            assert data.endswith(b"DONE\n")

    with auth_log(caplog, logging.WARNING) as logged:
        run(body())
    assert logged == [f"cuid=1: protocol error, closing: {reason}"]


@pytest.mark.parametrize("size", [20000, 70000])
def test_overlong_line_is_logged_and_closes(
    store: FakeStore, sock_dir: str, caplog: pytest.LogCaptureFixture, size: int
) -> None:
    """A line over 16384 bytes closes the connection, logged as too long."""

    async def body() -> None:
        async with running(store, sock_dir) as (_, connect):
            client = await connect()
            await client.handshake()
            await client.send("CONT\t1\t" + "A" * size)
            assert await asyncio.wait_for(client.reader.read(), LINE_TIMEOUT) == b""

    with auth_log(caplog, logging.WARNING) as logged:
        run(body())
    assert logged == ["cuid=1: line longer than 16384 bytes from client, closing"]


def test_cuids_count_connections_from_one(store: FakeStore, sock_dir: str) -> None:
    """The first connection is CUID 1, the next CUID 2, and so on."""

    async def body() -> None:
        async with running(store, sock_dir) as (_, connect):
            for cuid in (1, 2, 3):
                lines = await (await connect()).handshake()
                assert lines[4] == f"CUID\t{cuid}"

    run(body())


def test_same_wrong_password_twice_fails_twice(store: FakeStore, sock_dir: str) -> None:
    """A wrong password is never cached: the second try fails and is checked again."""

    async def body() -> None:
        async with running(store, sock_dir) as (_, connect):
            await converse(
                await connect(),
                [
                    (auth("PLAIN", plain("alice", "guess")), f"FAIL\t1\tuser=alice\t{FAIL}"),
                    (
                        auth("PLAIN", plain("alice", "guess"), request_id=2),
                        f"FAIL\t2\tuser=alice\t{FAIL}",
                    ),
                ],
            )
            assert store.verify_calls == 2

    run(body())


def test_disabling_a_login_drops_its_cache_entry(
    store: FakeStore, sock_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A disabled login's cached password is dropped: re-enabled, it is verified afresh."""

    async def body() -> None:
        async with running(store, sock_dir) as (server, connect):
            client = await connect()
            await converse(client, [(auth("PLAIN", plain("alice", "secret")), "OK\t1\tuser=alice")])
            store.add("alice", "secret", enabled=False)
            await client.send(auth("PLAIN", plain("alice", "secret"), request_id=2))
            assert await client.readline() == f"FAIL\t2\tuser=alice\t{FAIL}"
            assert len(server.cache) == 0
            store.add("alice", "secret")
            await client.send(auth("PLAIN", plain("alice", "secret"), request_id=3))
            assert await client.readline() == "OK\t3\tuser=alice"
            assert store.verify_calls == 3

    with auth_log(caplog) as lines:
        run(body())
    assert [line for line in lines if "result=" in line] == [
        result_line("ok", "alice", "PLAIN"),
        result_line("disabled", "alice", "PLAIN", request_id=2),
        result_line("ok", "alice", "PLAIN", request_id=3),
    ]


def test_non_utf8_password_costs_a_verify_for_known_and_unknown_logins(
    store: FakeStore, sock_dir: str
) -> None:
    """A password that is not UTF-8 takes as long for a known login as for an unknown one."""
    hash_seconds = 0.3

    def slow_verify(password_hash: str, password: str) -> bool:
        time.sleep(hash_seconds)
        return store.verify(password_hash, password)

    async def body() -> None:
        async with running(store, sock_dir, verify=slow_verify, failure_delay=0) as (_, connect):
            client = await connect()
            await client.handshake()
            loop = asyncio.get_running_loop()
            took = {}
            for request_id, name in ((1, b"alice"), (2, b"nobody")):
                resp = base64.b64encode(b"\0" + name + b"\0\xff\xfe").decode()
                started = loop.time()
                await client.send(auth("PLAIN", resp, request_id=request_id))
                assert (
                    await client.readline() == f"FAIL\t{request_id}\tuser={name.decode()}\t{FAIL}"
                )
                took[name] = loop.time() - started
            assert took[b"alice"] >= hash_seconds * 0.9
            assert took[b"nobody"] >= hash_seconds * 0.9
            assert store.verify_calls == 2

    run(body())


def test_non_utf8_password_never_matches_its_replacement_characters(
    store: FakeStore, sock_dir: str
) -> None:
    """Bytes that are not UTF-8 fail even when the password is the U+FFFD they decode to."""
    store.add("dave", "\ufffd\ufffd")

    async def body() -> None:
        async with running(store, sock_dir) as (_, connect):
            await converse(
                await connect(),
                [
                    (auth("PLAIN", b64(b"\0dave\0\xff\xfe")), f"FAIL\t1\tuser=dave\t{FAIL}"),
                    (
                        auth("PLAIN", plain("dave", "\ufffd\ufffd"), request_id=2),
                        "OK\t2\tuser=dave",
                    ),
                ],
            )

    run(body())


def test_failure_delay_counts_from_when_the_credentials_arrived(
    store: FakeStore, sock_dir: str
) -> None:
    """The time spent verifying is part of the failure delay, not added to it."""

    def slow_verify(password_hash: str, password: str) -> bool:
        time.sleep(0.5)
        return store.verify(password_hash, password)

    async def body() -> None:
        async with running(store, sock_dir, verify=slow_verify, failure_delay=0.6) as (_, connect):
            client = await connect()
            await client.handshake()
            loop = asyncio.get_running_loop()
            started = loop.time()
            await client.send(auth("PLAIN", plain("alice", "wrong")))
            assert await client.readline() == f"FAIL\t1\tuser=alice\t{FAIL}"
            took = loop.time() - started
            assert 0.55 <= took < 1.0  # not 0.5 + 0.6

    run(body())


@pytest.mark.parametrize(
    "resp",
    [b64(b"alice\0secret"), "not*base64", plain("alice", "secret", "bob"), b64(b"\0\0pw")],
    ids=["malformed", "base64", "authzid", "empty-name"],
)
def test_failures_before_any_check_still_wait_the_failure_delay(
    store: FakeStore, sock_dir: str, resp: str
) -> None:
    """Even a request refused before any lookup gets its FAIL only after the failure delay."""

    async def body() -> None:
        async with running(store, sock_dir, failure_delay=0.4) as (_, connect):
            client = await connect()
            await client.handshake()
            loop = asyncio.get_running_loop()
            started = loop.time()
            await client.send(auth("PLAIN", resp))
            assert (await client.readline()).startswith("FAIL\t1\t")
            assert loop.time() - started >= 0.38

    run(body())


def test_locked_address_is_refused_at_once_and_logged(
    store: FakeStore, sock_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    """After the lockout threshold an address gets FAIL at once, unchecked, logged as locked."""

    async def body() -> None:
        throttle = Throttle(throttle_after=0, lockout_after=2, lockout_seconds=60)
        async with running(store, sock_dir, throttle=throttle, failure_delay=0.5) as (_, connect):
            client = await connect()
            await converse(
                client,
                [
                    (auth("PLAIN", plain("alice", "a")), f"FAIL\t1\tuser=alice\t{FAIL}"),
                    (
                        auth("PLAIN", plain("alice", "b"), request_id=2),
                        f"FAIL\t2\tuser=alice\t{FAIL}",
                    ),
                ],
            )
            calls = store.verify_calls
            loop = asyncio.get_running_loop()
            started = loop.time()
            await client.send(auth("PLAIN", plain("alice", "secret"), request_id=3))
            assert await client.readline() == f"FAIL\t3\tuser=alice\t{FAIL}"
            await client.send(auth("LOGIN", request_id=4))
            assert await client.readline() == f"FAIL\t4\t{FAIL}"
            await client.send(auth("PLAIN", request_id=5))
            assert await client.readline() == f"FAIL\t5\t{FAIL}"
            assert loop.time() - started < 0.4
            assert store.verify_calls == calls

    with auth_log(caplog) as lines:
        run(body())
    assert lines == [
        result_line("bad-password", "alice", "PLAIN"),
        failure_line("bad-password", '"alice"', "PLAIN"),
        result_line("bad-password", "alice", "PLAIN", request_id=2),
        failure_line(
            "bad-password",
            '"alice"',
            "PLAIN",
            failures=2,
            login_failures=2,
            locked=True,
            request_id=2,
        ),
        f"auth lockout rip={RIP} failures=2 seconds=60: every AUTH from this address"
        " fails unchecked until the lock ends",
        result_line("locked", "alice", "PLAIN", request_id=3),
        failure_line(
            "locked", '"alice"', "PLAIN", failures=2, login_failures=2, locked=True, request_id=3
        ),
        result_line("locked", "-", "LOGIN", request_id=4),
        failure_line(
            "locked", "-", "LOGIN", failures=2, login_failures=0, locked=True, request_id=4
        ),
        result_line("locked", "-", "PLAIN", request_id=5),
        failure_line(
            "locked", "-", "PLAIN", failures=2, login_failures=0, locked=True, request_id=5
        ),
    ]


def test_one_hash_worker_checks_one_password_at_a_time(store: FakeStore, sock_dir: str) -> None:
    """hash_workers=1 bounds the password checks to one at a time."""
    active = 0
    most = 0
    lock = threading.Lock()

    def slow_verify(password_hash: str, password: str) -> bool:
        nonlocal active, most
        with lock:
            active += 1
            most = max(most, active)
        time.sleep(0.15)
        with lock:
            active -= 1
        return store.verify(password_hash, password)

    async def body() -> None:
        async with running(store, sock_dir, verify=slow_verify, hash_workers=1, cache_ttl=0) as (
            _,
            connect,
        ):
            client = await connect()
            await client.handshake()
            for request_id in (1, 2, 3):
                await client.send(auth("PLAIN", plain("alice", "secret"), request_id=request_id))
            replies = {await client.readline() for _ in range(3)}
            assert replies == {f"OK\t{n}\tuser=alice" for n in (1, 2, 3)}

    run(body())
    assert most == 1


def test_cache_size_setting_is_used(store: FakeStore, sock_dir: str) -> None:
    """cache_max_entries bounds the daemon's credential cache."""

    async def body() -> None:
        async with running(store, sock_dir, cache_max_entries=1) as (server, connect):
            await converse(
                await connect(),
                [
                    (auth("PLAIN", plain("alice", "secret")), "OK\t1\tuser=alice"),
                    (auth("PLAIN", plain("bob", "hunter2"), request_id=2), "OK\t2\tuser=bob"),
                ],
            )
            assert len(server.cache) == 1

    run(body())


def test_defaults_and_invalid_settings(store: FakeStore) -> None:
    """The documented defaults, and settings the daemon refuses with a message saying why."""
    server = AuthServer(store.lookup, store.verify, DUMMY_HASH)
    assert (server.failure_delay, server.request_timeout, server.shutdown_grace) == (
        2.0,
        300.0,
        5.0,
    )
    assert AuthServer(store.lookup, store.verify, DUMMY_HASH, failure_delay=0, hash_workers=1)
    for kwargs, message in [
        ({"failure_delay": -0.1}, "failure_delay must be at least 0 and below 10 seconds"),
        ({"failure_delay": 10}, "failure_delay must be at least 0 and below 10 seconds"),
        ({"request_timeout": 0}, "request_timeout must be positive"),
        ({"hash_workers": 0}, "hash_workers must be at least 1"),
    ]:
        with pytest.raises(ValueError) as caught:
            AuthServer(store.lookup, store.verify, DUMMY_HASH, **kwargs)  # type: ignore[arg-type]
        assert str(caught.value) == message


def test_socket_group_is_set(store: FakeStore, sock_dir: str) -> None:
    """serve_unix(group=...) gives the socket that group, so Postfix's group can connect."""
    group = grp.getgrgid(os.getgid()).gr_name

    async def body() -> None:
        server = AuthServer(store.lookup, store.verify, DUMMY_HASH)
        path = os.path.join(sock_dir, "auth")
        task = asyncio.create_task(server.serve_unix(path, mode=0o640, group=group))
        await asyncio.wait_for(server.wait_serving(), LINE_TIMEOUT)
        st = os.stat(path)
        assert st.st_gid == os.getgid()
        assert st.st_mode & 0o777 == 0o640
        await server.stop()
        await task

    run(body())


def test_unknown_socket_group_fails_and_leaves_no_socket(store: FakeStore, sock_dir: str) -> None:
    """A group that does not exist stops the daemon at start, with no socket left behind."""

    async def body() -> None:
        server = AuthServer(store.lookup, store.verify, DUMMY_HASH)
        path = os.path.join(sock_dir, "auth")
        with pytest.raises(LookupError):
            await server.serve_unix(path, group="no-such-group-smtpeter")
        assert not os.path.exists(path)

    run(body())


def test_live_socket_is_not_replaced(store: FakeStore, sock_dir: str) -> None:
    """A second daemon on the same path refuses to start while the first one answers."""

    async def body() -> None:
        async with running(store, sock_dir):
            path = os.path.join(sock_dir, "auth")
            other = AuthServer(store.lookup, store.verify, DUMMY_HASH)
            with pytest.raises(OSError) as caught:
                await other.serve_unix(path)
            assert str(caught.value) == f"another process is already serving {path}"

    run(body())


def test_regular_file_message(store: FakeStore, sock_dir: str) -> None:
    """A regular file at the socket path is refused with a message naming it."""
    path = os.path.join(sock_dir, "auth")
    with open(path, "w") as fh:
        fh.write("x")

    async def body() -> None:
        server = AuthServer(store.lookup, store.verify, DUMMY_HASH)
        with pytest.raises(FileExistsError) as caught:
            await server.serve_unix(path)
        assert str(caught.value) == f"{path} exists and is not a socket; refusing to replace it"

    run(body())


async def stopping_with_one_busy(
    store: FakeStore, sock_dir: str
) -> tuple[asyncio.Task[None], Client, Client, asyncio.Task[None]]:
    """A daemon told to stop while one connection (cuid 1) has a failing AUTH in its
    failure delay and another (cuid 2) is idle: the daemon's task, the two clients and
    the stop() task."""
    server, path, task = await serving(store, sock_dir, failure_delay=0.5)
    busy = await connected(path)
    idle = await connected(path)
    await busy.send(auth("PLAIN", plain("alice", "wrong")))
    await asyncio.sleep(0.05)
    stopper = asyncio.create_task(server.stop())
    await asyncio.sleep(0.05)
    assert server.stopping
    return task, busy, idle, stopper


async def cancelled_at_once(task: asyncio.Task[None], client: Client) -> None:
    """Cancelling the daemon's task ends it within 0.4 s, checks in flight or not; then
    the client goes and the threads get a second to finish."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert loop.time() - began < 0.4
    await client.close()
    await asyncio.sleep(1.0)


def test_shutdown_closes_idle_connections_and_refuses_new_auth(
    store: FakeStore, sock_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    """On stop, an AUTH arriving meanwhile is answered by closing (Postfix says 454 and retries)."""

    async def body() -> None:
        task, busy, idle, stopper = await stopping_with_one_busy(store, sock_dir)
        await idle.send(auth("PLAIN", plain("alice", "secret")))
        await idle.assert_closed()
        assert await busy.readline() == f"FAIL\t1\tuser=alice\t{FAIL}"
        await busy.assert_closed()
        await stopper
        await task
        await busy.close()
        await idle.close()

    with auth_log(caplog) as lines:
        run(body())
    assert "cuid=2: shutting down, closing instead of a new AUTH" in lines


def test_cancelled_daemon_does_not_wait_for_in_flight_requests(
    store: FakeStore, sock_dir: str
) -> None:
    """Cancelling the daemon (not a graceful stop) closes at once, without the grace period."""

    async def body() -> None:
        _, path, task = await serving(store, sock_dir, failure_delay=3.0)
        client = await connected(path)
        await client.send(auth("PLAIN", plain("alice", "wrong")))
        await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        started = loop.time()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert loop.time() - started < 1.0
        assert await asyncio.wait_for(client.reader.read(), LINE_TIMEOUT) == b""
        assert not os.path.exists(path)
        await client.close()

    run(body())


def test_graceful_stop_waits_at_most_the_grace(store: FakeStore, sock_dir: str) -> None:
    """stop() gives in-flight requests shutdown_grace seconds, then closes anyway."""

    async def body() -> None:
        server = AuthServer(
            store.lookup, store.verify, DUMMY_HASH, failure_delay=3.0, shutdown_grace=0.3
        )
        path = os.path.join(sock_dir, "auth")
        task = asyncio.create_task(server.serve_unix(path))
        await server.wait_serving()
        client = await connected(path)
        await client.send(auth("PLAIN", plain("alice", "wrong")))
        await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.wait_for(server.stop(), LINE_TIMEOUT)
        took = loop.time() - started
        assert 0.25 <= took < 1.5
        assert await asyncio.wait_for(client.reader.read(), LINE_TIMEOUT) == b""
        await task
        await client.close()

    run(body())


def test_backend_error_line_names_login_and_address(
    store: FakeStore, sock_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A broken store closes the connection with an error line naming login, mech and address."""

    def broken_verify(password_hash: str, password: str) -> bool:
        raise ValueError("not a valid argon2 hash")

    async def body() -> None:
        async with running(store, sock_dir, verify=broken_verify) as (_, connect):
            client = await connect()
            await client.handshake()
            await client.send(auth("LOGIN", b64(b"alice")))
            await client.readline()
            await client.send(f"CONT\t1\t{b64(b'secret')}")
            await client.assert_closed()

    with auth_log(caplog, logging.ERROR) as lines:
        run(body())
    assert lines == [
        "cuid=1 id=1: password verification failed: ValueError: not a valid argon2 hash;"
        " closing the connection so Postfix answers 454 4.7.0"
        f" (login=alice mech=LOGIN rip={RIP})"
    ]


def test_lookup_error_line(
    store: FakeStore, sock_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A store that raises is logged as a failed lookup with the exception's type and text."""

    async def body() -> None:
        store.broken = True
        async with running(store, sock_dir) as (_, connect):
            client = await connect()
            await client.handshake()
            await client.send(auth("PLAIN", plain("alice", "secret")))
            await client.assert_closed()

    with auth_log(caplog, logging.ERROR) as lines:
        run(body())
    assert len(lines) == 1
    assert re.fullmatch(
        r"cuid=1 id=1: login lookup failed: OperationalError: unable to open database file;"
        r" closing the connection so Postfix answers 454 4\.7\.0 \(login=alice mech=PLAIN"
        r" rip=198\.51\.100\.7\)",
        lines[0],
    )


def test_debug_lines_follow_a_connection(
    store: FakeStore, sock_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    """At debug level the log shows a connection's life: connect, pid, no TLS, disconnect."""

    async def body() -> None:
        async with running(store, sock_dir) as (_, connect):
            client = await connect()
            await client.handshake()
            await client.send(f"AUTH\t1\tPLAIN\tservice=smtp\tresp={plain('alice', 'secret')}")
            assert await client.readline() == "OK\t1\tuser=alice"
            client.writer.write(b"AUTH\t2")  # then the client goes away mid-line
            await client.close()
            await asyncio.sleep(0.1)
            other = await connect()
            await other.handshake()
            await other.close()
            await asyncio.sleep(0.1)

    with auth_log(caplog, logging.DEBUG) as lines:
        run(body())
    assert lines == [
        "cuid=1: client connected",
        f"cuid=1: client pid {os.getpid()}",
        "cuid=1 id=1: AUTH without TLS (no 'secured')",
        result_line("ok", "alice", "PLAIN", rip="unknown"),
        "cuid=1: client closed mid-line",
        "cuid=1: client disconnected",
        "cuid=2: client connected",
        f"cuid=2: client pid {os.getpid()}",
        "cuid=2: client disconnected",
    ]


def test_start_and_stop_are_logged(
    store: FakeStore, sock_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The daemon logs where it listens (with its pid) and that it stopped."""

    async def body() -> None:
        async with running(store, sock_dir):
            pass

    with caplog.at_level(logging.INFO, logger="smtpeter.auth"):
        run(body())
    path = os.path.join(sock_dir, "auth")
    assert [r.getMessage() for r in caplog.records] == [
        f"auth daemon listening on {path} (spid={os.getpid()})",
        "auth daemon stopped",
    ]


def test_a_replaced_socket_is_left_to_its_new_owner(store: FakeStore, sock_dir: str) -> None:
    """On stop the daemon removes its own socket, not one another daemon put in its place."""
    import socket

    async def body() -> None:
        path = os.path.join(sock_dir, "auth")
        newer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            async with running(store, sock_dir):
                os.unlink(path)
                newer.bind(path)
            assert os.path.exists(path)
        finally:
            newer.close()

    run(body())


def test_request_limit_per_connection(
    store: FakeStore, sock_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    """1024 requests may wait on one connection; the 1025th closes it as broken."""

    async def body() -> None:
        async with running(store, sock_dir) as (_, connect):
            client = await connect()
            await client.handshake()
            await client.send("".join(f"AUTH\t{n}\tLOGIN\n" for n in range(1, 1025)))
            for _ in range(1024):
                assert (await client.readline()).startswith("CONT\t")
            await client.send("AUTH\t1025\tLOGIN")
            assert await asyncio.wait_for(client.reader.read(), LINE_TIMEOUT) == b""

    with auth_log(caplog, logging.WARNING) as lines:
        run(body())
    assert lines == ["cuid=1: protocol error, closing: more than 1024 requests outstanding"]


def test_an_id_waiting_for_its_fail_is_still_in_use(
    store: FakeStore, sock_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    """While a late CONT's FAIL is pending, reusing its id is a protocol error."""

    async def body() -> None:
        async with running(store, sock_dir, failure_delay=0.3) as (_, connect):
            client = await connect()
            await client.handshake()
            await client.send("CONT\t5\tYQ==")
            await client.send(auth("PLAIN", plain("alice", "secret"), request_id=5))
            assert await asyncio.wait_for(client.reader.read(), LINE_TIMEOUT) == b""

    with auth_log(caplog, logging.WARNING) as lines:
        run(body())
    assert lines[-1] == "cuid=1: protocol error, closing: AUTH id 5 is already in use"


def test_stopping_abandons_queued_password_checks(store: FakeStore, sock_dir: str) -> None:
    """A stopped daemon returns at once and checks no password still queued for a worker."""
    started_checks = threading.Event()

    def slow_verify(password_hash: str, password: str) -> bool:
        started_checks.set()
        time.sleep(0.6)
        return store.verify(password_hash, password)

    async def body() -> None:
        server = AuthServer(store.lookup, slow_verify, DUMMY_HASH, hash_workers=1)
        path = os.path.join(sock_dir, "auth")
        task = asyncio.create_task(server.serve_unix(path))
        await server.wait_serving()
        client = await connected(path)
        for request_id in (1, 2, 3):
            await client.send(auth("PLAIN", plain("alice", "secret"), request_id=request_id))
        await asyncio.get_running_loop().run_in_executor(None, started_checks.wait, LINE_TIMEOUT)
        await cancelled_at_once(task, client)

    run(body())
    assert store.verify_calls == 1


def test_locked_address_gets_fail_even_while_the_store_is_down(
    store: FakeStore, sock_dir: str
) -> None:
    """A locked-out address is refused before its login is looked up: FAIL, not a closed line."""

    async def body() -> None:
        throttle = Throttle(throttle_after=0, lockout_after=1, lockout_seconds=60)
        async with running(store, sock_dir, throttle=throttle) as (_, connect):
            client = await connect()
            await converse(
                client, [(auth("PLAIN", plain("alice", "a")), f"FAIL\t1\tuser=alice\t{FAIL}")]
            )
            store.broken = True
            await client.send(auth("PLAIN", plain("alice", "secret"), request_id=2))
            assert await client.readline() == f"FAIL\t2\tuser=alice\t{FAIL}"

    run(body())


def test_reply_budget_counts_the_lookup_time(
    store: FakeStore, sock_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A paced attempt whose slot is beyond 8 s from its arrival (lookup included) fails at once."""

    def slow_lookup(name: str) -> Credentials | None:
        time.sleep(0.5)
        return store.lookup(name)

    async def body() -> None:
        throttle = Throttle(throttle_after=1, throttle_interval=MAX_REPLY_SECONDS, lockout_after=0)
        async with running(store, sock_dir, lookup=slow_lookup, throttle=throttle) as (_, connect):
            client = await connect()
            await converse(
                client, [(auth("PLAIN", plain("alice", "a")), f"FAIL\t1\tuser=alice\t{FAIL}")]
            )
            await client.send(auth("PLAIN", plain("alice", "b"), request_id=2))
            await client.send(auth("PLAIN", plain("alice", "c"), request_id=3))
            # 2 takes the next slot now; 3's slot is 8 s later, past its budget of 7.5 s.
            assert {await client.readline(), await client.readline()} == {
                f"FAIL\t2\tuser=alice\t{FAIL}",
                f"FAIL\t3\tuser=alice\t{FAIL}",
            }

    with auth_log(caplog, logging.WARNING) as lines:
        run(body())
        gc.collect()  # a task that died with an exception is reported when collected
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert sorted(line.split(" reason=")[1].split()[0] for line in lines) == [
        "bad-password",
        "bad-password",
        "throttled",
    ]


def test_address_locked_while_waiting_for_its_slot_is_not_checked(
    store: FakeStore, sock_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An attempt paced behind one that locks the address fails unchecked, right password or not."""

    async def body() -> None:
        throttle = Throttle(
            throttle_after=1, throttle_interval=0.5, lockout_after=2, lockout_seconds=60
        )
        async with running(store, sock_dir, throttle=throttle) as (_, connect):
            client = await connect()
            await converse(
                client, [(auth("PLAIN", plain("alice", "a")), f"FAIL\t1\tuser=alice\t{FAIL}")]
            )
            await client.send(auth("PLAIN", plain("alice", "b"), request_id=2))
            await client.send(auth("PLAIN", plain("alice", "secret"), request_id=3))
            assert {await client.readline(), await client.readline()} == {
                f"FAIL\t2\tuser=alice\t{FAIL}",
                f"FAIL\t3\tuser=alice\t{FAIL}",
            }
            assert store.verify_calls == 2

    with auth_log(caplog) as lines:
        run(body())
    assert lines[-2:] == [
        result_line("locked", "alice", "PLAIN", request_id=3),
        failure_line(
            "locked", '"alice"', "PLAIN", failures=2, login_failures=2, locked=True, request_id=3
        ),
    ]


def test_attempt_held_behind_checks_in_flight_fails_unchecked_when_its_budget_runs_out(
    store: FakeStore,
    sock_dir: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An attempt held behind a check that may still lock its address gets FAIL when its
    reply budget is spent, its (right) password unchecked and not counted as a failure."""
    monkeypatch.setattr(server_module, "MAX_REPLY_SECONDS", 0.5)
    in_check = threading.Event()
    gate = threading.Event()
    checked: list[str] = []

    def gated_verify(password_hash: str, password: str) -> bool:
        checked.append(password)
        in_check.set()
        gate.wait(LINE_TIMEOUT)
        return store.verify(password_hash, password)

    async def body() -> None:
        throttle = Throttle(throttle_after=1, lockout_after=0)
        async with running(
            store, sock_dir, verify=gated_verify, throttle=throttle, failure_delay=0
        ) as (_, connect):
            client = await connect()
            await client.handshake()
            loop = asyncio.get_running_loop()
            try:
                await client.send(auth("PLAIN", plain("alice", "wrong")))
                assert await loop.run_in_executor(None, in_check.wait, LINE_TIMEOUT)
                # 1 is being checked and may fail, reaching throttle_after: 2 is held.
                started = loop.time()
                await client.send(auth("PLAIN", plain("alice", "secret"), request_id=2))
                reply = await client.readline()
                took = loop.time() - started
            finally:
                gate.set()
            assert reply == f"FAIL\t2\tuser=alice\t{FAIL}"
            assert 0.45 <= took < 1.5
            assert checked == ["wrong"]
            assert await client.readline() == f"FAIL\t1\tuser=alice\t{FAIL}"
            assert checked == ["wrong"]

    try:
        with auth_log(caplog) as lines:
            run(body())
    finally:
        gate.set()
    assert lines == [
        result_line("throttled", "alice", "PLAIN", request_id=2),
        failure_line("throttled", '"alice"', "PLAIN", failures=0, login_failures=0, request_id=2),
        result_line("bad-password", "alice", "PLAIN"),
        failure_line("bad-password", '"alice"', "PLAIN"),
    ]


def test_attempt_whose_address_locks_during_its_slot_wait_fails_when_its_slot_comes(
    store: FakeStore, sock_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An attempt already given a slot, whose address is locked by a failure meanwhile,
    gets FAIL when its slot comes, its right password unchecked, logged as locked."""
    in_check = threading.Event()
    gate = threading.Event()
    checked: list[str] = []
    looked_up: list[str] = []

    def counted_lookup(name: str) -> Credentials | None:
        looked_up.append(name)
        return store.lookup(name)

    def gated_verify(password_hash: str, password: str) -> bool:
        checked.append(password)
        if password == "b":
            in_check.set()
            gate.wait(LINE_TIMEOUT)
        return store.verify(password_hash, password)

    async def body() -> None:
        throttle = Throttle(
            throttle_after=1, throttle_interval=2.0, lockout_after=2, lockout_seconds=60
        )
        async with running(
            store, sock_dir, lookup=counted_lookup, verify=gated_verify, throttle=throttle
        ) as (_, connect):
            client = await connect()
            await converse(
                client, [(auth("PLAIN", plain("alice", "a")), f"FAIL\t1\tuser=alice\t{FAIL}")]
            )
            loop = asyncio.get_running_loop()
            try:
                # 2 takes the slot of now and is being checked; 3 gets the slot 2 s later.
                await client.send(auth("PLAIN", plain("alice", "b"), request_id=2))
                assert await loop.run_in_executor(None, in_check.wait, LINE_TIMEOUT)
                started = loop.time()
                await client.send(auth("PLAIN", plain("alice", "secret"), request_id=3))
                while len(looked_up) < 3 and loop.time() - started < LINE_TIMEOUT:
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.05)
            finally:
                gate.set()  # 2 fails: the address is locked before 3's slot
            assert await client.readline() == f"FAIL\t2\tuser=alice\t{FAIL}"
            assert await client.readline() == f"FAIL\t3\tuser=alice\t{FAIL}"
            assert loop.time() - started >= 1.5
            assert checked == ["a", "b"]

    try:
        with auth_log(caplog) as lines:
            run(body())
    finally:
        gate.set()
    assert lines[-2:] == [
        result_line("locked", "alice", "PLAIN", request_id=3),
        failure_line(
            "locked", '"alice"', "PLAIN", failures=2, login_failures=2, locked=True, request_id=3
        ),
    ]


def test_lines_after_a_refused_auth_on_a_stopping_daemon_are_not_read(
    store: FakeStore, sock_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Once a connection is closed for an AUTH during shutdown, the lines that came with
    it are dropped, not handled on the closed connection."""

    async def body() -> None:
        task, busy, idle, stopper = await stopping_with_one_busy(store, sock_dir)
        lines = [auth("PLAIN", plain("alice", "secret"), request_id=n) for n in (1, 2, 3)]
        await idle.send("\n".join(lines))
        await idle.assert_closed()
        await stopper
        await task
        await busy.close()
        await idle.close()

    with auth_log(caplog) as lines:
        run(body())
    assert [line for line in lines if line.startswith("cuid=2:")] == [
        "cuid=2: shutting down, closing instead of a new AUTH"
    ]


def test_closed_connections_are_not_kept(store: FakeStore, sock_dir: str) -> None:
    """A long-running daemon keeps nothing of the connections Postfix has closed (no leak
    as smtpd processes come and go)."""

    def alive() -> int:
        gc.collect()
        return sum(isinstance(o, server_module._Connection) for o in gc.get_objects())

    async def body() -> None:
        before = alive()  # whatever earlier tests left for the collector
        async with running(store, sock_dir) as (_, connect):
            clients = [await connect() for _ in range(20)]
            for client in clients:
                await client.handshake()
            assert alive() == before + 20
            for client in clients:
                await client.close()
            loop = asyncio.get_running_loop()
            started = loop.time()
            while alive() > before and loop.time() - started < LINE_TIMEOUT:
                await asyncio.sleep(0.05)
            assert alive() == before

    run(body())


def test_debug_lines_of_a_reset_connection_and_of_one_left_with_a_request_in_flight(
    store: FakeStore, sock_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    """At debug level a connection reset by its client is logged with the error, and a
    client that leaves while its request waits for its FAIL is still logged as gone."""

    async def body() -> None:
        async with running(store, sock_dir, failure_delay=2.0) as (_, connect):
            # Closing with the handshake unread makes the kernel reset the connection.
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as rude:
                rude.connect(os.path.join(sock_dir, "auth"))
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.2)
            leaving = await connect()
            await leaving.handshake()
            await leaving.send(auth("PLAIN", plain("alice", "wrong")))
            await asyncio.sleep(0.2)
            await leaving.close()
            await asyncio.sleep(0.2)

    with auth_log(caplog, logging.DEBUG) as lines:
        run(body())
    assert lines[:2] == [
        "cuid=1: client connected",
        "cuid=1: connection error: [Errno 104] Connection reset by peer",
    ]
    assert lines[2:4] == ["cuid=1: client disconnected", "cuid=2: client connected"]
    assert lines[-1] == "cuid=2: client disconnected"


def test_stopping_abandons_queued_lookups(store: FakeStore, sock_dir: str) -> None:
    """A stopped daemon returns at once and looks up no login still queued for a lookup thread."""
    started_lookups = threading.Event()
    lookups: list[str] = []

    def slow_lookup(name: str) -> Credentials | None:
        lookups.append(name)
        started_lookups.set()
        time.sleep(0.6)
        return store.lookup(name)

    async def body() -> None:
        server = AuthServer(slow_lookup, store.verify, DUMMY_HASH)
        path = os.path.join(sock_dir, "auth")
        task = asyncio.create_task(server.serve_unix(path))
        await server.wait_serving()
        client = await connected(path)
        for request_id in (1, 2, 3, 4):
            await client.send(auth("PLAIN", plain("alice", "secret"), request_id=request_id))
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, started_lookups.wait, LINE_TIMEOUT)
        await asyncio.sleep(0.05)
        await cancelled_at_once(task, client)

    run(body())
    assert len(lookups) == 2  # the two lookup threads' first; the queued two never ran


def test_socket_mode_defaults_to_owner_and_group(store: FakeStore, sock_dir: str) -> None:
    """Without a mode the socket is made rw for owner and group only (0660), as Postfix needs."""

    async def body() -> None:
        server, path, task = await serving(store, sock_dir)
        assert oct(os.stat(path).st_mode & 0o7777) == oct(0o660)
        await server.stop()
        await task

    run(body())


def test_stop_before_serving_returns_at_once(store: FakeStore) -> None:
    """A daemon told to stop before it listened (a signal during start-up) does not
    wait for a listener that never came."""

    async def body() -> None:
        server = AuthServer(store.lookup, store.verify, DUMMY_HASH)
        await asyncio.wait_for(server.stop(), 1.0)

    run(body())


def test_a_socket_removed_while_serving_still_stops_cleanly(
    store: FakeStore, sock_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    """If an admin removed the socket file, stopping still ends the daemon without an
    error, and says so."""

    async def body() -> None:
        server, path, task = await serving(store, sock_dir)
        os.unlink(path)
        await asyncio.wait_for(server.stop(), LINE_TIMEOUT)
        await asyncio.wait_for(task, LINE_TIMEOUT)  # raises if serve_unix did

    with caplog.at_level(logging.INFO, logger="smtpeter.auth"):
        run(body())
    assert "auth daemon stopped" in [r.getMessage() for r in caplog.records]
