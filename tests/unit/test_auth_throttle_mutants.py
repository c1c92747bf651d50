"""The guessing throttle's rules at their exact edges, found by mutation testing
(scripts/mutation, see tests/README.md): when an address is paced, held, locked,
unlocked and forgotten, what a lock leaves behind, which entries the bounded tables
drop, and the settings the daemon refuses. All on the fake clock, through the
throttle's own methods (what the auth daemon calls)."""

from __future__ import annotations

import pytest

from smtpeter.auth.throttle import MAX_REPLY_SECONDS, Admission, Standing, Throttle
from tests.unit.test_auth_throttle import ATTACKER, OTHER, Clock, fail_once, make
from tests.unit.test_auth_throttle import clock as clock

# -- settings ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"throttle_after": 0},
        {"lockout_after": 0},
        {"throttle_interval": MAX_REPLY_SECONDS},
        {"throttle_interval": 0.001},
        {"lockout_seconds": 0.001},
        {"max_entries": 1},
        {"ipv6_prefix": 0},
        {"ipv6_prefix": 128},
    ],
)
def test_settings_at_their_limits_are_accepted(kwargs: dict[str, float]) -> None:
    """The daemon starts with each setting at the edge of its allowed range."""
    Throttle(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"throttle_after": -1}, "throttle_after and lockout_after must be at least 0"),
        ({"lockout_after": -1}, "throttle_after and lockout_after must be at least 0"),
        ({"throttle_interval": -1}, "throttle_interval must be above 0 and at most 8.0"),
        ({"throttle_interval": 8.001}, "throttle_interval must be above 0 and at most 8.0"),
        ({"lockout_seconds": -1}, "lockout_seconds must be positive"),
        ({"max_entries": -1}, "max_entries must be at least 1"),
        ({"ipv6_prefix": -1}, "ipv6_prefix must be from 0 to 128"),
    ],
)
def test_refused_settings_say_why(kwargs: dict[str, float], message: str) -> None:
    """A setting out of range stops the daemon with a message naming the setting."""
    with pytest.raises(ValueError, match=f"^{message}$"):
        Throttle(**kwargs)  # type: ignore[arg-type]


# -- address keys ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rip", "prefix", "key"),
    [
        ("", 64, "unknown"),
        ("x" * 100, 64, "x" * 64),
        ("y" * 64, 64, "y" * 64),
        ("2001:db8::1", 0, "::/0"),
        ("2001:db8::1", 127, "2001:db8::/127"),
        ("2001:db8::1", 128, "2001:db8::1"),
        ("192.0.2.7", 0, "192.0.2.7"),
        ("::ffff:192.0.2.7", 0, "192.0.2.7"),
    ],
)
def test_address_key_edges(rip: str, prefix: int, key: str) -> None:
    """What counts as one client: garbage cut to 64 characters, IPv6 by its prefix
    (none at /128), IPv4 and IPv4-mapped addresses always by the address itself."""
    assert Throttle(ipv6_prefix=prefix).address_key(rip) == key


# -- pacing and holding ------------------------------------------------------------------


def test_pacing_starts_exactly_at_throttle_after(clock: Clock) -> None:
    """Nine failures leave the next attempt unpaced; the tenth makes the one after wait."""
    throttle = make(clock, lockout_after=0)
    for _ in range(9):
        fail_once(throttle, ATTACKER, None)
    # Slots only start being handed out once paced: two checks in a row are not spaced.
    assert fail_once(throttle, ATTACKER, None) == 0.0
    assert [throttle.admit(ATTACKER, None).wait for _ in range(3)] == [0.0, 1.0, 2.0]


@pytest.mark.parametrize(("budget", "refused"), [(2.0, None), (1.999, "throttled")])
def test_a_slot_exactly_at_the_budget_is_still_given(
    clock: Clock, budget: float, refused: str | None
) -> None:
    """An attempt whose slot comes exactly when its budget ends is checked; later, refused."""
    throttle = make(clock, lockout_after=0)
    for _ in range(10):
        fail_once(throttle, ATTACKER, None)
    throttle.admit(ATTACKER, None)
    throttle.admit(ATTACKER, None)
    admission = throttle.admit(ATTACKER, None, budget=budget)
    assert admission.refused == refused
    # A refused attempt takes no slot: the next one gets the same one.
    expected = 3.0 if refused is None else 2.0
    assert throttle.admit(ATTACKER, None).wait == expected


def test_slots_follow_the_schedule_not_the_request_time(clock: Clock) -> None:
    """Slots are one interval apart from the last slot given, and start from now once the
    schedule has fallen behind."""
    throttle = make(clock, lockout_after=0, throttle_interval=2.0)
    for _ in range(10):
        fail_once(throttle, ATTACKER, None)
    assert throttle.admit(ATTACKER, None).wait == 0.0
    clock.now += 0.5
    assert throttle.admit(ATTACKER, None).wait == 1.5
    clock.now += 10
    assert throttle.admit(ATTACKER, None).wait == 0.0
    assert throttle.admit(ATTACKER, None).wait == 2.0


def test_held_attempts_free_up_as_checks_in_flight_are_released(clock: Clock) -> None:
    """With throttle_after checks in flight the next attempt is held; releasing one
    (a right password) lets exactly one more through; a held or refused attempt given
    back frees nothing."""
    throttle = make(clock, throttle_after=3)
    admitted = [throttle.admit(ATTACKER, "alice") for _ in range(3)]
    assert [a.hold for a in admitted] == [False, False, False]
    held = throttle.admit(ATTACKER, "alice")
    assert held == Admission(ATTACKER, "alice", hold=True)
    throttle.release(held)
    assert throttle.admit(ATTACKER, "alice").hold
    throttle.release(admitted[0])
    again = throttle.admit(ATTACKER, "alice")
    assert not again.hold and again.wait == 0.0
    assert throttle.admit(ATTACKER, "alice").hold
    for a in [*admitted[1:], again]:
        throttle.release(a)
    # All given back, twice even: three more go through, the fourth is held.
    for a in admitted:
        throttle.release(a)
    assert [throttle.admit(ATTACKER, "alice").hold for _ in range(4)] == [
        False,
        False,
        False,
        True,
    ]


def test_in_flight_and_failures_add_up_to_the_hold(clock: Clock) -> None:
    """Two failures and one check in flight hold the next attempt at throttle_after=3;
    another address is not held by them."""
    throttle = make(clock, throttle_after=3)
    fail_once(throttle, ATTACKER)
    fail_once(throttle, ATTACKER)
    first = throttle.admit(ATTACKER, "alice")
    assert not first.hold
    assert throttle.admit(ATTACKER, "alice").hold
    assert not throttle.admit(OTHER, "bob").hold
    throttle.release(first)
    assert not throttle.admit(ATTACKER, "alice").hold


def test_no_pacing_nor_holding_when_throttle_after_is_zero(clock: Clock) -> None:
    """throttle_after=0 turns pacing off: nothing waits or is held, whatever the counts."""
    throttle = make(clock, throttle_after=0, lockout_after=0)
    for _ in range(50):
        fail_once(throttle, ATTACKER, "alice")
    burst = [throttle.admit(ATTACKER, "alice") for _ in range(20)]
    assert {(a.wait, a.hold, a.refused) for a in burst} == {(0.0, False, None)}
    assert throttle.standing(ATTACKER, "alice") == Standing(50, 50, False)


# -- the login's delay -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("login_failures", "budget", "wait"),
    [
        (9, MAX_REPLY_SECONDS, 0.0),
        (10, MAX_REPLY_SECONDS, 1.0),
        (10, 0.25, 0.25),
        (10, -1.0, 0.0),
    ],
)
def test_login_delay_starts_at_throttle_after_and_fits_the_budget(
    clock: Clock, login_failures: int, budget: float, wait: float
) -> None:
    """A login's delay starts at throttle_after failures and never outlasts the attempt's budget."""
    throttle = make(clock, lockout_after=0)
    for n in range(login_failures):
        fail_once(throttle, f"192.0.2.{n}", "alice")
    admission = throttle.admit(OTHER, "alice", budget=budget)
    assert (admission.wait, admission.refused, admission.hold) == (wait, None, False)


def test_a_login_with_no_name_gets_no_delay(clock: Clock) -> None:
    """An attempt without a login name is delayed by no login's count."""
    throttle = make(clock, lockout_after=0)
    for n in range(12):
        fail_once(throttle, f"192.0.2.{n}", None)
    assert throttle.admit(OTHER, None).wait == 0.0
    assert throttle.logins_tracked == 0


# -- locks -------------------------------------------------------------------------------


def test_lock_ends_exactly_lockout_seconds_after_it_started(clock: Clock) -> None:
    """The lock lasts exactly lockout_seconds; lock_remaining counts it down and is 0 after."""
    throttle = make(clock, throttle_after=0, lockout_after=2, lockout_seconds=100)
    assert throttle.lock_remaining(ATTACKER) == 0.0
    fail_once(throttle, ATTACKER, None)
    assert throttle.lock_remaining(ATTACKER) == 0.0
    start = clock.now
    assert throttle.fail(ATTACKER, None) == Standing(2, 0, True, lock_started=True)
    assert throttle.admit(ATTACKER, "alice") == Admission(ATTACKER, "alice", refused="locked")
    clock.now = start + 40
    assert throttle.lock_remaining(ATTACKER) == 60.0
    clock.now = start + 99.5
    assert throttle.locked(ATTACKER)
    clock.now = start + 100
    assert not throttle.locked(ATTACKER)
    assert throttle.lock_remaining(ATTACKER) == 0.0
    clock.now = start + 150
    assert throttle.lock_remaining(ATTACKER) == 0.0
    assert throttle.admit(ATTACKER, None).refused is None


def test_a_failure_during_the_lock_neither_extends_nor_restarts_it(clock: Clock) -> None:
    """A check admitted before the lock that fails during it is counted, but the lock
    keeps its end and no second lockout is announced."""
    throttle = make(clock, throttle_after=0, lockout_after=2, lockout_seconds=100)
    fail_once(throttle, ATTACKER, None)
    late = throttle.admit(ATTACKER, None)
    throttle.fail(ATTACKER, None)
    clock.now += 50
    throttle.release(late)
    assert throttle.fail(ATTACKER, None) == Standing(3, 0, True, lock_started=False)
    assert throttle.lock_remaining(ATTACKER) == 50.0


def test_after_the_lock_the_count_drops_to_throttle_after(clock: Clock) -> None:
    """Failures counted during a lock are dropped with it: the count is back at
    throttle_after, and the first failure after the lock adds one to that, unlocked."""
    throttle = make(clock, throttle_after=2, lockout_after=4, lockout_seconds=100)
    for _ in range(4):
        throttle.fail(ATTACKER, None)
    throttle.fail(ATTACKER, None)
    assert throttle.standing(ATTACKER, None) == Standing(5, 0, True)
    clock.now += 100
    assert throttle.fail(ATTACKER, None) == Standing(3, 0, False)
    assert throttle.fail(ATTACKER, None) == Standing(4, 0, True, lock_started=True)


@pytest.mark.parametrize(("throttle_after", "lockout_after"), [(4, 4), (6, 4), (0, 4)])
def test_after_the_lock_nothing_is_left_when_pacing_would_not_come_first(
    clock: Clock, throttle_after: int, lockout_after: int
) -> None:
    """When pacing would start at or after the lock (or never), the count starts from
    nothing once the lock is over: the next attempt is neither paced nor held."""
    throttle = make(
        clock, throttle_after=throttle_after, lockout_after=lockout_after, lockout_seconds=100
    )
    for _ in range(lockout_after):
        throttle.fail(ATTACKER, None)
    assert throttle.locked(ATTACKER)
    clock.now += 100
    assert throttle.standing(ATTACKER, None) == Standing(0, 0, False)
    assert throttle.admit(ATTACKER, None) == Admission(ATTACKER, None, _in_flight=True)


def test_logins_are_never_locked(clock: Clock) -> None:
    """A login's failures from many addresses never lock anything: only counts grow."""
    throttle = make(clock, throttle_after=0, lockout_after=2)
    for n in range(5):
        assert throttle.fail(f"192.0.2.{n}", "alice") == Standing(1, n + 1, False)
    assert throttle.fail(None, "alice") == Standing(0, 6, False)


# -- forgetting and the bounded tables ---------------------------------------------------


def test_an_address_is_forgotten_exactly_lockout_seconds_after_its_last_failure(
    clock: Clock,
) -> None:
    """Quiet for lockout_seconds, an address and a login start again from nothing."""
    throttle = make(clock, lockout_seconds=100)
    start = clock.now
    fail_once(throttle, ATTACKER, "alice")
    clock.now = start + 99.5
    assert throttle.standing(ATTACKER, "alice") == Standing(1, 1, False)
    clock.now = start + 100
    assert throttle.standing(ATTACKER, "alice") == Standing(0, 0, False)
    assert len(throttle) == 0 and throttle.logins_tracked == 0


def test_a_locked_address_is_forgotten_lockout_seconds_after_its_lock_ended(
    clock: Clock,
) -> None:
    """A lock's end, not its start, begins the quiet period that forgets an address."""
    throttle = make(clock, throttle_after=1, lockout_after=2, lockout_seconds=100)
    start = clock.now
    throttle.fail(ATTACKER, None)
    throttle.fail(ATTACKER, None)
    clock.now = start + 199.5
    assert throttle.standing(ATTACKER, None) == Standing(1, 0, False)
    clock.now = start + 200
    assert throttle.standing(ATTACKER, None) == Standing(0, 0, False)


def test_purge_drops_what_went_quiet_and_says_how_many(clock: Clock) -> None:
    """purge() forgets quiet addresses and logins, keeps the rest, and counts both tables."""
    throttle = make(clock, lockout_seconds=100)
    throttle.fail("192.0.2.1", "alice")
    throttle.fail("192.0.2.2", "bob")
    clock.now += 50
    throttle.fail("192.0.2.3", "carol")
    assert throttle.purge() == 0
    clock.now += 50
    assert throttle.purge() == 4
    assert (len(throttle), throttle.logins_tracked) == (1, 1)
    assert throttle.purge() == 0
    assert throttle.standing("192.0.2.3", "carol") == Standing(1, 1, False)


def test_a_new_entry_drops_the_two_oldest_if_they_went_quiet(clock: Clock) -> None:
    """Adding an address drops quiet entries at the cold end (two at most), without a purge."""
    throttle = make(clock, lockout_seconds=100)
    for n in range(3):
        throttle.fail(f"192.0.2.{n}", None)
    clock.now += 100
    throttle.fail(ATTACKER, None)
    assert len(throttle) == 2  # 192.0.2.2 and the new one


def test_the_least_recently_used_entry_goes_first(clock: Clock) -> None:
    """At max_entries, the entry not looked at for longest is dropped, not the oldest."""
    throttle = make(clock, max_entries=2)
    throttle.fail("192.0.2.1", "alice")
    throttle.fail("192.0.2.2", "bob")
    throttle.standing("192.0.2.1", "alice")
    throttle.fail("192.0.2.3", "carol")
    assert len(throttle) == 2 and throttle.logins_tracked == 2
    assert throttle.standing("192.0.2.1", "alice") == Standing(1, 1, False)
    assert throttle.standing("192.0.2.2", "bob") == Standing(0, 0, False)
    assert throttle.standing("192.0.2.3", "carol") == Standing(1, 1, False)


def test_a_table_of_one_keeps_the_newest(clock: Clock) -> None:
    """With max_entries=1 each new address replaces the last one, and is counted."""
    throttle = make(clock, max_entries=1)
    throttle.fail("192.0.2.1", None)
    assert throttle.fail("192.0.2.2", None) == Standing(1, 0, False)
    assert throttle.fail("192.0.2.2", None) == Standing(2, 0, False)
    assert throttle.standing("192.0.2.1", None).failures == 0


def test_an_exempt_network_may_be_written_with_host_bits() -> None:
    """An exempt entry like 192.0.2.9/24 is taken as its network, as an operator means it."""
    throttle = Throttle(exempt=["192.0.2.9/24"])
    assert throttle.address_key("192.0.2.200") is None
    assert throttle.address_key("192.0.3.1") == "192.0.3.1"


def test_default_settings(clock: Clock) -> None:
    """A Throttle() as the daemon makes it by default: pacing after 10 failures at one
    check a second, locked at 30 for 600 s, IPv6 by /64, 100000 addresses kept."""
    throttle = Throttle(clock=clock)
    for _ in range(9):
        fail_once(throttle, ATTACKER, None)
    assert throttle.admit(ATTACKER, None).wait == 0.0
    fail_once(throttle, ATTACKER, None)
    assert [throttle.admit(ATTACKER, None).wait for _ in range(2)] == [0.0, 1.0]
    for _ in range(19):
        throttle.fail(ATTACKER, None)
    assert not throttle.locked(ATTACKER)
    assert throttle.fail(ATTACKER, None).lock_started
    assert throttle.lock_remaining(ATTACKER) == 600.0
    assert throttle.address_key("2001:db8:1:2:3::1") == "2001:db8:1:2::/64"
    for n in range(100001):
        throttle.fail(str(n), None)
    assert len(throttle) == 100000
    assert throttle.standing(ATTACKER, None).failures == 0


def test_one_failure_paces_and_holds_at_throttle_after_one(clock: Clock) -> None:
    """throttle_after=1: one check in flight holds the next; once it failed, attempts are
    paced, and the login's delay applies from its first failure."""
    throttle = make(clock, throttle_after=1, lockout_after=0)
    first = throttle.admit(ATTACKER, "alice")
    assert throttle.admit(ATTACKER, "alice") == Admission(ATTACKER, "alice", hold=True)
    throttle.release(first)
    throttle.fail(ATTACKER, "alice")
    assert [throttle.admit(ATTACKER, "alice").wait for _ in range(3)] == [0.0, 1.0, 2.0]
    assert throttle.admit(OTHER, "alice") == Admission(OTHER, "alice", 1.0, _in_flight=True)


def test_releasing_down_to_one_in_flight_still_counts_that_one(clock: Clock) -> None:
    """With two checks in flight and one given back, the one left still counts: exactly
    one more attempt goes through before the next is held."""
    throttle = make(clock, throttle_after=2)
    first, second = throttle.admit(ATTACKER, None), throttle.admit(ATTACKER, None)
    throttle.release(first)
    assert not throttle.admit(ATTACKER, None).hold
    assert throttle.admit(ATTACKER, None).hold
    throttle.release(second)


def test_each_decision_names_the_attempt(clock: Clock) -> None:
    """Every Admission carries the address and login it was made for."""
    throttle = make(clock, throttle_after=1, lockout_after=0, throttle_interval=MAX_REPLY_SECONDS)
    assert throttle.admit(None, "alice") == Admission(None, "alice")
    assert throttle.admit(ATTACKER, "alice") == Admission(ATTACKER, "alice", _in_flight=True)
    throttle.fail(ATTACKER, "alice")
    throttle.admit(ATTACKER, "alice")
    throttle.admit(ATTACKER, "alice")
    assert throttle.admit(ATTACKER, "bob") == Admission(ATTACKER, "bob", refused="throttled")
