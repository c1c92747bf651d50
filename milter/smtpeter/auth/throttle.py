"""Slowing password guessing down: failed AUTHs counted per client address and per login.

The auth daemon is one process; every Postfix smtpd connection shares one
:class:`Throttle`, so a guesser gains nothing from opening more connections.

Per client address (Postfix's ``rip=``; IPv6 by its ``/ipv6_prefix`` network, since
one host usually holds a whole /64):

* The first ``throttle_after`` failures are answered as before (after the failure
  delay).
* From then on the address's attempts are *paced*: each one gets the next slot of a
  schedule kept per address, ``throttle_interval`` seconds after the one before, and
  its password is checked only when its slot comes. However many connections the
  guesser opens, at most one password a ``throttle_interval`` is checked. An attempt
  whose slot lies more than the reply budget ahead (:data:`MAX_REPLY_SECONDS`, under
  Postfix's 10 s limit) is refused at once, unchecked.
* Attempts still being checked count as possible failures: while an address's
  failures plus its attempts in flight reach ``throttle_after``, a further attempt is
  *held* (not paced: it takes no slot) until one of those is settled. So a burst of
  parallel guesses gets exactly ``throttle_after`` passwords checked before pacing
  starts, while a busy sender's burst of right passwords only waits for the checks
  ahead of it (which it would wait for in the hash threads anyway).
* At ``lockout_after`` failures the address is locked for ``lockout_seconds``: every
  attempt fails at once, its password unchecked. When the lock ends the count drops to
  ``throttle_after`` (still paced, ``lockout_after - throttle_after`` more failures
  lock it again); after ``lockout_seconds`` without a failure the address is
  forgotten.
* A success resets nothing: a guesser with a login of its own could otherwise clear
  its count between guesses.

Per login name (any address): once a login has ``throttle_after`` recent failures,
every attempt on it from an address that is not paced waits ``throttle_interval``
before its password is checked. That delay is bounded and nothing is ever refused
because of a login's count: someone else's guesses cannot lock a login out.

Addresses in ``exempt`` (by default loopback, as Postfix exempts ``$mynetworks`` from
its own rate limits) are never paced nor locked; their failures count per login only.

Both tables are LRU dictionaries of at most ``max_entries`` each; an address or login
that never failed takes no entry. Everything runs on the event loop's thread; the clock
is a parameter so tests can drive it.
"""

from __future__ import annotations

import ipaddress
import itertools
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "DEFAULT_EXEMPT",
    "MAX_REPLY_SECONDS",
    "REFUSALS",
    "Admission",
    "Refusal",
    "Standing",
    "Throttle",
]

#: The longest an attempt may be held before its password is checked, counted from
#: when its credentials arrived. Postfix gives up on a reply after 10 s; the rest is
#: for the hash check and the reply.
MAX_REPLY_SECONDS: Final = 8.0

#: Never paced nor locked (their failures still count per login, and are logged), as
#: Postfix exempts $mynetworks from its own rate limits: a local webmail or application
#: shares the server's address, and a guesser there is inside already.
DEFAULT_EXEMPT: Final = ("127.0.0.0/8", "::1")

Refusal = Literal["locked", "throttled"]
REFUSALS: Final[frozenset[str]] = frozenset({"locked", "throttled"})


@dataclass(slots=True)
class _Entry:
    failures: int = 0
    last_failure: float = -math.inf
    locked: bool = False
    locked_until: float = -math.inf
    next_slot: float = -math.inf


@dataclass(frozen=True, slots=True)
class Admission:
    """What :meth:`Throttle.admit` decided for one attempt."""

    address: str | None
    login: str | None
    #: Seconds to wait before checking the password.
    wait: float = 0.0
    #: Why the attempt is refused unchecked, or ``None`` if it goes ahead.
    refused: Refusal | None = None
    #: Ask again shortly: attempts in flight might still reach ``throttle_after``.
    hold: bool = False
    #: Admitted, so counted in flight until :meth:`Throttle.release`.
    _in_flight: bool = False


@dataclass(frozen=True, slots=True)
class Standing:
    """An address's and a login's counts, for the log line of a failure."""

    failures: int
    login_failures: int
    locked: bool
    #: This failure started the lock.
    lock_started: bool = False


class _Table:
    """An LRU dict of entries, each forgotten ``forget_after`` seconds after its last
    failure (or the end of its lock)."""

    def __init__(self, max_entries: int, forget_after: float) -> None:
        self.max_entries = max_entries
        self.forget_after = forget_after
        self.entries: OrderedDict[str, _Entry] = OrderedDict()

    def _stale(self, entry: _Entry, now: float) -> bool:
        quiet_since = max(entry.last_failure, entry.locked_until)
        return now >= quiet_since + self.forget_after

    def get(self, key: str, now: float) -> _Entry | None:
        entry = self.entries.get(key)
        if entry is None:
            return None
        if self._stale(entry, now):
            del self.entries[key]
            return None
        self.entries.move_to_end(key)
        return entry

    def get_or_add(self, key: str, now: float) -> _Entry:
        entry = self.get(key, now)
        if entry is not None:
            return entry
        entry = self.entries[key] = _Entry()
        # Drop what has gone quiet at the cold end, then the least recently used.
        for old_key, old in list(itertools.islice(self.entries.items(), 2)):
            if old is not entry and self._stale(old, now):
                del self.entries[old_key]
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)
        return entry

    def purge(self, now: float) -> int:
        stale = [k for k, e in self.entries.items() if self._stale(e, now)]
        for k in stale:
            del self.entries[k]
        return len(stale)


class Throttle:
    """Failure counts, per-address schedules and locks (see the module's docstring).

    ``throttle_after = 0`` turns pacing off, ``lockout_after = 0`` locking; failures
    are still counted for the log.
    """

    def __init__(
        self,
        *,
        throttle_after: int = 10,
        throttle_interval: float = 1.0,
        lockout_after: int = 30,
        lockout_seconds: float = 600.0,
        max_entries: int = 100000,
        ipv6_prefix: int = 64,
        exempt: Iterable[str] = DEFAULT_EXEMPT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if throttle_after < 0 or lockout_after < 0:
            raise ValueError("throttle_after and lockout_after must be at least 0")
        if not 0 < throttle_interval <= MAX_REPLY_SECONDS:
            raise ValueError(f"throttle_interval must be above 0 and at most {MAX_REPLY_SECONDS}")
        if lockout_seconds <= 0:
            raise ValueError("lockout_seconds must be positive")
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        if not 0 <= ipv6_prefix <= 128:
            raise ValueError("ipv6_prefix must be from 0 to 128")
        self.throttle_after = throttle_after
        self.throttle_interval = throttle_interval
        self.lockout_after = lockout_after
        self.lockout_seconds = lockout_seconds
        self.ipv6_prefix = ipv6_prefix
        self.exempt = tuple(ipaddress.ip_network(n, strict=False) for n in exempt)
        self._clock = clock
        self._addresses = _Table(max_entries, lockout_seconds)
        self._logins = _Table(max_entries, lockout_seconds)
        # Admitted attempts not yet settled, per address (bounded by the requests open).
        self._in_flight: dict[str, int] = {}
        # Where an address's count stands once its lock is over.
        if throttle_after and (not lockout_after or throttle_after < lockout_after):
            self._after_lock = throttle_after
        else:
            self._after_lock = 0

    # -- keys ----------------------------------------------------------------------------

    def address_key(self, rip: str | None) -> str | None:
        """The table key of a client address: the address itself, an IPv4-mapped IPv6
        address as IPv4, other IPv6 addresses by their ``/ipv6_prefix`` network; ``None``
        for an address in ``exempt`` (never paced nor locked, counted per login only)."""
        if not rip:
            return "unknown"
        try:
            ip = ipaddress.ip_address(rip)
        except ValueError:
            return rip[:64]
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in net for net in self.exempt):
            return None
        if isinstance(ip, ipaddress.IPv6Address) and self.ipv6_prefix < 128:
            return str(ipaddress.ip_network(f"{ip}/{self.ipv6_prefix}", strict=False))
        return str(ip)

    # -- state ---------------------------------------------------------------------------

    def _address(self, key: str | None, now: float) -> _Entry | None:
        if key is None:
            return None
        entry = self._addresses.get(key, now)
        if entry is not None and entry.locked and now >= entry.locked_until:
            entry.locked = False
            entry.failures = min(entry.failures, self._after_lock)
        return entry

    def locked(self, address: str | None) -> bool:
        """True while ``address`` is locked out."""
        entry = self._address(address, self._clock())
        return entry is not None and entry.locked

    def lock_remaining(self, address: str | None) -> float:
        """Seconds until the lock on ``address`` ends (0 if it is not locked)."""
        now = self._clock()
        entry = self._address(address, now)
        return entry.locked_until - now if entry is not None and entry.locked else 0.0

    def standing(self, address: str | None, login: str | None) -> Standing:
        """The counts as they are, without counting anything."""
        now = self._clock()
        entry = self._address(address, now)
        login_entry = self._logins.get(login, now) if login is not None else None
        return Standing(
            failures=entry.failures if entry is not None else 0,
            login_failures=login_entry.failures if login_entry is not None else 0,
            locked=entry is not None and entry.locked,
        )

    def __len__(self) -> int:
        """Addresses tracked (the login table is bounded the same way)."""
        return len(self._addresses.entries)

    @property
    def logins_tracked(self) -> int:
        return len(self._logins.entries)

    def purge(self) -> int:
        """Forget every entry gone quiet; return how many were dropped."""
        now = self._clock()
        return self._addresses.purge(now) + self._logins.purge(now)

    # -- attempts ------------------------------------------------------------------------

    def admit(
        self, address: str | None, login: str | None, *, budget: float = MAX_REPLY_SECONDS
    ) -> Admission:
        """Decide when the password of one attempt may be checked.

        ``budget`` is how long the attempt may still wait. Refused attempts take no slot
        and are not counted as failures; a held one should ask again a little later; an
        admitted one must be given back to :meth:`release` once its password was
        checked (or the check failed).
        """
        now = self._clock()
        if address is None:
            return Admission(address, login)
        entry = self._address(address, now)
        if entry is not None and entry.locked:
            return Admission(address, login, refused="locked")
        failures = entry.failures if entry is not None else 0
        in_flight = self._in_flight.get(address, 0)
        address_wait = 0.0
        paced = entry is not None and self.throttle_after > 0 and failures >= self.throttle_after
        if paced and entry is not None:
            slot = max(now, entry.next_slot)
            address_wait = slot - now
            if address_wait > budget:
                return Admission(address, login, refused="throttled")
            entry.next_slot = slot + self.throttle_interval
        elif self.throttle_after > 0 and failures + in_flight >= self.throttle_after:
            return Admission(address, login, hold=True)
        login_wait = 0.0
        if not paced and login is not None and self.throttle_after > 0:
            # A paced address's checks are spaced already; the login's delay is for
            # guesses spread over addresses that are not.
            login_entry = self._logins.get(login, now)
            if login_entry is not None and login_entry.failures >= self.throttle_after:
                login_wait = min(self.throttle_interval, max(0.0, budget))
        self._in_flight[address] = in_flight + 1
        return Admission(address, login, wait=address_wait + login_wait, _in_flight=True)

    def release(self, admission: Admission) -> None:
        """An admitted attempt is over (call before :meth:`fail` for a failure)."""
        if not admission._in_flight or admission.address is None:
            return
        left = self._in_flight.get(admission.address, 0) - 1
        if left > 0:
            self._in_flight[admission.address] = left
        else:
            self._in_flight.pop(admission.address, None)

    def fail(self, address: str | None, login: str | None) -> Standing:
        """Count one failed attempt against ``address`` (unless exempt: ``None``) and
        ``login``; lock the address when it reaches ``lockout_after``."""
        now = self._clock()
        failures, locked, lock_started = 0, False, False
        if address is not None:
            self._address(address, now)  # ends an expired lock first
            entry = self._addresses.get_or_add(address, now)
            entry.failures += 1
            entry.last_failure = now
            if self.lockout_after and entry.failures >= self.lockout_after and not entry.locked:
                entry.locked = True
                entry.locked_until = now + self.lockout_seconds
                lock_started = True
            failures, locked = entry.failures, entry.locked
        login_failures = 0
        if login is not None:
            login_entry = self._logins.get_or_add(login, now)
            login_entry.failures += 1
            login_entry.last_failure = now
            login_failures = login_entry.failures
        return Standing(failures, login_failures, locked, lock_started)
