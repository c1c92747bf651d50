"""The README's first command: `smtpeter local up`, used as a newcomer would."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from smtpeter.local.stack import free_port

pytestmark = pytest.mark.e2e


def smtpeter(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "smtpeter", *args], capture_output=True, text=True, timeout=120
    )


def test_up_send_up_again_down() -> None:
    root = Path(tempfile.mkdtemp(prefix="smtpeter-local-"))
    root.chmod(0o755)
    ports = [str(free_port()) for _ in range(4)]
    where = ["--dir", str(root)]
    try:
        up = smtpeter("local", "up", *where, "--smtp-port", ports[0],
                      "--submission-port", ports[1], "--sink-port", ports[2],
                      "--tracker-port", ports[3])  # fmt: skip
        assert up.returncode == 0, up.stdout + up.stderr
        out = up.stdout
        password = re.search(r"Password:\s+(\S+(?: \S+)+?)\s{3}", out)
        assert password, out
        expected = [f"{ports[0]} (as 25)", f"{ports[1]} (as 587)", "Login:      demo",
                    str(root / "smtpeter.yaml"), str(root / "Maildir"), "local down"]  # fmt: skip
        for text in expected:
            assert text in out

        # The printed instructions work: send with the printed login over STARTTLS.
        sent = subprocess.run(
            ["swaks", "--server", f"127.0.0.1:{ports[1]}", "--tls", "--auth", "LOGIN",
             "--auth-user", "demo", "--auth-password", password.group(1),
             "--from", "you@example.com", "--to", "someone@example.com",
             "--header", "X-SMTPeter-TrackOpens: false", "--header", "Subject: local demo"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stdout
        files: list[Path] = []
        for _ in range(200):
            files = list((root / "Maildir" / "new").iterdir())
            if files:
                break
            time.sleep(0.1)
        [delivered] = files
        text = delivered.read_text()
        assert "Subject: local demo" in text and "x-smtpeter" not in text.lower()

        again = smtpeter("local", "up", *where)
        assert again.returncode == 0
        assert "already running; nothing changed" in again.stdout
        assert "Password:   unchanged" in again.stdout

        status = smtpeter("local", "status", *where)
        assert status.returncode == 0 and "stopped" not in status.stdout
    finally:
        down = smtpeter("local", "down", *where)
        shutil.rmtree(root, ignore_errors=True)
    assert down.returncode == 0
    after = smtpeter("local", "status", *where)
    assert after.returncode == 69
