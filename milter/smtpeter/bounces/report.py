"""What bounce detection reports: one :class:`Failure` per recipient a bounce is
about, in a :class:`Report` that says which detector read it; and the limits on the
work one message can cause."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["hard", "soft", "delay", "autoreply", "unknown"]

# Limits on the work one message can cause. A bounce puts its report before the
# returned original, so the first MiB holds everything a detector reads.
MAX_RAW = 1 << 20
MAX_TEXT = 256 * 1024
MAX_PARTS = 200
MAX_DEPTH = 12
MAX_FAILURES = 200
MAX_DIAGNOSTIC = 1000


@dataclass(frozen=True)
class Failure:
    """One recipient the report is about."""

    recipient: str
    """The address, bare (no ``<>``, no ``rfc822;``), its domain lowercased."""
    status: str | None
    """Enhanced status code (RFC 3463), e.g. ``5.1.1``; derived from the SMTP reply
    (``550`` gives ``5.0.0``) when the report has no enhanced code."""
    kind: Kind
    diagnostic: str | None
    """The remote reason as reported, unfolded, e.g. ``smtp; 550 5.1.1 ...``."""
    reporting_mta: str | None
    remote_mta: str | None
    original: str | None = None
    """The address the failed one was expanded from, when the report says so (an
    alias: Exim's "(generated from X)", Postfix's and Sendmail's "(expanded from X)");
    it is the one the message was sent to."""
    reason: str | None = None
    """Why it failed, for a hard or soft bounce (:mod:`smtpeter.bounces.reasons`,
    which also decided ``kind`` by it); None for delays, auto-replies and failures
    nothing is known about."""


@dataclass(frozen=True)
class Report:
    failures: tuple[Failure, ...]
    is_dsn: bool
    """The message is a multipart/report with report-type=delivery-status."""
    detector: str
    """Which detector matched: ``dsn``, ``qmail``, ``exim``, ... or ``none``."""
    original_message_id: str | None
    """Message-ID of the returned original (or, for an auto-reply, its In-Reply-To)."""


NOTHING = Report((), False, "none", None)
