"""Logging for the daemons: one format, to stderr (systemd's journal or a log file)."""

from __future__ import annotations

import logging
import sys


def setup(level: str = "info", *, stream: object = None) -> None:
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)  # type: ignore[arg-type]
    handler.setFormatter(
        logging.Formatter(
            "%(asctime)s %(name)s[%(process)d]: %(levelname)s %(message)s",
            datefmt="%Y-%m-%dT%H:%M:%S",
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # cssutils (premailer) logs every CSS property it does not know at ERROR.
    logging.getLogger("CSSUTILS").setLevel(logging.CRITICAL)


def add_syslog(ident: str) -> None:
    """Also log to syslog (mail facility), for processes Postfix starts (the bounce
    processor), whose stderr only reaches a log when they fail."""
    import logging.handlers
    import os

    if not os.path.exists("/dev/log"):
        return
    handler = logging.handlers.SysLogHandler(
        address="/dev/log", facility=logging.handlers.SysLogHandler.LOG_MAIL
    )
    handler.setFormatter(logging.Formatter(f"{ident}[%(process)d]: %(message)s"))
    logging.getLogger().addHandler(handler)
