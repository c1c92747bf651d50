"""The bounce processor: Postfix's pipe transport runs it once per bounce that
reaches a signed return path (``smtpeter bounce --sender S --recipient R``, the
message on stdin).

1. The return path must verify (signed by one of our keys, not expired): anything
   else is dropped with a log line and counts nothing, so forged bounces cannot
   poison the statistics and we never send backscatter.
2. The message it belongs to is looked up; each failed recipient the bounce reports
   becomes an event (hard or soft bounce; delay notices and auto-replies are
   recorded as such, never as bounces).
3. The bounce is forwarded to the message's original envelope sender (unless that
   was empty), so the sender's own bounce handling keeps working. It goes back into
   Postfix through its sendmail(1) with the null sender, so pickup and
   non_smtpd_milters see it like all other mail.

Exit status, as Postfix's pipe reads it: 0 done (also for dropped input); 75
(EX_TEMPFAIL) when the store or the forwarding is unavailable, so Postfix keeps the
bounce and retries. Malformed input never makes this fail permanently.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime

from smtpeter.bounces.detect import Report, detect
from smtpeter.config import Config
from smtpeter.events import Event, EventType
from smtpeter.logsafe import escape
from smtpeter.store import Store, StoreError, open_store
from smtpeter.tracker.keys import KeyRing

log = logging.getLogger("smtpeter.bounce")

EX_OK = 0
EX_TEMPFAIL = 75
_DAY = 86400.0
# Postfix's message_size_limit default; a bounce carrying more is cut for parsing.
MAX_INPUT = 10 * 1024 * 1024
# How long sendmail(1) may take to queue a forwarded bounce.
FORWARD_TIMEOUT = 60.0


@dataclass(frozen=True)
class Outcome:
    status: int
    what: str


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _token(recipient: str, cfg: Config) -> str | None:
    """The token of ``<prefix>+<token>@<domain>``, or None if it is not one of ours."""
    domain = cfg.bounces.domain
    local, _, rcpt_domain = recipient.strip().strip("<>").rpartition("@")
    if domain is None or rcpt_domain.lower() != domain.lower():
        return None
    prefix, plus, token = local.strip('"').partition("+")
    if not plus or prefix.lower() != cfg.bounces.prefix.lower():
        return None
    return token


def _events(report: Report, uid: str, bounce_id: str) -> list[Event]:
    now = _now()
    events: list[Event] = []
    for failure in report.failures:
        kind = failure.kind
        event_type: EventType = (
            "bounce" if kind in ("hard", "soft") else ("delay" if kind == "delay" else "autoreply")
        )
        if kind == "unknown":
            continue
        detail = {"kind": kind, "detector": report.detector, "bounce_id": bounce_id}
        for key, value in (
            ("status", failure.status),
            ("diagnostic", failure.diagnostic),
            ("reporting_mta", failure.reporting_mta),
            ("remote_mta", failure.remote_mta),
        ):
            if value:
                detail[key] = value[:500]
        events.append(
            Event(
                type=event_type,
                message_uid=uid,
                occurred_at=now,
                recipient=failure.recipient,
                detail=detail,
            )
        )
    if not report.failures and report.detector == "autoreply":
        events.append(
            Event(
                type="autoreply",
                message_uid=uid,
                occurred_at=now,
                detail={"kind": "autoreply", "bounce_id": bounce_id},
            )
        )
    return events


class ForwardError(Exception):
    """sendmail(1) did not take the forwarded bounce; the message says what ran, where
    and how it failed."""


def _forward(raw: bytes, to: str, cfg: Config) -> None:
    """Hand the bounce back to Postfix for the original sender with its sendmail(1)
    and the null sender (a bounce must never bounce): ``-f '<>'`` is the null
    sender, ``-G`` (gateway submission: the message comes from elsewhere) leaves its
    header addresses as they are, ``-i`` keeps a line of one dot, ``--`` keeps a
    recipient starting with '-' from being an option.

    No ``-C``: Postfix's pipe(8) exports MAIL_CONFIG (export_environment), so
    sendmail and postdrop go back into the very instance that delivered the bounce,
    the system one or a private ``postfix -c DIR`` one, with nothing to keep in sync
    (and for a user other than root, sendmail refuses ``-C`` with a directory that
    the default main.cf does not list in alternate_config_directories).
    """
    try:
        words = shlex.split(cfg.bounces.sendmail)
    except ValueError as e:
        raise ForwardError(f"bounces.sendmail {cfg.bounces.sendmail!r}: {e}") from None
    if not words:
        raise ForwardError("bounces.sendmail is empty")
    argv = [*words, "-G", "-i", "-f", "<>", "--", to]
    where = f"{shlex.join(argv)} (MAIL_CONFIG={os.environ.get('MAIL_CONFIG', '-')})"
    try:
        result = subprocess.run(
            argv, input=raw, capture_output=True, timeout=FORWARD_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        raise ForwardError(f"{where}: no exit within {FORWARD_TIMEOUT:g} s, killed") from None
    except OSError as e:
        raise ForwardError(f"{where}: cannot run: {e.strerror or e}") from None
    if result.returncode != 0:
        status = (
            f"killed by signal {-result.returncode}"
            if result.returncode < 0
            else f"exit status {result.returncode}"
        )
        lines = result.stderr.decode("utf-8", "replace").splitlines()
        stderr = " | ".join(line.strip() for line in lines if line.strip())
        raise ForwardError(f"{where}: {status}, stderr: {stderr[-1000:] or '(empty)'}")


def process(
    raw: bytes, recipient: str, cfg: Config, *, bounce_id: str = "", store: Store | None = None
) -> Outcome:
    """Handle one bounce. ``bounce_id`` (Postfix's queue id of the bounce) makes a
    retry after a failed forward record nothing twice."""
    token = _token(recipient, cfg)
    if token is None:
        return Outcome(EX_OK, f"dropped: {escape(recipient)} is not a return path of ours")
    try:
        store = store or open_store(cfg.store)
        signer = KeyRing.from_config(store, cfg.tracker).signer()
        uid = signer.verify_return_path(token, cfg.bounces.address_lifetime_days * _DAY)
        if uid is None:
            return Outcome(
                EX_OK, f"dropped: tampered, unknown or expired return path {escape(recipient)}"
            )
        messages = store.messages(uid=uid, limit=1)
        if not messages:
            return Outcome(
                EX_OK, f"dropped: no message {escape(uid)} for return path {escape(recipient)}"
            )
        message = messages[0]
        report = detect(raw[:MAX_INPUT])
        events = _events(report, uid, bounce_id)
        # A retry of the same delivery (Postfix keeps the queue id) records nothing
        # again: one lookup of the bounce's identity, however large the store.
        if bounce_id:
            store.record_bounce(uid, bounce_id, events)
        else:
            store.record_events(events)
    except StoreError as e:
        return Outcome(EX_TEMPFAIL, f"store unavailable, will retry: {e}")
    kinds = ",".join(f"{e.recipient or '-'}:{e.detail.get('kind', e.type)}" for e in events)
    # Everything below comes from the bounce or the message: escaped for the log line.
    summary = (
        f"message {escape(uid)} (queue id {escape(message.queue_id)},"
        f" login {escape(message.login or '-')}): "
        f"detector={escape(report.detector)} events={escape(kinds) or 'none'}"
    )
    sender = message.envelope_sender.strip().strip("<>")
    if cfg.bounces.forward and sender:
        try:
            _forward(raw, sender, cfg)
        except ForwardError as e:
            # The events are recorded: Postfix retries with the same queue id, and the
            # retry finds them (bounce_id) and only forwards.
            return Outcome(
                EX_TEMPFAIL,
                f"{summary}; forwarding to {escape(sender)} failed, will retry: {escape(str(e))}",
            )
        summary += f"; forwarded to {escape(sender)}"
    return Outcome(EX_OK, summary)
