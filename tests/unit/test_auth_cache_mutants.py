"""What the auth daemon relies on in its credential cache, found by mutation testing
(scripts/mutation, see tests/README.md): how long a verified password is trusted, how
many are kept and which one goes first, and that forgetting one pair forgets only it."""

from __future__ import annotations

import pytest

from smtpeter.auth.cache import CredentialCache
from tests.unit.test_auth_throttle import Clock


def test_default_ttl_is_five_minutes() -> None:
    """By default a verified password is trusted for 300 seconds, not one more."""
    clock = Clock()
    cache = CredentialCache(clock=clock)
    cache.store("alice", "pw", "h")
    clock.now += 299.9
    assert cache.check("alice", "pw", "h")
    clock.now = 1000.0 + 300.0
    assert not cache.check("alice", "pw", "h")


def test_default_size_is_ten_thousand() -> None:
    """By default the cache holds 10000 pairs and evicts the oldest beyond that."""
    cache = CredentialCache()
    for i in range(10001):
        cache.store(f"user{i}", "pw", "h")
    assert len(cache) == 10000
    assert not cache.check("user0", "pw", "h")
    assert cache.check("user1", "pw", "h")
    assert cache.check("user10000", "pw", "h")


def test_storing_again_makes_a_pair_the_newest() -> None:
    """A pair verified again is evicted last, after pairs verified since its first time."""
    cache = CredentialCache(ttl=60, max_entries=2)
    cache.store("a", "1", "h")
    cache.store("b", "2", "h")
    cache.store("a", "1", "h")  # verified again
    cache.store("c", "3", "h")  # the cache is full: b is now the oldest
    assert len(cache) == 2
    assert cache.check("a", "1", "h")
    assert cache.check("c", "3", "h")
    assert not cache.check("b", "2", "h")


def test_storing_again_renews_the_expiry_and_the_hash() -> None:
    """Re-storing a pair keeps one entry, with the new hash and a fresh time to live."""
    clock = Clock()
    cache = CredentialCache(ttl=10, max_entries=5, clock=clock)
    cache.store("a", "1", "h1")
    clock.now += 8
    cache.store("a", "1", "h2")
    assert len(cache) == 1
    clock.now += 8
    assert cache.check("a", "1", "h2")
    assert not cache.check("a", "1", "h1")


def test_discard_forgets_only_that_pair() -> None:
    """discard() drops the one (login, password) pair; others stay; an unknown pair is a no-op."""
    cache = CredentialCache(ttl=60, max_entries=10)
    cache.store("alice", "pw", "h")
    cache.store("alice", "other", "h")
    cache.store("bob", "pw", "h")
    cache.discard("alice", "pw")
    assert len(cache) == 2
    assert not cache.check("alice", "pw", "h")
    assert cache.check("alice", "other", "h")
    assert cache.check("bob", "pw", "h")
    cache.discard("nobody", "pw")
    cache.discard("alice", "pw")
    assert len(cache) == 2


@pytest.mark.parametrize("password", ["\udcff", "a\ud800b", "\udfff\ud800"])
def test_passwords_with_lone_surrogates_can_be_cached(password: str) -> None:
    """A password string with lone surrogates is cached like any other, not an error."""
    cache = CredentialCache(ttl=60, max_entries=10)
    cache.store("alice", password, "h")
    assert cache.check("alice", password, "h")
    assert not cache.check("alice", password + "x", "h")
    cache.discard("alice", password)
    assert len(cache) == 0


@pytest.mark.parametrize(("ttl", "max_entries"), [(0, 10), (-1, 10), (60, 0), (60, -5)])
def test_disabled_cache_keeps_nothing(ttl: float, max_entries: int) -> None:
    """With ttl <= 0 or max_entries <= 0 nothing is stored and nothing is a hit."""
    cache = CredentialCache(ttl=ttl, max_entries=max_entries)
    cache.store("alice", "pw", "h")
    assert len(cache) == 0
    assert not cache.check("alice", "pw", "h")
    assert not cache.enabled


def test_purge_expired_drops_only_the_expired() -> None:
    """purge_expired() counts and drops the entries past their time, keeps the rest."""
    clock = Clock()
    cache = CredentialCache(ttl=10, max_entries=10, clock=clock)
    cache.store("a", "1", "h")
    clock.now += 5
    cache.store("b", "2", "h")
    cache.store("c", "3", "h")
    clock.now += 5  # a is exactly at its expiry
    assert cache.purge_expired() == 1
    assert len(cache) == 2
    assert cache.purge_expired() == 0
    clock.now += 5
    assert cache.purge_expired() == 2
    assert len(cache) == 0


def test_login_and_password_are_not_interchangeable() -> None:
    """A pair is keyed on both parts in order: swapped or run together, it is no hit."""
    cache = CredentialCache(ttl=60, max_entries=10)
    cache.store("alice", "pw", "h")
    assert not cache.check("pw", "alice", "h")
    assert not cache.check("alicepw", "", "h")
    assert not cache.check("", "alicepw", "h")
    assert not cache.check("alic", "epw", "h")
