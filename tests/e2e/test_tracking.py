"""Click and open tracking end to end: a tracked newsletter through the real stack,
its links and pixel fetched from the real tracker, events read back with the CLI."""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import sys
import time
import urllib.parse

import pytest

from smtpeter.features.trackclicks import track_links
from smtpeter.local.stack import LocalStack
from tests import mimedata
from tests.e2e.conftest import MakeLogin
from tests.e2e.smtp import events, find_delivered, parse, send, simple

pytestmark = pytest.mark.e2e

GIF_MAGIC = b"GIF89a"


def html_of(data: bytes) -> str:
    part = parse(data).get_body(preferencelist=("html",))
    assert part is not None
    content = part.get_content()
    assert isinstance(content, str)
    return content


def original_links(html: str) -> list[str]:
    """The http(s) links of a document, in order, as trackclicks sees them."""
    seen: list[str] = []

    def record(url: str) -> None:
        seen.append(url)

    track_links(html, record)
    return seen


def get(url: str, method: str = "GET") -> http.client.HTTPResponse:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    conn.request(method, parts.path, headers={"User-Agent": "smtpeter-e2e/1.0"})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def tracking_events(stack: LocalStack, *args: str) -> list[dict[str, object]]:
    """Opens and clicks (the stack also records each message's delivery results)."""
    return [e for e in events(stack, *args) if e["type"] in ("open", "click")]


def wait_events(stack: LocalStack, count: int, *args: str) -> list[dict[str, object]]:
    found: list[dict[str, object]] = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        found = tracking_events(stack, *args)
        if len(found) >= count:
            return found
        time.sleep(0.2)
    return found


def tracked(html: str, stack: LocalStack, kind: str) -> list[str]:
    base = stack.config().tracker.base_url
    return re.findall(rf'(?:href|src)="({re.escape(base)}/{kind}/[^"]+)"', html)


def test_tracked_newsletter_links_pixel_and_events(
    stack: LocalStack, make_login: MakeLogin
) -> None:
    user, password = make_login(inlinecss=True, trackclicks=True, trackopens=True)
    original = mimedata.alternative()
    mark = send(stack, user, password, original.raw, recipients=("reader@example.org",))
    data = find_delivered(stack, mark)
    html = html_of(data)

    want = original_links(html_of(original.raw))
    links = tracked(html, stack, "c")
    assert len(links) == len(want) > 20
    assert not original_links(html)[len(links) :], "every web link is tracked"

    for link, url in zip(links, want, strict=True):
        response = get(link)
        assert response.status == 302
        assert response.getheader("Location") == url

    [pixel] = tracked(html, stack, "o")
    response = get(pixel)
    assert response.status == 200
    assert response.getheader("Content-Type") == "image/gif"
    assert "no-store" in (response.getheader("Cache-Control") or "")

    found = wait_events(stack, len(want) + 1, "--login", user)
    assert [e["type"] for e in found].count("click") == len(want)
    assert [e["type"] for e in found].count("open") == 1
    clicks = [e for e in found if e["type"] == "click"]
    assert sorted(str(e["url"]) for e in clicks) == sorted(want)
    for e in found:
        assert e["recipient"] == "<reader@example.org>"
        assert e["user_agent"] == "smtpeter-e2e/1.0"
        assert e["client_ip"] == "127.0.0.1"
        assert e["message_id"] == f"<{mark}@test.example>"
    # The same events, looked up by Message-ID and by type.
    assert len(tracking_events(stack, "--message", f"<{mark}@test.example>")) == len(found)
    assert len(events(stack, "--login", user, "--type", "open")) == 1


def test_tampered_link_gives_404_and_no_event(stack: LocalStack, make_login: MakeLogin) -> None:
    user, password = make_login(trackclicks=True)
    page = '<html><body><a href="https://example.com/offer">offer</a></body></html>'
    mark = send(stack, user, password, simple("tamper", html=page))
    [link] = tracked(html_of(find_delivered(stack, mark)), stack, "c")
    kid, payload, mac = link.rsplit("/", 1)[1].split(".")
    prefix = link.rsplit("/", 1)[0]
    flipped = payload[:-3] + ("A" if payload[-3] != "A" else "B") + payload[-2:]
    for bad in (f"{prefix}/{kid}.{flipped}.{mac}", f"{prefix}/{kid}.{payload}.{mac[::-1]}",
                f"{prefix}/zzzzzzzz.{payload}.{mac}", f"{prefix}/garbage"):  # fmt: skip
        response = get(bad)
        assert response.status == 404
        assert response.getheader("Location") is None
    # The genuine click after them is written after anything they caused (the
    # writer keeps the order): once it is there, it must be the only event.
    assert get(link).status == 302
    found = wait_events(stack, 1, "--login", user)
    assert [e["url"] for e in found] == ["https://example.com/offer"]
    assert tracking_events(stack, "--login", user) == found


@pytest.mark.parametrize(
    ("feature", "login_on", "header", "expect"),
    [
        ("trackclicks", False, "true", True),
        ("trackclicks", True, "false", False),
        ("trackopens", False, "true", True),
        ("trackopens", True, "false", False),
    ],
)
def test_tracking_header_overrides(
    stack: LocalStack,
    make_login: MakeLogin,
    feature: str,
    login_on: bool,
    header: str,
    expect: bool,
) -> None:
    user, password = make_login(**{feature: login_on})
    page = '<html><body><a href="https://example.com/x">x</a></body></html>'
    extra = {f"X_SMTPeter_{feature}": header}
    mark = send(stack, user, password, simple("override", html=page, **extra))
    html = html_of(find_delivered(stack, mark))
    kind = "c" if feature == "trackclicks" else "o"
    assert bool(tracked(html, stack, kind)) is expect
    other = "o" if kind == "c" else "c"
    assert not tracked(html, stack, other)


def test_stats_count_messages_opens_and_clicks(stack: LocalStack, make_login: MakeLogin) -> None:
    user, password = make_login(trackclicks=True, trackopens=True)
    page = '<html><body><a href="https://example.com/s">s</a></body></html>'
    marks = [send(stack, user, password, simple(f"stats {i}", html=page)) for i in range(3)]
    first = html_of(find_delivered(stack, marks[0]))
    get(tracked(first, stack, "o")[0])
    get(tracked(first, stack, "c")[0])
    get(tracked(first, stack, "c")[0])  # a second click on the same message
    second = html_of(find_delivered(stack, marks[1]))
    get(tracked(second, stack, "o")[0])
    wait_events(stack, 4, "--login", user)
    result = subprocess.run(
        [sys.executable, "-m", "smtpeter", "--config", str(stack.config_file), "stats",
         "--login", user, "--json"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    [row] = [json.loads(line) for line in result.stdout.splitlines()]
    assert row["messages"] == 3
    assert row["unique_opens"] == 2
    assert row["unique_clicks"] == 1
