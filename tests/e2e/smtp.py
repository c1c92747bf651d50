"""Sending through the stack as a mail client would, and finding what was delivered."""

from __future__ import annotations

import email
import email.policy
import json
import smtplib
import ssl
import subprocess
import sys
import time
import uuid
from email.message import EmailMessage
from pathlib import Path

from smtpeter.local.stack import LocalStack


def tls_context(stack: LocalStack) -> ssl.SSLContext:
    """Verify the stack's self-signed certificate, as a careful client would."""
    return ssl.create_default_context(cafile=str(stack.cert_file))


def connect(stack: LocalStack, port: int, *, starttls: bool = True) -> smtplib.SMTP:
    """A client session on one of the stack's listeners: implicit TLS on the one
    standing in for 465, else STARTTLS (unless ``starttls`` is False)."""
    if port == stack.ports.submissions:
        tls = smtplib.SMTP_SSL("127.0.0.1", port, timeout=30, context=tls_context(stack))
        tls.ehlo("client.example.net")
        return tls
    client = smtplib.SMTP("127.0.0.1", port, timeout=30)
    client.ehlo("client.example.net")
    if starttls:
        client.starttls(context=tls_context(stack))
        client.ehlo("client.example.net")
    return client


def marker() -> str:
    return uuid.uuid4().hex


def with_marker(raw: bytes, mark: str) -> bytes:
    """Give a test message a unique Message-ID so its delivery can be found."""
    lines = [
        line for line in raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        if not line.lower().startswith(b"message-id:")
    ]  # fmt: skip
    head = b"\r\n".join(lines)
    body = raw.split(b"\r\n\r\n", 1)[1]
    return head + f"\r\nMessage-ID: <{mark}@test.example>\r\n\r\n".encode() + body


def send(
    stack: LocalStack,
    user: str,
    password: str,
    raw: bytes,
    *,
    port: int | None = None,
    mechanism: str = "PLAIN",
    sender: str = "sender@example.com",
    recipients: tuple[str, ...] = ("rcpt@example.org",),
) -> str:
    """Send raw over STARTTLS + AUTH; returns the marker in its Message-ID."""
    mark = marker()
    with connect(stack, port or stack.ports.submission) as client:
        client.user, client.password = user, password
        client.auth(
            mechanism, getattr(client, f"auth_{mechanism.lower()}"), initial_response_ok=True
        )
        client.sendmail(sender, list(recipients), with_marker(raw, mark))
    return mark


def simple(subject: str = "hello", html: str | None = None, **headers: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "sender@example.com"
    msg["To"] = "rcpt@example.org"
    msg["Subject"] = subject
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    if html is None:
        msg.set_content("plain text body\n")
    else:
        msg.set_content("plain alternative\n")
        msg.add_alternative(html, subtype="html")
    return msg.as_bytes(policy=email.policy.SMTP)


def find_delivered(stack: LocalStack, mark: str, timeout: float = 20.0) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in stack.delivered():
            data = path.read_bytes()
            if mark.encode() in data:
                return data
        stack.flush()
        time.sleep(0.1)
    raise AssertionError(f"message {mark} was not delivered within {timeout} s")


def delivered_paths(stack: LocalStack, mark: str) -> list[Path]:
    return [p for p in stack.delivered() if mark.encode() in p.read_bytes()]


def parse(data: bytes) -> email.message.EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    return msg


def events(stack: LocalStack, *args: str) -> list[dict[str, object]]:
    """`smtpeter events --json ARGS` against the stack, as a sysadmin runs it."""
    result = subprocess.run(
        [sys.executable, "-m", "smtpeter", "--config", str(stack.config_file), "events",
         "--json", *args],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return [json.loads(line) for line in result.stdout.splitlines()]
