"""The `smtpeter` command as a sysadmin runs it: a real process, a real store."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from smtpeter import logins
from smtpeter.config import load
from smtpeter.store import open_store


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    path = tmp_path / "smtpeter.yaml"
    path.write_text(f"store:\n  sqlite_path: {tmp_path / 'db' / 'smtpeter.db'}\n")
    return path


def run(conf: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "smtpeter", "--config", str(conf), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_create_prints_a_password_once_and_stores_only_its_hash(conf: Path) -> None:
    result = run(conf, "login", "create", "shop@example.com", "--inlinecss", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    password = data["password"]
    groups = password.split(" ")
    assert len(groups) >= 4 and all(groups), "groups of characters separated by spaces"
    assert data["features"] == {
        "inlinecss": True, "trackclicks": False, "trackopens": False, "trackbounces": False,
        "unsubscribe": False,
    }  # fmt: skip
    store = open_store(load(conf).store)
    login = store.get_login("shop@example.com")
    assert login is not None and login.password_hash.startswith("$argon2id$")
    assert logins.verify_password(login.password_hash, password)
    assert password.encode() not in Path(store.path).read_bytes()
    # show never prints it again
    shown = run(conf, "login", "show", "shop@example.com", "--json")
    assert "password" not in json.loads(shown.stdout)


@pytest.mark.parametrize("command", ["create", "rotate"])
def test_text_mode_prints_the_password_exactly_once_and_it_works(conf: Path, command: str) -> None:
    if command == "rotate":
        assert run(conf, "login", "create", "delta").returncode == 0
    result = run(conf, "login", command, "delta")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("password: ")]
    assert len(lines) == 1, result.stdout
    password = lines[0].removeprefix("password: ")
    assert len(password.split(" ")) == 6  # six groups of five, as documented
    # Printed nowhere else: not twice on stdout, not on stderr.
    assert result.stdout.count(password) == 1 and password not in result.stderr
    login = open_store(load(conf).store).get_login("delta")
    assert login is not None and logins.verify_password(login.password_hash, password)


def test_text_output_and_list(conf: Path) -> None:
    created = run(conf, "login", "create", "alpha")
    assert created.returncode == 0
    assert "password: " in created.stdout and "shown only this once" in created.stderr
    run(conf, "login", "create", "beta", "--trackclicks", "--trackopens")
    listed = run(conf, "login", "list")
    assert listed.stdout.splitlines()[0].split() == ["LOGIN", "ENABLED", "FEATURES"]
    assert "beta" in listed.stdout and "trackclicks,trackopens" in listed.stdout
    as_json = [
        json.loads(line) for line in run(conf, "login", "list", "--json").stdout.splitlines()
    ]
    assert [d["name"] for d in as_json] == ["alpha", "beta"]


def test_set_rotate_disable_enable_delete(conf: Path) -> None:
    first = json.loads(run(conf, "login", "create", "gamma", "--json").stdout)["password"]
    changed = json.loads(run(conf, "login", "set", "gamma", "--trackbounces", "--json").stdout)
    assert changed["features"]["trackbounces"] is True
    changed = json.loads(run(conf, "login", "set", "gamma", "--no-trackbounces", "--json").stdout)
    assert changed["features"]["trackbounces"] is False
    second = json.loads(run(conf, "login", "rotate", "gamma", "--json").stdout)["password"]
    assert second != first
    store = open_store(load(conf).store)
    login = store.get_login("gamma")
    assert login is not None
    assert logins.verify_password(login.password_hash, second)
    assert not logins.verify_password(login.password_hash, first)
    assert json.loads(run(conf, "login", "disable", "gamma", "--json").stdout)["enabled"] is False
    assert json.loads(run(conf, "login", "enable", "gamma", "--json").stdout)["enabled"] is True
    deleted = run(conf, "login", "delete", "gamma")
    assert deleted.returncode == 0
    assert store.get_login("gamma") is None


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("login", "show", "nobody"), 67, "no login named 'nobody'"),
        (("login", "rotate", "nobody"), 67, "no login named 'nobody'"),
        (("login", "create", "bad name"), 65, "invalid login name 'bad name'"),
        (("login", "create", "semi;colon"), 65, "invalid login name"),
        (("login", "create", "x" * 129), 65, "invalid login name"),
        (("login", "set", "nobody", "--inlinecss"), 67, "no login named"),
        (("login", "set", "delta"), 64, "name at least one"),
    ],
)
def test_errors_are_clear(conf: Path, args: tuple[str, ...], code: int, message: str) -> None:
    run(conf, "login", "create", "delta")
    result = run(conf, *args)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_duplicate_login(conf: Path) -> None:
    assert run(conf, "login", "create", "epsilon").returncode == 0
    result = run(conf, "login", "create", "epsilon")
    assert result.returncode == 65
    assert "login 'epsilon' already exists" in result.stderr


def test_store_that_cannot_be_opened(tmp_path: Path) -> None:
    conf = tmp_path / "smtpeter.yaml"
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    conf.write_text(f"store:\n  sqlite_path: {blocker / 'smtpeter.db'}\n")
    result = run(conf, "login", "create", "zeta")
    assert result.returncode == 69
    assert "cannot create store directory" in result.stderr
    missing = run(conf, "login", "list")
    assert missing.returncode == 69 and "cannot open store" in missing.stderr


def test_corrupt_store(tmp_path: Path) -> None:
    conf = tmp_path / "smtpeter.yaml"
    db = tmp_path / "smtpeter.db"
    db.write_bytes(b"this is not a database" * 100)
    conf.write_text(f"store:\n  sqlite_path: {db}\n")
    result = run(conf, "login", "list")
    assert result.returncode == 69
    assert str(db) in result.stderr and "Traceback" not in result.stderr


def test_config_error_names_file_key_and_expectation(tmp_path: Path) -> None:
    conf = tmp_path / "smtpeter.yaml"
    conf.write_text("milter:\n  workers: many\n")
    result = run(conf, "login", "list")
    assert result.returncode == 78
    assert f"{conf}: milter.workers: expected an integer, got 'many'" in result.stderr


def test_help_lists_the_commands() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "smtpeter", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    for command in ("login", "authd", "milter", "local", "config"):
        assert command in result.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_store_created_by_root_belongs_to_the_service_user() -> None:
    """Root running `smtpeter login create` before the daemons ever started must not
    lock the daemons (user smtpeter) out of their store."""
    try:
        service = pwd.getpwnam("smtpeter")
    except KeyError:
        pytest.skip("no user smtpeter (scripts/bootstrap makes it)")
    # Not pytest's tmp_path: its parent is 0700, out of the service user's reach.
    tmp_path = Path(tempfile.mkdtemp(prefix="smtpeter-owner-"))
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, service.pw_uid, service.pw_gid)
    tmp_path.chmod(0o755)
    conf = tmp_path / "smtpeter.yaml"
    conf.write_text(f"store:\n  sqlite_path: {data / 'smtpeter.db'}\n")
    assert run(conf, "login", "create", "owned").returncode == 0
    assert (data / "smtpeter.db").stat().st_uid == service.pw_uid
    as_service = subprocess.run(
        ["runuser", "-u", "smtpeter", "--", sys.executable, "-m", "smtpeter",
         "--config", str(conf), "login", "disable", "owned"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert as_service.returncode == 0, as_service.stderr
    shutil.rmtree(tmp_path)
