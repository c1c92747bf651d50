"""`smtpeter postfix setup` on copies of Debian's own main.cf and master.cf."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from smtpeter.postfix.configure import parse_main, parse_master

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


def services(postfix_dir: Path) -> dict[str, str]:
    found: dict[str, str] = parse_master(postconf(postfix_dir, "-M"))
    return found


def options(entry: str) -> dict[str, str]:
    words = entry.split()
    pairs = [w.split("=", 1) for w, prev in zip(words[1:], words, strict=False) if prev == "-o"]
    return {name: value for name, value in pairs}


MX_SUBMISSION = (
    "submission inet n - y - - smtpd -o syslog_name=postfix/submission "
    "-o smtpd_tls_security_level=encrypt -o smtpd_sasl_auth_enable=yes "
    "-o smtpd_sasl_type=dovecot -o smtpd_sasl_path=private/auth "
    "-o smtpd_client_restrictions=permit_sasl_authenticated,reject "
    "-o milter_macro_daemon_name=ORIGINATING"
)


@pytest.fixture
def mx_dir(postfix_dir: Path) -> Path:
    """An existing MX: virtual mailboxes, its users on submission through Dovecot."""
    with (postfix_dir / "main.cf").open("a") as f:
        f.write("virtual_mailbox_domains = hosted.example\n")
        f.write("virtual_transport = lmtp:unix:private/dovecot-lmtp\n")
    postconf(postfix_dir, "-M", f"submission/inet={MX_SUBMISSION}")
    return postfix_dir


def test_dry_run_shows_the_diff_and_changes_nothing(conf: Path, postfix_dir: Path) -> None:
    before = snapshot(postfix_dir)
    result = smtpeter(conf, postfix_dir, "--mode", "relay", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "+smtpeter_sasl_path = smtpeter/auth.sock" in result.stdout
    assert re.search(r"^\+submissions +inet", result.stdout, re.M)
    assert re.search(r"^\+2525 +inet", result.stdout, re.M)
    assert "(dry run: nothing changed)" in result.stdout
    assert snapshot(postfix_dir) == before


def test_relay_setup_is_idempotent_and_undoable(conf: Path, postfix_dir: Path) -> None:
    before = snapshot(postfix_dir)
    first = smtpeter(conf, postfix_dir, "--mode", "relay")
    assert first.returncode == 0, first.stderr
    assert "`postfix check` passed" in first.stdout and "--undo" in first.stdout
    main = postconf(postfix_dir, "-n")
    # The server's own milter is kept, after ours; global TLS and SASL are untouched.
    assert (
        "smtpd_milters = { unix:smtpeter/milter.sock, "
        "default_action=$smtpeter_milter_default_action }, inet:localhost:8891" in main
    )
    assert "smtpeter_milter_default_action = tempfail" in main
    assert "smtpd_tls_security_level = may" in main and "smtpd_sasl_type" not in main
    assert "relay_domains = regexp:{ {/^bounces\\.example\\.com$$/ OK} }" in main
    found = services(postfix_dir)
    # The existing smtp service is extended (Debian's chroot kept), not replaced.
    assert found["smtp/inet"].startswith("smtp inet n - y - - smtpd")
    for key in ("smtp/inet", "submission/inet", "submissions/inet", "2525/inet"):
        o = options(found[key])
        assert o["smtpd_sasl_path"] == "$smtpeter_sasl_path", key
        assert o["milter_macro_daemon_name"] == "smtpeter", key
    assert options(found["smtp/inet"])["smtpd_tls_security_level"] == "may"  # bounce MX
    assert options(found["submission/inet"])["smtpd_tls_security_level"] == "encrypt"
    assert "smtpeter-bounce/unix" in found
    after = snapshot(postfix_dir)

    second = smtpeter(conf, postfix_dir, "--mode", "relay")
    assert second.returncode == 0, second.stderr
    assert "nothing changed" in second.stdout
    assert snapshot(postfix_dir) == after

    undone = smtpeter(conf, postfix_dir, "--undo")
    assert undone.returncode == 0, undone.stderr
    assert snapshot(postfix_dir) == before
    assert smtpeter(conf, postfix_dir, "--undo").returncode == 78  # nothing left to undo


def test_relay_listeners_can_be_chosen(conf: Path, postfix_dir: Path) -> None:
    result = smtpeter(conf, postfix_dir, "--mode", "relay", "--listeners", "587,465")
    assert result.returncode == 0, result.stderr
    found = services(postfix_dir)
    assert "2525/inet" not in found and "submissions/inet" in found
    assert "milter_macro_daemon_name" not in found["smtp/inet"]
    bad = smtpeter(conf, postfix_dir, "--mode", "relay", "--listeners", "587,26")
    assert bad.returncode == 64 and "26" in bad.stderr


def test_relay_mode_refuses_a_server_that_receives_mail(conf: Path, mx_dir: Path) -> None:
    before = snapshot(mx_dir)
    result = smtpeter(conf, mx_dir, "--mode", "relay")
    assert result.returncode == 78
    assert "main.cf: virtual_mailbox_domains = hosted.example" in result.stderr
    assert "--mode addon" in result.stderr
    assert snapshot(mx_dir) == before


def test_relay_mode_refuses_a_listener_of_another_sasl(conf: Path, mx_dir: Path) -> None:
    # Port 25 left out: the submission service still belongs to Dovecot's users.
    result = smtpeter(conf, mx_dir, "--mode", "relay", "--listeners", "587")
    assert result.returncode == 78
    assert "master.cf: submission/inet sets -o smtpd_sasl_path=private/auth" in result.stderr


def test_relay_mode_refuses_postscreen_on_25(conf: Path, postfix_dir: Path) -> None:
    postconf(postfix_dir, "-M", "smtp/inet=smtp inet n - y - 1 postscreen")
    result = smtpeter(conf, postfix_dir, "--mode", "relay")
    assert result.returncode == 78 and "postscreen" in result.stderr


def test_addon_keeps_the_mx_as_it_was_and_adds_listeners(conf: Path, mx_dir: Path) -> None:
    before_services = services(mx_dir)
    before_main = parse_main(postconf(mx_dir, "-n"))
    before = snapshot(mx_dir)
    result = smtpeter(conf, mx_dir, "--mode", "addon")
    assert result.returncode == 0, result.stderr
    # 587 is the mailbox users': said, and left to them.
    assert "port 587 is the server's own (submission/inet" in result.stdout
    after_services = services(mx_dir)
    for key in ("smtp/inet", "submission/inet"):
        assert after_services[key] == before_services[key]
    for key in ("submissions/inet", "2525/inet"):
        assert options(after_services[key])["milter_macro_daemon_name"] == "smtpeter"
    main = parse_main(postconf(mx_dir, "-n"))
    changed = {k for k in main if main[k] != before_main.get(k)}
    # Only smtpeter's own parameters and the merged lists change.
    assert {k for k in changed if not k.startswith("smtpeter")} == {
        "smtpd_milters", "non_smtpd_milters", "milter_mail_macros", "relay_domains",
        "transport_maps",
    }  # fmt: skip
    assert main["smtpeter_milter_default_action"] == "accept"
    assert main["smtpd_milters"].endswith(", inet:localhost:8891")
    assert "virtual_mailbox_domains" not in changed and "smtpd_sasl_path" not in main
    assert "snakeoil" not in result.stderr  # its own certificate is reused

    again = smtpeter(conf, mx_dir, "--mode", "addon")
    assert "nothing changed" in again.stdout
    assert smtpeter(conf, mx_dir, "--undo").returncode == 0
    assert snapshot(mx_dir) == before


def test_addon_refuses_to_take_a_port_of_the_mx(conf: Path, mx_dir: Path) -> None:
    result = smtpeter(conf, mx_dir, "--mode", "addon", "--listeners", "587,2525")
    assert result.returncode == 78
    assert "port 587 is already served by submission/inet" in result.stderr
    assert "--listeners" in result.stderr


@pytest.mark.skipif(shutil.which("opendkim") is None, reason="needs OpenDKIM")
def test_dkim_changes_are_in_the_dry_run_and_refused_when_not_ours(
    tmp_path: Path, postfix_dir: Path
) -> None:
    from smtpeter.postfix.configure import Dkim, SetupError, setup

    from smtpeter import config as configmod

    cfg = configmod.parse({}, "test")
    conf = tmp_path / "opendkim.conf"
    original = "Syslog\t\t\tyes\nUMask\t\t\t007\nSocket\t\t\tlocal:/run/opendkim/opendkim.sock\n"
    conf.write_text(original)
    dkim = Dkim("example.com", "s1", conf=conf, keys_dir=tmp_path / "keys")
    result = setup(cfg, "relay", config_dir=postfix_dir, dry_run=True, reload=False, dkim=dkim)
    assert f"+++ {conf} (smtpeter)" in result.diff
    assert "+Domain\t\t\texample.com" in result.diff
    assert "-UMask\t\t\t007" in result.diff and "+UMask\t\t\t000" in result.diff
    assert "Mode" not in result.diff  # its mode (sign and verify by default) is its own
    assert conf.read_text() == original and not (tmp_path / "keys").exists()

    conf.write_text(original + "KeyTable\t\trefile:/etc/opendkim/key.table\n")
    with pytest.raises(SetupError, match="KeyTable is set"):
        setup(cfg, "relay", config_dir=postfix_dir, dry_run=True, reload=False, dkim=dkim)
    conf.write_text(original + "Domain\t\t\tother.example\n")
    with pytest.raises(SetupError, match=r"Domain is other\.example"):
        setup(cfg, "relay", config_dir=postfix_dir, dry_run=True, reload=False, dkim=dkim)


def test_sockets_outside_the_chroot_are_refused(tmp_path: Path, postfix_dir: Path) -> None:
    conf = tmp_path / "outside.yaml"
    conf.write_text("auth:\n  socket: /run/smtpeter/auth.sock\n")
    result = smtpeter(conf, postfix_dir, "--mode", "relay")
    assert result.returncode == 78
    assert "outside Postfix's queue directory" in result.stderr


def test_missing_mode(conf: Path, postfix_dir: Path) -> None:
    result = smtpeter(conf, postfix_dir)
    assert result.returncode == 64 and "--mode" in result.stderr
