"""`smtpeter webhooks` as a sysadmin runs it: a real process, a real store, a real
receiver on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from smtpeter import logins
from smtpeter.config import load
from smtpeter.store import open_store
from tests.unit.test_cli import run
from tests.webhookrx import Receiver


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    path = tmp_path / "smtpeter.yaml"
    path.write_text(
        f"store:\n  sqlite_path: {tmp_path / 'db' / 'smtpeter.db'}\n"
        "webhooks:\n  allow_private_targets: true\n"
    )
    assert run(path, "login", "create", "shop").returncode == 0
    return path


@pytest.fixture
def rx() -> Iterator[Receiver]:
    with Receiver() as receiver:
        yield receiver


def test_add_prints_the_secret_once_and_list_shows_the_backlog(conf: Path, rx: Receiver) -> None:
    """add shows a secret once; list shows URL, types, pending and failed, never the secret."""
    added = run(conf, "webhooks", "add", "shop", "--url", rx.url("/ok"), "--events",
                "click,open", "--json")  # fmt: skip
    assert added.returncode == 0, added.stderr
    data = json.loads(added.stdout)
    assert data["secret"].startswith("whsec_") and data["events"] == ["open", "click"]
    text = run(conf, "webhooks", "add", "shop", "--url", rx.url("/ok2"))
    assert text.returncode == 0 and "secret (shown once" in text.stdout
    listed = run(conf, "webhooks", "list", "--json")
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["url"], r["events"], r["pending"], r["failed"]) for r in rows] == [
        (rx.url("/ok"), ["open", "click"], 0, 0), (rx.url("/ok2"), "all", 0, 0)
    ]  # fmt: skip
    table = run(conf, "webhooks", "list", "shop")
    assert "PENDING" in table.stdout and rx.url("/ok2") in table.stdout
    assert data["secret"] not in listed.stdout + table.stdout


def test_test_posts_a_signed_event_and_prints_the_status(conf: Path, rx: Receiver) -> None:
    """`webhooks test` reaches the endpoint now with a valid signature, and says so."""
    secret = json.loads(
        run(conf, "webhooks", "add", "shop", "--url", rx.url("/ok"), "--json").stdout
    )["secret"]
    result = run(conf, "webhooks", "test", "shop")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{rx.url('/ok')}: HTTP 200 OK in ")
    [request] = rx.requests
    assert request.signed_by(secret) and request.json()["type"] == "test"
    run(conf, "webhooks", "add", "shop", "--url", rx.url("/error"))
    failing = run(conf, "webhooks", "test", "shop", "--url", rx.url("/error"))
    assert failing.returncode == 69 and "HTTP 500" in failing.stdout


def test_rotate_secret_signs_with_both_for_the_overlap(conf: Path, rx: Receiver) -> None:
    """After rotate-secret a receiver on the old secret and one on the new both verify."""
    old = json.loads(run(conf, "webhooks", "add", "shop", "--url", rx.url("/ok"), "--json").stdout)[
        "secret"
    ]
    rotated = run(conf, "webhooks", "rotate-secret", "shop", "--json")
    assert rotated.returncode == 0, rotated.stderr
    new = json.loads(rotated.stdout)["secret"]
    assert new != old
    assert run(conf, "webhooks", "test", "shop").returncode == 0
    [request] = rx.requests
    assert request.signed_by(old) and request.signed_by(new)


@pytest.mark.parametrize(
    "args,status,message",
    [
        (["add", "ghost", "--url", "https://example.com/"], 67, "no login named 'ghost'"),
        (["add", "shop", "--url", "ftp://example.com/"], 65, "scheme 'ftp' refused"),
        (["add", "shop", "--url", "https://example.com/", "--events", "clicks"], 64,
         "unknown event type clicks"),
        (["remove", "shop", "--url", "https://nowhere.example/"], 67, "has no endpoint"),
        (["test", "shop"], 67, "login 'shop' has no endpoint"),
    ],
)  # fmt: skip
def test_errors_name_what_was_wrong(conf: Path, args: list[str], status: int, message: str) -> None:
    """Each mistake exits with its sysexits status and a message naming the fault."""
    result = run(conf, "webhooks", *args)
    assert result.returncode == status and message in result.stderr, result.stderr


def test_a_private_url_is_refused_without_the_switch(tmp_path: Path) -> None:
    """By default an endpoint on loopback is refused, saying why and how to allow it."""
    path = tmp_path / "smtpeter.yaml"
    path.write_text(f"store:\n  sqlite_path: {tmp_path / 'smtpeter.db'}\n")
    assert run(path, "login", "create", "shop").returncode == 0
    result = run(path, "webhooks", "add", "shop", "--url", "http://127.0.0.1:9/hook")
    assert result.returncode == 65
    assert "loopback address 127.0.0.1" in result.stderr
    assert "allow_private_targets" in result.stderr


def test_remove_drops_the_endpoint_and_its_backlog(conf: Path, rx: Receiver) -> None:
    """remove leaves no endpoint and no undelivered rows behind."""
    run(conf, "webhooks", "add", "shop", "--url", rx.url("/ok"))
    removed = run(conf, "webhooks", "remove", "shop", "--url", rx.url("/ok"))
    assert removed.returncode == 0 and "removed" in removed.stdout
    assert open_store(load(conf).store).webhooks() == []
    assert logins.check_name("shop") == "shop"
