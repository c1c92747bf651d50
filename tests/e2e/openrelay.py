"""An open-relay battery: the address forms relays have been abused with, tried on
one listener as a client without AUTH (or with credentials the listener must
refuse) would try them."""

from __future__ import annotations

import contextlib
import smtplib
import ssl
from collections.abc import Callable
from dataclasses import dataclass


def hostile_recipients(bounce_domain: str) -> list[str]:
    """RCPT TO forms that must never be relayed, for a server whose only
    unauthenticated destination is ``bounce_domain`` (and, on an MX, its own)."""
    b = bounce_domain
    victim = "victim.example"
    return [
        f"<user@{victim}>",
        f"<user@{victim.upper()}>",
        f"<user@{victim}.>",
        f"<user%{victim}@{b}>",  # percent hack
        f"<{victim}!user@{b}>",  # bang path
        f"<@{b}:user@{victim}>",  # source route
        f"<@{b},@{b}:user@{victim}>",
        f"<user@{victim}@{b}>",
        f"<user@@{victim}>",
        f'<"user@{victim}"@{b}>',  # quoted local part
        f'<"user%{victim}"@{b}>',
        f'<"user@{victim}">',
        "<user@[127.0.0.2]>",  # IP literal (loopback: nothing may leave the machine)
        "<user@[IPv6:::1]>",
        f"<user@sub.{b}>",  # below the bounce domain
        f"<b+x@deep.sub.{b}>",
        f"<user@SUB.{b.upper()}>",
        f"<user@sub.{b}.>",
        f"<user%{victim}@sub.{b}>",
        f"<user@{b}.{victim}>",
        f"<user@x{b}>",
    ]


@dataclass
class Attempt:
    recipient: str
    code: int
    reply: bytes

    @property
    def accepted(self) -> bool:
        return 200 <= self.code < 300


def try_recipients(
    open_session: Callable[[], smtplib.SMTP],
    recipients: list[str],
    *,
    sender: str = "<attacker@evil.example>",
    login: tuple[str, str] | None = None,
    data: bytes = b"Subject: relay test\r\n\r\nrelay test\r\n",
) -> list[Attempt]:
    """Each recipient in a session of its own (a refusal can end a session); an
    accepted one gets the message, so a relayed copy would show at the sink."""
    attempts = []
    for rcpt in recipients:
        try:
            with open_session() as client:
                if login is not None:
                    # Refused credentials: carry on unauthenticated.
                    with contextlib.suppress(smtplib.SMTPException):
                        client.login(*login)
                code, reply = client.docmd("MAIL", f"FROM:{sender}")
                if code == 250:
                    code, reply = client.docmd("RCPT", f"TO:{rcpt}")
                    if code in (250, 251):
                        client.data(data + rcpt.encode() + b"\r\n")
                attempts.append(Attempt(rcpt, code, reply))
        except (smtplib.SMTPException, ssl.SSLError, OSError) as e:
            attempts.append(Attempt(rcpt, 0, str(e).encode()))
    return attempts
