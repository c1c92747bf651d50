"""SMTP logins: the model, name rules, password generation and hashing.

A login is what a mail client authenticates as. Each carries its own default set of
features; ``x-smtpeter-*`` headers override them per message.

Passwords are generated here, shown once by the CLI, and only their argon2id hash is
stored. The hash parameters are OWASP's minimum (19 MiB, t=2): about 20 ms a verify,
which the auth daemon's cache of verified credentials hides for repeat logins.
"""

from __future__ import annotations

import functools
import re
import secrets
from dataclasses import dataclass, field

from passlib.hash import argon2

from smtpeter.features import FeatureSet

NAME_RE = re.compile(r"^[A-Za-z0-9._@-]{1,128}$")

# Groups of lowercase letters and digits without look-alikes (no 0/o, 1/l/i):
# 31 symbols, 6 groups of 5 -> 30 * log2(31) = 148.6 bits of randomness.
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
_GROUPS = 6
_GROUP_LEN = 5

_hasher = argon2.using(type="ID", memory_cost=19456, time_cost=2, parallelism=1)


class LoginError(ValueError):
    """A login request that cannot be carried out (bad name, unknown, duplicate)."""


@dataclass(frozen=True)
class Login:
    name: str
    password_hash: str
    enabled: bool = True
    features: FeatureSet = field(default_factory=FeatureSet)
    # Rewrite the body of mail that already carries a DKIM-Signature (which breaks
    # that signature): for senders who leave signing to the relay's own DKIM step.
    rewrite_signed: bool = False
    # What the suppression list does for this login's mail: "refuse" (a suppressed
    # recipient is refused at RCPT) or "off".
    suppression: str = "refuse"
    created_at: str = ""
    updated_at: str = ""


def check_name(name: str) -> str:
    """Return the name if it is a valid login name, else raise LoginError saying why."""
    if not NAME_RE.match(name):
        raise LoginError(
            f"invalid login name {name!r}: use 1 to 128 letters, digits, '.', '_', '-' or '@'"
        )
    return name


def generate_password() -> str:
    """A new random password: groups of characters separated by spaces."""
    return " ".join(
        "".join(secrets.choice(_ALPHABET) for _ in range(_GROUP_LEN)) for _ in range(_GROUPS)
    )


def hash_password(password: str) -> str:
    return str(_hasher.hash(password))


def verify_password(password_hash: str, password: str) -> bool:
    """Check a password against a stored hash; a malformed hash never verifies."""
    try:
        return bool(_hasher.verify(password, password_hash))
    except (ValueError, TypeError):
        return False


@functools.cache
def dummy_hash() -> str:
    """A hash to verify against for unknown logins, so a failed login costs the same
    time whether or not the name exists."""
    return hash_password(secrets.token_hex(16))
