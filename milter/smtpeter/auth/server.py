"""The SASL auth daemon Postfix talks to with ``smtpd_sasl_type = dovecot``.

Each Postfix smtpd process keeps one connection open to us and numbers its requests on
that connection. The server answers the handshake at once, then handles ``AUTH`` and
``CONT`` lines for PLAIN and LOGIN. Several requests may be outstanding on a
connection; replies go out as each finishes.

What Postfix does with our answers shapes the rules here:

* ``OK`` must carry ``user=``; Postfix ignores ``nologin`` on ``OK``, so a disabled login
  only ever gets ``FAIL``.
* ``FAIL``'s ``reason=`` is shown to the SMTP client (``535 5.7.8``): it is the same text
  for an unknown login, a wrong password and a disabled login, and ``user=`` repeats the
  name the client gave (never the store's spelling, which would confirm the login).
* Postfix ignores ``temp`` on ``FAIL``. When the store is down we close the connection
  instead: Postfix answers ``454 4.7.0`` and reconnects for the next attempt.
* Postfix gives up on a reply after 10 s, so the failure delay stays below that.
* Password guessing is throttled per client address and per login (see
  :mod:`smtpeter.auth.throttle`): a paced attempt waits for its slot before its password
  is checked, a locked-out or over-budget one fails at once, unchecked. Each failure is
  logged on a line of its own (``auth failure rip=...``) for fail2ban.
* A client that aborts (``*``) is never reported to us: requests waiting for ``CONT``
  expire after ``request_timeout``.

Lookups and password verification are blocking and run in thread pools, never on the
event loop. An unknown login is verified against a dummy hash so the time taken does not
tell which logins exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import socket
import stat
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, Literal

from smtpeter.auth.cache import CredentialCache
from smtpeter.auth.codec import (
    MAX_LINE_LENGTH,
    PROTOCOL_MAJOR,
    AuthRequest,
    ClientLine,
    ClientVersion,
    ContRequest,
    CpidLine,
    InvalidSaslData,
    ProtocolError,
    decode_sasl_data,
    format_cont,
    format_fail,
    format_handshake,
    format_ok,
    parse_client_line,
)
from smtpeter.auth.credentials import Credentials, Lookup, Verify
from smtpeter.auth.throttle import MAX_REPLY_SECONDS, REFUSALS, Admission, Standing, Throttle
from smtpeter.logsafe import escape

__all__ = [
    "FAIL_REASON",
    "MAX_USERNAME_BYTES",
    "AuthServer",
    "Credentials",
    "Lookup",
    "Throttle",
    "Verify",
    "valid_login_name",
]

logger = logging.getLogger("smtpeter.auth")

#: The one reason every failed authentication gets (Postfix shows it to the client).
FAIL_REASON: Final = "Authentication failed"

MAX_USERNAME_BYTES: Final = 255

#: Outstanding requests one connection may hold before we consider it broken. Postfix has
#: one at a time; aborted ones linger until ``request_timeout``.
MAX_REQUESTS_PER_CONNECTION: Final = 1024

SUPPORTED_MECHANISMS: Final = ("PLAIN", "LOGIN")

#: How often an attempt held by the throttle asks again.
_HOLD_POLL: Final = 0.02

_LOGIN_USERNAME_PROMPT: Final = b"Username:"
_LOGIN_PASSWORD_PROMPT: Final = b"Password:"


def valid_login_name(raw: bytes) -> str | None:
    """The login name as text, or ``None`` if we refuse it.

    Refused: empty, over 255 bytes, not UTF-8, or containing a control character (which
    covers TAB, CR, LF, ``\\001`` and NUL, the ones that would break the protocol or the
    logs).
    """
    if not raw or len(raw) > MAX_USERNAME_BYTES:
        return None
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name):
        return None
    return name


class _BackendError(Exception):
    """The store or the hasher failed: the connection must be closed."""


Step = Literal["plain", "login_user", "login_pass"]


@dataclass(slots=True)
class _Request:
    """An authentication waiting for the client's next ``CONT``."""

    request_id: int
    mechanism: str
    rip: str
    step: Step
    username: bytes = b""
    timer: asyncio.TimerHandle | None = None
    #: The throttle's key for the client address (``None``: exempt from it).
    address: str | None = "unknown"


class AuthServer:
    """Dovecot-protocol SASL server for Postfix, over a unix socket.

    ``lookup`` and ``verify`` are injected so the server knows nothing of the store or
    the hash scheme. ``dummy_hash`` must be a valid hash of the scheme ``verify`` checks
    (of a random password): unknown logins are verified against it. ``throttle`` holds
    the failure counts; by default a :class:`Throttle` with its default settings.
    """

    def __init__(
        self,
        lookup: Lookup,
        verify: Verify,
        dummy_hash: str,
        *,
        failure_delay: float = 2.0,
        cache_ttl: float = 300.0,
        cache_max_entries: int = 10000,
        request_timeout: float = 300.0,
        hash_workers: int = 2,
        shutdown_grace: float = 5.0,
        throttle: Throttle | None = None,
    ) -> None:
        if not 0 <= failure_delay < 10:
            raise ValueError("failure_delay must be at least 0 and below 10 seconds")
        if request_timeout <= 0:
            raise ValueError("request_timeout must be positive")
        if hash_workers < 1:
            raise ValueError("hash_workers must be at least 1")
        self._lookup = lookup
        self._verify = verify
        self._dummy_hash = dummy_hash
        self.failure_delay = failure_delay
        self.request_timeout = request_timeout
        self.shutdown_grace = shutdown_grace
        self.cache = CredentialCache(cache_ttl, cache_max_entries)
        self.throttle = throttle if throttle is not None else Throttle()
        self._lookup_pool = ThreadPoolExecutor(
            max_workers=2, thread_name_prefix="smtpeter-auth-lookup"
        )
        self._hash_pool = ThreadPoolExecutor(
            max_workers=hash_workers, thread_name_prefix="smtpeter-auth-hash"
        )
        self._spid = os.getpid()
        self._next_cuid = 0
        self._connections: set[_Connection] = set()
        self._server: asyncio.AbstractServer | None = None
        self._serving = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._stopped = asyncio.Event()
        self.stopping = False

    # -- lifecycle ---------------------------------------------------------------------

    async def serve_unix(self, path: str, mode: int = 0o660, group: str | None = None) -> None:
        """Listen on the unix socket ``path`` until :meth:`stop` or cancellation.

        A stale socket left by a dead daemon is removed; a live one (something answers)
        or a non-socket file at ``path`` is an error.
        """
        _remove_stale_socket(path)
        server = await asyncio.start_unix_server(self._accept, path=path, limit=MAX_LINE_LENGTH)
        try:
            inode = os.stat(path).st_ino
            os.chmod(path, mode)
            if group is not None:
                shutil.chown(path, group=group)
        except BaseException:
            server.close()
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        self._server = server
        self._serving.set()
        logger.info("auth daemon listening on %s (spid=%d)", path, self._spid)
        graceful = False
        try:
            await self._stop_requested.wait()
            graceful = True
        finally:
            await self._shutdown(self.shutdown_grace if graceful else 0.0)
            with contextlib.suppress(OSError):
                if os.stat(path).st_ino == inode:
                    os.unlink(path)
            logger.info("auth daemon stopped")
            self._stopped.set()

    async def wait_serving(self) -> None:
        """Return once :meth:`serve_unix` accepts connections."""
        await self._serving.wait()

    async def stop(self) -> None:
        """Stop accepting, give in-flight requests ``shutdown_grace`` seconds, close."""
        self._stop_requested.set()
        if self._server is not None:
            await self._stopped.wait()

    async def _shutdown(self, grace: float) -> None:
        self.stopping = True
        if self._server is not None:
            self._server.close()
        connections = list(self._connections)
        busy = [task for conn in connections for task in conn.tasks]
        if busy and grace > 0:
            await asyncio.wait(busy, timeout=grace)
        for conn in connections:
            conn.close()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), timeout=1.0)
        self._lookup_pool.shutdown(wait=False, cancel_futures=True)
        self._hash_pool.shutdown(wait=False, cancel_futures=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._next_cuid += 1
        conn = _Connection(self, reader, writer, self._next_cuid)
        self._connections.add(conn)
        try:
            await conn.run()
        finally:
            self._connections.discard(conn)

    # -- blocking work, off the event loop ---------------------------------------------

    async def lookup(self, name: str) -> Credentials | None:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._lookup_pool, self._lookup, name)
        except Exception as exc:
            raise _BackendError(f"login lookup failed: {type(exc).__name__}: {exc}") from exc

    async def verify(self, password_hash: str, password: str) -> bool:
        loop = asyncio.get_running_loop()
        try:
            return bool(
                await loop.run_in_executor(self._hash_pool, self._verify, password_hash, password)
            )
        except Exception as exc:
            raise _BackendError(
                f"password verification failed: {type(exc).__name__}: {exc}"
            ) from exc

    @property
    def dummy_hash(self) -> str:
        return self._dummy_hash

    @property
    def spid(self) -> int:
        return self._spid


def _remove_stale_socket(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise FileExistsError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)
        return
    finally:
        probe.close()
    raise OSError(f"another process is already serving {path}")


class _Connection:
    """One Postfix smtpd process: its handshake, requests and replies."""

    def __init__(
        self,
        server: AuthServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        cuid: int,
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.cuid = cuid
        self.tasks: set[asyncio.Task[None]] = set()
        # Every request id in use: waiting for CONT, being verified, or waiting to FAIL.
        self._active: set[int] = set()
        self._waiting: dict[int, _Request] = {}
        self._write_lock = asyncio.Lock()
        self._version_seen = False
        self._closed = False

    # -- connection ---------------------------------------------------------------------

    async def run(self) -> None:
        cookie = secrets.token_hex(16)
        self.writer.write(format_handshake(spid=self.server.spid, cuid=self.cuid, cookie=cookie))
        logger.debug("cuid=%d: client connected", self.cuid)
        try:
            await self.writer.drain()
            while not self._closed:
                try:
                    raw = await self.reader.readuntil(b"\n")
                except asyncio.IncompleteReadError as exc:
                    if exc.partial and not self._closed:
                        logger.debug("cuid=%d: client closed mid-line", self.cuid)
                    break
                except asyncio.LimitOverrunError:
                    logger.warning(
                        "cuid=%d: line longer than %d bytes from client, closing",
                        self.cuid,
                        MAX_LINE_LENGTH,
                    )
                    break
                if self._closed:
                    break
                try:
                    line = parse_client_line(raw)
                    self._dispatch(line)
                except ProtocolError as exc:
                    logger.warning("cuid=%d: protocol error, closing: %s", self.cuid, exc)
                    break
        except ConnectionError as exc:
            logger.debug("cuid=%d: connection error: %s", self.cuid, exc)
        finally:
            self.close()
            for task in list(self.tasks):
                task.cancel()
            if self.tasks:
                await asyncio.gather(*self.tasks, return_exceptions=True)
            logger.debug("cuid=%d: client disconnected", self.cuid)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for request in self._waiting.values():
            if request.timer is not None:
                request.timer.cancel()
        self._waiting.clear()
        self.writer.close()

    async def _send(self, data: bytes) -> None:
        if self._closed or self.writer.is_closing():
            return
        async with self._write_lock:
            self.writer.write(data)
            with contextlib.suppress(ConnectionError):
                await self.writer.drain()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- requests -----------------------------------------------------------------------

    def _dispatch(self, line: ClientLine) -> None:
        if not self._version_seen:
            if not isinstance(line, ClientVersion):
                raise ProtocolError("first line is not VERSION")
            if line.major != PROTOCOL_MAJOR:
                raise ProtocolError(f"unsupported protocol major version {line.major}")
            self._version_seen = True
            return
        if isinstance(line, ClientVersion):
            raise ProtocolError("VERSION sent twice")
        if isinstance(line, CpidLine):
            logger.debug("cuid=%d: client pid %d", self.cuid, line.pid)
        elif isinstance(line, AuthRequest):
            self._on_auth(line)
        else:
            self._on_cont(line)

    def _on_auth(self, line: AuthRequest) -> None:
        request_id = line.request_id
        if request_id in self._active:
            raise ProtocolError(f"AUTH id {request_id} is already in use")
        if len(self._active) >= MAX_REQUESTS_PER_CONNECTION:
            raise ProtocolError(f"more than {MAX_REQUESTS_PER_CONNECTION} requests outstanding")
        if self.server.stopping:
            # Closing makes Postfix answer 454 and retry against the next daemon.
            logger.info("cuid=%d: shutting down, closing instead of a new AUTH", self.cuid)
            self.close()
            return
        rip = escape(line.rip or "unknown", 64)
        mechanism = escape(line.mechanism, 64)
        if not line.secured:
            logger.debug("cuid=%d id=%d: AUTH without TLS (no 'secured')", self.cuid, request_id)
        self._active.add(request_id)
        request = _Request(request_id, mechanism, rip, "plain")
        request.address = self.server.throttle.address_key(line.rip)
        complete = line.mechanism == "PLAIN" and line.resp is not None
        if not complete and self.server.throttle.locked(request.address):
            # Locked out: no prompts either (with the credentials here, _authenticate
            # refuses it and can name the login).
            self._spawn(self._fail(request, None, "locked"))
            return

        if line.mechanism not in SUPPORTED_MECHANISMS:
            self._spawn(self._fail(request, None, "unknown-mechanism"))
            return
        initial: bytes | None = None
        if line.resp is not None:
            try:
                initial = decode_sasl_data(line.resp)
            except InvalidSaslData:
                self._spawn(self._fail(request, None, "invalid-base64"))
                return

        if line.mechanism == "PLAIN":
            if initial is None:
                self._wait_for_cont(request, b"")
            else:
                self._spawn(self._plain(request, initial))
        elif initial:
            # LOGIN: the initial response is the user name.
            request.step = "login_pass"
            request.username = initial
            self._wait_for_cont(request, _LOGIN_PASSWORD_PROMPT)
        else:
            request.step = "login_user"
            self._wait_for_cont(request, _LOGIN_USERNAME_PROMPT)

    def _on_cont(self, line: ContRequest) -> None:
        request_id = line.request_id
        request = self._waiting.pop(request_id, None)
        if request is None:
            if request_id in self._active:
                raise ProtocolError(f"CONT for request {request_id} that is not waiting for one")
            # Expired or never started: answer, so Postfix is not left waiting.
            logger.warning("cuid=%d: CONT for unknown request id %d", self.cuid, request_id)
            self._active.add(request_id)
            self._spawn(self._fail(_Request(request_id, "?", "unknown", "plain"), None, "expired"))
            return
        if request.timer is not None:
            request.timer.cancel()
            request.timer = None
        try:
            data = decode_sasl_data(line.data)
        except InvalidSaslData:
            self._spawn(self._fail(request, None, "invalid-base64"))
            return
        if request.step == "plain":
            self._spawn(self._plain(request, data))
        elif request.step == "login_user":
            request.step = "login_pass"
            request.username = data
            self._wait_for_cont(request, _LOGIN_PASSWORD_PROMPT)
        else:
            self._spawn(self._authenticate(request, request.username, data, b""))

    def _wait_for_cont(self, request: _Request, challenge: bytes) -> None:
        loop = asyncio.get_running_loop()
        request.timer = loop.call_later(self.server.request_timeout, self._expire, request)
        self._waiting[request.request_id] = request
        self._spawn(self._send(format_cont(request.request_id, challenge)))

    def _expire(self, request: _Request) -> None:
        if self._waiting.get(request.request_id) is request:
            del self._waiting[request.request_id]
            self._active.discard(request.request_id)
            self._log(request, None, "expired", cached=False)

    # -- authentication -------------------------------------------------------------------

    async def _plain(self, request: _Request, message: bytes) -> None:
        # RFC 4616: authzid NUL authcid NUL passwd, neither part may contain NUL.
        parts = message.split(b"\0")
        if len(parts) != 3:
            await self._fail(request, None, "malformed-plain")
            return
        authzid, authcid, password = parts
        await self._authenticate(request, authcid, password, authzid)

    async def _authenticate(
        self, request: _Request, authcid: bytes, password_raw: bytes, authzid: bytes
    ) -> None:
        server = self.server
        throttle = server.throttle
        loop = asyncio.get_running_loop()
        started = loop.time()
        name = valid_login_name(authcid)
        if name is None:
            await self._fail(request, None, "invalid-name", shown=escape(authcid, 64), raw=authcid)
            return
        if authzid and authzid != authcid:
            await self._fail(request, name, "authzid-mismatch", started=started)
            return
        if throttle.locked(request.address):
            await self._fail(request, name, "locked")
            return
        try:
            password = password_raw.decode("utf-8")
            password_is_text = True
        except UnicodeDecodeError:
            # Cannot equal any password we set; still pay for a verify below.
            password = password_raw.decode("utf-8", "replace")
            password_is_text = False

        admission: Admission | None = None
        try:
            credentials = await server.lookup(name)
            # The lookup reveals nothing; the password waits for the throttle's slot.
            while True:
                budget = MAX_REPLY_SECONDS - (loop.time() - started)
                admission = throttle.admit(request.address, name, budget=budget)
                if not admission.hold:
                    break
                if budget <= _HOLD_POLL:
                    admission = Admission(request.address, name, refused="throttled")
                    break
                # Attempts from this address in flight may yet fail: wait for them.
                await asyncio.sleep(_HOLD_POLL)
            if admission.refused is not None:
                refusal = admission.refused
                admission = None
                await self._fail(request, name, refusal)
                return
            if admission.wait > 0:
                await asyncio.sleep(admission.wait)
                if throttle.locked(request.address):
                    await self._fail(request, name, "locked")
                    return
            cached = False
            if credentials is None:
                await server.verify(server.dummy_hash, password)
                result = "unknown-login"
                verified = False
            else:
                if password_is_text and server.cache.check(
                    name, password, credentials.password_hash, enabled=credentials.enabled
                ):
                    verified = cached = True
                else:
                    # Verify even a password that is not text, so that it takes as
                    # long as for an unknown login (which pays for the dummy hash).
                    verified = (
                        await server.verify(credentials.password_hash, password)
                        and password_is_text
                    )
                    if verified and credentials.enabled:
                        server.cache.store(name, password, credentials.password_hash)
                if not credentials.enabled:
                    result = "disabled"
                elif verified:
                    result = "ok"
                else:
                    result = "bad-password"
        except _BackendError as exc:
            logger.error(
                "cuid=%d id=%d: %s; closing the connection so Postfix answers 454 4.7.0"
                " (login=%s mech=%s rip=%s)",
                self.cuid,
                request.request_id,
                exc,
                name,
                request.mechanism,
                request.rip,
            )
            self.close()
            return
        finally:
            # Before a failure is counted, so the attempt is not counted twice.
            if admission is not None:
                throttle.release(admission)

        if result == "ok" and credentials is not None:
            self._log(request, name, "ok", cached=cached)
            await self._send(format_ok(request.request_id, credentials.name))
            self._active.discard(request.request_id)
        else:
            await self._fail(request, name, result, cached=cached, started=started)

    async def _fail(
        self,
        request: _Request,
        name: str | None,
        result: str,
        *,
        cached: bool = False,
        shown: str | None = None,
        raw: bytes | None = None,
        started: float | None = None,
    ) -> None:
        """Count and log now, answer FAIL after the failure delay (other requests go on
        meanwhile).

        The delay runs from ``started`` (when the credentials arrived; now if not given),
        so time spent waiting for the throttle counts towards it. A refusal (locked out,
        or over the throttle's budget) is answered at once and not counted.
        """
        self._log(request, shown if name is None else name, result, cached=cached)
        refused = result in REFUSALS
        if result != "expired":
            throttle = self.server.throttle
            if refused:
                standing = throttle.standing(request.address, name)
            else:
                standing = throttle.fail(request.address, name)
            login = raw if raw is not None else name
            self._log_failure(request, login, result, standing)
        try:
            delay = self.server.failure_delay
            if started is not None:
                delay -= asyncio.get_running_loop().time() - started
            if not refused and delay > 0:
                await asyncio.sleep(delay)
            # user= repeats the client's own name, never the store's spelling of it.
            await self._send(format_fail(request.request_id, user=name, reason=FAIL_REASON))
        finally:
            self._active.discard(request.request_id)

    def _log_failure(
        self, request: _Request, login: str | bytes | None, result: str, standing: Standing
    ) -> None:
        """One line per failed attempt, for people and fail2ban: the address first (as
        Postfix gave it), then the counts, then what the client sent, escaped and quoted."""
        logger.warning(
            "auth failure rip=%s failures=%d locked=%s login=%s login_failures=%d reason=%s"
            " mech=%s cuid=%d id=%d",
            request.rip,
            standing.failures,
            "yes" if standing.locked else "no",
            "-" if login is None else escape(login, 64, quoted=True),
            standing.login_failures,
            result,
            request.mechanism,
            self.cuid,
            request.request_id,
        )
        if standing.lock_started:
            logger.warning(
                "auth lockout rip=%s failures=%d seconds=%g: every AUTH from this address"
                " fails unchecked until the lock ends",
                request.rip,
                standing.failures,
                self.server.throttle.lockout_seconds,
            )

    def _log(self, request: _Request, login: str | None, result: str, *, cached: bool) -> None:
        logger.info(
            "auth result=%s login=%s mech=%s rip=%s cached=%s cuid=%d id=%d",
            result,
            login if login is not None else "-",
            request.mechanism,
            request.rip,
            "yes" if cached else "no",
            self.cuid,
            request.request_id,
        )
