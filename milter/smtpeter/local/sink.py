"""A local SMTP sink: accepts whatever the private Postfix relays and writes each
message into a Maildir, so the local stack and the tests never send mail anywhere.

Each delivered file starts with ``Return-Path`` and one ``Delivered-To`` per
recipient, as a real delivery agent writes them; the message follows unchanged
(line endings converted to LF, as Maildir expects).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import socket
import time
from typing import Any

from aiosmtpd.smtp import SMTP

log = logging.getLogger("smtpeter.sink")


class MaildirHandler:
    def __init__(self, maildir: str, reject: str | None = None, defer: str | None = None) -> None:
        self.maildir = maildir
        self.reject = re.compile(reject) if reject else None
        self.defer = re.compile(defer) if defer else None
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(maildir, sub), exist_ok=True)
        self._seq = 0

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.reject is not None and self.reject.search(address):
            return "550 5.1.1 <" + address + ">: Recipient address rejected: User unknown"
        if self.defer is not None and self.defer.search(address):
            return "450 4.2.1 <" + address + ">: Mailbox temporarily unavailable"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content: bytes = envelope.original_content or envelope.content
        lines = [f"Return-Path: <{(envelope.mail_from or '').strip('<>')}>"]
        lines += [f"Delivered-To: {rcpt}" for rcpt in envelope.rcpt_tos]
        data = ("\n".join(lines) + "\n").encode() + content.replace(b"\r\n", b"\n")
        self._seq += 1
        name = f"{time.time():.6f}.{os.getpid()}_{self._seq}.{socket.gethostname()}"
        tmp = os.path.join(self.maildir, "tmp", name)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, os.path.join(self.maildir, "new", name))
        log.info(
            "delivered from=<%s> to=%s size=%d file=%s",
            envelope.mail_from,
            ",".join(envelope.rcpt_tos),
            len(data),
            name,
        )
        return "250 2.0.0 Delivered to the local sink"


async def serve(
    host: str, port: int, maildir: str, reject: str | None = None, defer: str | None = None
) -> None:
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's per-command chatter
    handler = MaildirHandler(maildir, reject, defer)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(
            handler, hostname="sink.localhost", data_size_limit=None, enable_SMTPUTF8=True
        ),
        host=host,
        port=port,
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("listening on %s:%d, delivering to %s", host, port, maildir)
    async with server:
        await stop.wait()
    log.info("stopped")
