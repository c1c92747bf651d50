"""One webhook POST, with the standard library's http.client.

Not requests or urllib3: both follow redirects unless told not to at every call, and
both resolve the host themselves when they connect, so the address checked by
targets.py might not be the one reached (a DNS answer changed in between: rebinding).
Here the connection goes to the checked address itself; the Host header and, for
https, TLS's server name and certificate check use the URL's host name
(``ssl.create_default_context``: the system's CAs, hostname checking on). A redirect
is never followed: a 3xx is a failed attempt like any other non-2xx reply.

The timeouts: ``connect_timeout`` for the TCP connection, ``request_timeout`` for the
whole request (TLS, sending, the reply's status and headers), enforced by a timer that
shuts the socket down, so a receiver trickling its reply a byte at a time cannot hold
a worker longer.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
import time
from dataclasses import dataclass

from smtpeter import __version__
from smtpeter.webhooks.targets import Target

USER_AGENT = f"smtpeter-webhooks/{__version__}"
# At most this much of a reply body is read (for the log); the status is what counts.
_BODY_PEEK = 512


class DeliveryError(Exception):
    """The request did not get a reply (connection refused, timeout, TLS failure)."""


@dataclass(frozen=True)
class Reply:
    status: int
    reason: str
    location: str | None
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def describe(self) -> str:
        text = f"HTTP {self.status} {self.reason}".strip()
        if 300 <= self.status < 400:
            text += f" (redirect to {self.location or '?'} not followed)"
        return text


class _PinnedHTTP(http.client.HTTPConnection):
    """An HTTP connection to a given address, the URL's host in the Host header."""

    address = ""

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """An HTTPS connection to a given address; TLS checks the URL's host name."""

    address = ""
    tls: ssl.SSLContext

    def connect(self) -> None:
        raw = socket.create_connection((self.address, self.port), self.timeout)
        try:
            self.sock = self.tls.wrap_socket(raw, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise


def post(
    target: Target,
    body: bytes,
    headers: dict[str, str],
    *,
    connect_timeout: float,
    request_timeout: float,
    tls: ssl.SSLContext | None = None,
) -> Reply:
    """POST ``body`` to the target; the reply, or DeliveryError saying why none came."""
    url = target.url
    conn: http.client.HTTPConnection
    if url.scheme == "https":
        https = _PinnedHTTPS(url.host, url.port, timeout=connect_timeout)
        https.tls = tls or ssl.create_default_context()
        https.address = target.address
        conn = https
    else:
        plain = _PinnedHTTP(url.host, url.port, timeout=connect_timeout)
        plain.address = target.address
        conn = plain
    deadline = time.monotonic() + request_timeout
    timer = threading.Timer(request_timeout, _cut, (conn,))
    timer.daemon = True
    timer.start()
    try:
        conn.connect()
        if conn.sock is not None:
            conn.sock.settimeout(max(deadline - time.monotonic(), 0.001))
        conn.request(
            "POST",
            url.target,
            body=body,
            headers={
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
                "Connection": "close",
                **headers,
            },
        )
        response = conn.getresponse()
        peek = response.read(_BODY_PEEK)
        return Reply(response.status, response.reason, response.getheader("Location"), peek)
    except (OSError, http.client.HTTPException) as e:
        if time.monotonic() >= deadline - 0.01:
            raise DeliveryError(f"no reply within {request_timeout:g} s") from None
        if isinstance(e, TimeoutError | socket.timeout):
            raise DeliveryError(f"timed out after {connect_timeout:g} s connecting") from None
        raise DeliveryError(_describe(e)) from None
    finally:
        timer.cancel()
        conn.close()


def _cut(conn: http.client.HTTPConnection) -> None:
    """The whole-request deadline passed: end the connection under the worker's feet."""
    sock = conn.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _describe(e: BaseException) -> str:
    if isinstance(e, ssl.SSLCertVerificationError):
        return f"TLS certificate not accepted: {e.verify_message}"
    if isinstance(e, ssl.SSLError):
        return f"TLS failed: {e.reason or e}"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, http.client.HTTPException):
        return f"not an HTTP reply: {type(e).__name__} {e}".strip()
    return f"{type(e).__name__}: {e}"
