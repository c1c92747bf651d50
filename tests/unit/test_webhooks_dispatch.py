"""Webhook delivery against a real HTTP receiver on 127.0.0.1: 2xx is done, 4xx/5xx,
timeouts and redirects are failed attempts retried with backoff (a redirect is never
followed), https checks the URL's host on the pinned address, and one slow endpoint
never delays another."""

from __future__ import annotations

import itertools
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from smtpeter.config import WebhooksConfig
from smtpeter.events import Event
from smtpeter.store import MessageRecord
from smtpeter.store.sqlite import SQLiteStore
from smtpeter.store.webhooks import Webhook
from smtpeter.webhooks import client, signing
from smtpeter.webhooks.dispatcher import Dispatcher, next_attempt, retry_delay, send, send_test
from smtpeter.webhooks.targets import TargetError, resolve
from tests.unit.test_store_api import _login
from tests.webhookrx import Receiver, closed_port

FAST = WebhooksConfig(
    allow_private_targets=True, connect_timeout=1.0, request_timeout=1.0, poll_seconds=0.05,
    retry_first_seconds=30.0,
)  # fmt: skip


@pytest.fixture
def rx() -> Iterator[Receiver]:
    with Receiver(slow_seconds=3.0) as receiver:
        yield receiver


def _hook(url: str, secret: str = "whsec_test", login: str = "shop", id: int = 1) -> Webhook:
    return Webhook(id, login, url, (), secret, None, None, "")


def test_backoff_doubles_from_30_seconds_to_an_hour() -> None:
    """Retries come after 30 s, 1 min, 2 min, ... and at most an hour apart."""
    delays = [retry_delay(n, 30, 3600) for n in range(1, 11)]
    assert delays == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]
    assert retry_delay(10_000, 30, 3600) == 3600


def test_retries_last_24_hours_from_the_first_attempt_then_the_row_fails() -> None:
    """A dead endpoint is tried for 24 hours (the last try at the end), then given up."""
    cfg = WebhooksConfig()
    first = 1000.0
    now, failures, attempts = first, 0, [first]
    while True:
        failures += 1
        after = next_attempt(failures, first, now, cfg)
        if after is None:
            break
        attempts.append(after)
        now = after
    assert attempts[-1] == first + 24 * 3600, "one last try at the end of the window"
    # The first; 7 more 30 s to 32 min apart (63.5 min in all); then hourly to the end.
    assert len(attempts) == 1 + 7 + 23
    assert attempts[8] - attempts[7] == 3600
    assert all(b > a for a, b in itertools.pairwise(attempts))


def test_a_2xx_reply_is_a_delivery_signed_and_identified(rx: Receiver) -> None:
    """The receiver gets the exact body, a signature it can verify and the event id."""
    reply = send(_hook(rx.url("/ok/in?x=1")), b'{"id":42}', 42, FAST)
    assert reply.ok and reply.status == 200
    [request] = rx.requests
    assert request.path == "/ok/in?x=1" and request.body == b'{"id":42}'
    assert request.headers[signing.EVENT_ID_HEADER] == "42"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Host"] == f"127.0.0.1:{rx.port}"
    assert request.signed_by("whsec_test") and not request.signed_by("whsec_other")


@pytest.mark.parametrize(
    "path,status,text",
    [("/gone", 404, "HTTP 404 Not Found"), ("/error", 500, "HTTP 500 Internal Server Error")],
)
def test_4xx_and_5xx_replies_are_failed_attempts(
    rx: Receiver, path: str, status: int, text: str
) -> None:
    """Anything but 2xx is not a delivery; the error says what the endpoint answered."""
    reply = send(_hook(rx.url(path)), b"{}", 1, FAST)
    assert not reply.ok and reply.status == status and reply.describe() == text


def test_a_redirect_is_not_followed(rx: Receiver) -> None:
    """A 302 is a failed attempt; the Location is never requested (no SSRF by redirect)."""
    reply = send(_hook(rx.url("/redirect")), b"{}", 1, FAST)
    assert not reply.ok and reply.status == 302
    assert "not followed" in reply.describe()
    time.sleep(0.2)
    assert [r.path for r in rx.requests] == ["/redirect"]


@pytest.mark.parametrize("path", ["/slow", "/trickle"])
def test_a_slow_receiver_times_out_within_the_request_timeout(rx: Receiver, path: str) -> None:
    """A receiver that answers late, or a byte at a time, holds a worker request_timeout."""
    started = time.monotonic()
    with pytest.raises(client.DeliveryError, match="no reply within 1 s"):
        send(_hook(rx.url(path)), b"{}", 1, FAST)
    assert time.monotonic() - started < 1.8


def test_a_dead_receiver_is_a_failed_attempt_saying_why() -> None:
    """Connection refused is reported as such."""
    with pytest.raises(client.DeliveryError, match="connection refused"):
        send(_hook(f"http://127.0.0.1:{closed_port()}/"), b"{}", 1, FAST)


def test_a_private_target_is_refused_at_send_time_without_the_switch(rx: Receiver) -> None:
    """A stored endpoint that now points at loopback is not reached without the switch."""
    with pytest.raises(TargetError, match=r"loopback address 127.0.0.1"):
        send_test(_hook(rx.url("/ok")), WebhooksConfig())
    assert rx.requests == []


def test_the_test_event_is_signed_and_typed_test(rx: Receiver) -> None:
    """`webhooks test` sends one signed event of type test, id 0."""
    reply = send_test(_hook(rx.url("/ok")), FAST)
    assert reply.ok
    [request] = rx.requests
    assert request.json()["type"] == "test" and request.json()["id"] == 0
    assert request.json()["login"] == "shop" and request.signed_by("whsec_test")


def _certificate(tmp_path: Path, name: str) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_https_checks_the_urls_host_on_the_checked_address(tmp_path: Path) -> None:
    """https goes to the checked address and verifies the certificate for the URL's host."""
    import ssl

    cert, key = _certificate(tmp_path, "hooks.test")
    with Receiver() as rx:
        server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_tls.load_cert_chain(cert, key)
        rx.server.socket = server_tls.wrap_socket(rx.server.socket, server_side=True)
        trust = ssl.create_default_context(cafile=str(cert))

        def dns(host: str, port: int) -> list[str]:
            return ["127.0.0.1"]

        url = f"https://hooks.test:{rx.port}/ok"
        target = resolve(url, allow_private=True, resolver=dns)
        assert target.address == "127.0.0.1"
        reply = send(_hook(url), b"{}", 1, FAST, target=target, tls=trust)
        assert reply.ok and rx.requests[0].headers["Host"] == f"hooks.test:{rx.port}"
        wrong = f"https://other.test:{rx.port}/ok"
        with pytest.raises(client.DeliveryError, match="TLS certificate not accepted"):
            send(_hook(wrong), b"{}", 1, FAST, resolver=dns, tls=trust)
        with pytest.raises(client.DeliveryError, match="TLS certificate not accepted"):
            send(_hook(url), b"{}", 1, FAST, resolver=dns)  # the system's CAs only


# -- the dispatcher over a real store ---------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    store = SQLiteStore(str(tmp_path / "smtpeter.db"))
    for name in ("shop", "other"):
        store.create_login(_login(name))
        store.record_message(
            MessageRecord(
                queue_id=f"Q-{name}", message_id=f"<{name}@t>", login=name,
                envelope_sender="s@example.com", recipients=("ann@example.org",),
                features=(), size_before=1, size_after=1, uid=f"uid-{name}",
            )
        )  # fmt: skip
    return store


def _clicks(store: SQLiteStore, login: str, n: int) -> None:
    store.record_events(
        [Event("click", f"uid-{login}", "2026-12-02T09:00:00.000000Z", url=f"https://x/{i}")
         for i in range(n)]
    )  # fmt: skip


@pytest.fixture
def dispatching(store: SQLiteStore) -> Iterator[Dispatcher]:
    dispatcher = Dispatcher(store, FAST)
    thread = threading.Thread(target=dispatcher.run, daemon=True)
    thread.start()
    yield dispatcher
    dispatcher.stop()
    thread.join(5)
    assert not thread.is_alive(), "the dispatcher stops on request"


def test_the_dispatcher_delivers_every_event_and_empties_the_outbox(
    store: SQLiteStore, rx: Receiver, dispatching: Dispatcher
) -> None:
    """Every event arrives once, signed, with the documented fields; the outbox empties."""
    hook = store.add_webhook("shop", rx.url("/ok"), ("click",), signing.new_secret())
    _clicks(store, "shop", 10)
    got = rx.wait_for(10)
    assert len(got) == 10 and all(r.signed_by(hook.secret) for r in got)
    bodies = [r.json() for r in got]
    assert sorted(b["url"] for b in bodies) == sorted(f"https://x/{i}" for i in range(10))
    assert len({b["id"] for b in bodies}) == 10
    first = bodies[0]
    assert (first["type"], first["login"], first["queue_id"], first["message_id"]) == (
        "click", "shop", "Q-shop", "<shop@t>"
    )  # fmt: skip
    assert first["recipient"] == "ann@example.org" and first["message_uid"] == "uid-shop"
    assert {"tags", "metadata", "detail", "occurred_at"} <= set(first)
    deadline = time.monotonic() + 5
    while store.webhook_backlog(hook.id).pending and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.webhook_backlog(hook.id).pending == 0


def test_a_failing_endpoint_is_retried_later_and_the_row_kept(
    store: SQLiteStore, rx: Receiver, dispatching: Dispatcher
) -> None:
    """A 500 leaves the event pending with its next attempt 30 s on, and the error kept."""
    hook = store.add_webhook("shop", rx.url("/error"), (), signing.new_secret())
    _clicks(store, "shop", 1)
    assert len(rx.wait_for(1)) == 1
    time.sleep(0.5)
    assert len(rx.requests) == 1, "not retried before its backoff"
    assert store.webhook_backlog(hook.id).pending == 1
    [row] = store.claim_webhook_rows(hook.id, now=time.time() + 31, lease=1, limit=5)
    assert row.attempts == 1


def test_a_slow_endpoint_never_delays_another_logins(
    store: SQLiteStore, tmp_path: Path, dispatching: Dispatcher
) -> None:
    """While one login's endpoint times out on every request, another's get theirs at once."""
    with Receiver(slow_seconds=5.0) as slow, Receiver() as fast:
        store.add_webhook("shop", slow.url("/slow"), (), signing.new_secret())
        store.add_webhook("other", fast.url("/ok"), (), signing.new_secret())
        _clicks(store, "shop", 20)
        started = time.monotonic()
        _clicks(store, "other", 5)
        assert len(fast.wait_for(5, timeout=5)) == 5
        assert time.monotonic() - started < 1.5
        assert len(slow.requests) <= FAST.max_in_flight, "in flight to one endpoint: at most 4"


def test_an_endpoint_added_while_running_gets_its_events(
    store: SQLiteStore, rx: Receiver, dispatching: Dispatcher
) -> None:
    """No restart is needed: the dispatcher picks up new endpoints within a poll."""
    time.sleep(0.1)
    store.add_webhook("other", rx.url("/ok"), (), signing.new_secret())
    _clicks(store, "other", 2)
    assert len(rx.wait_for(2, timeout=5)) == 2
