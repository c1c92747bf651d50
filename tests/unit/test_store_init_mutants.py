"""open_store: what mutation testing (scripts/mutation) found unchecked. The store it
opens waits for a locked database as long as the configuration says (busy_timeout,
retry_seconds), not the built-in defaults, and with create=False it opens only a store
that exists. A real second process holds the lock (test_store_busy's holder)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from smtpeter.config import StoreConfig
from smtpeter.store import StoreError, open_store
from tests.unit.test_store_busy import _message, seconds_to_give_up


@pytest.mark.parametrize(
    ("busy_timeout", "retry_seconds", "low", "high"),
    [(0.2, 0.0, 0.15, 0.7), (0.05, 1.8, 1.7, 2.6)],
    ids=["busy-timeout-only", "retry-budget"],
)
def test_a_locked_store_fails_after_the_configured_wait(
    tmp_path: Path, busy_timeout: float, retry_seconds: float, low: float, high: float
) -> None:
    """A write to a store locked by another process fails with StoreError after the
    configured busy_timeout (no retries with retry_seconds 0) or retry_seconds, not the
    defaults (1 s and 5 s)."""
    cfg = StoreConfig(
        sqlite_path=str(tmp_path / "smtpeter.db"),
        busy_timeout=busy_timeout,
        retry_seconds=retry_seconds,
    )
    store = open_store(cfg)
    assert store.path == cfg.sqlite_path
    took = seconds_to_give_up(store, 8.0)
    assert low < took < high, took
    store.record_message(_message(1))  # and it works once the lock is gone


def test_without_create_a_missing_store_is_an_error_and_stays_missing(tmp_path: Path) -> None:
    """open_store(create=False) (the read-only commands) refuses a store that does not
    exist and creates nothing; the default creates it."""
    cfg = StoreConfig(sqlite_path=str(tmp_path / "smtpeter.db"))
    with pytest.raises(StoreError, match="no such file"):
        open_store(cfg, create=False)
    assert not os.path.exists(cfg.sqlite_path)
    open_store(cfg).close()
    assert os.path.exists(cfg.sqlite_path)
    assert open_store(cfg, create=False).messages() == []
