"""The Postfix settings we ship, rendered and checked by Postfix's own postconf."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from smtpeter.postfix.configure import parse_master
from smtpeter.postfix.render import (
    InstanceSettings,
    Listener,
    RelaySettings,
    merge_milters,
    render_instance,
    split_list,
)

pytestmark = pytest.mark.skipif(shutil.which("postconf") is None, reason="needs Postfix")


def render(tmp_path: Path, bounce_domain: str | None) -> Path:
    relay = RelaySettings(
        tls_cert_file="/etc/ssl/certs/ssl-cert-snakeoil.pem",
        tls_key_file="/etc/ssl/private/ssl-cert-snakeoil.key",
        auth_socket="/run/smtpeter/auth.sock",
        milter_socket="unix:/run/smtpeter/milter.sock",
        listeners=(
            Listener("25", "127.0.0.1:2525"),
            Listener("587", "127.0.0.1:2587"),
            Listener("465", "127.0.0.1:2465"),
            Listener("2525", "127.0.0.1:2626"),
        ),
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


OURS = "{ unix:/run/smtpeter/milter.sock, default_action=$smtpeter_milter_default_action }"


def options(services: dict[str, str], key: str) -> dict[str, str]:
    words = services[key].split()
    pairs = [w.split("=", 1) for w, prev in zip(words[1:], words, strict=False) if prev == "-o"]
    return {name: value for name, value in pairs}


@pytest.mark.parametrize("bounce_domain", [None, "bounces.example.com"])
def test_postconf_accepts_the_settings(tmp_path: Path, bounce_domain: str | None) -> None:
    directory = render(tmp_path, bounce_domain)
    main = postconf(directory, "-n")
    assert f"smtpd_milters = {OURS}" in main
    assert f"non_smtpd_milters = {OURS}" in main  # sendmail(1) and pickup too
    assert "{daemon_name}" in postconf(directory, "-h", "milter_mail_macros")
    services = parse_master(postconf(directory, "-M"))
    for key in ("127.0.0.1:2525/inet", "127.0.0.1:2587/inet", "127.0.0.1:2465/inet",
                "127.0.0.1:2626/inet"):  # fmt: skip
        o = options(services, key)
        assert o["smtpd_tls_auth_only"] == "yes" and o["smtpd_sasl_type"] == "dovecot"
        assert o["milter_macro_daemon_name"] == "smtpeter"
        assert o["smtpeter_milter_default_action"] == "tempfail"
    assert options(services, "127.0.0.1:2465/inet")["smtpd_tls_wrappermode"] == "yes"
    assert options(services, "127.0.0.1:2626/inet")["smtpd_tls_wrappermode"] == "no"


def test_without_bounces_every_listener_requires_tls_and_refuses_mail_at_mail(
    tmp_path: Path,
) -> None:
    directory = render(tmp_path, None)
    services = parse_master(postconf(directory, "-M"))
    for key in services:
        if key.endswith("/inet"):
            o = options(services, key)
            assert o["smtpd_tls_security_level"] == "encrypt"
            assert o["smtpd_delay_reject"] == "no"
            assert o["smtpd_sender_restrictions"] == "$smtpeter_submission_sender_restrictions"
    assert "smtpeter-bounce/unix" not in services
    assert "530 5.7.0 Authentication required" in postconf(
        directory, "-h", "smtpeter_submission_sender_restrictions"
    )


def test_with_bounces_port_25_is_a_plaintext_mx_for_exactly_the_domain(tmp_path: Path) -> None:
    directory = render(tmp_path, "bounces.example.com")
    services = parse_master(postconf(directory, "-M"))
    o = options(services, "127.0.0.1:2525/inet")
    assert o["smtpd_tls_security_level"] == "may"  # RFC 3207 section 4
    assert o["smtpd_tls_auth_only"] == "yes"
    assert o["smtpd_relay_restrictions"] == "$smtpeter_mx_relay_restrictions"
    # The submission listeners still require TLS.
    assert options(services, "127.0.0.1:2587/inet")["smtpd_tls_security_level"] == "encrypt"
    assert (
        "smtpeter-bounce/unix" in services and "user=smtpeter" in services["smtpeter-bounce/unix"]
    )
    # No reinjection listener: forwarded bounces go through sendmail(1).
    assert [k for k in services if k.endswith("/inet")] == [
        "127.0.0.1:2525/inet", "127.0.0.1:2587/inet", "127.0.0.1:2465/inet",
        "127.0.0.1:2626/inet",
    ]  # fmt: skip
    table = postconf(directory, "-hx", "smtpeter_bounce_recipients").strip()
    domains = postconf(directory, "-hx", "relay_domains").strip()
    for address, accepted in [
        ("b+abc@bounces.example.com", True),
        ("B+ABC@Bounces.Example.COM", True),
        ("b+abc@x.bounces.example.com", False),
        ("victim%evil.example@bounces.example.com", False),
        ("evil.example!victim@bounces.example.com", False),
        ('"victim@evil.example"@bounces.example.com', False),
        ("b+abc@bounces.example.com.evil.example", False),
        ("b+abc@bounces-example.com", False),
    ]:
        found = subprocess.run(
            ["postmap", "-c", str(directory), "-q", address, table], capture_output=True
        )
        assert (found.returncode == 0) is accepted, address
    for domain, relayed in [("bounces.example.com", True), ("x.bounces.example.com", False)]:
        found = subprocess.run(
            ["postmap", "-c", str(directory), "-q", domain, domains], capture_output=True
        )
        assert (found.returncode == 0) is relayed, domain


def test_split_list_keeps_groups_whole() -> None:
    value = "{ unix:/a, default_action=accept }, inet:localhost:8891 unix:/b,{inet:x:1}"
    assert split_list(value) == [
        "{ unix:/a, default_action=accept }", "inet:localhost:8891", "unix:/b", "{inet:x:1}"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("current", "merged"),
    [
        ("", OURS),
        ("inet:localhost:8891", f"{OURS}, inet:localhost:8891"),
        # An older entry of ours is replaced in place of being added twice.
        (
            "inet:localhost:11332, { unix:/run/smtpeter/milter.sock, default_action=tempfail }, "
            "unix:/opendkim.sock",
            f"{OURS}, inet:localhost:11332, unix:/opendkim.sock",
        ),
        ("$smtpd_milters", "$smtpd_milters"),
    ],
)
def test_merge_milters_keeps_every_other_milter_in_order(current: str, merged: str) -> None:
    assert merge_milters(current, OURS) == merged
