"""A cache of verified credentials, so a busy sender does not pay argon2 on every AUTH.

Like Dovecot's auth cache, it remembers that a (login, password) pair verified against a
given password hash. The clear password is never kept: the key is
``HMAC-SHA256(secret, name + "\\0" + password)`` with a secret drawn at random for each
process, so a memory dump does not give a guessable table either.

A hit counts only while the login's *current* hash equals the one that was verified
(a password change drops it) and the login is enabled; the caller looks the login up on
every request and passes both in.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["CredentialCache"]


@dataclass(frozen=True, slots=True)
class _Entry:
    password_hash: str
    expires: float


class CredentialCache:
    """Verified (login, password) pairs with a time to live and a size bound.

    ``ttl <= 0`` or ``max_entries <= 0`` disables the cache. When full, the oldest entry
    is evicted. Thread-safe.
    """

    def __init__(
        self,
        ttl: float = 300.0,
        max_entries: int = 10000,
        *,
        clock: Callable[[], float] = time.monotonic,
        secret: bytes | None = None,
    ) -> None:
        self._ttl = ttl
        self._max_entries = max_entries
        self._clock = clock
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self._ttl > 0 and self._max_entries > 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _key(self, name: str, password: str) -> bytes:
        material = (name + "\0" + password).encode("utf-8", "surrogatepass")
        return hmac.new(self._secret, material, hashlib.sha256).digest()

    def check(self, name: str, password: str, password_hash: str, *, enabled: bool = True) -> bool:
        """True if this pair was verified against ``password_hash`` and has not expired.

        A stale entry (expired, another hash, login disabled) is dropped.
        """
        if not self.enabled:
            return False
        key = self._key(name, password)
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return False
            if not enabled or entry.expires <= now or entry.password_hash != password_hash:
                del self._entries[key]
                return False
            return True

    def store(self, name: str, password: str, password_hash: str) -> None:
        """Remember that ``password`` verified against ``password_hash`` for ``name``."""
        if not self.enabled:
            return
        key = self._key(name, password)
        entry = _Entry(password_hash, self._clock() + self._ttl)
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = entry
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)

    def discard(self, name: str, password: str) -> None:
        """Forget one pair, if cached."""
        key = self._key(name, password)
        with self._lock:
            self._entries.pop(key, None)

    def purge_expired(self) -> int:
        """Drop every expired entry; return how many were dropped."""
        now = self._clock()
        with self._lock:
            stale = [k for k, e in self._entries.items() if e.expires <= now]
            for k in stale:
                del self._entries[k]
            return len(stale)

    def clear(self) -> None:
        """Forget everything (e.g. on SIGHUP or after an admin changed logins)."""
        with self._lock:
            self._entries.clear()
