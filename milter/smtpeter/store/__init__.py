"""The store: the only code that knows SQL.

Everything else talks to a :class:`Store`; which database is behind it (SQLite now,
PostgreSQL for several relay nodes later) is decided in :func:`open_store` alone.
"""

from __future__ import annotations

from smtpeter.config import StoreConfig
from smtpeter.store.sqlite import (
    SUPPRESSION_POLICIES,
    MessageRecord,
    SQLiteStore,
    StoreError,
    Suppression,
)

Store = SQLiteStore

__all__ = [
    "SUPPRESSION_POLICIES",
    "MessageRecord",
    "Store",
    "StoreError",
    "Suppression",
    "open_store",
]


def open_store(cfg: StoreConfig, *, create: bool = True) -> Store:
    """Open (and with create, migrate) the configured store; StoreError if it cannot."""
    return SQLiteStore(
        cfg.sqlite_path,
        busy_timeout=cfg.busy_timeout,
        retry_seconds=cfg.retry_seconds,
        create=create,
    )
