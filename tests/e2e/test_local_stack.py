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


def printed_commands(out: str) -> list[str]:
    """The commands `local up` tells the user to run (continuation lines joined),
    except the one that stops the stack."""
    commands: list[str] = []
    lines = iter(out.splitlines())
    for line in lines:
        if not line.startswith("  ") or line.startswith("   ") or ":" in line.split()[0]:
            continue
        command = line.strip()
        while command.endswith("\\"):
            command = command[:-1] + next(lines).strip()
        if command.split()[0] in ("swaks", "smtpeter") or "/smtpeter " in command:
            commands.append(command)
    return [c for c in commands if " local down" not in c]


def test_up_send_up_again_down() -> None:
    root = Path(tempfile.mkdtemp(prefix="smtpeter-local-"))
    root.chmod(0o755)
    ports = [str(free_port()) for _ in range(6)]
    where = ["--dir", str(root)]
    try:
        up = smtpeter("local", "up", *where, "--smtp-port", ports[0],
                      "--submission-port", ports[1], "--sink-port", ports[2],
                      "--tracker-port", ports[3], "--submissions-port", ports[4],
                      "--alternate-port", ports[5])  # fmt: skip
        assert up.returncode == 0, up.stdout + up.stderr
        out = up.stdout
        password = re.search(r"Password:\s+(\S+(?: \S+)+?)\s{3}", out)
        assert password, out
        expected = [f"{ports[0]} (as 25)", f"{ports[1]} (as 587)",
                    f"{ports[4]} (as 465, implicit TLS)", f"{ports[5]} (as 2525)",
                    "Login:      demo",
                    str(root / "smtpeter.yaml"), str(root / "Maildir"), "local down"]  # fmt: skip
        for text in expected:
            assert text in out

        # The printed instructions work as printed: the swaks command (which needs
        # its TLS modules, installed by bootstrap), then the login and events ones.
        commands = printed_commands(out)
        assert commands[0].startswith("swaks --server 127.0.0.1:" + ports[1] + " --tls ")
        for command in commands:
            ran = subprocess.run(
                ["bash", "-c", command], capture_output=True, text=True, timeout=60
            )
            assert ran.returncode == 0, command + "\n" + ran.stdout + ran.stderr
        files: list[Path] = []
        for _ in range(200):
            files = list((root / "Maildir" / "new").iterdir())
            if files:
                break
            time.sleep(0.1)
        [delivered] = files
        text = delivered.read_text()
        assert "This is a test mailing" in text  # swaks's own message
        assert "x-smtpeter" not in text.lower()

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
