"""Log lines cannot be forged, and the click redirect's Location is a valid URI.

Every value from the network that reaches a log line goes through
smtpeter.logsafe.escape: whatever a request (or an envelope) carries, it makes exactly
one line, with no control character. Requests go to the real tracker (uvicorn with
its httptools parser, as tests/unit/test_tracker.py runs it); the lines checked are
the ones the log handler actually formats."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from io import BytesIO
from typing import Any

import Milter
import pytest

from smtpeter.logsafe import escape
from smtpeter.relay.milter import RelayContext
from smtpeter.tracker.app import location_bytes
from tests.unit import test_milter_testctx, test_tracker
from tests.unit.test_milter_testctx import PostfixCtx, message
from tests.unit.test_tracker import Tracker, wait_events

# The fixtures of the tracker's and the milter's own tests, used here as they are.
cfg = test_tracker.cfg
make_tracker = test_tracker.make_tracker
tracker = test_tracker.tracker
relay = test_milter_testctx.relay

FORGED = "\n127.0.0.1 - - GET /c/fake 302"


# -- the helper ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("plain text, ünïcode", "plain text, ünïcode"),
        ("a\r\nb\x00c\td", "a\\x0d\\x0ab\\x00c\\x09d"),
        ("\x1b[31m\x7f\x85\x9f", "\\x1b[31m\\x7f\\x85\\x9f"),
        ("a\u2028b\u2029c\u202ed\u00a0e", "a\\u2028b\\u2029c\\u202ed\\xa0e"),
        ("\U000e0001", "\\U000e0001"),
        ("back\\x0a", "back\\\\x0a"),
        (b"ok \xc3\xa9 \xff\xfe\n", "ok é \\xff\\xfe\\x0a"),
        ("surrogate \udcff", "surrogate \\xff"),
        ("", ""),
    ],
)
def test_escape_rules(value: str | bytes, shown: str) -> None:
    assert escape(value) == shown
    assert escape(value).isprintable()


def test_escape_limit_and_quoted() -> None:
    assert escape("x" * 10, 4) == "xxxx..."
    assert escape("\n" * 10, 2) == "\\x0a\\x0a..."
    assert escape("abc", 3) == "abc"
    assert escape('say "hi"\n', quoted=True) == '"say \\"hi\\"\\x0a"'
    assert escape(b"ua", quoted=True) == '"ua"'


# -- the tracker's access log, through the real server ------------------------------------


def send_raw(tracker: Tracker, request: bytes) -> bytes:
    """Send ``request`` as it is (http.client would refuse most of these) and return
    the status line of the answer."""
    with socket.create_connection(("127.0.0.1", tracker.port), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.partition(b"\r\n")[0]


def get(target: bytes, *headers: bytes) -> bytes:
    head = b"".join(h + b"\r\n" for h in headers)
    return b"GET " + target + b" HTTP/1.1\r\nHost: t\r\n" + head + b"Connection: close\r\n\r\n"


def lines_of_one_request(
    tracker: Tracker, caplog: pytest.LogCaptureFixture, request: bytes
) -> tuple[bytes, list[str]]:
    """The status line, and the log output (as the handler formats it, split into
    lines) of one request. Absence of further lines is proven by a later arrival: a
    marker request's own line, which is left out."""
    caplog.set_level(logging.INFO)
    caplog.clear()
    status = send_raw(tracker, request)
    deadline = time.monotonic() + 5
    while not caplog.records:
        assert time.monotonic() < deadline, "the request was never logged"
        time.sleep(0.01)
    assert tracker.request("/marker-after").status == 404
    while not any("/marker-after" in r.getMessage() for r in caplog.records):
        assert time.monotonic() < deadline, "the marker request was never logged"
        time.sleep(0.01)
    # uvicorn's own access log is off in the tracker (access_log=False: no handler, no
    # propagation), but pytest's capture attaches to it anyway: leave it out.
    records = [r for r in caplog.records if r.name != "uvicorn.access"]
    text = "".join(caplog.handler.format(r) + "\n" for r in records)
    lines = [line for line in text.split("\n") if line and "/marker-after" not in line]
    return status, lines


def assert_one_clean_line(lines: list[str]) -> str:
    assert len(lines) == 1, lines
    line = lines[0]
    # isprintable() is False for every C0 and C1 control, DEL, U+2028/U+2029 and the
    # bidi overrides; "\r" and "\x0b"/"\x0c" would not show up in split("\n") alone.
    assert line.isprintable(), repr(line)
    return line


@pytest.mark.parametrize(
    ("target", "status", "shown"),
    [
        # Percent-encoded controls: the path is logged as sent.
        (
            b"/c/x%0a127.0.0.1%20-%20-%20GET%20/c/fake%20302",
            b"404",
            "GET /c/x%0a127.0.0...ke%20302 404",
        ),
        (b"/c/%0d%0a", b"404", "/c/%0d%0a"),
        (b"/c/%00", b"404", "/c/%00"),
        (b"/c/%7f%ff%c2%85%e2%80%a8", b"404", None),
        (b"/o/%0a.gif", b"200", "/o/%0a.gif"),
        # Raw: the parser refuses them; uvicorn's one warning line says so.
        (("/c/x" + FORGED).encode(), b"400", "Invalid HTTP request received."),
        (b"/c/\xc3\xa9\xff\x80", b"400", "Invalid HTTP request received."),
        (b"/c/x\x00y", b"400", "Invalid HTTP request received."),
        (b"/c/x\ry", b"400", "Invalid HTTP request received."),
    ],
)
def test_request_path_makes_one_clean_line(
    tracker: Tracker,
    caplog: pytest.LogCaptureFixture,
    target: bytes,
    status: bytes,
    shown: str | None,
) -> None:
    got, lines = lines_of_one_request(tracker, caplog, get(target))
    assert got.split(b" ")[1] == status
    line = assert_one_clean_line(lines)
    if shown is not None:
        assert shown in line
    assert "/c/fake 302" not in line


@pytest.mark.parametrize(
    ("user_agent", "status", "shown"),
    [
        (b"Mozilla\r\n127.0.0.1 - - GET /c/fake 302", b"400", None),
        (b"Mozilla\rX", b"400", None),
        (b"Mozilla\nX", b"400", None),
        (b"Mozilla\r\n\tfolded", b"400", None),
        (b"Mozilla\x00X", b"400", None),
        (b"Mozilla\x7fX", b"400", None),
        (b"Mo\tzilla", b"302", 'ua="Mo\\x09zilla"'),
        (b"\xff\xfe not UTF-8", b"302", 'ua="\\xff\\xfe not UTF-8"'),
        (b"\xc2\x85 NEL \xe2\x80\xa8 LS \xe2\x80\xae RLO", b"302", "\\x85 NEL \\u2028 LS \\u202e"),
        (b'q"uote\\x0a', b"302", 'ua="q\\"uote\\\\x0a"'),
        ("Ünï".encode(), b"302", 'ua="Ünï"'),
    ],
)
def test_user_agent_makes_one_clean_line(
    tracker: Tracker,
    caplog: pytest.LogCaptureFixture,
    user_agent: bytes,
    status: bytes,
    shown: str | None,
) -> None:
    token = tracker.signer().sign("c", "uid-1", "https://example.org/")
    request = get(f"/c/{token}".encode(), b"User-Agent: " + user_agent)
    got, lines = lines_of_one_request(tracker, caplog, request)
    assert got.split(b" ")[1] == status
    line = assert_one_clean_line(lines)
    if shown is not None:
        assert shown in line


def test_forwarded_for_makes_one_clean_line(
    make_tracker: Callable[..., Tracker], caplog: pytest.LogCaptureFixture
) -> None:
    # An IPv6 scope id is anything after "%": ipaddress takes it, controls and all.
    tracker = make_tracker(trusted_proxies=("127.0.0.1",))
    request = get(b"/o/x.gif", b"X-Forwarded-For: fe80::1%\tx\xc2\x85\xe2\x80\xa8")
    got, lines = lines_of_one_request(tracker, caplog, request)
    assert got.split(b" ")[1] == b"200"
    # (The header is read as Latin-1, so the UTF-8 bytes show as Latin-1 letters, with
    # the C1 controls among them escaped.)
    assert "client=fe80::1%\\x09xÂ\\x85â\\x80¨ " in assert_one_clean_line(lines)


def test_values_no_parser_would_pass_are_escaped_by_the_app(
    tracker: Tracker, caplog: pytest.LogCaptureFixture
) -> None:
    """Behind another server or proxy, CR, LF and NUL could reach the app: its log
    line stays one clean line."""
    caplog.set_level(logging.INFO)
    caplog.clear()
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        raise AssertionError("not called for http")

    token = tracker.signer().sign("c", "uid-1", "https://example.org/")
    for raw_path, headers in [
        (b"/c/\xff" + FORGED.encode(), [(b"user-agent", b"UA\r\n" + FORGED.encode() + b"\x00")]),
        (f"/c/{token}".encode(), [(b"user-agent", b"x\r\ny\x00z\x1b[2J\x7f")]),
    ]:
        scope = {
            "type": "http",
            "method": "GET",
            "path": raw_path.decode("latin-1"),
            "raw_path": raw_path,
            "query_string": b"",
            "headers": headers,
            "client": ("127.0.0.1", 40000),
        }
        asyncio.run(tracker.app(scope, receive, send))  # type: ignore[arg-type]
    lines = caplog.text.splitlines()
    assert len(lines) == 2 == len(caplog.records)
    assert all(line.isprintable() for line in lines), lines
    assert "GET /c/\\xff\\x0a127.0.0.1 - - GET /c/fake 302 404 client=127.0.0.1" in lines[0]
    assert 'ua="UA\\x0d\\x0a\\x0a127.0.0.1 - - GET /c/fake 302\\x00"' in lines[0]
    assert 'ua="x\\x0d\\x0ay\\x00z\\x1b[2J\\x7f"' in lines[1]
    assert len(wait_events(tracker.store, 1)) == 1


# -- the redirect's Location ----------------------------------------------------------------


def location_of(tracker: Tracker, url: str) -> bytes:
    token = tracker.signer().sign("c", "uid-1", url)
    reply = tracker.request(f"/c/{token}")
    assert reply.status == 302
    value = reply.headers["Location"]
    assert isinstance(value, str)
    return value.encode("latin-1")  # http.client's decoding of the header bytes


def test_location_percent_encodes_what_a_uri_cannot_carry(tracker: Tracker) -> None:
    url = "https://example.org/a b/é?q=ü#frag"
    assert location_of(tracker, url) == b"https://example.org/a%20b/%C3%A9?q=%C3%BC#frag"
    # The click event keeps the URL as it was signed.
    assert [e.url for e in wait_events(tracker.store, 1)] == [url]


@pytest.mark.parametrize(
    "url",
    [
        "https://example.org/a%20b/%C3%A9?q=%C3%BC&x=%2F%3F&y=a+b;c=d!*'(),$#frag/?:@[]",
        "https://user:p%40ss@example.org:8443/~x/-._?a=1&a=2#",
        "https://example.org/?",
        "mailto:someone@example.org?subject=Hi%20there&body=x",
        "https://EXAMPLE.org/%e2%82%ac%7E",
    ],
)
def test_location_of_a_valid_uri_is_byte_identical(tracker: Tracker, url: str) -> None:
    assert location_of(tracker, url) == url.encode("ascii")


def test_location_of_an_idn_host_is_punycode(tracker: Tracker) -> None:
    assert location_of(tracker, "https://bücher.example/é?q=1") == (
        b"https://xn--bcher-kva.example/%C3%A9?q=1"
    )
    assert location_of(tracker, "https://例え.jp/パス?q=値#断片") == (
        b"https://xn--r8jz45g.jp/%E3%83%91%E3%82%B9?q=%E5%80%A4#%E6%96%AD%E7%89%87"
    )


@pytest.mark.parametrize(
    ("url", "location"),
    [
        # userinfo is percent-encoded, the host gets IDNA, the port stays.
        ("https://ü:p@bücher.example:8443/", b"https://%C3%BC:p@xn--bcher-kva.example:8443/"),
        # An IP literal has no IDNA form; only the path is encoded.
        ("http://[2001:db8::1]:8080/é", b"http://[2001:db8::1]:8080/%C3%A9"),
        # A host the IDNA codec refuses (a label over 63 characters) is left as it is.
        (f"https://{'é' * 64}.example/é", f"https://{'é' * 64}.example/%C3%A9".encode()),
        # A "%" that starts no escape is itself encoded; escapes are left alone.
        ("https://example.org/100%/%zz%4", b"https://example.org/100%25/%25zz%254"),
        ("https://example.org/a\r\nSet-Cookie: x", b"https://example.org/a%0D%0ASet-Cookie:%20x"),
        (
            'https://example.org/<"{|}>\\^`\x7f',
            b"https://example.org/%3C%22%7B%7C%7D%3E%5C%5E%60%7F",
        ),
        ("https://example.org/\udcff", b"https://example.org/%FF"),
        ("https://example.org/ok", b"https://example.org/ok"),
    ],
)
def test_location_bytes(url: str, location: bytes) -> None:
    assert location_bytes(url) == location


# -- the milter's summary line --------------------------------------------------------------


def milter_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        caplog.handler.format(r).replace("\n", "<LF>")
        for r in caplog.records
        if r.name == "smtpeter.milter"
    ]


def test_milter_accepted_line_escapes_the_envelope_sender(
    relay: RelayContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="smtpeter.milter")
    sender = "a@example.com>\r\n4F3A21B0C9: login=- accepted: from=<x\x00@example.com"
    ctx = PostfixCtx()
    ctx._setsymval("i", "4F3A21B0C9")
    ctx._setsymval("{daemon_name}", "smtpeter")
    assert ctx._connect(ip="192.0.2.1") == Milter.CONTINUE
    assert ctx._feedFile(BytesIO(message()), sender, "b@example.org") == Milter.ACCEPT
    text = caplog.text
    assert text.count("\n") == 1 and text.endswith("\n")
    (line,) = milter_lines(caplog)
    assert line.isprintable(), repr(line)
    assert (
        "accepted: from=<a@example.com>\\x0d\\x0a4F3A21B0C9: login=- accepted:"
        " from=<x\\x00@example.com> nrcpt=1"
    ) in line


def test_milter_rejected_line_is_one_clean_line(
    relay: RelayContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="smtpeter.milter")
    ctx = PostfixCtx()
    ctx._setsymval("i", "4F3A21B0C9")
    ctx._setsymval("{daemon_name}", "smtpeter")
    ctx._setsymval("{auth_authen}", "plain")
    assert ctx._connect(ip="192.0.2.1") == Milter.CONTINUE
    raw = message("X-SMTPeter-TrackOpens: some\x85\x00times\x1b")
    rc = ctx._feedFile(BytesIO(raw), "a\r\nb@example.com", "b@example.org")
    assert rc == Milter.REJECT
    (line,) = milter_lines(caplog)
    assert line.isprintable(), repr(line)
    assert "rejected: X-SMTPeter-TrackOpens: invalid value" in line
