"""How an envelope address is compared and stored, in one place: the milter's RCPT
against the suppression list, the bounce processor's failed recipients against the
message's recipients, and the store's suppression keys all use :func:`key`."""

from __future__ import annotations


def key(address: str) -> str:
    """``address`` without surrounding space or angle brackets, lower-cased:
    ``' <Ann@Example.org>'`` is ``'ann@example.org'``. Local parts are compared
    without case as nearly every mail system treats them (RFC 5321 leaves it to the
    receiving host)."""
    return address.strip().strip("<>").strip().lower()
