"""The Debian package on this machine's own Postfix, as a sysadmin installs it.

Builds the package twice (0.1.0 and 0.1.1, for the upgrade), installs it, runs
`smtpeter postfix setup` in relay mode (with DKIM by OpenDKIM) and in addon mode,
sends through the system Postfix with STARTTLS and AUTH, upgrades, removes and
purges. This changes the machine's Postfix, so it runs only where that is wanted:
in CI (scripts/test sets SMTPETER_PACKAGE_TESTS=1 there) or when asked to.
SMTPETER_REUSE_DEBS=1 reuses the packages already in dist/ instead of building.

systemd does not run here, so the daemons are started as their units start them:
as user smtpeter with the supplementary group postfix.
"""

from __future__ import annotations

import email
import email.policy
import grp
import json
import os
import pwd
import re
import shutil
import smtplib
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dkim
import pytest
import yaml

ROOT = Path(__file__).parents[2]
DIST = ROOT / "dist"
SMTPETER = "/usr/bin/smtpeter"
CONF = Path("/etc/smtpeter/smtpeter.yaml")
DKIM_DOMAIN, DKIM_SELECTOR = "example.com", "pkgtest"

pytestmark = [
    pytest.mark.skipif(
        os.environ.get("SMTPETER_PACKAGE_TESTS") != "1",
        reason="changes the system Postfix; set SMTPETER_PACKAGE_TESTS=1 (CI does)",
    ),
    pytest.mark.timeout(1800),
]


def sh(
    *cmd: str,
    check: bool = True,
    timeout: float = 300,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr}")  # fmt: skip
    return result


def apt_install(*what: str) -> None:
    sh(
        "apt-get",
        "install",
        "-y",
        "-q",
        *what,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )


def deb(version: str) -> Path:
    [path] = DIST.glob(f"smtpeter_{version}-1_*.deb")
    return path


class System:
    """The daemons, the sink and Postfix on this machine."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.maildir = work / "Maildir"
        self.sink_port = 2626
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.sink: subprocess.Popen[bytes] | None = None

    def start_daemons(self) -> None:
        for name in ("authd", "milter", "tracker"):
            log = open(self.work / f"{name}.log", "ab")  # noqa: SIM115 (kept by the process)
            self.procs[name] = subprocess.Popen(
                [SMTPETER, name], user="smtpeter", group="smtpeter", extra_groups=["postfix"],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        for sock in ("auth.sock", "milter.sock"):
            path = Path("/var/spool/postfix/smtpeter") / sock
            for _ in range(200):
                if path.exists():
                    break
                time.sleep(0.05)
            assert path.exists(), (self.work / "milter.log").read_text()

    def stop_daemons(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()

    def start_sink(self) -> None:
        log = open(self.work / "sink.log", "ab")  # noqa: SIM115
        self.sink = subprocess.Popen(
            # From the test's own environment: it must outlive the package's removal.
            [sys.executable, "-m", "smtpeter", "sink", "--port", str(self.sink_port),
             "--maildir", str(self.maildir)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def delivered(self, mark: str, timeout: float = 30) -> bytes:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for path in (self.maildir / "new").glob("*"):
                data = path.read_bytes()
                if mark.encode() in data:
                    return data
            time.sleep(0.2)
            sh("postqueue", "-f", check=False)
        log = Path("/var/log/postfix-smtpeter-test.log")
        raise AssertionError(
            f"{mark} not delivered:\n" + (log.read_text()[-3000:] if log.exists() else "")
        )


@pytest.fixture(scope="module")
def system() -> Iterator[System]:
    if os.geteuid() != 0:
        pytest.fail("the package test installs a package: run as root")
    reuse = os.environ.get("SMTPETER_REUSE_DEBS") == "1"  # to iterate on this test
    for version in ("0.1.0", "0.1.1"):
        if not (reuse and list(DIST.glob(f"smtpeter_{version}-1_*.deb"))):
            sh("bash", str(ROOT / "packaging" / "build-deb"), "--version", version,
               "--untracked", timeout=1200)  # fmt: skip
    apt_install("opendkim", "opendkim-tools", "ssl-cert")
    work = Path(tempfile.mkdtemp(prefix="smtpeter-pkg-"))
    work.chmod(0o755)
    s = System(work)
    # The system Postfix: loopback only, its own log file, everything relayed to the
    # sink (nothing leaves the machine). It starts from the files Debian's postinst
    # writes (main.cf is missing where Postfix was installed unconfigured, as
    # scripts/bootstrap does), whatever an earlier run on this machine left; the
    # files found are put back afterwards.
    saved: dict[Path, bytes | None] = {}
    for path, dist in (
        (Path("/etc/postfix/main.cf"), "/usr/share/postfix/main.cf.debian"),
        (Path("/etc/postfix/master.cf"), "/usr/share/postfix/master.cf.dist"),
    ):
        saved[path] = path.read_bytes() if path.exists() else None
        shutil.copy(dist, path)
    shutil.rmtree("/etc/postfix/smtpeter-backup", ignore_errors=True)
    sh("postconf", "-e", "inet_interfaces=127.0.0.1", "inet_protocols=ipv4",
       "myhostname=relay.smtpeter.test", "mydestination=",
       f"relayhost=[127.0.0.1]:{s.sink_port}", "smtp_tls_security_level=none",
       "maillog_file=/var/log/postfix-smtpeter-test.log")  # fmt: skip
    s.start_sink()
    try:
        yield s
    finally:
        s.stop_daemons()
        if s.sink is not None:
            s.sink.terminate()
        sh("postfix", "stop", check=False)
        sh("pkill", "-x", "opendkim", check=False)
        sh("apt-get", "purge", "-y", "smtpeter", check=False)
        for path, data in saved.items():
            if data is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(data)


def send(port: int, user: str, password: str, html: str, **headers: str) -> str:
    mark = uuid.uuid4().hex
    msg = email.message.EmailMessage()
    msg["From"] = f"shop@{DKIM_DOMAIN}"
    msg["To"] = "reader@example.org"
    msg["Subject"] = f"package test {mark}"
    msg["Message-ID"] = f"<{mark}@{DKIM_DOMAIN}>"
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content("plain\n")
    msg.add_alternative(html, subtype="html")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the snakeoil certificate
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.starttls(context=context)
        client.login(user, password)
        client.send_message(msg)
    return mark


HTML = (
    "<html><head><style>p { color: #ff0000; }</style></head><body>"
    '<p>hello <a href="https://example.org/offer">offer</a></p></body></html>'
)


def dns_record() -> bytes:
    txt = (Path("/etc/opendkim/keys") / DKIM_DOMAIN / f"{DKIM_SELECTOR}.txt").read_text()
    return "".join(re.findall(r'"([^"]*)"', txt)).encode()


def test_install_setup_send_upgrade_remove_purge(system: System) -> None:
    # -- install ---------------------------------------------------------------------
    apt_install(str(deb("0.1.0")))
    assert sh(SMTPETER, "--version").stdout.strip() == "smtpeter 0.1.0"
    assert CONF.exists()
    service = pwd.getpwnam("smtpeter")
    assert Path("/var/lib/smtpeter").stat().st_uid == service.pw_uid
    assert Path("/var/spool/postfix/smtpeter").stat().st_gid == grp.getgrnam("postfix").gr_gid
    data = yaml.safe_load(CONF.read_text())
    data["bounces"]["domain"] = "bounces.smtpeter.test"
    CONF.write_text("# edited by the package test\n" + yaml.safe_dump(data))
    system.start_daemons()

    # -- relay mode, with DKIM after our milter ---------------------------------------
    setup = sh(SMTPETER, "postfix", "setup", "--mode", "relay",
               "--dkim-domain", DKIM_DOMAIN, "--dkim-selector", DKIM_SELECTOR)  # fmt: skip
    assert "postfix check` passed" in setup.stdout
    assert "DKIM: publish this TXT record" in setup.stdout
    Path("/run/opendkim").mkdir(exist_ok=True)
    shutil.chown("/run/opendkim", "opendkim", "opendkim")
    sh("opendkim", "-x", "/etc/opendkim.conf")
    sh("postfix", "start", check=False)
    sh("postfix", "reload", check=False)
    again = sh(SMTPETER, "postfix", "setup", "--mode", "relay",
               "--dkim-domain", DKIM_DOMAIN, "--dkim-selector", DKIM_SELECTOR)  # fmt: skip
    assert "nothing changed" in again.stdout

    login = json.loads(sh(SMTPETER, "login", "create", "pkg", "--inlinecss", "--trackclicks",
                          "--json").stdout)  # fmt: skip
    mark = send(587, "pkg", login["password"], HTML, X_SMTPeter_TrackOpens="true")
    delivered = system.delivered(mark)
    message = email.message_from_bytes(delivered, policy=email.policy.default)
    assert b"x-smtpeter" not in delivered.lower()
    html_part = message.get_body(preferencelist=("html",))
    assert html_part is not None
    html = html_part.get_content()
    assert 'style="color: #ff0000' in html
    assert "http://127.0.0.1:8025/c/" in html and "http://127.0.0.1:8025/o/" in html
    assert message["DKIM-Signature"] is not None
    signed = delivered.split(b"\n", 2)[2]  # the sink's Return-Path and Delivered-To
    assert dkim.verify(
        signed.replace(b"\n", b"\r\n"), dnsfunc=lambda _name, timeout=5: dns_record()
    )

    with smtplib.SMTP("127.0.0.1", 25, timeout=30) as client:
        client.starttls(context=ssl._create_unverified_context())
        client.mail("someone@example.net")
        assert client.rcpt("reader@example.org")[0] == 530

    # -- addon mode: port 25 keeps receiving for a hosted domain -----------------------
    sh(SMTPETER, "postfix", "setup", "--undo")
    sh("postconf", "-e", "relay_domains=hosted.test",
       f"transport_maps=inline:{{ hosted.test=smtp:[127.0.0.1]:{system.sink_port} }}")  # fmt: skip
    addon = sh(SMTPETER, "postfix", "setup", "--mode", "addon")
    assert "postfix check` passed" in addon.stdout
    sh("postfix", "reload")
    time.sleep(1)
    mark = uuid.uuid4().hex
    with smtplib.SMTP("127.0.0.1", 25, timeout=30) as client:
        client.sendmail(
            "someone@example.net", ["user@hosted.test"],
            (f"From: someone@example.net\r\nTo: user@hosted.test\r\nSubject: {mark}\r\n"
             "X-SMTPeter-InlineCSS: true\r\nx-smtpeter-campaign: x\r\n"
             "Content-Type: text/html\r\n\r\n" + HTML + "\r\n").encode(),
        )  # fmt: skip
    arrived = system.delivered(mark)
    assert b"x-smtpeter" not in arrived.lower()
    assert b"<style>p { color: #ff0000; }</style>" in arrived  # no feature for unauthenticated mail
    mark = send(587, "pkg", login["password"], HTML)
    assert b'style=3D"color: #ff0000' in system.delivered(mark)

    # -- upgrade: config and data kept ------------------------------------------------
    system.stop_daemons()
    apt_install(str(deb("0.1.1")))
    assert sh(SMTPETER, "--version").stdout.strip() == "smtpeter 0.1.1"
    assert CONF.read_text().startswith("# edited by the package test")
    listed = [
        json.loads(line) for line in sh(SMTPETER, "login", "list", "--json").stdout.splitlines()
    ]
    assert [item["name"] for item in listed] == ["pkg"]
    system.start_daemons()
    mark = send(587, "pkg", login["password"], HTML)
    system.delivered(mark)

    # -- remove: Postfix keeps running; purge: config and data gone --------------------
    system.stop_daemons()
    sh(SMTPETER, "postfix", "setup", "--undo")
    sh("apt-get", "remove", "-y", "smtpeter")
    assert not Path(SMTPETER).exists()
    assert sh("postfix", "status", check=False).returncode == 0
    assert CONF.exists() and Path("/var/lib/smtpeter").exists()
    sh("apt-get", "purge", "-y", "smtpeter")
    assert not Path("/etc/smtpeter").exists()
    assert not Path("/var/lib/smtpeter").exists()
    assert sh("postfix", "check", check=False).returncode == 0
