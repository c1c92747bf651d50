"""Signed webhooks end to end: tracked mail sent through the real Postfix, its links
and pixel fetched from the real tracker, Postfix's delivery results read by the
delivery reader, and every event of the login POSTed by the stack's dispatcher to a
real receiver on loopback, signed; the dispatcher killed with SIGKILL mid-run loses
nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from smtpeter.local.stack import LocalStack
from smtpeter.store import Store
from tests.e2e.conftest import MakeLogin
from tests.e2e.smtp import find_delivered, send, simple
from tests.e2e.test_tracking import get, html_of, tracked
from tests.webhookrx import Receiver, Request

pytestmark = pytest.mark.e2e

PAGE = (
    '<html><body><a href="https://shop.example/one">one</a>'
    ' <a href="https://shop.example/two">two</a></body></html>'
)


def cli(stack: LocalStack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "smtpeter", "--config", str(stack.config_file), "webhooks",
         *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def add_endpoint(stack: LocalStack, login: str, url: str, *events: str) -> str:
    args = ["add", login, "--url", url, "--json"]
    if events:
        args += ["--events", ",".join(events)]
    result = cli(stack, *args)
    assert result.returncode == 0, result.stderr
    secret = json.loads(result.stdout)["secret"]
    assert isinstance(secret, str)
    return secret


@pytest.fixture
def rx() -> Iterator[Receiver]:
    with Receiver() as receiver:
        yield receiver


def send_tracked(stack: LocalStack, user: str, password: str) -> tuple[str, list[str], str]:
    """One tracked message through Postfix: its marker, its two links and its pixel
    (empty without trackopens)."""
    mark = send(stack, user, password, simple("webhooks", html=PAGE),
                recipients=("reader@example.org",))  # fmt: skip
    html = html_of(find_delivered(stack, mark))
    links = tracked(html, stack, "c")
    pixels = tracked(html, stack, "o")
    assert len(links) == 2 and len(pixels) <= 1
    return mark, links, "".join(pixels)


def wait_stored(store: Store, login: str, want: dict[str, int], timeout: float = 30) -> None:
    """Until the login has at least these many events of each type in the store."""
    deadline = time.monotonic() + timeout
    have: dict[str, int] = {}
    while time.monotonic() < deadline:
        have = {}
        for e in store.events(login=login, limit=10000):
            have[e.type] = have.get(e.type, 0) + 1
        if all(have.get(t, 0) >= n for t, n in want.items()):
            return
        time.sleep(0.2)
    raise AssertionError(f"events of {login}: {have}, expected at least {want}")


def arrived(rx: Receiver, path: str, ids: set[int], timeout: float = 60) -> dict[int, Request]:
    """Wait until every event id has reached ``path``; the first request of each."""
    deadline = time.monotonic() + timeout
    seen: dict[int, Request] = {}
    while time.monotonic() < deadline:
        seen = {}
        for r in list(rx.requests):
            if r.path == path:
                seen.setdefault(int(r.json()["id"]), r)
        if ids <= set(seen):
            return seen
        time.sleep(0.2)
    raise AssertionError(f"{len(ids - set(seen))} of {len(ids)} events never reached {path}")


def test_every_event_of_a_run_arrives_signed_with_the_documented_fields(
    stack: LocalStack, store: Store, make_login: MakeLogin, rx: Receiver
) -> None:
    """Every event of mail sent through Postfix arrives signed; unsubscribed types never."""
    user, password = make_login(trackclicks=True, trackopens=True)
    secret_all = add_endpoint(stack, user, rx.url("/ok-all"))
    secret_clicks = add_endpoint(stack, user, rx.url("/ok-clicks"), "click", "open")
    sent = [send_tracked(stack, user, password) for _ in range(3)]
    for _, links, pixel in sent:
        for link in links:
            assert get(link).status == 302
        assert get(pixel).status == 200
    wait_stored(store, user, {"click": 6, "open": 3, "delivered": 3})
    stored = {e.id: e for e in store.events(login=user, limit=10000)}
    ids = {i for i in stored if i is not None}

    got = arrived(rx, "/ok-all", ids)
    for event_id, request in got.items():
        body = request.json()
        e = stored[event_id]
        assert request.signed_by(secret_all), "a valid signature under the endpoint's secret"
        assert not request.signed_by(secret_clicks)
        assert request.headers["X-Smtpeter-Event-Id"] == str(event_id)
        assert (body["type"], body["login"], body["message_uid"]) == (e.type, user, e.message_uid)
        assert body["occurred_at"] == e.occurred_at and body["message_id"] == e.message_id
        assert body["recipient"] in ("reader@example.org", "<reader@example.org>")
        assert body["queue_id"] and body["tags"] == [] and isinstance(body["detail"], dict)
        if e.type == "click":
            assert body["url"] in ("https://shop.example/one", "https://shop.example/two")
            assert body["client_ip"] == "127.0.0.1"
        if e.type == "delivered":
            assert body["detail"]["dsn"].startswith("2.")
    assert {stored[i].message_id for i in got} == {f"<{m}@test.example>" for m, _, _ in sent}

    # The clicks-and-opens endpoint: its types only. A click made after every delivery
    # result was recorded is the marker that the others would have come by now.
    marker_link = sent[0][1][0]
    assert get(marker_link).status == 302
    wait_stored(store, user, {"click": 7})
    clicks_opens = {i for i, e in stored.items() if e.type in ("click", "open")}
    newest = max(e.id or 0 for e in store.events(login=user, type="click", limit=1))
    got_clicks = arrived(rx, "/ok-clicks", {i for i in clicks_opens if i is not None} | {newest})
    assert all(r.signed_by(secret_clicks) for r in got_clicks.values())
    assert {r.json()["type"] for r in rx.requests if r.path == "/ok-clicks"} == {"click", "open"}

    listed = cli(stack, "list", user, "--json")
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    deadline = time.monotonic() + 10
    while any(r["pending"] for r in rows) and time.monotonic() < deadline:
        time.sleep(0.2)
        rows = [json.loads(line) for line in cli(stack, "list", user, "--json").stdout.splitlines()]
    assert [(r["pending"], r["failed"]) for r in rows] == [(0, 0), (0, 0)]


def test_the_outbox_survives_the_dispatcher_killed_mid_run(
    stack: LocalStack, store: Store, make_login: MakeLogin
) -> None:
    """A dispatcher killed with SIGKILL mid-run and restarted loses no event."""
    user, password = make_login(trackclicks=True)
    _, links, _ = send_tracked(stack, user, password)
    with Receiver(slow_seconds=0.3) as rx:
        secret = add_endpoint(stack, user, rx.url("/slow"), "click")
        for _ in range(15):
            for link in links:
                assert get(link).status == 302
        wait_stored(store, user, {"click": 30})
        assert rx.wait_for(3, "/slow", timeout=30), "the dispatcher is delivering"
        pid = stack.pid("webhooks")
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        while stack.pid("webhooks") is not None:
            time.sleep(0.05)
        before = len(rx.requests)
        assert before < 30, "killed mid-run, with events left to send"
        for link in links * 5:
            assert get(link).status == 302
        wait_stored(store, user, {"click": 40})
        time.sleep(1)
        assert len(rx.requests) == before, "nothing is sent while the dispatcher is down"
        stack.start_component("webhooks")
        ids = {e.id for e in store.events(login=user, type="click", limit=10000)}
        assert len(ids) == 40
        # Rows claimed by the killed dispatcher come back when their lease (25 s) ends.
        got = arrived(rx, "/slow", {i for i in ids if i is not None}, timeout=90)
        assert all(r.signed_by(secret) for r in got.values())
        assert len(got) == 40
        # What was in flight at the kill (received, its 200 never recorded) is sent
        # again once the lease of the killed claim ends, and then the outbox is empty.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            [row] = [
                json.loads(line) for line in cli(stack, "list", user, "--json").stdout.splitlines()
            ]
            if row["pending"] == 0:
                break
            time.sleep(0.5)
        assert (row["pending"], row["failed"]) == (0, 0)
        ids_sent = [int(r.json()["id"]) for r in rx.requests]
        assert len(ids_sent) > len(set(ids_sent)), "the request in flight at the kill came again"
        assert all(r.signed_by(secret) for r in rx.requests)
