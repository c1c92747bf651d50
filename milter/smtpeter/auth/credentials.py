"""What the auth daemon needs from the store: a login's name, password hash and state.

Kept apart from the server so the store can build these without importing asyncio code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Credentials", "Lookup", "Verify"]


@dataclass(frozen=True, slots=True)
class Credentials:
    """A login as the auth daemon sees it.

    ``name`` is the canonical login name; it is what ``OK`` reports to Postfix and so what
    the milter later sees as ``{auth_authen}``.
    """

    name: str
    password_hash: str
    enabled: bool


#: Look a login up by the name the client gave; ``None`` if there is no such login.
#: Blocking (runs in a worker thread). Any exception means the store is unavailable.
Lookup = Callable[[str], Credentials | None]

#: ``verify(password_hash, password) -> bool``. Blocking and deliberately slow.
Verify = Callable[[str, str], bool]
