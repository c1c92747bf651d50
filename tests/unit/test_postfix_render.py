"""The Postfix settings we ship, rendered and checked by Postfix's own postconf."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from smtpeter.postfix.render import InstanceSettings, RelaySettings, render_instance

pytestmark = pytest.mark.skipif(shutil.which("postconf") is None, reason="needs Postfix")


def render(tmp_path: Path, bounce_domain: str | None) -> Path:
    relay = RelaySettings(
        tls_cert_file="/etc/ssl/certs/ssl-cert-snakeoil.pem",
        tls_key_file="/etc/ssl/private/ssl-cert-snakeoil.key",
        auth_socket="/run/smtpeter/auth.sock",
        milter_socket="unix:/run/smtpeter/milter.sock",
        smtp_listen="127.0.0.1:2525",
        submission_listen="127.0.0.1:2587",
        chroot=False,
        bounce_domain=bounce_domain,
    )
    instance = InstanceSettings(
        config_dir=str(tmp_path),
        queue_dir=str(tmp_path / "queue"),
        data_dir=str(tmp_path / "data"),
        log_file=str(tmp_path / "postfix.log"),
        log_dir=str(tmp_path),
        relayhost="[127.0.0.1]:2526",
    )
    for name, text in render_instance(relay, instance).items():
        (tmp_path / name).write_text(text)
    return tmp_path


def postconf(directory: Path, *args: str) -> str:
    result = subprocess.run(
        ["postconf", "-c", str(directory), *args], capture_output=True, text=True, check=True
    )
    assert "warning" not in result.stderr, result.stderr
    return result.stdout


@pytest.mark.parametrize("bounce_domain", [None, "bounces.example.com"])
def test_postconf_accepts_the_settings(tmp_path: Path, bounce_domain: str | None) -> None:
    directory = render(tmp_path, bounce_domain)
    main = postconf(directory, "-n")
    assert "smtpd_tls_security_level = encrypt" in main
    assert "smtpd_tls_auth_only = yes" in main
    assert "smtpd_sasl_type = dovecot" in main
    assert "smtpd_milters = { unix:/run/smtpeter/milter.sock, default_action=tempfail }" in main
    services = postconf(directory, "-M")
    assert "127.0.0.1:2587 inet" in services


def test_without_bounces_mail_is_refused_at_mail(tmp_path: Path) -> None:
    main = postconf(render(tmp_path, None), "-n")
    assert "smtpd_delay_reject = no" in main
    assert "check_sender_access static:{530 5.7.0 Authentication required}" in main
    assert "smtpeter-bounce" not in postconf(tmp_path, "-M")


def test_with_bounces_the_domain_goes_to_the_pipe(tmp_path: Path) -> None:
    directory = render(tmp_path, "bounces.example.com")
    main = postconf(directory, "-n")
    assert "relay_domains = bounces.example.com" in main
    assert "transport_maps = inline:{ bounces.example.com=smtpeter-bounce: }" in main
    services = postconf(directory, "-M")
    assert "smtpeter-bounce unix" in services and "user=smtpeter" in services
    assert "127.0.0.1:10026 inet" in services
