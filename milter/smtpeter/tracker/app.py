"""The tracking HTTP service: a plain ASGI application (no framework).

Routes (everything else is 404; a method other than GET or HEAD is 405, but for POST
to ``/u/``):

``GET /c/{token}``
    A genuine click token: ``302`` to the URL it carries (as a valid URI: see
    :func:`location_bytes`), with ``Cache-Control: no-store``, and one ``click`` event
    (with the URL as it was signed). Anything else
    (tampered, unknown key, expired, an open token, garbage): ``404`` with a short
    HTML page and no ``Location``: the tracker is never an open redirect.
``GET /o/{token}.gif``
    Always the 43-byte transparent GIF, with headers that forbid caching; one
    ``open`` event only when the token is a genuine open token.
``GET /u/{token}``, ``POST /u/{token}``
    One-click unsubscribe (RFC 8058), see :mod:`smtpeter.unsubscribe`. A genuine
    unsubscribe token: ``GET`` (and ``HEAD``) shows a small page whose form POSTs
    back, and changes nothing (link scanners follow every link); ``POST`` (the
    mailbox provider's ``List-Unsubscribe=One-Click``, or the page's form; any body
    up to :data:`MAX_POST_BODY` bytes) records the unsubscribe and answers ``200``
    with a short page. Anything else: the ``404`` page, nothing recorded, a log line.
    When the store cannot be written: ``503``, nothing promised (the POST is retried).
``GET /healthz``
    ``200`` with a small JSON document: ``status`` (always ``ok`` while the process
    serves), ``store`` (``ok``, or the last error of the event writer) and ``queue``
    (events waiting to be written). A store outage does not make the tracker
    unhealthy: it keeps redirecting and queues the events.

``HEAD`` answers exactly as ``GET`` (the same status and headers, so a ``302`` with its
``Location`` for a valid click) without a body, and never records an event: link
scanners and previewers that probe with HEAD are not counted as clicks.

The client address is the TCP peer, unless the peer is one of ``trusted_proxies``:
then it is the right-most ``X-Forwarded-For`` entry that is not itself a trusted proxy.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from datetime import UTC, datetime
from html import escape as html_escape
from typing import Any
from urllib.parse import parse_qsl, quote

from smtpeter import unsubscribe
from smtpeter.events import Event
from smtpeter.logsafe import escape
from smtpeter.store import Store, StoreError
from smtpeter.tracker.keys import KeyRing
from smtpeter.tracker.signing import Claim
from smtpeter.tracker.writer import EventWriter

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

access_log = logging.getLogger("smtpeter.tracker.access")
log = logging.getLogger("smtpeter.tracker")

# GIF89a, 1x1, a two-colour palette whose colour 0 is transparent.
PIXEL = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00"  # header, logical screen, global palette flag
    b"\x00\x00\x00\xff\xff\xff"  # palette: black, white
    b"!\xf9\x04\x01\x00\x00\x00\x00"  # graphic control: colour 0 transparent
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00"  # image descriptor
    b"\x02\x02D\x01\x00"  # LZW-coded single pixel
    b";"  # trailer
)
assert len(PIXEL) == 43

NOT_FOUND_PAGE = (
    b"<!doctype html><html><head><meta charset=utf-8><title>Link not found</title></head>"
    b"<body><h1>Link not found</h1><p>This link is invalid or has expired.</p></body></html>\n"
)

_PIXEL_HEADERS: Headers = [
    (b"content-type", b"image/gif"),
    (b"content-length", str(len(PIXEL)).encode()),
    (b"cache-control", b"no-store, no-cache, must-revalidate, max-age=0"),
    (b"pragma", b"no-cache"),
    (b"expires", b"0"),
]
_NOT_FOUND_HEADERS: Headers = [
    (b"content-type", b"text/html; charset=utf-8"),
    (b"content-length", str(len(NOT_FOUND_PAGE)).encode()),
    (b"cache-control", b"no-store"),
]
# The largest unsubscribe POST body read (RFC 8058's is 26 bytes); more is 413.
MAX_POST_BODY = 8192
_PAGE_HEAD = (
    "<!doctype html><html><head><meta charset=utf-8><meta name=robots content=noindex>"
    '<meta name=viewport content="width=device-width"><title>{title}</title></head><body>'
)
UNSUBSCRIBED_PAGE = (
    _PAGE_HEAD.format(title="Unsubscribed")
    + "<h1>Unsubscribed</h1><p>Your request to unsubscribe is recorded.</p></body></html>\n"
).encode()
UNAVAILABLE_PAGE = (
    _PAGE_HEAD.format(title="Try again later")
    + "<h1>Try again later</h1><p>Your request could not be recorded just now. Please try"
    " again in a few minutes.</p></body></html>\n"
).encode()
TOO_LARGE_PAGE = b"request body too large\n"


def confirmation_page(recipient: str | None) -> bytes:
    """The page a GET of an unsubscribe link shows: a form that POSTs back to the same
    address (no action: behind a proxy the path may differ), nothing changed yet."""
    who = f" for <b>{html_escape(recipient)}</b>" if recipient else ""
    return (
        _PAGE_HEAD.format(title="Unsubscribe")
        + f"<h1>Unsubscribe</h1><p>Unsubscribe{who} from this sender's mail?</p>"
        "<form method=post><input type=hidden name=confirmed value=yes>"
        "<button type=submit>Unsubscribe</button></form></body></html>\n"
    ).encode()


def _page_headers(body: bytes) -> Headers:
    return [
        (b"content-type", b"text/html; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
    ]


def is_one_click(body: bytes) -> bool:
    """Whether a POST body is RFC 8058's ``List-Unsubscribe=One-Click``, form-encoded
    (application/x-www-form-urlencoded, or a multipart/form-data field of that name)."""
    text = body.decode("latin-1")
    if ("List-Unsubscribe", "One-Click") in parse_qsl(text.strip()):
        return True
    return 'name="List-Unsubscribe"' in text and "One-Click" in text


_METHOD_NOT_ALLOWED_HEADERS: Headers = [
    (b"content-type", b"text/plain; charset=utf-8"),
    (b"content-length", b"19"),
    (b"allow", b"GET, HEAD"),
]
# Longest User-Agent kept in an event (and, shorter, in the access log).
_UA_MAX = 512
_UA_LOG_MAX = 80
# What a URI may carry as it is (RFC 3986): unreserved characters (quote() keeps
# letters, digits and "-._~" anyway), the reserved ones, and "%" of existing escapes.
_URI_SAFE = "!#$%&'()*+,/:;=?@[]"
_NOT_URI = re.compile(r"[^A-Za-z0-9\-._~!#$%&'()*+,/:;=?@\[\]]|%(?![0-9A-Fa-f]{2})").search
_STRAY_PERCENT = re.compile("%(?![0-9A-Fa-f]{2})")
_AUTHORITY = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://)([^/?#]*)(.*)", re.DOTALL)
_ASCII_RUN = re.compile(r"[\x00-\x7f]+")


def _uri_quote(text: str) -> str:
    """Percent-encode (UTF-8) what may not appear in a URI, keeping reserved characters
    and existing %XX escapes; a "%" that starts no escape becomes "%25"."""
    quoted = quote(text, safe=_URI_SAFE, errors="surrogateescape")
    return _STRAY_PERCENT.sub("%25", quoted) if "%" in quoted else quoted


def _ascii_host(host: str) -> str:
    """A non-ASCII host name in IDNA (punycode) form; a host the codec refuses stays
    as it is (percent-encoding a host name is wrong), but for its ASCII characters."""
    try:
        return _uri_quote(host.encode("idna").decode("ascii"))
    except UnicodeError:
        return _ASCII_RUN.sub(lambda m: _uri_quote(m.group()), host)


def location_bytes(url: str) -> bytes:
    """The Location header value: the signed URL as a valid URI. Characters a URI may
    not carry (non-ASCII, spaces, controls such as CR and LF...) are percent-encoded
    as UTF-8 and a non-ASCII host name gets its IDNA form; everything else (existing
    %XX escapes, reserved characters, query and fragment) is kept byte for byte. No
    URL, however it was signed, can split the response."""
    if _NOT_URI(url) is None:
        return url.encode("ascii")
    m = _AUTHORITY.match(url)
    if m is None or m.group(2).isascii():
        return _uri_quote(url).encode("ascii")
    scheme, authority, rest = m.groups()
    userinfo, at, hostport = authority.rpartition("@")
    if hostport.startswith("["):  # an IP literal: nothing IDNA could do
        host, colon, port = "", "", hostport
    else:
        host, colon, port = hostport.partition(":")
    return (
        _uri_quote(scheme + userinfo + at) + _ascii_host(host) + _uri_quote(colon + port + rest)
    ).encode("utf-8", "surrogateescape")


def _text(value: bytes) -> str:
    """A header value as text: UTF-8 if it is, else Latin-1 (HTTP's historical charset)."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


_second_cache: tuple[int, str] = (-1, "")


def _now_iso() -> str:
    """The time now as in events (ISO 8601 UTC with microseconds), formatting the
    date and time only once a second."""
    global _second_cache
    now = time.time()
    second = int(now)
    cached_second, prefix = _second_cache
    if second != cached_second:
        prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second_cache = (second, prefix)
    return f"{prefix}.{int((now - second) * 1e6):06d}Z"


class ProxyResolver:
    """The client address of a request, believing X-Forwarded-For only from proxies
    we trust (addresses or networks, e.g. ``10.0.0.0/8``)."""

    def __init__(self, trusted: Iterable[str]) -> None:
        self._networks = [ipaddress.ip_network(t, strict=False) for t in trusted]
        self._cache: dict[str, bool] = {}

    def __bool__(self) -> bool:
        return bool(self._networks)

    def trusted(self, address: str) -> bool:
        known = self._cache.get(address)
        if known is not None:
            return known
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            result = False
        else:
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            result = any(ip in net for net in self._networks)
        if len(self._cache) < 10000:
            self._cache[address] = result
        return result

    def client(self, peer: str, forwarded_for: list[bytes]) -> str:
        if not forwarded_for or not self.trusted(peer):
            return peer
        hops = [h.strip() for v in forwarded_for for h in v.decode("latin-1").split(",")]
        nearest = peer
        for hop in reversed(hops):
            if not hop:
                continue
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                # A trusted proxy passed on garbage: stop at the last address we believe.
                return nearest
            if not self.trusted(hop):
                return hop
            nearest = hop
        return nearest


def short_path(path: str) -> str:
    """The path for the access log, a long token cut to its key id and a tail."""
    if len(path) > 40:
        return f"{path[:14]}...{path[-8:]}"
    return path


class TrackerApp:
    """The ASGI application. Its lifespan starts and stops (flushing) the writer."""

    def __init__(
        self,
        keyring: KeyRing,
        writer: EventWriter,
        *,
        trusted_proxies: Iterable[str] = (),
        store: Store | None = None,
    ) -> None:
        """``store``: where unsubscribes are recorded (at once, not through the
        writer: the answer says whether it worked); without one they get 503."""
        self.keyring = keyring
        self.writer = writer
        self.proxies = ProxyResolver(trusted_proxies)
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.writer.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.to_thread(self.writer.close)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        method: str = scope["method"]
        path: str = scope["path"]
        event: Event | None = None
        headers: Headers
        body = b""
        if path.startswith("/u/") and method in ("GET", "HEAD", "POST"):
            status, headers, body = await self._unsubscribe(scope, receive, path[3:])
        elif method != "GET" and method != "HEAD":
            status, headers, body = 405, _METHOD_NOT_ALLOWED_HEADERS, b"method not allowed\n"
        elif path.startswith("/c/"):
            status, headers, body, event = await self._click(scope, path[3:])
        elif path.startswith("/o/") and path.endswith(".gif"):
            status, headers, body = 200, _PIXEL_HEADERS, PIXEL
            event = await self._open(scope, path[3:-4])
        elif path == "/healthz":
            status, headers, body = self._health()
        else:
            status, headers, body = 404, _NOT_FOUND_HEADERS, NOT_FOUND_PAGE
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})
        if event is not None and method == "GET":
            self.writer.put(event)
        if access_log.isEnabledFor(logging.INFO):
            self._log(scope, method, path, status, event, started)

    async def _verify(self, token: str) -> Claim | None:
        claim = self.keyring.signer().verify(token)
        if claim is None:
            kid = token.partition(".")[0]
            # A key rotated on another node moments ago: reload (rate-limited) and retry.
            if kid and not self.keyring.knows(kid):
                known = await asyncio.to_thread(self.keyring.reload_for_unknown, kid)
                if known:
                    claim = self.keyring.signer().verify(token)
        return claim

    async def _click(self, scope: Scope, token: str) -> tuple[int, Headers, bytes, Event | None]:
        claim = await self._verify(token)
        if claim is None or claim.kind != "c" or claim.url is None:
            return 404, _NOT_FOUND_HEADERS, NOT_FOUND_PAGE, None
        headers: Headers = [
            (b"location", location_bytes(claim.url)),
            (b"cache-control", b"no-store"),
            (b"content-length", b"0"),
        ]
        event = None
        if scope["method"] == "GET":
            event = self._event(scope, "click", claim.message_uid, claim.url)
        return 302, headers, b"", event

    async def _unsubscribe(
        self, scope: Scope, receive: Receive, token: str
    ) -> tuple[int, Headers, bytes]:
        claim = await self._verify(token)
        if claim is None or claim.kind != "u":
            log.info("unsubscribe: tampered, unknown or expired link %s", escape(short_path(token)))
            return 404, _NOT_FOUND_HEADERS, NOT_FOUND_PAGE
        if scope["method"] != "POST":
            page = confirmation_page(claim.recipient)
            return 200, _page_headers(page), page
        body = await _read_body(receive, MAX_POST_BODY)
        if body is None:
            log.info("unsubscribe: POST body over %d bytes refused", MAX_POST_BODY)
            return 413, _plain_headers(TOO_LARGE_PAGE), TOO_LARGE_PAGE
        how = "one-click" if is_one_click(body) else "confirmation-page"
        user_agent, client_ip = self._client_facts(scope)
        try:
            if self.store is None:
                raise StoreError("the tracker has no store to record unsubscribes in")
            outcome = await asyncio.to_thread(
                unsubscribe.record,
                self.store,
                claim.message_uid,
                claim.recipient,
                how,
                user_agent=user_agent,
                client_ip=client_ip,
            )
        except StoreError as e:
            log.error("unsubscribe of message %s not recorded: %s", escape(claim.message_uid), e)
            return 503, _page_headers(UNAVAILABLE_PAGE), UNAVAILABLE_PAGE
        log.info(
            "unsubscribe: message %s recipient %s login %s how=%s recorded=%s suppressed=%s%s",
            escape(claim.message_uid),
            escape(claim.recipient) if claim.recipient else "-",
            escape(outcome.login) if outcome.login else "-",
            how,
            "yes" if outcome.recorded else "no",
            "yes" if outcome.suppressed else "no",
            "".join(f"; {note}" for note in outcome.notes),
        )
        return 200, _page_headers(UNSUBSCRIBED_PAGE), UNSUBSCRIBED_PAGE

    def _client_facts(self, scope: Scope) -> tuple[str | None, str | None]:
        """The request's User-Agent (cut to _UA_MAX) and client address."""
        user_agent = None
        forwarded: list[bytes] = []
        for name, value in scope["headers"]:
            if name == b"user-agent":
                user_agent = _text(value)[:_UA_MAX]
            elif name == b"x-forwarded-for":
                forwarded.append(value)
        return user_agent, self._client(scope, forwarded)

    async def _open(self, scope: Scope, token: str) -> Event | None:
        if scope["method"] != "GET":
            return None
        claim = await self._verify(token)
        if claim is None or claim.kind != "o":
            return None
        return self._event(scope, "open", claim.message_uid, None)

    def _event(self, scope: Scope, kind: str, uid: str, url: str | None) -> Event:
        user_agent, client_ip = self._client_facts(scope)
        return Event(
            type="click" if kind == "click" else "open",
            message_uid=uid,
            occurred_at=_now_iso(),
            url=url,
            user_agent=user_agent,
            client_ip=client_ip,
        )

    def _client(self, scope: Scope, forwarded: list[bytes]) -> str | None:
        client = scope.get("client")
        peer: str | None = client[0] if client else None
        if peer is None or not self.proxies:
            return peer
        return self.proxies.client(peer, forwarded)

    def _health(self) -> tuple[int, Headers, bytes]:
        doc = {
            "status": "ok",
            "store": "ok" if self.writer.last_error is None else self.writer.last_error,
            "queue": self.writer.depth,
            "written": self.writer.written,
            "dropped": self.writer.dropped,
        }
        body = json.dumps(doc).encode() + b"\n"
        return (
            200,
            [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
            ],
            body,
        )

    def _log(
        self, scope: Scope, method: str, path: str, status: int, event: Event | None, started: float
    ) -> None:
        # Every value from the request is escaped (smtpeter.logsafe): one request is
        # one line, with no control character, whatever it carries. The path is shown
        # as it was sent (percent-encoded), not as decoded.
        raw_path: bytes | None = scope.get("raw_path")
        if raw_path is not None:
            path = raw_path.decode("utf-8", "surrogateescape")
        forwarded: list[bytes] = []
        ua: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"user-agent":
                ua = value
            elif name == b"x-forwarded-for" and event is None:
                forwarded.append(value)
        client = event.client_ip if event is not None else self._client(scope, forwarded)
        access_log.info(
            "%s %s %d client=%s ua=%s ms=%.2f",
            escape(method),
            escape(short_path(path)),
            status,
            escape(client) if client else "-",
            escape(ua, _UA_LOG_MAX, quoted=True) if ua is not None else "-",
            (time.perf_counter() - started) * 1000,
        )


def _plain_headers(body: bytes) -> Headers:
    return [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
    ]


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None once it runs past ``limit`` bytes (not read further)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)  # the client went away
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def baseline_app(location: bytes = b"https://example.org/landing?utm=bench") -> ASGIApp:
    """The benchmark's baseline: the same server answering one static 302, with no
    store, no signature check and no event (and no access log)."""
    start: Message = {
        "type": "http.response.start",
        "status": 302,
        "headers": [
            (b"location", location),
            (b"cache-control", b"no-store"),
            (b"content-length", b"0"),
        ],
    }
    end: Message = {"type": "http.response.body", "body": b""}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        elif scope["type"] == "http":
            await send(start)
            await send(end)

    return app
