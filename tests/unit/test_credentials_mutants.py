"""What the auth daemon relies on in a Credentials record, found by mutation testing
(scripts/mutation; cosmic-ray for this module, see tests/README.md): a login as looked
up cannot be changed afterwards, and records compare by value."""

from __future__ import annotations

import dataclasses

import pytest

from smtpeter.auth.credentials import Credentials


def test_fields_in_the_order_the_store_gives_them() -> None:
    c = Credentials("alice", "$argon2id$hash", False)
    assert (c.name, c.password_hash, c.enabled) == ("alice", "$argon2id$hash", False)


@pytest.mark.parametrize(
    ("field", "value"), [("enabled", True), ("name", "mallory"), ("password_hash", "x")]
)
def test_a_looked_up_login_cannot_be_changed(field: str, value: object) -> None:
    c = Credentials("alice", "$argon2id$hash", False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(c, field, value)
    assert c == Credentials("alice", "$argon2id$hash", False)


def test_records_compare_and_hash_by_value() -> None:
    a = Credentials("alice", "h", True)
    assert a == Credentials("alice", "h", True)
    assert a != Credentials("alice", "h", False)
    assert len({a, Credentials("alice", "h", True)}) == 1
