"""The signing keys, as every process that signs or verifies tracking tokens sees them.

The keys live in the shared store, so a key rotated on one relay node (``smtpeter keys
rotate``) reaches the others: a :class:`KeyRing` keeps a :class:`Signer` built from the
store and reloads it at most every ``reload_seconds``. The reload never holds up a
caller: a stale signer is still handed out while a background thread reads the store,
and a store that cannot be read keeps the keys already known (with a warning).

A token whose key id is not known yet (rotated elsewhere moments ago) may ask for an
early reload, at most once per ``unknown_kid_interval`` so that garbage tokens cannot
turn into a store query each.
"""

from __future__ import annotations

import base64
import logging
import secrets
import threading
import time
from collections.abc import Callable

from smtpeter.config import TrackerConfig
from smtpeter.store import Store, StoreError
from smtpeter.tracker.signing import Signer, SigningKey

log = logging.getLogger("smtpeter.tracker.keys")

_DAY = 86400.0
SECRET_BYTES = 32


def new_key(clock: Callable[[], float] = time.time) -> SigningKey:
    """A fresh key: 32 random bytes, an id of 8 random base32 characters."""
    kid = base64.b32encode(secrets.token_bytes(5)).decode("ascii").lower()
    return SigningKey(kid=kid, secret=secrets.token_bytes(SECRET_BYTES), created_at=clock())


def rotate(store: Store, clock: Callable[[], float] = time.time) -> SigningKey:
    """Add a new key and retire every other one (their links keep working for the
    key retention period). Returns the new key."""
    key = new_key(clock)
    store.add_signing_key(key, retire_others=True)
    log.info("signing key %s created; the previous keys are retired", key.kid)
    return key


class KeyRing:
    """A thread-safe, periodically reloaded :class:`Signer` over the store's keys.

    Construction reads the store (and creates the first key when there is none), so
    it raises StoreError when the store cannot be used: a daemon should not start
    without keys.
    """

    def __init__(
        self,
        store: Store,
        *,
        link_lifetime: float,
        key_retention: float,
        reload_seconds: float = 60.0,
        unknown_kid_interval: float = 5.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._link_lifetime = link_lifetime
        self._key_retention = key_retention
        self._reload_seconds = reload_seconds
        self._unknown_kid_interval = unknown_kid_interval
        self._clock = clock
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._refreshing = False
        self._last_unknown_reload = -unknown_kid_interval
        keys = store.signing_keys()
        if not any(k.retired_at is None for k in keys):
            # Two nodes starting at once may both create one: both keys are valid and
            # the newer one signs, so the race is harmless.
            key = new_key(clock)
            store.add_signing_key(key)
            log.info("no active signing key in the store: created key %s", key.kid)
            keys = store.signing_keys()
        self._install(keys)

    @classmethod
    def from_config(
        cls,
        store: Store,
        cfg: TrackerConfig,
        *,
        reload_seconds: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> KeyRing:
        return cls(
            store,
            link_lifetime=cfg.link_lifetime_days * _DAY,
            key_retention=cfg.key_retention_days * _DAY,
            reload_seconds=reload_seconds,
            clock=clock,
        )

    def _install(self, keys: list[SigningKey]) -> None:
        signer = Signer(
            keys,
            link_lifetime=self._link_lifetime,
            key_retention=self._key_retention,
            clock=self._clock,
        )
        # Plain attribute stores: readers see either the old or the new pair, both valid.
        self._kids = frozenset(k.kid for k in keys)
        self._signer = signer
        self._loaded_at = self._monotonic()

    def signer(self) -> Signer:
        """The current signer; starts a background reload when it is older than the
        reload period (the caller gets the current one meanwhile)."""
        if self._monotonic() - self._loaded_at >= self._reload_seconds:
            self._reload_in_background()
        return self._signer

    def knows(self, kid: str) -> bool:
        return kid in self._kids

    def reload(self) -> Signer:
        """Read the keys from the store now (blocking). On StoreError the previous
        keys stay in use and the error is logged (and not raised)."""
        try:
            keys = self._store.signing_keys()
        except StoreError as e:
            log.warning("cannot reload signing keys, keeping the %d known: %s", len(self._kids), e)
            # Try again after a full period rather than on every request.
            self._loaded_at = self._monotonic()
            return self._signer
        with self._lock:
            self._install(keys)
        return self._signer

    def reload_for_unknown(self, kid: str) -> bool:
        """Reload now (blocking) if ``kid`` is unknown and no such reload happened in the
        last ``unknown_kid_interval`` seconds; True if it is known afterwards. Meant to be
        run off the event loop (it reads the store)."""
        if kid in self._kids:
            return True
        with self._lock:
            now = self._monotonic()
            if now - self._last_unknown_reload < self._unknown_kid_interval:
                return False
            self._last_unknown_reload = now
        self.reload()
        return kid in self._kids

    def _reload_in_background(self) -> None:
        with self._lock:
            if self._refreshing:
                return
            self._refreshing = True

        def run() -> None:
            try:
                self.reload()
            finally:
                with self._lock:
                    self._refreshing = False

        threading.Thread(target=run, name="smtpeter-keyring", daemon=True).start()

    def rotate(self, store: Store | None = None) -> SigningKey:
        """Add a new key retiring the others (in ``store``, by default this ring's), and
        use it at once in this process."""
        key = rotate(store if store is not None else self._store, self._clock)
        self.reload()
        return key
