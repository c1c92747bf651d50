"""The signature a receiver checks: HMAC-SHA256 over "<t>.<body>", verified the way the
README shows, with both secrets during a rotation."""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from smtpeter.webhooks import signing

README = Path(__file__).parents[2] / "README.md"


def _readme_verify() -> Callable[..., bool]:
    """The receiver's verify() exactly as the README prints it."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Webhooks") :]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code, "the README's Webhooks section shows a receiver in Python"
    namespace: dict[str, object] = {}
    exec(code.group(1), namespace)
    verify = namespace["verify"]
    assert callable(verify)
    return verify


def test_the_header_is_t_and_v1_over_timestamp_and_exact_body() -> None:
    """The documented header: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">."""
    body = b'{"id":1,"type":"open"}'
    header = signing.sign(["whsec_k"], body, timestamp=1764633600)
    want = hmac.new(b"whsec_k", b"1764633600." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1764633600,v1={want}"


def test_a_receiver_verifies_as_the_readme_shows() -> None:
    """The README's receiver accepts a genuine request and refuses forged or replayed ones."""
    verify = _readme_verify()
    secret = signing.new_secret()
    body = b'{"id":7,"type":"click"}'
    header = signing.sign([secret], body)
    assert verify(secret, header, body)
    assert signing.verify(secret, header, body)
    assert not verify(secret, header, body + b" ")
    assert not verify(signing.new_secret(), header, body)
    old = signing.sign([secret], body, timestamp=int(time.time()) - 3600)
    assert not verify(secret, old, body), "an hour-old request is a replay"
    assert not verify(secret, "v1=" + "0" * 64, body)


def test_during_a_rotation_either_secret_verifies() -> None:
    """While an old secret overlaps, a receiver on either secret accepts the request."""
    verify = _readme_verify()
    old, new = signing.new_secret(), signing.new_secret()
    body = b"{}"
    header = signing.sign([new, old], body)
    assert header.count("v1=") == 2
    assert verify(new, header, body) and verify(old, header, body)
    assert not verify(signing.new_secret(), header, body)


def test_secrets_are_long_random_and_distinct() -> None:
    """Each endpoint's secret carries 256 random bits."""
    made = {signing.new_secret() for _ in range(50)}
    assert len(made) == 50
    assert all(s.startswith("whsec_") and len(s) >= 6 + 43 for s in made)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda h: "junk," + h,
        lambda h: h.replace("v1=", "v1=0", 1) + ",junk",
        lambda h: h + ",v1=\u00e9\u00e9",
        lambda h: h.replace("v1=", "v1=\u00e9", 1),
        lambda h: ",,=," + h.replace("v1=", "v1=f", 1),
    ],
    ids=["junk-first", "junk-after-a-wrong-v1", "non-ascii-extra", "non-ascii-v1", "empty-parts"],
)
def test_a_mangled_header_is_refused_not_an_error(mangle: Callable[[str], str]) -> None:
    """A receiver given a header with parts that are not key=value, or not ASCII, says
    no (or yes, if a genuine v1 is still there) instead of raising."""
    body = b'{"id": 1}'
    header = signing.sign(["whsec_a"], body)
    mangled = mangle(header)
    genuine = f"v1={signing.signature('whsec_a', int(header[2:].split(',')[0]), body)}"
    assert signing.verify("whsec_a", mangled, body) is (genuine in mangled.split(","))
    assert _readme_verify()("whsec_a", mangled, body) is (genuine in mangled.split(","))
