"""`smtpeter postfix setup` on copies of Debian's own main.cf and master.cf."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from smtpeter.postfix.configure import parse_master

pytestmark = pytest.mark.skipif(shutil.which("postconf") is None, reason="needs Postfix")

DEBIAN_MAIN = Path("/usr/share/postfix/main.cf.debian")
DIST_MASTER = Path("/usr/share/postfix/master.cf.dist")


@pytest.fixture
def postfix_dir(tmp_path: Path) -> Path:
    d = tmp_path / "postfix"
    d.mkdir()
    shutil.copy(DEBIAN_MAIN, d / "main.cf")
    shutil.copy(DIST_MASTER, d / "master.cf")
    # An existing MX with a milter of its own and TLS of its own.
    cert = tmp_path / "cert.pem"
    key = tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=mx.example.com", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    with (d / "main.cf").open("a") as f:
        f.write(f"smtpd_milters = inet:localhost:8891\nsmtpd_tls_cert_file = {cert}\n")
        f.write(f"smtpd_tls_key_file = {key}\nsmtpd_tls_security_level = may\n")
    return d


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    path = tmp_path / "smtpeter.yaml"
    path.write_text("bounces:\n  domain: bounces.example.com\n")
    return path


def smtpeter(conf: Path, postfix_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "smtpeter", "--config", str(conf), "postfix", "setup",
         "--postfix-dir", str(postfix_dir), "--no-reload", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def postconf(postfix_dir: Path, *args: str) -> str:
    return subprocess.run(
        ["postconf", "-c", str(postfix_dir), *args], capture_output=True, text=True, check=True
    ).stdout


def snapshot(d: Path) -> tuple[bytes, bytes]:
    return (d / "main.cf").read_bytes(), (d / "master.cf").read_bytes()


def test_dry_run_shows_the_diff_and_changes_nothing(conf: Path, postfix_dir: Path) -> None:
    before = snapshot(postfix_dir)
    result = smtpeter(conf, postfix_dir, "--mode", "relay", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "+smtpd_tls_security_level = encrypt" in result.stdout
    assert "(dry run: nothing changed)" in result.stdout
    assert snapshot(postfix_dir) == before


def test_relay_setup_is_idempotent_and_undoable(conf: Path, postfix_dir: Path) -> None:
    before = snapshot(postfix_dir)
    first = smtpeter(conf, postfix_dir, "--mode", "relay")
    assert first.returncode == 0, first.stderr
    assert "`postfix check` passed" in first.stdout and "--undo" in first.stdout
    main = postconf(postfix_dir, "-n")
    for line in (
        "smtpd_tls_security_level = encrypt",
        "smtpd_tls_auth_only = yes",
        "smtpd_sasl_type = dovecot",
        "smtpd_sasl_path = smtpeter/auth.sock",
        "smtpd_milters = { unix:smtpeter/milter.sock, default_action=tempfail }",
        "relay_domains = bounces.example.com",
    ):
        assert line in main
    services = parse_master(postconf(postfix_dir, "-M"))
    assert services["smtp/inet"].endswith("smtpd") and " y " in services["smtp/inet"]
    assert "submission/inet" in services and "smtpeter-bounce/unix" in services
    after = snapshot(postfix_dir)

    second = smtpeter(conf, postfix_dir, "--mode", "relay")
    assert second.returncode == 0
    assert "nothing changed" in second.stdout
    assert snapshot(postfix_dir) == after

    undone = smtpeter(conf, postfix_dir, "--undo")
    assert undone.returncode == 0, undone.stderr
    assert snapshot(postfix_dir) == before
    assert smtpeter(conf, postfix_dir, "--undo").returncode == 78  # nothing left to undo


def test_addon_keeps_port_25_and_adds_submission(conf: Path, postfix_dir: Path) -> None:
    smtp_before = parse_master(postconf(postfix_dir, "-M"))["smtp/inet"]
    result = smtpeter(conf, postfix_dir, "--mode", "addon")
    assert result.returncode == 0, result.stderr
    main = postconf(postfix_dir, "-n")
    # Port 25 as it was: opportunistic TLS, no SASL of ours, the existing milter kept
    # after ours (ours strips x-smtpeter-* headers from everything).
    assert "smtpd_tls_security_level = may" in main
    assert "smtpd_sasl_type" not in main
    assert (
        "smtpd_milters = { unix:smtpeter/milter.sock, default_action=tempfail },"
        " inet:localhost:8891" in main
    )
    services = parse_master(postconf(postfix_dir, "-M"))
    assert services["smtp/inet"] == smtp_before
    submission = services["submission/inet"]
    for option in ("smtpd_tls_security_level=encrypt", "smtpd_sasl_type=dovecot",
                   "smtpd_sasl_path=smtpeter/auth.sock", "smtpd_tls_auth_only=yes"):  # fmt: skip
        assert option in submission
    # Its own certificate is reused, no snakeoil warning.
    assert "snakeoil" not in result.stderr
    again = smtpeter(conf, postfix_dir, "--mode", "addon")
    assert "nothing changed" in again.stdout


def test_sockets_outside_the_chroot_are_refused(tmp_path: Path, postfix_dir: Path) -> None:
    conf = tmp_path / "outside.yaml"
    conf.write_text("auth:\n  socket: /run/smtpeter/auth.sock\n")
    result = smtpeter(conf, postfix_dir, "--mode", "relay")
    assert result.returncode == 78
    assert "outside Postfix's queue directory" in result.stderr


def test_missing_mode(conf: Path, postfix_dir: Path) -> None:
    result = smtpeter(conf, postfix_dir)
    assert result.returncode == 64 and "--mode" in result.stderr
