"""Recognising what comes back to a VERP bounce address.

:func:`detect` reads one raw message and says which recipients failed and how.
Detectors run in order and the first that yields wins:

1. ``dsn``: an RFC 3464 delivery status notification (``message/delivery-status``,
   or RFC 6533's ``message/global-delivery-status``). When one is present it is
   authoritative: a DSN that only reports ``delivered`` or ``relayed`` recipients
   yields no failures, and the human-readable text beside it is not second-guessed.
2. One small detector per common non-standard format: ``qmail``, ``yahoo``,
   ``exim``, ``postfix`` (pre-DSN plain text), ``sendmail`` (pre-DSN plain text),
   ``exchange`` (plain NDRs), ``exchange-legacy`` (Exchange 5.5 to 2003),
   ``smtp32`` (Ipswitch IMail), ``gmail`` (its old plain text), ``dma`` (DragonFly
   Mail Agent), ``opensmtpd`` (its plain-text forms), ``zoho``, ``ezweb`` and
   ``kddi`` (au), ``notes`` (Lotus Notes), ``trendmicro`` (InterScan), ``trouble``
   ("We had trouble delivering your message"), ``amazonworkmail`` (its DSN written
   as text), and last
   ``qmail-like`` (qmail's body under a rewritten greeting) and ``listing`` (a
   heading, then the failed addresses one a line), and when none of them understood
   the text, ``failed-recipients`` (the ``X-Failed-Recipients`` header: soft, no
   status).
3. ``autoreply``: vacation and out-of-office replies. They are not bounces; the
   report carries the replier's address with kind ``autoreply``.
4. ``generic``: in a message whose sender or subject says it is a bounce, lines
   holding a 5xx SMTP reply and an address.
5. ``phrases``: the address and a failure phrase on one line, with no code.

Every detector is conservative: a false bounce would count a good address as dead,
so when a format is not understood the answer is no failures. Text inside the
returned original message is never read for failures (it may itself quote SMTP
replies), only for its Message-ID.

How a failed recipient is classified: first by its detector, a permanent status
(5.x.x, or a 5xx reply) ``hard``, a transient one (4.x.x or 4xx) that ended the
delivery attempt, such as a 4xx that expired in the queue, ``soft``; without a
status, ``hard`` only when the format itself says the error is permanent (qmail,
Exim, Sendmail), ``soft`` when the text says the message expired, else ``unknown``.
Then by its reason (:func:`smtpeter.bounces.reasons.judge`), which has the last
word: a full mailbox is soft even with a 5.x.x code, an unknown user hard. A delay
notice is ``delay`` whatever its status.

Nothing here raises: bad input of any kind gives ``Report((), False, "none", None)``.

Layout, one concern a module (as flufl.bounce has one detector a module):
``report.py`` (Failure, Report, limits), ``message.py`` (the parsed bounce: its
headers and the text of its own parts), ``text.py`` (status codes, addresses, field
blocks, paragraphs), ``detectors/<format>.py`` (one ``detect(msg)`` each), and this
module, which runs them in order and has every failure judged by its reason
(``reasons.py``: the kind it reports is that judgement) and by the SMTP command the
bounce shows it refused at (``phase.py``: MAIL FROM, DATA). Feedback reports are
``complaints.py``'s, read from the same parsed message (:func:`read`).
"""

from __future__ import annotations

import logging
import re

from smtpeter.bounces import phase
from smtpeter.bounces.detectors import (
    Detector,
    amazonworkmail,
    autoreply,
    dma,
    dsn,
    exchange,
    exchange_legacy,
    exim,
    ezweb,
    failed_recipients,
    generic,
    gmail,
    kddi,
    listing,
    notes,
    opensmtpd,
    phrases,
    postfix,
    qmail,
    qmail_like,
    sendmail,
    smtp32,
    trendmicro,
    trouble,
    yahoo,
    zoho,
)
from smtpeter.bounces.message import BounceMessage, read
from smtpeter.bounces.reasons import judge
from smtpeter.bounces.report import MAX_DIAGNOSTIC, MAX_FAILURES, NOTHING, Failure, Kind, Report
from smtpeter.bounces.text import field_blocks, message_id

__all__ = [
    "MAX_DIAGNOSTIC",
    "BounceMessage",
    "Failure",
    "Kind",
    "Report",
    "detect",
    "detect_in",
    "read",
]

log = logging.getLogger(__name__)

TEXT_DETECTORS: tuple[tuple[str, Detector], ...] = (
    # WorkMail's own text report (its fields, under its own heading), then any
    # delivery-status fields in the text: as authoritative as a delivery-status part.
    ("amazonworkmail", amazonworkmail.detect),
    ("dsn-text", dsn.detect_text),
    ("qmail", qmail.detect),
    ("yahoo", yahoo.detect),
    ("exim", exim.detect),
    ("postfix", postfix.detect),
    ("sendmail", sendmail.detect),
    ("exchange", exchange.detect),
    ("exchange-legacy", exchange_legacy.detect),
    ("smtp32", smtp32.detect),
    ("gmail", gmail.detect),
    ("dma", dma.detect),
    ("opensmtpd", opensmtpd.detect),
    ("zoho", zoho.detect),
    ("ezweb", ezweb.detect),
    ("kddi", kddi.detect),
    ("notes", notes.detect),
    ("trendmicro", trendmicro.detect),
    ("trouble", trouble.detect),
    ("qmail-like", qmail_like.detect),
    ("listing", listing.detect),
    ("failed-recipients", failed_recipients.detect),
)


def detect(raw: bytes) -> Report:
    """Read a bounce, delay notice or auto-reply; never raises."""
    return detect_in(read(raw))


def detect_in(msg: BounceMessage | None) -> Report:
    """:func:`detect` on a message :func:`read` parsed; never raises."""
    if msg is None:
        return NOTHING
    try:
        return _detect(msg)
    except Exception:  # a bad message must never stop the bounce processor
        log.warning("bounce detection failed on a message from %r", msg.header("from"),
                    exc_info=True)  # fmt: skip
        return NOTHING


def _original_id(msg: BounceMessage) -> str | None:
    if msg.original_ids:
        return msg.original_ids[0]
    for status_text in msg.statuses:
        message, _ = dsn.dsn_records(field_blocks(status_text))
        if mid := message_id(message.get("x-original-message-id")):
            return mid
    m = re.search(r"^Message-ID:[ \t]*(<[^<>\s]+>)", msg.text, re.I | re.M)
    return m.group(1) if m else None


def _unique(failures: list[Failure], msg: BounceMessage) -> tuple[Failure, ...]:
    """One failure per recipient (the first reported), at most MAX_FAILURES, each
    judged by its reason and by the command the bounce shows it refused at."""
    seen: dict[str, Failure] = {}
    for failure in failures:
        seen.setdefault(failure.recipient, failure)
    kept = list(seen.values())[:MAX_FAILURES]
    found = phase.evidence(msg)
    only = len(kept) == 1
    return tuple(judge(f, phase.stage(f, found, only)) for f in kept)


def _detect(msg: BounceMessage) -> Report:
    original = _original_id(msg)
    failures = dsn.detect(msg)
    if failures is not None:
        return Report(_unique(failures, msg), msg.is_report, "dsn", original)
    for name, detector in TEXT_DETECTORS:
        found = detector(msg)
        if found:
            return Report(_unique(found, msg), msg.is_report, name, original)
    bounce = generic.looks_like_bounce(msg)
    if not bounce and autoreply.is_autoreply(msg):
        in_reply_to = message_id(msg.header("in-reply-to"))
        return Report(
            _unique(autoreply.detect(msg), msg), False, "autoreply", in_reply_to or original
        )
    if bounce:
        found = generic.detect(msg)
        if found:
            return Report(_unique(found, msg), msg.is_report, "generic", original)
    found = phrases.detect(msg)
    if found:
        return Report(_unique(found, msg), msg.is_report, "phrases", original)
    return NOTHING
