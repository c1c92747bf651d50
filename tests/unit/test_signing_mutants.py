"""Tracking tokens as their format documents them, found by mutation testing
(scripts/mutation) to be otherwise unchecked: exact tokens computed by hand from the
documented format, the newest key signing, the edges of expiry and key retention, and
well-signed tokens of the wrong shape. Mutants left alive on purpose, and why, are in
tests/README.md."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from smtpeter.tracker.signing import Claim, Signer, SigningKey

DAY = 86400
SECRET = bytes(range(32))
ISSUED = 20000  # the unix day tokens are issued on here (2024-10-04)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def click_token(payload: object, *, kid: str = "k1", secret: bytes = SECRET) -> str:
    """A token made by hand from the documented format: <kid>.<payload>.<mac>, the
    payload base64url JSON, the MAC the first 16 bytes of HMAC-SHA256."""
    body = b64(json.dumps(payload, separators=(",", ":")).encode("utf-8"))
    signed = f"{kid}.{body}"
    return f"{signed}.{b64(hmac.new(secret, signed.encode(), hashlib.sha256).digest()[:16])}"


def return_path(uid: str, day: int, *, kid: str = "k1", secret: bytes = SECRET) -> str:
    signed = f"{uid}.{day:x}.{kid}"
    mac = hmac.new(secret, b"b." + signed.encode(), hashlib.sha256).digest()[:10]
    return f"{signed}.{base64.b32encode(mac).decode().lower()}"


def signer(
    *keys: SigningKey, now: float, lifetime: float = 30 * DAY, retention: float = 60 * DAY
) -> Signer:
    return Signer(
        list(keys or [SigningKey("k1", SECRET, 0.0)]),
        link_lifetime=lifetime,
        key_retention=retention,
        clock=Clock(now),
    )


def test_a_click_token_is_exactly_the_documented_format() -> None:
    s = signer(now=ISSUED * DAY + 3600)
    # Computed by hand once (HMAC-SHA256 with the secret 00 01 .. 1f), written out.
    assert s.sign("c", "msg-1", "https://example.com/a?b=1") == (
        "k1.WyJjIiwibXNnLTEiLDIwMDAwLCJodHRwczovL2V4YW1wbGUuY29tL2E_Yj0xIl0.xV6eOdgr5_zS1yqMqZVytg"
    )


def test_tokens_match_the_format_for_payloads_of_every_length() -> None:
    s = signer(now=ISSUED * DAY + 1)
    for n in range(60):
        uid, url = f"m{n}", "https://example.com/" + "p" * (n % 7)
        expected = click_token(["c", uid, ISSUED, url])
        assert s.sign("c", uid, url) == expected
        # ... and a token made elsewhere to the same format (another node) verifies.
        assert s.verify(expected) == Claim("c", uid, ISSUED, url)


@pytest.mark.parametrize("order", [1, -1])
def test_the_newest_active_key_signs(order: int) -> None:
    older = SigningKey("old1", b"o" * 32, created_at=100.0)
    newer = SigningKey("new1", b"n" * 32, created_at=200.0)
    retired = SigningKey("gone", b"g" * 32, created_at=300.0, retired_at=400.0)
    s = signer(*[older, newer, retired][::order], now=ISSUED * DAY)
    assert s.sign("o", "m").startswith("new1.")
    assert s.sign_return_path("m").split(".")[2] == "new1"


def test_only_retired_keys_cannot_sign_but_still_verify() -> None:
    retired = SigningKey("k1", SECRET, created_at=0.0, retired_at=ISSUED * DAY)
    s = signer(retired, now=ISSUED * DAY + DAY)
    assert not s.can_sign
    with pytest.raises(LookupError) as click:
        s.sign("o", "m")
    assert str(click.value) == "no active signing key"
    with pytest.raises(LookupError) as bounce:
        s.sign_return_path("m")
    assert str(bounce.value) == "no active signing key"
    assert s.verify(click_token(["o", "m", ISSUED, None])) == Claim("o", "m", ISSUED, None)
    assert s.verify_return_path(return_path("m", ISSUED), 30 * DAY) == "m"


def test_a_retired_key_verifies_for_exactly_the_retention() -> None:
    retired_at = ISSUED * DAY + 5.0
    key = SigningKey("k1", SECRET, created_at=0.0, retired_at=retired_at)
    token, bounce = click_token(["o", "m", ISSUED, None]), return_path("m", ISSUED)
    last = signer(key, now=retired_at + 10 * DAY, lifetime=400 * DAY, retention=10 * DAY)
    assert last.verify(token) == Claim("o", "m", ISSUED, None)
    assert last.verify_return_path(bounce, 400 * DAY) == "m"
    late = signer(key, now=retired_at + 10 * DAY + 1, lifetime=400 * DAY, retention=10 * DAY)
    assert late.verify(token) is None
    assert late.verify_return_path(bounce, 400 * DAY) is None


def test_a_click_token_expires_a_day_after_its_lifetime_from_its_issue_day() -> None:
    token = click_token(["c", "m", ISSUED, "https://example.com/"])
    edge = ISSUED * DAY + 30 * DAY + DAY  # issued "on day ISSUED": the day is the slack
    assert signer(now=edge).verify(token) == Claim("c", "m", ISSUED, "https://example.com/")
    assert signer(now=edge - 1).verify(token) == Claim("c", "m", ISSUED, "https://example.com/")
    assert signer(now=edge + 1).verify(token) is None


def test_a_token_issued_late_in_the_day_carries_that_day() -> None:
    s = signer(now=ISSUED * DAY + DAY - 0.5)
    token = s.sign("o", "m")
    assert token == click_token(["o", "m", ISSUED, None])
    assert s.verify(token) == Claim("o", "m", ISSUED, None)


@pytest.mark.parametrize(
    "payload",
    [
        ["c", "m", ISSUED],
        ["c", "m", ISSUED, "https://example.com/", "extra"],
        [],
        {"c": 1, "m": 2, "d": 3, "u": 4},
        "abcd",
        ["x", "m", ISSUED, None],
        ["c", 7, ISSUED, "https://example.com/"],
        ["o", ["m"], ISSUED, None],
        ["o", "m", str(ISSUED), None],
        ["o", "m", ISSUED + 0.5, None],
        ["c", "m", ISSUED, None],
        ["o", "m", ISSUED, "https://example.com/"],
    ],
)
def test_a_well_signed_token_of_the_wrong_shape_is_refused(payload: object) -> None:
    assert signer(now=ISSUED * DAY).verify(click_token(payload)) is None


def test_a_return_path_is_exactly_the_documented_format() -> None:
    s = signer(now=ISSUED * DAY + 3600)
    # Computed by hand once: HMAC-SHA256 over "b." + signed, 10 bytes, base32.
    assert s.sign_return_path("4F3A21B0C9") == "4f3a21b0c9.4e20.k1.zgahhl5vgcr2cmtc"
    assert s.verify_return_path("4f3a21b0c9.4e20.k1.zgahhl5vgcr2cmtc", 30 * DAY) == "4f3a21b0c9"
    # MTAs may change the case of a local part.
    assert s.verify_return_path("4F3A21B0C9.4E20.K1.ZGAHHL5VGCR2CMTC", 30 * DAY) == "4f3a21b0c9"


def test_a_return_path_mac_covers_the_uid_and_is_not_a_click_mac() -> None:
    s = signer(now=ISSUED * DAY)
    genuine = return_path("aaaa", ISSUED)
    forged = "bbbb" + genuine[len("aaaa") :]
    assert s.verify_return_path(genuine, 30 * DAY) == "aaaa"
    assert s.verify_return_path(forged, 30 * DAY) is None
    # The same key's MAC over the same text without the "b." domain prefix is refused.
    signed = f"aaaa.{ISSUED:x}.k1"
    plain = hmac.new(SECRET, signed.encode(), hashlib.sha256).digest()[:10]
    assert s.verify_return_path(f"{signed}.{base64.b32encode(plain).decode()}", 30 * DAY) is None


@pytest.mark.parametrize("token", ["", "a.b.c", "aaaa.4e20.k1", "aaaa.4e20.k1.mac.more"])
def test_a_return_path_with_the_wrong_number_of_parts_is_refused(token: str) -> None:
    assert signer(now=ISSUED * DAY).verify_return_path(token, 30 * DAY) is None


def test_a_return_path_expires_a_day_after_its_lifetime_from_its_issue_day() -> None:
    token = return_path("aaaa", ISSUED)
    edge = ISSUED * DAY + 7 * DAY + DAY
    assert signer(now=edge).verify_return_path(token, 7 * DAY) == "aaaa"
    assert signer(now=edge + 1).verify_return_path(token, 7 * DAY) is None
    # Forty days old with a thirty-day lifetime: long expired.
    assert signer(now=(ISSUED + 40) * DAY).verify_return_path(token, 30 * DAY) is None


def test_an_unsubscribe_token_names_its_message_day_and_recipient() -> None:
    """An unsubscribe link's token verifies to its message, the day it was issued and
    the recipient it names (none for a message to several); its mailto form is not a
    return path, nor a return path an unsubscribe mailto."""
    s = signer(now=ISSUED * DAY + 5)
    assert s.verify(s.sign_unsubscribe("m", "ann@example.org")) == Claim(
        kind="u", message_uid="m", issued_day=ISSUED, url=None, recipient="ann@example.org"
    )
    assert s.verify(s.sign_unsubscribe("m", None)) == Claim(
        kind="u", message_uid="m", issued_day=ISSUED, url=None, recipient=None
    )
    mailto, bounce = s.sign_return_path("m", purpose="u"), return_path("m", ISSUED)
    assert s.verify_return_path(mailto, 30 * DAY, purpose="u") == "m"
    assert s.verify_return_path(mailto, 30 * DAY) is None
    assert s.verify_return_path(bounce, 30 * DAY, purpose="u") is None
