"""The tracker, run for real: uvicorn on a loopback port, a real SQLite store in a
temporary directory, spoken to with http.client (which never follows redirects)."""

from __future__ import annotations

import base64
import dataclasses
import http.client
import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from smtpeter import config
from smtpeter.config import Config
from smtpeter.events import Event
from smtpeter.store import Store, open_store
from smtpeter.tracker.app import PIXEL, TrackerApp, location_bytes, short_path
from smtpeter.tracker.keys import KeyRing, new_key
from smtpeter.tracker.server import Server, listen, uvicorn_config
from smtpeter.tracker.signing import Signer, SigningKey
from smtpeter.tracker.writer import EventWriter

DAY = 86400.0
URL = "https://example.org/päth/ünïcode?a=1&b=two%20words&c=é#frag-ment"
# URL as a Location header carries it: a valid URI, spelt out by hand.
URL_LOCATION = (
    "https://example.org/p%C3%A4th/%C3%BCn%C3%AFcode?a=1&b=two%20words&c=%C3%A9#frag-ment"
)
NO_CACHE = "no-store, no-cache, must-revalidate, max-age=0"


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def header(self, name: str) -> str | None:
        value = self.headers.get(name)
        # http.client decodes header bytes as latin-1; ours are UTF-8.
        return None if value is None else value.encode("latin-1").decode("utf-8")


class Tracker:
    """One app instance (one "node") served by uvicorn in a thread."""

    def __init__(
        self, cfg: Config, *, trusted_proxies: tuple[str, ...] = (), retry_max: float = 0.4
    ) -> None:
        self.store = open_store(cfg.store)
        self.keyring = KeyRing.from_config(self.store, cfg.tracker)
        self.writer = EventWriter(
            self.store.record_events,
            flush_seconds=cfg.tracker.event_flush_seconds,
            queue_max=cfg.tracker.event_queue_max,
            retry_max=retry_max,
        )
        self.app = TrackerApp(
            self.keyring, self.writer, trusted_proxies=trusted_proxies, store=self.store
        )
        self.sock = listen("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.server = Server(uvicorn_config(self.app))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]})
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)

    def request(
        self, path: str, method: str = "GET", headers: dict[str, str] | None = None
    ) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request(method, path, headers=headers or {})
            resp = conn.getresponse()
            return Reply(resp.status, resp.headers, resp.read())
        finally:
            conn.close()

    def signer(self) -> Signer:
        return self.keyring.signer()

    def stop(self) -> None:
        if self.thread.is_alive():
            self.server.stop()
            self.thread.join(20)
        self.writer.close()


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return config.parse(
        {
            "store": {"sqlite_path": str(tmp_path / "smtpeter.db"), "busy_timeout": 0.2},
            "tracker": {"event_flush_seconds": 0.05},
        },
        "test",
    )


@pytest.fixture
def make_tracker(cfg: Config) -> Iterator[Callable[..., Tracker]]:
    started: list[Tracker] = []

    def make(**kwargs: object) -> Tracker:
        t = Tracker(cfg, **kwargs)  # type: ignore[arg-type]
        started.append(t)
        return t

    yield make
    for t in started:
        t.stop()


@pytest.fixture
def tracker(make_tracker: Callable[..., Tracker]) -> Tracker:
    return make_tracker()


def wait_events(store: Store, n: int, timeout: float = 5.0) -> list[Event]:
    deadline = time.monotonic() + timeout
    while True:
        events = store.events()[::-1]  # in the order they were recorded
        if len(events) >= n or time.monotonic() > deadline:
            return events
        time.sleep(0.02)


MARKER_UID = "settle-marker"


def settled_events(tracker: Tracker) -> list[Event]:
    """The events of the requests made so far, once they are surely written: a
    genuine click sent after them is waited for (the writer keeps the order), and
    left out of the result. Absence is proven by a later arrival, not a sleep."""
    token = tracker.signer().sign("c", MARKER_UID, URL)
    assert tracker.request(f"/c/{token}").status == 302
    deadline = time.monotonic() + 10
    while True:
        events = tracker.store.events()[::-1]  # in the order they were recorded
        if any(e.message_uid == MARKER_UID for e in events):
            return [e for e in events if e.message_uid != MARKER_UID]
        assert time.monotonic() < deadline, "the marker click was never written"
        time.sleep(0.02)


# -- clicks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "location"),
    [
        (URL, URL_LOCATION),
        ("https://example.org/?utm_source=news&utm_medium=email&x=%2F%3F&y=a+b", None),
        ("http://example.org/plain", None),
        (
            "https://例え.jp/パス?q=値#断片",
            "https://xn--r8jz45g.jp/%E3%83%91%E3%82%B9?q=%E5%80%A4#%E6%96%AD%E7%89%87",
        ),
        ("mailto:someone@example.org?subject=Hi%20there&body=x", None),
    ],
)
def test_valid_click_redirects_to_the_exact_url_and_records_one_event(
    tracker: Tracker, url: str, location: str | None
) -> None:
    token = tracker.signer().sign("c", "uid-1", url)
    reply = tracker.request(f"/c/{token}", headers={"User-Agent": "Mozilla/5.0 (Test) Ünï"})
    assert reply.status == 302
    assert reply.header("Location") == (location or url)  # None: already a valid URI
    assert reply.headers["Cache-Control"] == "no-store"
    assert reply.body == b""
    events = wait_events(tracker.store, 1)
    assert len(events) == 1
    e = events[0]
    assert (e.type, e.message_uid, e.url) == ("click", "uid-1", url)
    assert e.user_agent == "Mozilla/5.0 (Test) Ünï"
    assert e.client_ip == "127.0.0.1"
    assert e.occurred_at.endswith("Z")


def test_location_cannot_be_split_by_control_characters(tracker: Tracker) -> None:
    token = tracker.signer().sign("c", "uid-1", "https://example.org/a\r\nSet-Cookie: x=1\tb")
    reply = tracker.request(f"/c/{token}")
    assert reply.status == 302
    assert reply.header("Location") == "https://example.org/a%0D%0ASet-Cookie:%20x=1%09b"
    assert reply.headers["Set-Cookie"] is None
    assert location_bytes("https://example.org/é") == b"https://example.org/%C3%A9"


def flip(text: str, index: int) -> str:
    ch = text[index]
    return text[:index] + ("B" if ch == "A" else "A") + text[index + 1 :]


def flip_last_mac_byte(mac: str) -> str:
    raw = bytearray(base64.urlsafe_b64decode(mac + "=" * (-len(mac) % 4)))
    raw[-1] ^= 0x01
    flipped = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    assert len(flipped) == len(mac) and flipped != mac
    return flipped


def tampered(token: str) -> dict[str, str]:
    kid, payload, mac = token.split(".")
    return {
        "payload": f"{kid}.{flip(payload, len(payload) // 2)}.{mac}",
        "payload-first": f"{kid}.{flip(payload, 0)}.{mac}",
        "mac": f"{kid}.{payload}.{flip(mac, 3)}",
        # The last byte of the MAC, changed in a way that still spells a canonical
        # 16-byte MAC (its last base64 character carries only 2 bits): only the
        # MAC comparison can refuse it.
        "mac-last": f"{kid}.{payload}.{flip_last_mac_byte(mac)}",
        "kid": f"{flip(kid, 0)}.{payload}.{mac}",
        "mac-extra-char": f"{kid}.{payload}.{mac}!",
        "truncated": token[:-3],
        "two-parts": f"{kid}.{payload}",
    }


@pytest.mark.parametrize(
    "how",
    [
        "payload",
        "payload-first",
        "mac",
        "mac-last",
        "kid",
        "mac-extra-char",
        "truncated",
        "two-parts",
    ],
)
def test_tampered_click_is_404_without_location_or_event(tracker: Tracker, how: str) -> None:
    token = tracker.signer().sign("c", "uid-1", URL)
    reply = tracker.request(f"/c/{tampered(token)[how]}")
    assert reply.status == 404
    assert reply.headers["Location"] is None
    assert b"<html" in reply.body
    assert reply.headers["Content-Type"].startswith("text/html")
    assert settled_events(tracker) == []


@pytest.mark.parametrize(
    "path",
    [
        "/c/",
        "/c/garbage",
        "/c/a.b.c",
        "/c/%00%ff",
        "/c/" + "x" * 5000,
        "/c/..%2F..%2Fetc",
    ],
)
def test_garbage_click_is_404(tracker: Tracker, path: str) -> None:
    reply = tracker.request(path)
    assert reply.status == 404
    assert reply.headers["Location"] is None
    assert settled_events(tracker) == []


def test_open_token_on_the_click_route_is_404(tracker: Tracker) -> None:
    token = tracker.signer().sign("o", "uid-1")
    assert tracker.request(f"/c/{token}").status == 404


def test_expired_click_is_404(tracker: Tracker) -> None:
    keys = tracker.store.signing_keys()
    old = Signer(
        keys,
        link_lifetime=400 * DAY,
        key_retention=400 * DAY,
        clock=lambda: time.time() - 402 * DAY,
    )
    young = Signer(
        keys,
        link_lifetime=400 * DAY,
        key_retention=400 * DAY,
        clock=lambda: time.time() - 398 * DAY,
    )
    assert tracker.request(f"/c/{old.sign('c', 'uid-old', URL)}").status == 404
    assert tracker.request(f"/c/{young.sign('c', 'uid-young', URL)}").status == 302
    events = wait_events(tracker.store, 1)
    assert [e.message_uid for e in settled_events(tracker)] == ["uid-young"]
    assert len(events) == 1


def retired_key(store: Store, days_ago: float) -> Signer:
    """A key retired ``days_ago``, stored; and a signer that still signs with it."""
    now = time.time()
    fresh = new_key()
    store.add_signing_key(
        SigningKey(fresh.kid, fresh.secret, now - days_ago - 1 * DAY, now - days_ago * DAY)
    )
    # Signed while the key was current (the day in the token is recent enough).
    live = SigningKey(fresh.kid, fresh.secret, fresh.created_at)
    return Signer([live], link_lifetime=400 * DAY, key_retention=400 * DAY)


def test_retired_key_within_retention_still_redirects(tracker: Tracker) -> None:
    signer = retired_key(tracker.store, days_ago=10)
    # The key reached the store after the ring was loaded: an unknown key id makes
    # the ring reload once.
    reply = tracker.request(f"/c/{signer.sign('c', 'uid-r', URL)}")
    assert reply.status == 302
    assert reply.header("Location") == URL_LOCATION
    assert len(wait_events(tracker.store, 1)) == 1


def test_retired_key_past_retention_is_404(
    cfg: Config, make_tracker: Callable[..., Tracker]
) -> None:
    store = open_store(cfg.store)
    KeyRing.from_config(store, cfg.tracker)  # the active key
    signer = retired_key(store, days_ago=401)
    tracker = make_tracker()
    assert tracker.keyring.knows(signer.sign("c", "u", URL).split(".")[0])
    assert tracker.request(f"/c/{signer.sign('c', 'uid-r', URL)}").status == 404
    assert settled_events(tracker) == []


def test_head_click_redirects_without_event(tracker: Tracker) -> None:
    token = tracker.signer().sign("c", "uid-1", URL)
    reply = tracker.request(f"/c/{token}", method="HEAD")
    assert reply.status == 302
    assert reply.header("Location") == URL_LOCATION
    assert reply.body == b""
    assert tracker.request(f"/c/{flip(token, 20)}", method="HEAD").status == 404
    assert settled_events(tracker) == []


# -- opens ----------------------------------------------------------------------------


def assert_pixel(reply: Reply, *, body: bool = True) -> None:
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "image/gif"
    assert reply.headers["Cache-Control"] == NO_CACHE
    assert reply.headers["Pragma"] == "no-cache"
    assert reply.headers["Expires"] == "0"
    assert reply.headers["Content-Length"] == "43"
    assert reply.body == (PIXEL if body else b"")


def test_pixel_is_a_43_byte_transparent_gif() -> None:
    assert len(PIXEL) == 43
    assert PIXEL.startswith(b"GIF89a\x01\x00\x01\x00")
    assert PIXEL.endswith(b";")


def test_valid_pixel_records_one_open(tracker: Tracker) -> None:
    token = tracker.signer().sign("o", "uid-o")
    assert_pixel(tracker.request(f"/o/{token}.gif", headers={"User-Agent": "Mail/1.0"}))
    events = wait_events(tracker.store, 1)
    assert [(e.type, e.message_uid, e.url, e.user_agent) for e in events] == [
        ("open", "uid-o", None, "Mail/1.0")
    ]


@pytest.mark.parametrize("how", ["payload", "mac", "kid", "truncated"])
def test_invalid_pixel_is_still_a_gif_without_event(tracker: Tracker, how: str) -> None:
    token = tracker.signer().sign("o", "uid-o")
    assert_pixel(tracker.request(f"/o/{tampered(token)[how]}.gif"))
    assert_pixel(tracker.request("/o/garbage.gif"))
    # A click token is not an open.
    assert_pixel(tracker.request(f"/o/{tracker.signer().sign('c', 'uid-o', URL)}.gif"))
    assert settled_events(tracker) == []


def test_head_pixel_has_headers_but_no_event(tracker: Tracker) -> None:
    token = tracker.signer().sign("o", "uid-o")
    assert_pixel(tracker.request(f"/o/{token}.gif", method="HEAD"), body=False)
    assert settled_events(tracker) == []


# -- other routes -----------------------------------------------------------------------


def test_healthz(tracker: Tracker) -> None:
    reply = tracker.request("/healthz")
    assert reply.status == 200
    doc = json.loads(reply.body)
    assert doc["status"] == "ok"
    assert doc["store"] == "ok"
    assert doc["queue"] == 0


@pytest.mark.parametrize("path", ["/", "/c", "/o/x.png", "/favicon.ico", "/healthz/x"])
def test_unknown_paths_are_404(tracker: Tracker, path: str) -> None:
    reply = tracker.request(path)
    assert reply.status == 404
    assert reply.headers["Location"] is None


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"])
def test_other_methods_are_405(tracker: Tracker, method: str) -> None:
    token = tracker.signer().sign("c", "uid-1", URL)
    reply = tracker.request(f"/c/{token}", method=method)
    assert reply.status == 405
    assert reply.headers["Allow"] == "GET, HEAD"
    assert reply.headers["Location"] is None
    assert settled_events(tracker) == []


# -- client address -----------------------------------------------------------------------


def click_client(tracker: Tracker, xff: list[str]) -> str | None:
    before = len(tracker.store.events())
    token = tracker.signer().sign("c", f"uid-{before}", URL)
    conn = http.client.HTTPConnection("127.0.0.1", tracker.port, timeout=5)
    conn.putrequest("GET", f"/c/{token}")
    for value in xff:
        conn.putheader("X-Forwarded-For", value)
    conn.endheaders()
    assert conn.getresponse().status == 302
    conn.close()
    return wait_events(tracker.store, before + 1)[-1].client_ip


def test_x_forwarded_for_from_a_trusted_proxy(make_tracker: Callable[..., Tracker]) -> None:
    tracker = make_tracker(trusted_proxies=("127.0.0.1", "10.0.0.0/8"))
    assert click_client(tracker, ["203.0.113.7"]) == "203.0.113.7"
    # Right-most address that is not itself a trusted proxy.
    assert click_client(tracker, ["198.51.100.1, 203.0.113.7, 10.1.2.3"]) == "203.0.113.7"
    # Several headers count as one list, in order.
    assert click_client(tracker, ["198.51.100.1", "203.0.113.7, 10.1.2.3"]) == "203.0.113.7"
    assert click_client(tracker, ["2001:db8::1"]) == "2001:db8::1"
    # Only proxies: the left-most of them.
    assert click_client(tracker, ["10.9.9.9, 10.1.1.1"]) == "10.9.9.9"
    # Garbage from a proxy: the nearest address we believe.
    assert click_client(tracker, ["<script>, 10.1.1.1"]) == "10.1.1.1"
    assert click_client(tracker, []) == "127.0.0.1"


def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(
    make_tracker: Callable[..., Tracker],
) -> None:
    tracker = make_tracker(trusted_proxies=("192.0.2.1",))
    assert click_client(tracker, ["203.0.113.7"]) == "127.0.0.1"
    plain = make_tracker()
    assert click_client(plain, ["203.0.113.7"]) == "127.0.0.1"


# -- the store ----------------------------------------------------------------------------


def test_store_outage_keeps_redirecting_and_events_arrive_later(
    tracker: Tracker, cfg: Config, caplog: pytest.LogCaptureFixture
) -> None:
    db = sqlite3.connect(cfg.store.sqlite_path, isolation_level=None)
    db.execute("ALTER TABLE events RENAME TO events_away")
    try:
        for i in range(20):
            token = tracker.signer().sign("c", f"uid-{i}", URL)
            started = time.monotonic()
            reply = tracker.request(f"/c/{token}")
            assert reply.status == 302
            assert time.monotonic() - started < 0.5
        time.sleep(0.5)
        assert tracker.writer.last_error is not None
        assert "no such table: events" in tracker.writer.last_error
        health = json.loads(tracker.request("/healthz").body)
        assert health["status"] == "ok"
        assert health["queue"] == 20
        assert "no such table" in health["store"]
    finally:
        db.execute("ALTER TABLE events_away RENAME TO events")
    events = wait_events(tracker.store, 20)
    assert sorted(e.message_uid for e in events) == sorted(f"uid-{i}" for i in range(20))
    assert any(
        r.levelno == logging.ERROR and "no such table: events" in r.getMessage()
        for r in caplog.records
    )
    assert json.loads(tracker.request("/healthz").body)["store"] == "ok"


def test_an_overflowing_queue_is_counted_logged_and_shown_in_healthz(
    cfg: Config, caplog: pytest.LogCaptureFixture
) -> None:
    """When the store cannot keep up, the events the queue cannot hold are never lost
    silently: /healthz counts them, the log says so, and the newest ones are written."""
    small = dataclasses.replace(cfg, tracker=dataclasses.replace(cfg.tracker, event_queue_max=5))
    tracker = Tracker(small)
    db = sqlite3.connect(cfg.store.sqlite_path, isolation_level=None)
    db.execute("ALTER TABLE events RENAME TO events_away")
    try:
        for i in range(12):
            token = tracker.signer().sign("c", f"uid-{i}", URL)
            assert tracker.request(f"/c/{token}").status == 302
        health = json.loads(tracker.request("/healthz").body)
        assert (health["queue"], health["dropped"]) == (5, 7)
    finally:
        db.execute("ALTER TABLE events_away RENAME TO events")
    assert any(
        r.levelno == logging.ERROR and "event queue full (5)" in r.getMessage()
        for r in caplog.records
    )
    try:
        events = wait_events(tracker.store, 5)
        assert [e.message_uid for e in events] == [f"uid-{i}" for i in range(7, 12)]
        assert json.loads(tracker.request("/healthz").body)["dropped"] == 7
    finally:
        tracker.stop()


def test_locked_store_does_not_hold_up_redirects(tracker: Tracker, cfg: Config) -> None:
    db = sqlite3.connect(cfg.store.sqlite_path, isolation_level=None)
    db.execute("BEGIN EXCLUSIVE")
    try:
        for i in range(5):
            started = time.monotonic()
            reply = tracker.request(f"/c/{tracker.signer().sign('c', f'uid-{i}', URL)}")
            assert reply.status == 302
            assert time.monotonic() - started < 0.5
    finally:
        db.execute("ROLLBACK")
    assert len(wait_events(tracker.store, 5)) == 5


def test_clean_shutdown_flushes_queued_events(cfg: Config) -> None:
    slow = config.parse(
        {
            "store": {"sqlite_path": cfg.store.sqlite_path},
            "tracker": {"event_flush_seconds": 3600},
        },
        "test",
    )
    tracker = Tracker(slow)
    try:
        for i in range(30):
            assert tracker.request(f"/c/{tracker.signer().sign('c', f'u{i}', URL)}").status == 302
        assert tracker.store.events() == []
        assert tracker.writer.depth == 30
    finally:
        # Graceful stop: the lifespan shutdown closes the writer.
        tracker.server.stop()
        tracker.thread.join(20)
    assert tracker.writer.depth == 0
    assert len(tracker.store.events()) == 30


def test_second_node_serves_links_signed_by_the_first(
    make_tracker: Callable[..., Tracker],
) -> None:
    first = make_tracker()
    second = make_tracker()
    token = first.signer().sign("c", "uid-x", URL)
    reply = second.request(f"/c/{token}")
    assert reply.status == 302
    assert reply.header("Location") == URL_LOCATION
    # A key rotated on the first node: the second picks it up (unknown key id).
    first.keyring.rotate()
    token2 = first.signer().sign("c", "uid-y", URL)
    assert token2.split(".")[0] != token.split(".")[0]
    assert second.request(f"/c/{token2}").header("Location") == URL_LOCATION
    # The old key is retired but within retention.
    assert second.request(f"/c/{token}").status == 302
    assert len(wait_events(first.store, 3)) == 3


# -- key ring -----------------------------------------------------------------------------


def test_keyring_creates_one_first_key_and_reloads(cfg: Config) -> None:
    store = open_store(cfg.store)
    assert store.signing_keys() == []
    now = [1000.0]
    ring = KeyRing.from_config(store, cfg.tracker, reload_seconds=60)
    keys = store.signing_keys()
    assert len(keys) == 1
    assert len(keys[0].secret) == 32
    assert len(keys[0].kid) == 8
    assert ring.knows(keys[0].kid)
    # A second ring over the same store does not make another key.
    other = KeyRing(store, link_lifetime=DAY, key_retention=DAY, monotonic=lambda: now[0])
    assert len(store.signing_keys()) == 1
    new = ring.rotate()
    assert new.kid != keys[0].kid
    assert ring.signer().sign("o", "u").startswith(new.kid + ".")
    # The other ring still signs with the old key until its reload period is over...
    assert other.signer().sign("o", "u").startswith(keys[0].kid + ".")
    now[0] += 61
    other.signer()  # starts a background reload
    deadline = time.monotonic() + 5
    while not other.knows(new.kid):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert other.signer().sign("o", "u").startswith(new.kid + ".")
    retired = next(k for k in store.signing_keys() if k.kid == keys[0].kid)
    assert retired.retired_at is not None


def test_keyring_keeps_its_keys_when_the_store_fails(
    cfg: Config, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_store(cfg.store)
    ring = KeyRing.from_config(store, cfg.tracker)
    token = ring.signer().sign("c", "u", URL)
    db = sqlite3.connect(cfg.store.sqlite_path, isolation_level=None)
    db.execute("ALTER TABLE signing_keys RENAME TO away")
    try:
        signer = ring.reload()
        claim = signer.verify(token)
        assert claim is not None and (claim.message_uid, claim.url) == ("u", URL)
        assert not ring.reload_for_unknown("zzzzzzzz")
    finally:
        db.execute("ALTER TABLE away RENAME TO signing_keys")
    assert any("cannot reload signing keys" in r.getMessage() for r in caplog.records)


def test_keyring_is_thread_safe(cfg: Config) -> None:
    store = open_store(cfg.store)
    ring = KeyRing.from_config(store, cfg.tracker, reload_seconds=0)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for i in range(200):
                s = ring.signer()
                claim = s.verify(s.sign("c", f"u{i}", f"{URL}?n={i}"))
                assert claim is not None and claim.message_uid == f"u{i}"
                assert claim.url == f"{URL}?n={i}"
        except AssertionError as e:
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for _ in range(5):
        ring.rotate()
    for t in threads:
        t.join()
    assert errors == []


# -- the access log ---------------------------------------------------------------------------


def test_access_log_line(tracker: Tracker, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="smtpeter.tracker.access")
    token = tracker.signer().sign("c", "uid-1", URL)
    tracker.request(f"/c/{token}", headers={"User-Agent": "Agent " + "x" * 300})
    deadline = time.monotonic() + 5
    while True:
        # The line is written once the response is sent: it may come a moment later.
        lines = [r.getMessage() for r in caplog.records if r.name == "smtpeter.tracker.access"]
        if lines or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert len(lines) == 1
    line = lines[0]
    assert line.startswith(f'GET /c/{token[:11]}...{token[-8:]} 302 client=127.0.0.1 ua="Agent x')
    assert token not in line
    assert len(line) < 200
    assert " ms=" in line
    assert short_path("/healthz") == "/healthz"


# -- the process ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_run_tracker_serves_and_flushes_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    db = tmp_path / "smtpeter.db"
    script = (
        "import sys\n"
        "from smtpeter import config, logsetup\n"
        "from smtpeter.tracker.server import run_tracker\n"
        "logsetup.setup('info')\n"
        f"cfg = config.parse({{'store': {{'sqlite_path': {str(db)!r}}}, 'tracker':"
        f" {{'listen_port': {port}, 'workers': 2, 'event_flush_seconds': 3600}}}}, 'test')\n"
        "sys.exit(run_tracker(cfg))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
        store = open_store(config.parse({"store": {"sqlite_path": str(db)}}, "t").store)
        signer = Signer(store.signing_keys(), link_lifetime=DAY, key_retention=DAY)
        for i in range(40):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", f"/c/{signer.sign('c', f'u{i}', URL)}")
            assert conn.getresponse().status == 302
            conn.close()
        assert store.events() == []
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert f"listening on http://127.0.0.1:{port}" in err
    assert "stopped" in err
    assert len(store.events()) == 40
