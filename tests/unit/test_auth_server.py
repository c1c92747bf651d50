"""The auth daemon, run for real on a unix socket and spoken to as Postfix speaks to it."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import os
import shutil
import sqlite3
import stat
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import pytest

from smtpeter.auth.cache import CredentialCache
from smtpeter.auth.server import FAIL_REASON, AuthServer, Credentials, valid_login_name

FAST_DELAY = 0.05
LINE_TIMEOUT = 5.0
FAKE_PREFIX = "fake$"
DUMMY_HASH = FAKE_PREFIX + "\0never"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def plain(authcid: str, password: str, authzid: str = "") -> str:
    return b64(f"{authzid}\0{authcid}\0{password}".encode())


class FakeStore:
    """A store and a hasher with counters; ``fake$<password>`` is the 'hash'."""

    def __init__(self) -> None:
        self.logins: dict[str, Credentials] = {}
        self.broken = False
        self.verify_calls = 0
        self.verified_hashes: list[str] = []
        self.loop_threads: set[int] = set()
        self.lock = threading.Lock()
        self.add("alice", "secret")
        self.add("bob", "hunter2")
        self.add("carol", "s3cret", enabled=False)

    def add(self, name: str, password: str, *, enabled: bool = True) -> None:
        self.logins[name] = Credentials(name, FAKE_PREFIX + password, enabled)

    def lookup(self, name: str) -> Credentials | None:
        self.loop_threads.add(threading.get_ident())
        if self.broken:
            raise sqlite3.OperationalError("unable to open database file")
        return self.logins.get(name)

    def verify(self, password_hash: str, password: str) -> bool:
        self.loop_threads.add(threading.get_ident())
        with self.lock:
            self.verify_calls += 1
            self.verified_hashes.append(password_hash)
        return password_hash == FAKE_PREFIX + password


class Client:
    """A Postfix-like client: sends lines split into ``chunk``-byte writes."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, chunk: int | None
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.chunk = chunk

    async def send(self, line: str | bytes) -> None:
        data = line.encode() if isinstance(line, str) else line
        if not data.endswith(b"\n"):
            data += b"\n"
        step = self.chunk or len(data)
        for start in range(0, len(data), step):
            self.writer.write(data[start : start + step])
            await self.writer.drain()
            if self.chunk:
                await asyncio.sleep(0)

    async def readline(self, timeout: float = LINE_TIMEOUT) -> str:
        raw = await asyncio.wait_for(self.reader.readline(), timeout)
        assert raw.endswith(b"\n"), f"connection closed, got {raw!r}"
        return raw[:-1].decode()

    async def handshake(self) -> list[str]:
        await self.send(f"VERSION\t1\t0\nCPID\t{os.getpid()}")
        lines = []
        while True:
            line = await self.readline()
            lines.append(line)
            if line == "DONE":
                return lines

    async def auth(self, request_id: int, mech: str, resp: str | None = None) -> None:
        line = (
            f"AUTH\t{request_id}\t{mech}\tservice=smtp\tnologin\tlip=192.0.2.1"
            f"\trip=198.51.100.7\tsecured"
        )
        if resp is not None:
            line += f"\tresp={resp}"
        await self.send(line)

    async def assert_closed(self) -> None:
        rest = await asyncio.wait_for(self.reader.read(), LINE_TIMEOUT)
        assert rest == b""

    async def close(self) -> None:
        self.writer.close()
        with suppress(ConnectionError, TimeoutError):
            await asyncio.wait_for(self.writer.wait_closed(), LINE_TIMEOUT)


Connect = Callable[[], Awaitable[Client]]


@pytest.fixture
def sock_dir() -> Iterator[str]:
    # Short path: unix socket paths are limited to ~107 bytes.
    path = tempfile.mkdtemp(prefix="smtpeter-auth-", dir="/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@asynccontextmanager
async def running(
    store: FakeStore,
    sock_dir: str,
    chunk: int | None = None,
    **kwargs: Any,
) -> AsyncIterator[tuple[AuthServer, Connect]]:
    kwargs.setdefault("failure_delay", FAST_DELAY)
    kwargs.setdefault("verify", store.verify)
    kwargs.setdefault("dummy_hash", DUMMY_HASH)
    kwargs.setdefault("lookup", store.lookup)
    server = AuthServer(**kwargs)
    path = os.path.join(sock_dir, "auth")
    task = asyncio.create_task(server.serve_unix(path, mode=0o600))
    await asyncio.wait_for(server.wait_serving(), LINE_TIMEOUT)
    clients: list[Client] = []

    async def connect() -> Client:
        reader, writer = await asyncio.open_unix_connection(path)
        client = Client(reader, writer, chunk)
        clients.append(client)
        return client

    try:
        yield server, connect
    finally:
        for client in clients:
            await client.close()
        await asyncio.wait_for(server.stop(), LINE_TIMEOUT)
        await asyncio.wait_for(task, LINE_TIMEOUT)


#: How long a test's body may take, and how long its tasks may take to end once cancelled.
BODY_SECONDS = 60.0
CANCEL_SECONDS = 10.0


def _stacks(tasks: set[asyncio.Task[Any]]) -> str:
    out = io.StringIO()
    for task in tasks:
        print(task, file=out)
        task.print_stack(file=out)
    return out.getvalue()


def run(coro: Coroutine[Any, Any, None]) -> None:
    """Run a test body on a fresh event loop, bounded: the body gets BODY_SECONDS, then
    it and every task left over get CANCEL_SECONDS to end once cancelled. A task that
    does not end fails the test with its stack, instead of hanging the run (what
    ``asyncio.run`` does when a task survives its cancellation)."""
    loop = asyncio.new_event_loop()
    try:
        main = loop.create_task(coro)
        loop.run_until_complete(asyncio.wait({main}, timeout=BODY_SECONDS))
        timed_out = not main.done()
        leftover = {t for t in asyncio.all_tasks(loop) if not t.done()}
        for task in leftover:
            task.cancel()
        if leftover:
            loop.run_until_complete(asyncio.wait(leftover, timeout=CANCEL_SECONDS))
        stuck = {t for t in leftover if not t.done()}
        if stuck:
            pytest.fail(
                f"{len(stuck)} task(s) still running {CANCEL_SECONDS:.0f} s after being"
                f" cancelled (body timed out: {timed_out}):\n{_stacks(stuck)}"
            )
        if timed_out:
            pytest.fail(f"test body took over {BODY_SECONDS:.0f} s")
        main.result()
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


CHUNKS = pytest.mark.parametrize("chunk", [1, 2, 7, None], ids=["1", "2", "7", "whole"])


# -- handshake ---------------------------------------------------------------------------


@CHUNKS
def test_handshake_lines_and_order(store: FakeStore, sock_dir: str, chunk: int | None) -> None:
    async def body() -> None:
        async with running(store, sock_dir, chunk) as (_, connect):
            client = await connect()
            lines = await client.handshake()
            assert lines[0] == "VERSION\t1\t2"
            assert lines[1:3] == ["MECH\tPLAIN\tplaintext", "MECH\tLOGIN\tplaintext"]
            assert lines[3] == f"SPID\t{os.getpid()}"
            assert lines[4].startswith("CUID\t") and lines[4][5:].isdigit()
            cookie = lines[5].split("\t")
            assert cookie[0] == "COOKIE" and len(cookie[1]) == 32
            int(cookie[1], 16)
            assert lines[6] == "DONE"
            assert len(lines) == 7
            # A second connection gets its own CUID.
            other = await connect()
            other_lines = await other.handshake()
            assert other_lines[4] != lines[4]

    run(body())


def test_socket_mode_and_stale_socket(store: FakeStore, sock_dir: str) -> None:
    async def body() -> None:
        path = os.path.join(sock_dir, "auth")
        # Leave a stale socket behind, as a killed daemon would.
        import socket

        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(path)
        stale.close()
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
        async with running(store, sock_dir):
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert not os.path.exists(path)

    run(body())


def test_refuses_to_replace_a_regular_file(store: FakeStore, sock_dir: str) -> None:
    async def body() -> None:
        path = os.path.join(sock_dir, "auth")
        with open(path, "w") as fh:
            fh.write("not a socket")
        server = AuthServer(store.lookup, store.verify, DUMMY_HASH)
        with pytest.raises(FileExistsError):
            await server.serve_unix(path)
        assert os.path.isfile(path)

    run(body())


# -- PLAIN -------------------------------------------------------------------------------


@CHUNKS
def test_plain_with_initial_response(store: FakeStore, sock_dir: str, chunk: int | None) -> None:
    async def body() -> None:
        async with running(store, sock_dir, chunk) as (_, connect):
            client = await connect()
            await client.handshake()
            await client.auth(1, "PLAIN", plain("alice", "secret"))
            assert await client.readline() == "OK\t1\tuser=alice"
            # authzid equal to authcid is accepted too.
            await client.auth(2, "PLAIN", plain("alice", "secret", authzid="alice"))
            assert await client.readline() == "OK\t2\tuser=alice"

    run(body())


@CHUNKS
def test_plain_without_initial_response(store: FakeStore, sock_dir: str, chunk: int | None) -> None:
    async def body() -> None:
        async with running(store, sock_dir, chunk) as (_, connect):
            client = await connect()
            await client.handshake()
            await client.auth(1, "PLAIN")
            assert await client.readline() == "CONT\t1\t"
            await client.send(f"CONT\t1\t{plain('bob', 'hunter2')}")
            assert await client.readline() == "OK\t1\tuser=bob"

    run(body())


def test_plain_lowercase_mechanism(store: FakeStore, sock_dir: str) -> None:
    async def body() -> None:
        async with running(store, sock_dir) as (_, connect):
            client = await connect()
            await client.handshake()
            await client.auth(1, "plain", plain("alice", "secret"))
            assert await client.readline() == "OK\t1\tuser=alice"

    run(body())


def test_plain_authzid_other_than_authcid_fails(store: FakeStore, sock_dir: str) -> None:
    async def body() -> None:
        async with running(store, sock_dir) as (_, connect):
            client = await connect()
            await client.handshake()
            await client.auth(1, "PLAIN", plain("alice", "secret", authzid="bob"))
            assert await client.readline() == f"FAIL\t1\tuser=alice\treason={FAIL_REASON}"
            assert store.verify_calls == 0

    run(body())


@pytest.mark.parametrize(
    "resp",
    [
        "=",  # empty initial response: PLAIN needs three fields
        b64(b"alice\0secret"),
        b64(b"\0alice\0secret\0extra"),
        "not*base64",
        "YWxpY2U",  # bad padding
    ],
)
def test_plain_malformed_responses_fail(store: FakeStore, sock_dir: str, resp: str) -> None:
    async def body() -> None:
        async with running(store, sock_dir) as (_, connect):
            client = await connect()
            await client.handshake()
            await client.auth(1, "PLAIN", resp)
            assert await client.readline() == f"FAIL\t1\treason={FAIL_REASON}"
            # The connection stays usable.
            await client.auth(2, "PLAIN", plain("alice", "secret"))
            assert await client.readline() == "OK\t2\tuser=alice"

    run(body())


# -- LOGIN -------------------------------------------------------------------------------


@CHUNKS
def test_login_without_initial_response(store: FakeStore, sock_dir: str, chunk: int | None) -> None:
    async def body() -> None:
        async with running(store, sock_dir, chunk) as (_, connect):
            client = await connect()
            await client.handshake()
            await client.auth(1, "LOGIN")
            assert await client.readline() == f"CONT\t1\t{b64(b'Username:')}"
            await client.send(f"CONT\t1\t{b64(b'alice')}")
            assert await client.readline() == f"CONT\t1\t{b64(b'Password:')}"
            await client.send(f"CONT\t1\t{b64(b'secret')}")
            assert await client.readline() == "OK\t1\tuser=alice"

    run(body())


@CHUNKS
def test_login_with_initial_response(store: FakeStore, sock_dir: str, chunk: int | None) -> None:
    async def body() -> None:
        async with running(store, sock_dir, chunk) as (_, connect):
            client = await connect()
            await client.handshake()
            await client.auth(1, "LOGIN", b64(b"bob"))
            assert await client.readline() == f"CONT\t1\t{b64(b'Password:')}"
            await client.send(f"CONT\t1\t{b64(b'hunter2')}")
            assert await client.readline() == "OK\t1\tuser=bob"

    run(body())


def test_login_empty_initial_response_asks_for_username(store: FakeStore, sock_dir: str) -> None:
    async def body() -> None:
        async with running(store, sock_dir) as (_, connect):
            client = await connect()
            await client.handshake()
            await client.auth(1, "LOGIN", "=")
            assert await client.readline() == f"CONT\t1\t{b64(b'Username:')}"

    run(body())


def test_login_wrong_password(store: FakeStore, sock_dir: str) -> None:
    async def body() -> None:
        async with running(store, sock_dir) as (_, connect):
            client = await connect()
            await client.handshake()
            await client.auth(1, "LOGIN", b64(b"bob"))
            await client.readline()
            await client.send(f"CONT\t1\t{b64(b'nope')}")
            assert await client.readline() == f"FAIL\t1\tuser=bob\treason={FAIL_REASON}"

    run(body())


# -- failures look alike -----------------------------------------------------------------


def test_wrong_password_unknown_user_and_disabled_fail_identically(
    store: FakeStore, sock_dir: str
) -> None:
    async def body() -> None:
        store.add("dave", "pw")
        store.add("erin", "pw", enabled=False)
        store.add("mallory", "pw")
        async with running(store, sock_dir) as (_, connect):
            client = await connect()
            await client.handshake()
            await client.auth(1, "PLAIN", plain("dave", "wrong"))
            bad_password = await client.readline()
            del store.logins["dave"]
            await client.auth(2, "PLAIN", plain("dave", "wrong"))
            unknown = await client.readline()
            store.add("dave", "pw", enabled=False)
            await client.auth(3, "PLAIN", plain("dave", "pw"))
            disabled_right_password = await client.readline()
            await client.auth(4, "PLAIN", plain("dave", "wrong"))
            disabled_wrong_password = await client.readline()

            def strip_id(line: str) -> list[str]:
                fields = line.split("\t")
                return [fields[0], *fields[2:]]

            expected = ["FAIL", "user=dave", f"reason={FAIL_REASON}"]
            assert strip_id(bad_password) == expected
            assert strip_id(unknown) == expected
            assert strip_id(disabled_right_password) == expected
            assert strip_id(disabled_wrong_password) == expected
            # The unknown login still cost a verify, against the dummy hash.
            assert store.verified_hashes[1] == DUMMY_HASH

    run(body())


def test_disabled_login_never_ok_even_when_cached(store: FakeStore, sock_dir: str) -> None:
    async def body() -> None:
        async with running(store, sock_dir) as (server, connect):
            client = await connect()
            await client.handshake()
            await client.auth(1, "PLAIN", plain("alice", "secret"))
            assert await client.readline() == "OK\t1\tuser=alice"
            assert len(server.cache) == 1
            store.add("alice", "secret", enabled=False)
            await client.auth(2, "PLAIN", plain("alice", "secret"))
            assert await client.readline() == f"FAIL\t2\tuser=alice\treason={FAIL_REASON}"
            await client.auth(3, "PLAIN", plain("carol", "s3cret"))
            assert await client.readline() == f"FAIL\t3\tuser=carol\treason={FAIL_REASON}"

    run(body())


def test_fail_user_is_the_clients_spelling(store: FakeStore, sock_dir: str) -> None:
    async def body() -> None:
        # A store that matches names case-insensitively must not leak its spelling.
        def lookup(name: str) -> Credentials | None:
            return store.logins.get(name.lower())

        async with running(store, sock_dir, lookup=lookup) as (_, connect):
            client = await connect()
            await client.handshake()
            await client.auth(1, "PLAIN", plain("ALICE", "wrong"))
            assert await client.readline() == f"FAIL\t1\tuser=ALICE\treason={FAIL_REASON}"
            await client.auth(2, "PLAIN", plain("ALICE", "secret"))
            assert await client.readline() == "OK\t2\tuser=alice"

    run(body())


def test_unknown_mechanism_fails(store: FakeStore, sock_dir: str) -> None:
    async def body() -> None:
        async with running(store, sock_dir) as (_, connect):
            client = await connect()
            await client.handshake()
            await client.auth(1, "CRAM-MD5")
            assert await client.readline() == f"FAIL\t1\treason={FAIL_REASON}"

    run(body())


@pytest.mark.parametrize(
    "name",
    [
        b"al\tice",
        b"al\rice",
        b"al\nice",
        b"al\x01ice",
        b"al\x00ice",
        b"a" * 256,
        b"\xff\xfe",
        b"",
    ],
    ids=["tab", "cr", "lf", "x01", "nul", "256-bytes", "not-utf8", "empty"],
)
def test_bad_user_names_refused(store: FakeStore, sock_dir: str, name: bytes) -> None:
    async def body() -> None:
        async with running(store, sock_dir) as (_, connect):
            client = await connect()
            await client.handshake()
            await client.auth(1, "LOGIN", b64(name) if name else None)
            await client.readline()
            if not name:
                await client.send(f"CONT\t1\t{b64(name)}")
                await client.readline()
            await client.send(f"CONT\t1\t{b64(b'secret')}")
            assert await client.readline() == f"FAIL\t1\treason={FAIL_REASON}"
            assert store.verify_calls == 0

    run(body())


def test_valid_login_name() -> None:
    assert valid_login_name(b"alice@example.com") == "alice@example.com"
    assert valid_login_name("jörg".encode()) == "jörg"
    assert valid_login_name(b"a" * 255) == "a" * 255
    assert valid_login_name(b"a" * 256) is None
    assert valid_login_name(b"a\x7fb") is None


# -- cache -------------------------------------------------------------------------------


def test_cache_hit_skips_verify_and_changed_hash_invalidates(
    store: FakeStore, sock_dir: str
) -> None:
    async def body() -> None:
        async with running(store, sock_dir) as (server, connect):
            client = await connect()
            await client.handshake()
            await client.auth(1, "PLAIN", plain("alice", "secret"))
            assert await client.readline() == "OK\t1\tuser=alice"
            assert store.verify_calls == 1
            await client.auth(2, "PLAIN", plain("alice", "secret"))
            assert await client.readline() == "OK\t2\tuser=alice"
            assert store.verify_calls == 1  # cache hit
            # A wrong password is never a hit.
            await client.auth(3, "PLAIN", plain("alice", "guess"))
            assert await client.readline() == f"FAIL\t3\tuser=alice\treason={FAIL_REASON}"
            assert store.verify_calls == 2
            # Rotating the password: the old one no longer works, despite the cache.
            store.add("alice", "new-secret")
            await client.auth(4, "PLAIN", plain("alice", "secret"))
            assert await client.readline() == f"FAIL\t4\tuser=alice\treason={FAIL_REASON}"
            assert store.verify_calls == 3
            await client.auth(5, "PLAIN", plain("alice", "new-secret"))
            assert await client.readline() == "OK\t5\tuser=alice"
            assert store.verify_calls == 4
            server.cache.clear()
            await client.auth(6, "PLAIN", plain("alice", "new-secret"))
            assert await client.readline() == "OK\t6\tuser=alice"
            assert store.verify_calls == 5

    run(body())


def test_cache_disabled_with_zero_ttl(store: FakeStore, sock_dir: str) -> None:
    async def body() -> None:
        async with running(store, sock_dir, cache_ttl=0) as (_, connect):
            client = await connect()
            await client.handshake()
            for request_id in (1, 2):
                await client.auth(request_id, "PLAIN", plain("alice", "secret"))
                assert await client.readline() == f"OK\t{request_id}\tuser=alice"
            assert store.verify_calls == 2

    run(body())


def test_credential_cache_unit() -> None:
    now = [1000.0]
    cache = CredentialCache(ttl=10, max_entries=2, clock=lambda: now[0])
    cache.store("alice", "pw", "h1")
    assert cache.check("alice", "pw", "h1")
    assert not cache.check("alice", "other", "h1")
    assert not cache.check("bob", "pw", "h1")
    assert not cache.check("alice", "pw", "h1", enabled=False)
    assert not cache.check("alice", "pw", "h1")  # dropped by the disabled check
    cache.store("alice", "pw", "h1")
    assert not cache.check("alice", "pw", "h2")  # another hash drops it
    assert len(cache) == 0
    cache.store("a", "1", "h")
    cache.store("b", "2", "h")
    cache.store("c", "3", "h")  # evicts the oldest
    assert len(cache) == 2
    assert not cache.check("a", "1", "h")
    assert cache.check("b", "2", "h") and cache.check("c", "3", "h")
    now[0] += 10
    assert not cache.check("b", "2", "h")  # expired
    assert cache.purge_expired() == 1
    cache.store("d", "4", "h")
    cache.clear()
    assert len(cache) == 0


def test_credential_cache_keeps_no_clear_password() -> None:
    cache = CredentialCache(secret=b"k" * 32)
    cache.store("alice", "very-secret-password", "h")
    state = repr(vars(cache))
    assert "very-secret-password" not in state
    assert "alice" not in state


# -- concurrency and delays --------------------------------------------------------------


@CHUNKS
def test_concurrent_requests_on_one_connection(
    store: FakeStore, sock_dir: str, chunk: int | None
) -> None:
    async def body() -> None:
        async with running(store, sock_dir, chunk) as (_, connect):
            client = await connect()
            await client.handshake()
            # Interleave: LOGIN waiting for CONT, PLAIN successes and a failure.
            await client.auth(10, "LOGIN")
            await client.auth(11, "PLAIN", plain("alice", "secret"))
            await client.auth(12, "PLAIN", plain("bob", "wrong"))
            await client.auth(13, "PLAIN", plain("bob", "hunter2"))
            replies = {await client.readline() for _ in range(3)}
            assert replies == {
                f"CONT\t10\t{b64(b'Username:')}",
                "OK\t11\tuser=alice",
                "OK\t13\tuser=bob",
            }
            await client.send(f"CONT\t10\t{b64(b'alice')}")
            replies = {await client.readline() for _ in range(2)}
            assert replies == {
                f"FAIL\t12\tuser=bob\treason={FAIL_REASON}",
                f"CONT\t10\t{b64(b'Password:')}",
            }
            await client.send(f"CONT\t10\t{b64(b'secret')}")
            assert await client.readline() == "OK\t10\tuser=alice"

    run(body())


def test_failure_delay_does_not_block_a_concurrent_success(store: FakeStore, sock_dir: str) -> None:
    async def body() -> None:
        delay = 0.6
        async with running(store, sock_dir, failure_delay=delay) as (_, connect):
            client = await connect()
            await client.handshake()
            other = await connect()
            await other.handshake()
            loop = asyncio.get_running_loop()
            started = loop.time()
            await client.auth(1, "PLAIN", plain("alice", "wrong"))
            await client.auth(2, "PLAIN", plain("alice", "secret"))
            await other.auth(1, "PLAIN", plain("bob", "hunter2"))
            assert await client.readline() == "OK\t2\tuser=alice"
            assert await other.readline() == "OK\t1\tuser=bob"
            assert loop.time() - started < delay / 2
            assert await client.readline() == f"FAIL\t1\tuser=alice\treason={FAIL_REASON}"
            assert loop.time() - started >= delay * 0.95

    run(body())


def test_failure_delay_must_stay_below_postfix_timeout(store: FakeStore) -> None:
    with pytest.raises(ValueError):
        AuthServer(store.lookup, store.verify, DUMMY_HASH, failure_delay=10)


def test_blocking_work_runs_off_the_event_loop(store: FakeStore, sock_dir: str) -> None:
    async def body() -> None:
        slow_calls = 0

        def slow_verify(password_hash: str, password: str) -> bool:
            nonlocal slow_calls
            slow_calls += 1
            time.sleep(0.3)
            return store.verify(password_hash, password)

        async with running(store, sock_dir, verify=slow_verify, cache_ttl=0) as (_, connect):
            client = await connect()
            await client.handshake()
            loop = asyncio.get_running_loop()
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.01)
                    ticks += 1

            tick_task = asyncio.create_task(ticker())
            await client.auth(1, "PLAIN", plain("alice", "secret"))
            await client.auth(2, "PLAIN", plain("bob", "hunter2"))
            started = loop.time()
            assert {await client.readline(), await client.readline()} == {
                "OK\t1\tuser=alice",
                "OK\t2\tuser=bob",
            }
            elapsed = loop.time() - started
            tick_task.cancel()
            assert elapsed < 0.55  # two hash workers ran in parallel
            assert ticks >= 10  # the loop kept running meanwhile
            assert threading.get_ident() not in store.loop_threads

    run(body())


# -- broken backends and broken clients --------------------------------------------------


def test_lookup_raising_closes_the_connection(
    store: FakeStore, sock_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def body() -> None:
        async with running(store, sock_dir) as (_, connect):
            client = await connect()
            await client.handshake()
            store.broken = True
            await client.auth(1, "PLAIN", plain("alice", "secret"))
            await client.assert_closed()
            # Postfix reconnects; once the store is back, all is well.
            store.broken = False
            again = await connect()
            await again.handshake()
            await again.auth(1, "PLAIN", plain("alice", "secret"))
            assert await again.readline() == "OK\t1\tuser=alice"

    with caplog.at_level(logging.INFO, logger="smtpeter.auth"):
        run(body())
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "unable to open database file" in errors[0].getMessage()
    assert "OperationalError" in errors[0].getMessage()


def test_verify_raising_closes_the_connection(store: FakeStore, sock_dir: str) -> None:
    async def body() -> None:
        def broken_verify(password_hash: str, password: str) -> bool:
            raise ValueError("not a valid argon2 hash")

        async with running(store, sock_dir, verify=broken_verify) as (_, connect):
            client = await connect()
            await client.handshake()
            await client.auth(1, "PLAIN", plain("alice", "secret"))
            await client.assert_closed()

    run(body())


@pytest.mark.parametrize(
    "lines",
    [
        ["HELLO\tworld"],
        ["AUTH\tone\tPLAIN"],
        ["AUTH\t1"],
        ["", "AUTH\t1\tPLAIN"],
        ["CONT\tx\tYQ=="],
        [b"AUTH\t1\tPLAIN\tresp=\xff"],
        ["AUTH\t1\tLOGIN", "AUTH\t1\tLOGIN"],  # id already in use
        ["VERSION\t1\t0"],  # twice
        ["CONT\t1\t" + "A" * 20000],
    ],
    ids=[
        "unknown-command",
        "bad-id",
        "no-mechanism",
        "empty-line",
        "cont-bad-id",
        "not-utf8",
        "duplicate-id",
        "version-twice",
        "too-long",
    ],
)
def test_malformed_line_closes_the_connection(
    store: FakeStore, sock_dir: str, lines: list[str | bytes], caplog: pytest.LogCaptureFixture
) -> None:
    async def body() -> None:
        async with running(store, sock_dir) as (_, connect):
            client = await connect()
            await client.handshake()
            for line in lines:
                await client.send(line)
            data = await asyncio.wait_for(client.reader.read(), LINE_TIMEOUT)
            # At most the CONT for a first, well-formed LOGIN came back; then EOF.
            assert data in (b"", f"CONT\t1\t{b64(b'Username:')}\n".encode())

    with caplog.at_level(logging.WARNING, logger="smtpeter.auth"):
        run(body())
    assert any(r.levelno == logging.WARNING for r in caplog.records)


def test_wrong_major_version_closes(store: FakeStore, sock_dir: str) -> None:
    async def body() -> None:
        async with running(store, sock_dir) as (_, connect):
            client = await connect()
            await client.send("VERSION\t2\t0")
            data = await asyncio.wait_for(client.reader.read(), LINE_TIMEOUT)
            assert data.endswith(b"DONE\n")  # our handshake, then EOF

    run(body())


def test_auth_before_version_closes(store: FakeStore, sock_dir: str) -> None:
    async def body() -> None:
        async with running(store, sock_dir) as (_, connect):
            client = await connect()
            await client.auth(1, "PLAIN", plain("alice", "secret"))
            data = await asyncio.wait_for(client.reader.read(), LINE_TIMEOUT)
            assert data.endswith(b"DONE\n")  # our handshake, then EOF

    run(body())


def test_stale_request_expires(store: FakeStore, sock_dir: str) -> None:
    async def body() -> None:
        async with running(store, sock_dir, request_timeout=0.1) as (_, connect):
            client = await connect()
            await client.handshake()
            await client.auth(1, "LOGIN")  # the SMTP client then aborts with '*'
            await client.readline()
            await asyncio.sleep(0.3)
            # The id is free again, and a late CONT gets a FAIL rather than silence.
            await client.send(f"CONT\t1\t{b64(b'alice')}")
            assert await client.readline() == f"FAIL\t1\treason={FAIL_REASON}"
            await client.auth(2, "PLAIN", plain("alice", "secret"))
            assert await client.readline() == "OK\t2\tuser=alice"

    run(body())


def test_unsecured_auth_is_accepted(store: FakeStore, sock_dir: str) -> None:
    async def body() -> None:
        async with running(store, sock_dir) as (_, connect):
            client = await connect()
            await client.handshake()
            await client.send(f"AUTH\t1\tPLAIN\tservice=smtp\tresp={plain('alice', 'secret')}")
            assert await client.readline() == "OK\t1\tuser=alice"

    run(body())


def test_log_lines_never_show_the_password(
    store: FakeStore, sock_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    resp_ok = plain("alice", "secret")
    resp_bad = plain("alice", "Tr0ub4dor")

    async def body() -> None:
        async with running(store, sock_dir) as (_, connect):
            client = await connect()
            await client.handshake()
            await client.auth(1, "PLAIN", resp_ok)
            await client.readline()
            await client.auth(2, "PLAIN", resp_ok)
            await client.readline()
            await client.auth(3, "LOGIN", b64(b"alice"))
            await client.readline()
            await client.send(f"CONT\t3\t{b64(b'Tr0ub4dor')}")
            await client.readline()
            await client.auth(4, "PLAIN", resp_bad)
            await client.readline()

    with caplog.at_level(logging.DEBUG, logger="smtpeter.auth"):
        run(body())
    text = "\n".join(r.getMessage() for r in caplog.records)
    for secret in ("secret", "Tr0ub4dor", resp_ok, resp_bad, b64(b"Tr0ub4dor")):
        assert secret not in text
    records = [r for r in caplog.records if "result=" in r.getMessage()]
    assert len(records) == 4
    assert all(r.levelno == logging.INFO for r in records)
    results = [r.getMessage() for r in records]
    assert "result=ok login=alice mech=PLAIN rip=198.51.100.7 cached=no" in results[0]
    assert "result=ok login=alice mech=PLAIN rip=198.51.100.7 cached=yes" in results[1]
    assert "result=bad-password login=alice mech=LOGIN" in results[2]


def test_stop_lets_in_flight_requests_finish(store: FakeStore, sock_dir: str) -> None:
    async def body() -> None:
        server = AuthServer(store.lookup, store.verify, DUMMY_HASH, failure_delay=0.3)
        path = os.path.join(sock_dir, "auth")
        task = asyncio.create_task(server.serve_unix(path))
        await server.wait_serving()
        reader, writer = await asyncio.open_unix_connection(path)
        client = Client(reader, writer, None)
        await client.handshake()
        await client.auth(1, "PLAIN", plain("alice", "wrong"))
        await asyncio.sleep(0.05)
        stopper = asyncio.create_task(server.stop())
        assert await client.readline() == f"FAIL\t1\tuser=alice\treason={FAIL_REASON}"
        await client.assert_closed()
        await stopper
        await task
        assert not os.path.exists(path)
        with pytest.raises(OSError):
            await asyncio.open_unix_connection(path)
        await client.close()

    run(body())


def test_cancel_stops_serving(store: FakeStore, sock_dir: str) -> None:
    async def body() -> None:
        server = AuthServer(store.lookup, store.verify, DUMMY_HASH)
        path = os.path.join(sock_dir, "auth")
        task = asyncio.create_task(server.serve_unix(path))
        await server.wait_serving()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not os.path.exists(path)

    run(body())


# -- the real hash -----------------------------------------------------------------------


def test_real_argon2_hash(sock_dir: str) -> None:
    from passlib.hash import argon2

    hasher = argon2.using(type="ID", memory_cost=19456, time_cost=2)
    real = FakeStore()
    real.logins = {"alice": Credentials("alice", hasher.hash("pw"), True)}
    calls = 0

    def verify(password_hash: str, password: str) -> bool:
        nonlocal calls
        calls += 1
        return bool(hasher.verify(password, password_hash))

    dummy = hasher.hash(os.urandom(16).hex())

    async def body() -> None:
        async with running(real, sock_dir, verify=verify, dummy_hash=dummy) as (_, connect):
            client = await connect()
            await client.handshake()
            await client.auth(1, "PLAIN", plain("alice", "pw"))
            assert await client.readline() == "OK\t1\tuser=alice"
            await client.auth(2, "PLAIN", plain("alice", "nope"))
            wrong = await client.readline()
            await client.auth(3, "PLAIN", plain("nobody", "pw"))
            unknown = await client.readline()
            assert wrong == f"FAIL\t2\tuser=alice\treason={FAIL_REASON}"
            assert unknown == f"FAIL\t3\tuser=nobody\treason={FAIL_REASON}"
            assert calls == 3  # the unknown login was verified against the dummy hash
            await client.auth(4, "PLAIN", plain("alice", "pw"))
            assert await client.readline() == "OK\t4\tuser=alice"
            assert calls == 3  # cached

    run(body())
