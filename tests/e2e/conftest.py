"""The real stack for end-to-end tests: a private Debian Postfix on loopback ports,
real STARTTLS with a generated certificate, our auth daemon and milter on their
unix sockets, and the Maildir sink. One stack per test session; tests that stop a
component bring it back before they end."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from smtpeter import logins
from smtpeter.features import FeatureSet
from smtpeter.local.stack import LocalStack, Ports
from smtpeter.logins import Login
from smtpeter.store import Store, open_store

pytestmark = pytest.mark.e2e


def _require_root_and_postfix() -> None:
    if os.geteuid() != 0:
        pytest.fail("end-to-end tests run a private Postfix and must run as root")
    if shutil.which("postfix") is None:
        pytest.fail("postfix is not installed: run scripts/bootstrap")


def _stack(max_smtpd: int | None = None) -> Iterator[LocalStack]:
    _require_root_and_postfix()
    # Not under pytest's tmp_path: that is mode 0700 and Postfix's smtpd (user
    # postfix) must reach the sockets inside.
    root = Path(tempfile.mkdtemp(prefix="smtpeter-e2e-"))
    root.chmod(0o755)
    s = LocalStack(
        root=root,
        ports=Ports.free(),
        settings={"auth": {"failure_delay": 0.3}, "milter": {"workers": 2}},
        sink_reject=r"^<?reject-",
        sink_defer=r"^<?defer-",
        # A 4xx ends delivery at once (as if the queue lifetime had run out), so
        # the tests see Postfix's own DSN for it without waiting days.
        extra_main="maximal_queue_lifetime = 0\nbounce_queue_lifetime = 0",
        max_smtpd=max_smtpd,
    )
    try:
        s.start()
        yield s
    finally:
        s.stop()
        if os.environ.get("SMTPETER_KEEP_STACK"):
            print(f"stack kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def stack() -> Iterator[LocalStack]:
    yield from _stack()


@pytest.fixture
def own_stack() -> Iterator[LocalStack]:
    """A stack of its own, for tests whose outage would disturb the others: one smtpd
    per listener, so the same process serves session after session."""
    yield from _stack(max_smtpd=1)


@pytest.fixture(scope="session")
def store(stack: LocalStack) -> Store:
    return open_store(stack.config().store)


_COUNTER = itertools.count(1)
MakeLogin = Callable[..., tuple[str, str]]


@pytest.fixture
def make_login(store: Store, request: pytest.FixtureRequest) -> MakeLogin:
    """Create a login with a fresh password; returns (name, password)."""

    def make(enabled: bool = True, **features: bool) -> tuple[str, str]:
        base = request.node.name.split("[")[0].removeprefix("test_")[:40]
        name = f"{base}-{next(_COUNTER)}".replace("_", "-")
        password = logins.generate_password()
        store.create_login(
            Login(name, logins.hash_password(password), enabled, FeatureSet(**features))
        )
        return name, password

    return make
