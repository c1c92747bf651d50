"""Signed tracking tokens for click links, open pixels and unsubscribe links.

A token is ``<kid>.<payload>.<mac>``: the id of the key that signed it, the
base64url JSON payload ``[kind, message uid, issued (unix day), url]`` and the first
16 bytes of HMAC-SHA256 over ``<kid>.<payload>``. An unsubscribe token (kind ``u``)
carries the recipient in the place of the url: the message's only recipient, or
null for a message sent to several (they share one List-Unsubscribe header). The
URL travels inside the token, so any node holding the keys (they live in the shared
store) can serve any link without a lookup, and a tampered token never verifies:
the tracker is never an open redirect.

Return paths for bounce tracking use a shorter form that fits an address's local
part (64 characters at most) and survives MTAs that change letter case:
``<uid>.<issued day, hex>.<kid>.<mac>``, all lowercase base32 and hex. The
unsubscribe mailto (``unsubscribe+<token>@<bounce domain>``) uses the same form
under another purpose, so neither token verifies as the other.

Keys rotate: new tokens are signed with the newest key; a retired key still verifies
the tokens it signed for ``key_retention`` seconds after its retirement. A token is
also refused once it is older than ``link_lifetime``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

Kind = Literal["c", "o", "u"]
# What a return-path style token is for: "b" a return path, "u" an unsubscribe mailto.
Purpose = Literal["b", "u"]
_DAY = 86400
_MAC_BYTES = 16


@dataclass(frozen=True)
class SigningKey:
    kid: str
    secret: bytes
    created_at: float
    retired_at: float | None = None


@dataclass(frozen=True)
class Claim:
    kind: Kind
    message_uid: str
    issued_day: int
    url: str | None
    # Unsubscribe tokens: the recipient, None when the message had several.
    recipient: str | None = None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    def __init__(
        self,
        keys: Sequence[SigningKey],
        *,
        link_lifetime: float,
        key_retention: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = {k.kid: k for k in keys}
        active = [k for k in keys if k.retired_at is None]
        self._current = max(active, key=lambda k: k.created_at) if active else None
        self.link_lifetime = link_lifetime
        self.key_retention = key_retention
        self._clock = clock

    @property
    def can_sign(self) -> bool:
        return self._current is not None

    def _mac(self, key: SigningKey, signed: str) -> bytes:
        return hmac.new(key.secret, signed.encode("ascii"), hashlib.sha256).digest()[:_MAC_BYTES]

    def sign_unsubscribe(self, message_uid: str, recipient: str | None) -> str:
        """The token of an unsubscribe link: the message and its only recipient (None
        for a message to several)."""
        return self.sign("u", message_uid, recipient)

    def sign(self, kind: Kind, message_uid: str, url: str | None = None) -> str:
        if self._current is None:
            raise LookupError("no active signing key")
        day = int(self._clock() // _DAY)
        payload = _b64(
            json.dumps([kind, message_uid, day, url], separators=(",", ":")).encode("utf-8")
        )
        signed = f"{self._current.kid}.{payload}"
        return f"{signed}.{_b64(self._mac(self._current, signed))}"

    def _usable_key(self, kid: str, now: float) -> SigningKey | None:
        """The key with this id, unless it was retired longer ago than the retention."""
        key = self._keys.get(kid)
        if key is None or (
            key.retired_at is not None and now > key.retired_at + self.key_retention
        ):
            return None
        return key

    def sign_return_path(self, message_uid: str, purpose: Purpose = "b") -> str:
        """The token of a VERP return path's local part (lowercase; ~45 characters);
        with purpose "u", of an unsubscribe mailto's."""
        if self._current is None:
            raise LookupError("no active signing key")
        signed = f"{message_uid.lower()}.{int(self._clock() // _DAY):x}.{self._current.kid}"
        return f"{signed}.{self._return_path_mac(self._current, signed, purpose)}"

    def _return_path_mac(self, key: SigningKey, signed: str, purpose: Purpose) -> str:
        data = purpose.encode("ascii") + b"." + signed.encode("ascii")
        mac = hmac.new(key.secret, data, hashlib.sha256).digest()
        return base64.b32encode(mac[:10]).decode("ascii").lower()

    def verify_return_path(self, token: str, lifetime: float, purpose: Purpose = "b") -> str | None:
        """The message uid of a genuine return path token (of that purpose) not older
        than ``lifetime`` seconds; None for anything else. Letter case is ignored."""
        parts = token.lower().split(".")
        if len(parts) != 4 or not all(p.isascii() for p in parts):
            return None
        uid, day_hex, kid, mac = parts
        now = self._clock()
        key = self._usable_key(kid, now)
        if key is None:
            return None
        expected = self._return_path_mac(key, f"{uid}.{day_hex}.{kid}", purpose)
        if not hmac.compare_digest(mac, expected):
            return None
        try:
            day = int(day_hex, 16)
        except ValueError:
            return None
        if now - day * _DAY > lifetime + _DAY:
            return None
        return uid

    def verify(self, token: str) -> Claim | None:
        """The claim of a genuine, unexpired token; None for anything else."""
        parts = token.split(".")
        if len(parts) != 3:
            return None
        kid, payload, mac = parts
        now = self._clock()
        key = self._usable_key(kid, now)
        if key is None:
            return None
        try:
            given = _unb64(mac)
            data = json.loads(_unb64(payload))
        except (binascii.Error, ValueError):
            return None
        # The canonical spelling only: base64 decoding ignores the spare low bits of
        # the last character and skips characters outside the alphabet, so without
        # this several spellings of one MAC would verify.
        if _b64(given) != mac:
            return None
        if not hmac.compare_digest(given, self._mac(key, f"{kid}.{payload}")):
            return None
        if not (isinstance(data, list) and len(data) == 4):
            return None
        kind, uid, day, url = data
        if kind not in ("c", "o", "u") or not isinstance(uid, str) or not isinstance(day, int):
            return None
        if kind == "u":
            # The recipient, or null (a message to several).
            if url is not None and not isinstance(url, str):
                return None
        elif (kind == "c") != isinstance(url, str):
            return None
        if now - day * _DAY > self.link_lifetime + _DAY:
            return None
        if kind == "u":
            return Claim(kind=kind, message_uid=uid, issued_day=day, url=None, recipient=url)
        return Claim(kind=kind, message_uid=uid, issued_day=day, url=url)
