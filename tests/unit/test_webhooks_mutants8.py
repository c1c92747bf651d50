"""Webhook target checks and signatures, pinned down to what an operator reads and
what a receiver decides: the exact refusal messages, IPv4 written as IPv6, the system
resolver, and a receiver's verify() refusing forged, replayed or malformed headers."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from smtpeter.events import Event
from smtpeter.webhooks import payload, signing
from smtpeter.webhooks.targets import TargetError, parse_url, resolve, system_resolver
from tests.unit.test_webhooks_targets import NO_DNS, _dns

NEEDS = (
    ": refused (a private, loopback or link-local target needs "
    "webhooks.allow_private_targets: true)"
)


@pytest.mark.parametrize(
    "url,message",
    [
        ("https://example.com/\x00", "contains white space or control characters"),
        ("https://example.com/\x1f", "contains white space or control characters"),
        ("https://example.com/\x7f", "contains white space or control characters"),
        ("https://example.com/\t", "contains white space or control characters"),
        ("ftp://example.com/", "scheme 'ftp' refused: only http and https"),
        ("example.com/h", "scheme '(none)' refused: only http and https"),
        ("https://user:pw@example.com/", "no user or password in the URL"),
        ("https://user@example.com/", "no user or password in the URL"),
        ("https://:pw@example.com/", "no user or password in the URL"),
        ("https:///hook", "no host"),
        ("https://example.com/#f", "no #fragment"),
        ("https://example.com:99999/", "Port out of range 0-65535"),
    ],
)
def test_a_refused_url_gets_exactly_the_documented_message(url: str, message: str) -> None:
    """`webhooks add` prints the URL and exactly why it is refused, nothing garbled."""
    with pytest.raises(TargetError) as e:
        parse_url(url)
    assert str(e.value) == f"URL {url!r}: {message}"


def test_a_url_with_printable_characters_keeps_path_and_query_as_written() -> None:
    """Tilde, percent escapes and a query survive intact into the request line."""
    url = parse_url("http://hooks.example:8080/~a/%41b?x=1&y=%20")
    assert (url.scheme, url.host, url.port, url.target) == (
        "http", "hooks.example", 8080, "/~a/%41b?x=1&y=%20"
    )  # fmt: skip
    assert parse_url("https://hooks.example?only=query").target == "/?only=query"


@pytest.mark.parametrize(
    "url,shown",
    [
        ("http://127.0.0.1/", "loopback address 127.0.0.1"),
        ("http://[::ffff:127.0.0.1]/", "loopback address ::ffff:7f00:1"),
        ("http://[::ffff:192.168.0.9]/", "private address ::ffff:c0a8:9"),
        ("http://[::ffff:169.254.169.254]/", "link-local address ::ffff:a9fe:a9fe"),
        ("http://[::ffff:100.64.0.1]/", "non-public address ::ffff:6440:1"),
        ("http://[::ffff:0.0.0.0]/", "unspecified address ::ffff:0:0"),
        ("http://[::ffff:224.0.0.1]/", "multicast address ::ffff:e000:1"),
        ("http://[ff02::1]/", "multicast address ff02::1"),
        ("http://[fe80::1]/", "link-local address fe80::1"),
    ],
)
def test_a_literal_address_is_refused_with_exactly_its_kind(url: str, shown: str) -> None:
    """A refused IP literal is named with its kind, without a 'host ... resolves to' prefix."""
    with pytest.raises(TargetError) as e:
        resolve(url, allow_private=False, resolver=NO_DNS)
    assert str(e.value) == shown + NEEDS


@pytest.mark.parametrize(
    "url", ["http://[::ffff:0.0.0.0]/", "http://[::ffff:224.0.0.1]/", "http://[ff02::1]/"]
)
def test_allow_private_never_lets_unspecified_or_multicast_through_even_as_ipv6(url: str) -> None:
    """allow_private_targets opens the LAN, never 'this machine' or multicast in any spelling."""
    with pytest.raises(TargetError, match=r"^(unspecified|multicast) address"):
        resolve(url, allow_private=True, resolver=NO_DNS)


def test_an_ipv4_mapped_public_address_is_allowed_and_mapped_private_ones_only_when_allowed() -> (
    None
):
    """::ffff:8.8.8.8 is the public 8.8.8.8; ::ffff:10.0.0.1 passes only with allow_private."""
    assert resolve("http://[::ffff:8.8.8.8]/", allow_private=False, resolver=NO_DNS).address == (
        "::ffff:808:808"
    )
    assert resolve("http://[::ffff:10.0.0.1]/", allow_private=True, resolver=NO_DNS).address == (
        "::ffff:a00:1"
    )


def test_a_name_is_refused_naming_the_host_and_its_first_refused_address() -> None:
    """For a DNS name the message says which host resolved to which refused address."""
    resolver = _dns({"lan.example": ["10.0.0.5", "fe80::2"], "void.example": []})
    with pytest.raises(TargetError) as e:
        resolve("https://lan.example/hook", allow_private=False, resolver=resolver)
    assert str(e.value) == "host lan.example resolves to private address 10.0.0.5" + NEEDS
    with pytest.raises(TargetError) as e:
        resolve("https://void.example/", allow_private=False, resolver=resolver)
    assert str(e.value) == "host void.example: cannot resolve: no address"


def test_a_parsed_url_is_resolved_as_it_stands() -> None:
    """The dispatcher's already-parsed URL is checked and kept unchanged in the target."""
    url = parse_url("https://hooks.example:8443/in")
    asked: list[tuple[str, int]] = []

    def resolver(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return ["8.8.4.4"]

    target = resolve(url, allow_private=False, resolver=resolver)
    assert (target.url, target.address) == (url, "8.8.4.4")
    assert asked == [("hooks.example", 8443)], "the resolver is asked for the URL's port"


def test_the_system_resolver_resolves_localhost_and_refuses_it() -> None:
    """Real DNS: localhost is refused as loopback, and reached only with allow_private."""
    addresses = system_resolver("localhost", 80)
    assert addresses and len(addresses) == len(set(addresses))
    assert set(addresses) <= {"127.0.0.1", "::1"}
    assert system_resolver("127.0.0.1", 443) == ["127.0.0.1"]
    assert system_resolver("192.0.2.1", 80) == ["192.0.2.1"]
    assert system_resolver("2001:db8::1", 443) == ["2001:db8::1"]
    with pytest.raises(TargetError, match=r"^host localhost resolves to loopback address"):
        resolve("http://localhost:9/", allow_private=False)
    assert resolve("http://localhost:9/", allow_private=True).address in addresses


def test_a_host_name_that_cannot_be_encoded_is_refused_not_crashing() -> None:
    """A DNS label over 63 characters gives a 'cannot resolve' refusal, not a traceback."""
    host = "a" * 70 + ".example"
    with pytest.raises(TargetError, match=rf"^host {host}: cannot resolve: "):
        resolve(f"https://{host}/", allow_private=False)


def test_a_secret_carries_exactly_256_random_bits() -> None:
    """A secret is whsec_ plus 32 random bytes in URL-safe base64 (43 characters)."""
    secret = signing.new_secret()
    assert secret.startswith("whsec_") and len(secret) == 6 + 43
    assert all(c.isalnum() or c in "-_" for c in secret)


def _at(monkeypatch: pytest.MonkeyPatch, now: float) -> None:
    monkeypatch.setattr("time.time", lambda: now)


def test_verify_refuses_forged_replayed_and_malformed_headers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """signing.verify accepts only a fresh header whose v1 is the body's HMAC under the secret."""
    _at(monkeypatch, 1764633600.0)
    secret, body = "whsec_k", b'{"id":1}'
    good = signing.sign([secret], body)
    assert good.startswith("t=1764633600,v1=")
    assert signing.verify(secret, good, body)
    assert signing.verify(secret, good.replace(",", ", "), body), "spaces after commas are fine"
    assert not signing.verify("whsec_other", good, body)
    assert not signing.verify(secret, good, body + b" ")
    assert not signing.verify(secret, good.split(",")[1], body), "no t"
    assert not signing.verify(secret, "t=abc," + good.split(",")[1], body)
    want = hmac.new(b"whsec_k", b"1764633600." + body, hashlib.sha256).hexdigest()
    assert not signing.verify(secret, f"t=1764633600,v2={want}", body), "only v1 counts"
    assert not signing.verify(secret, f"t=1764633600,v1={want}=", body)


@pytest.mark.parametrize(
    "offset,tolerance,accepted",
    [
        (300, None, True),
        (-300, None, True),
        (301, None, False),
        (-301, None, False),
        (60, 60, True),
        (61, 60, False),
        (3600, None, False),
    ],
)
def test_verify_accepts_a_timestamp_within_the_tolerance_and_no_further(
    monkeypatch: pytest.MonkeyPatch, offset: int, tolerance: int | None, accepted: bool
) -> None:
    """A receiver's clock may be up to 300 s (or the given tolerance) off; beyond, a replay."""
    body = b"{}"
    header = signing.sign(["whsec_k"], body, timestamp=1764633600)
    _at(monkeypatch, 1764633600.0 + offset)
    if tolerance is None:
        assert signing.verify("whsec_k", header, body) is accepted
    else:
        assert signing.verify("whsec_k", header, body, tolerance) is accepted


def test_sign_uses_the_clock_when_no_time_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """A request signed now carries now's unix seconds, one v1 per secret in order."""
    _at(monkeypatch, 1764633600.9)
    header = signing.sign(["whsec_a", "whsec_b"], b"x")
    a = signing.signature("whsec_a", 1764633600, b"x")
    b = signing.signature("whsec_b", 1764633600, b"x")
    assert header == f"t=1764633600,v1={a},v1={b}"


def test_an_events_body_is_exactly_the_documented_json() -> None:
    """A receiver gets sorted compact UTF-8 JSON with every field, optional ones when set."""
    click = Event(
        type="click",
        message_uid="uid-1",
        occurred_at="2026-12-02T09:15:02.120534Z",
        url="https://shop.example/öffer",
        user_agent="UA/1",
        client_ip="198.51.100.7",
        recipient="ann@example.org",
        detail={"k": "v"},
        login="shop",
        message_id="<a1@shop.example>",
        id=4711,
        tags=("newsletter", "dec"),
        metadata={"customer": "42"},
    )
    assert (
        payload.body(payload.event_payload(click, "4dQm1x2Zb3z9"))
        == (
            '{"client_ip":"198.51.100.7","detail":{"k":"v"},"id":4711,"login":"shop",'
            '"message_id":"<a1@shop.example>","message_uid":"uid-1","metadata":{"customer":"42"},'
            '"occurred_at":"2026-12-02T09:15:02.120534Z","queue_id":"4dQm1x2Zb3z9",'
            '"recipient":"ann@example.org","tags":["newsletter","dec"],'
            '"type":"click","url":"https://shop.example/öffer","user_agent":"UA/1"}'
        ).encode()
    )
    bounce = Event(type="bounce", message_uid="uid-2", occurred_at="2026-12-02T10:00:00Z")
    assert payload.event_payload(bounce, None) == {
        "id": None,
        "type": "bounce",
        "occurred_at": "2026-12-02T10:00:00Z",
        "login": None,
        "message_uid": "uid-2",
        "queue_id": None,
        "message_id": None,
        "recipient": None,
        "tags": [],
        "metadata": {},
        "detail": {},
    }


def test_the_test_events_body_is_typed_test_with_id_0_and_no_message() -> None:
    """`webhooks test` sends id 0, type test, the login and a note, no message fields."""
    assert payload.body(payload.trial_payload("shop", "2026-12-02T10:00:00Z")) == (
        b'{"detail":{"note":"a test event sent by `smtpeter webhooks test`"},"id":0,'
        b'"login":"shop","message_id":null,"message_uid":null,"metadata":{},'
        b'"occurred_at":"2026-12-02T10:00:00Z","queue_id":null,"recipient":null,'
        b'"tags":[],"type":"test"}'
    )
