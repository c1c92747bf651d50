"""The bounce processor: Postfix's pipe transport runs it once per bounce that
reaches a signed return path (``smtpeter bounce --sender S --recipient R``, the
message on stdin).

1. The return path must verify (signed by one of our keys, not expired): anything
   else is dropped with a log line and counts nothing, so forged bounces cannot
   poison the statistics and we never send backscatter.
2. The message it belongs to is looked up; each failed recipient the bounce reports
   becomes an event (hard or soft bounce, with its reason from
   :mod:`smtpeter.bounces.reasons`; delay notices and auto-replies are recorded as
   such, never as bounces). A failed recipient the message never went to is dropped
   with a log line: a bounce to a genuine return path cannot make up bounces for
   other addresses.
3. A hard bounce or a complaint puts the recipient on the sending login's
   suppression list (:mod:`smtpeter.suppression`).
4. Exactly once: the bounce's identity (the message, its failed recipients with
   their status and kind, the reporting MTA, the bounce's own Date) is recorded with
   its events. The same bounce delivered again records nothing and is not forwarded
   again, whatever Postfix's queue id; a retry after a failed forward only forwards.
5. The bounce is forwarded to the message's original envelope sender (unless that
   was empty), so the sender's own bounce handling keeps working. It goes back into
   Postfix through its sendmail(1) with the null sender, so pickup and
   non_smtpd_milters see it like all other mail.

Mail to ``unsubscribe+<token>@<bounce domain>`` (the mailto of a List-Unsubscribe
header) is an unsubscribe, not a bounce: a genuine token records the message's
``unsubscribe`` event and suppresses its recipient (:mod:`smtpeter.unsubscribe`,
how=mailto); it is never forwarded.

Exit status, as Postfix's pipe reads it: 0 done (also for dropped input); 75
(EX_TEMPFAIL) when the store or the forwarding is unavailable, so Postfix keeps the
bounce and retries. Malformed input never makes this fail permanently.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shlex
import subprocess
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from smtpeter import addresses, suppression, unsubscribe
from smtpeter.bounces.complaints import Complaint, complaint_in
from smtpeter.bounces.detect import BounceMessage, Failure, Report, detect_in, read
from smtpeter.config import Config
from smtpeter.events import Event, EventType
from smtpeter.logsafe import escape
from smtpeter.store import MessageRecord, Store, StoreError, open_store
from smtpeter.tracker.keys import KeyRing
from smtpeter.tracker.signing import Signer

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


def _prefixed_token(recipient: str, cfg: Config, prefix: str) -> str | None:
    """The token of ``<prefix>+<token>@<bounce domain>``, or None if it is not that."""
    domain = cfg.bounces.domain
    local, _, rcpt_domain = recipient.strip().strip("<>").rpartition("@")
    if domain is None or rcpt_domain.lower() != domain.lower():
        return None
    found, plus, token = local.strip('"').partition("+")
    if not plus or found.lower() != prefix.lower():
        return None
    return token


def _token(recipient: str, cfg: Config) -> str | None:
    """The token of a bounce's return path (``bounces.prefix``), or None."""
    return _prefixed_token(recipient, cfg, cfg.bounces.prefix)


def _unsubscribe_token(recipient: str, cfg: Config) -> str | None:
    """The token of ``unsubscribe+<token>@<bounce domain>``, or None."""
    return _prefixed_token(recipient, cfg, unsubscribe.MAILTO_PREFIX)


def _unsubscribe(token: str, recipient: str, cfg: Config, store: Store | None) -> Outcome:
    """Mail to an unsubscribe mailto: recorded as the message's unsubscribe (its only
    recipient's, when it had one), never forwarded. The sender's address is not
    trusted: the signed token says which message (the recipient may well write from
    another address)."""
    try:
        store = store or open_store(cfg.store)
        signer = KeyRing.from_config(store, cfg.tracker).signer()
        uid = signer.verify_return_path(token, cfg.tracker.link_lifetime_days * _DAY, purpose="u")
        if uid is None:
            return Outcome(
                EX_OK, f"dropped: tampered, unknown or expired unsubscribe {escape(recipient)}"
            )
        found = store.messages(uid=uid, limit=1)
        if not found:
            return Outcome(EX_OK, f"dropped: no message {escape(uid)} for {escape(recipient)}")
        message = found[0]
        only = message.recipients[0] if len(message.recipients) == 1 else None
        who = only.strip().strip("<>").strip() if only is not None else None
        outcome = unsubscribe.record(store, uid, who, "mailto")
    except StoreError as e:
        return Outcome(EX_TEMPFAIL, f"store unavailable, will retry: {e}")
    return Outcome(
        EX_OK,
        f"unsubscribe: message {escape(uid)} recipient {escape(who) if who else '-'}"
        f" login {escape(outcome.login or '-')} how=mailto"
        f" recorded={'yes' if outcome.recorded else 'no'}"
        f" suppressed={'yes' if outcome.suppressed else 'no'}"
        + "".join(f"; {note}" for note in outcome.notes),
    )


_HEADER_END = re.compile(rb"\r?\n\r?\n")
_DATE = re.compile(rb"^Date:[ \t]*(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)
_ARRIVAL = re.compile(rb"^Arrival-Date:[ \t]*(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)


def _field(raw: bytes, pattern: re.Pattern[bytes], start: int, end: int) -> str:
    m = pattern.search(raw, start, end)
    return " ".join(m.group(1).decode("ascii", "replace").split()) if m else ""


def _instant(value: str) -> str:
    """An RFC 5322 date as a UTC instant (the same however it was written)."""
    try:
        return parsedate_to_datetime(value).astimezone(UTC).isoformat()
    except (TypeError, ValueError, IndexError, OverflowError):
        return value


def identity(raw: bytes, uid: str, failures: tuple[Failure, ...], extra: str = "") -> str:
    """What tells this bounce from any other of the same message, the same however
    often it is delivered: its failed recipients with their status, kind and
    reporting MTA, and when the report says the message arrived there (the DSN's
    Arrival-Date); without one, when the bounce was written (its Date); without
    that, its body. Nothing that a relay on the way adds (Received, a Message-ID or
    Date added for a message without one) counts. A digest, 32 hex characters."""
    header_end = _HEADER_END.search(raw, 0, 1 << 16)
    body = header_end.end() if header_end else len(raw)
    when = _field(raw, _ARRIVAL, body, min(len(raw), body + (1 << 18)))
    if not when:
        when = _field(raw, _DATE, 0, header_end.start() if header_end else body)
    parts = [uid, _instant(when) if when else hashlib.sha256(raw[body:]).hexdigest(), extra]
    for f in sorted(failures, key=lambda f: (f.recipient.lower(), f.status or "", f.kind)):
        parts.append(f"{f.recipient.lower()} {f.status or '-'} {f.kind} {f.reporting_mta or '-'}")
    return hashlib.sha256("\n".join(parts).encode("utf-8", "replace")).hexdigest()[:32]


def _detail(detail: dict[str, str], **fields: str | None) -> dict[str, str]:
    """``detail`` with each field that has a value, cut to 500 characters."""
    return detail | {name: value[:500] for name, value in fields.items() if value}


def _events(report: Report, uid: str, key: str, queue_id: str) -> list[Event]:
    now = _now()
    events: list[Event] = []
    for failure in report.failures:
        kind = failure.kind
        if kind == "unknown":
            continue
        event_type: EventType = (
            "bounce" if kind in ("hard", "soft") else ("delay" if kind == "delay" else "autoreply")
        )
        detail = _detail(
            {"kind": kind, "detector": report.detector, "bounce_id": key},
            reason=failure.reason,
            queue_id=queue_id,
            status=failure.status,
            diagnostic=failure.diagnostic,
            reporting_mta=failure.reporting_mta,
            remote_mta=failure.remote_mta,
        )
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
        detail = _detail({"kind": "autoreply", "bounce_id": key}, queue_id=queue_id)
        events.append(Event(type="autoreply", message_uid=uid, occurred_at=now, detail=detail))
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


def _sent_to(report: Report, message: MessageRecord) -> tuple[Report, list[str]]:
    """The report without the failed recipients the message never went to (bounce
    poisoning, or a forwarding address the report names instead), and those."""
    recipients = {addresses.key(r) for r in message.recipients}
    kept: list[Failure] = []
    strangers: list[str] = []
    for failure in report.failures:
        if "@" not in failure.recipient and failure.kind != "autoreply":
            # Reported without a domain: the message's one recipient of that name.
            local = addresses.key(failure.recipient)
            named = [r for r in recipients if r.rpartition("@")[0] == local]
            if len(named) == 1:
                failure = replace(failure, recipient=named[0])
        if failure.kind == "autoreply" or addresses.key(failure.recipient) in recipients:
            kept.append(failure)
        elif failure.original is not None and addresses.key(failure.original) in recipients:
            # An alias we sent to, expanded on the way: the bounce is the alias's.
            kept.append(replace(failure, recipient=failure.original))
        else:
            strangers.append(failure.recipient)
    return replace(report, failures=tuple(kept)), strangers


def _complaint_events(
    complaint: Complaint, raw: bytes, uid: str, message: MessageRecord, queue_id: str
) -> tuple[str, list[Event], list[str]]:
    """A feedback report's identity and its one complaint event, for the recipient it
    names (or, when the provider redacted it, the message's only recipient); nothing
    for a recipient the message never went to (returned as a stranger)."""
    recipients = [addresses.key(r) for r in message.recipients]
    recipient = complaint.recipient
    if recipient is not None and recipient not in recipients:
        return identity(raw, uid, (), f"complaint {recipient}"), [], [recipient]
    if recipient is None and len(recipients) == 1:
        recipient = recipients[0]
    key = identity(raw, uid, (), f"complaint {recipient or '-'}")
    detail = _detail(
        {"feedback_type": complaint.feedback_type, "bounce_id": key},
        reporting_mta=complaint.reporting_mta,
        user_agent=complaint.user_agent,
        queue_id=queue_id,
    )
    event = Event("complaint", uid, _now(), recipient=recipient, detail=detail)
    return key, [event], []


def _is_feedback_address(recipient: str, cfg: Config) -> bool:
    address = cfg.bounces.feedback_address
    return address is not None and addresses.key(recipient) == addresses.key(address)


def _by_return_path(
    token: str, recipient: str, cfg: Config, store: Store, signer: Signer
) -> MessageRecord | str:
    """The message a signed return path names, or why there is none."""
    uid = signer.verify_return_path(token, cfg.bounces.address_lifetime_days * _DAY)
    if uid is None:
        return f"dropped: tampered, unknown or expired return path {escape(recipient)}"
    messages = store.messages(uid=uid, limit=1)
    if not messages:
        return f"dropped: no message {escape(uid)} for return path {escape(recipient)}"
    return messages[0]


def _complained_of(
    complaint: Complaint, cfg: Config, store: Store, signer: Signer
) -> MessageRecord | str:
    """The message a feedback report sent to the feedback address is about: the one
    its signed return path names (Original-Mail-From, or the returned message's
    Return-Path), else the one with its Message-ID (to the recipient it names, when
    several share it); or why there is none."""
    for path in complaint.return_paths:
        token = _token(path, cfg)
        if token is not None:
            return _by_return_path(token, path, cfg, store, signer)
    if complaint.message_id is None:
        return "dropped: feedback report to the feedback address names no message of ours"
    found = [m for m in store.messages(message_id=complaint.message_id, limit=20) if m.uid]
    if len(found) > 1 and complaint.recipient is not None:
        found = [m for m in found if complaint.recipient in map(addresses.key, m.recipients)]
    if len(found) != 1:
        what = "no message" if not found else f"{len(found)} messages"
        return (
            f"dropped: feedback report to the feedback address: {what} with Message-ID"
            f" {escape(complaint.message_id)}"
        )
    return found[0]


def process(
    raw: bytes, recipient: str, cfg: Config, *, bounce_id: str = "", store: Store | None = None
) -> Outcome:
    """Handle one bounce, or one feedback report sent to ``bounces.feedback_address``.
    ``bounce_id`` (Postfix's queue id of the bounce) is kept with its events for the
    operator; what makes a second delivery of the same bounce record and forward
    nothing is the bounce's own :func:`identity`."""
    unsubscribe_token = _unsubscribe_token(recipient, cfg)
    if unsubscribe_token is not None:
        return _unsubscribe(unsubscribe_token, recipient, cfg, store)
    token = _token(recipient, cfg)
    feedback = token is None and _is_feedback_address(recipient, cfg)
    if token is None and not feedback:
        return Outcome(EX_OK, f"dropped: {escape(recipient)} is not a return path of ours")
    raw = raw[:MAX_INPUT]
    parsed: BounceMessage | None = None
    complaint: Complaint | None = None
    if feedback:
        parsed = read(raw)
        complaint = complaint_in(parsed)
        if complaint is None:
            what = f"mail to the feedback address {escape(recipient)}"
            return Outcome(EX_OK, f"dropped: {what} is no feedback report")
    try:
        store = store or open_store(cfg.store)
        signer = KeyRing.from_config(store, cfg.tracker).signer()
        if complaint is not None:
            found = _complained_of(complaint, cfg, store, signer)
        else:
            assert token is not None
            found = _by_return_path(token, recipient, cfg, store, signer)
        if isinstance(found, str):
            return Outcome(EX_OK, found)
        message = found
        uid = message.uid or ""
        if not feedback:
            # Parsed once the return path is known good: a forged bounce costs no parse.
            parsed = read(raw)
            complaint = complaint_in(parsed)
        if complaint is not None:
            detector = "complaint"
            key, events, strangers = _complaint_events(complaint, raw, uid, message, bounce_id)
        else:
            report, strangers = _sent_to(detect_in(parsed), message)
            detector = report.detector
            key = identity(raw, uid, report.failures)
            events = _events(report, uid, key, bounce_id)
        for stranger in strangers:
            log.warning(
                "bounce for message %s names %s, which it was never sent to: not recorded",
                escape(uid),
                escape(stranger),
            )
        # One primary-key lookup of the bounce's identity, however large the store.
        if not store.record_bounce(uid, key, events) and store.bounce_forwarded(uid, key):
            return Outcome(
                EX_OK,
                f"dropped: bounce {key} of message {escape(uid)} was recorded and"
                " forwarded before (delivered again)",
            )
        # Idempotent, so a retry after a store fault here applies it all again.
        suppressed = (
            suppression.apply(store, message.login, events, cfg.bounces.soft_bounce_limit)
            if message.login
            else []
        )
    except StoreError as e:
        return Outcome(EX_TEMPFAIL, f"store unavailable, will retry: {e}")
    kinds = ",".join(
        f"{e.recipient or '-'}:{e.detail.get('kind', e.type)}"
        + (f"/{e.detail['reason']}" if "reason" in e.detail else "")
        for e in events
    )
    # Everything below comes from the bounce or the message: escaped for the log line.
    summary = (
        f"message {escape(uid)} (queue id {escape(message.queue_id)},"
        f" login {escape(message.login or '-')}): "
        f"detector={escape(detector)} events={escape(kinds) or 'none'}"
    )
    for entry in suppressed:
        log.info(
            "suppressed %s for login %s after a bounce or complaint of message %s",
            escape(entry),
            escape(message.login or "-"),
            escape(uid),
        )
    sender = message.envelope_sender.strip().strip("<>")
    # A report to the feedback address came from the provider's loop, never by way
    # of the sender's return path: it is not the sender's to get.
    if cfg.bounces.forward and sender and not feedback:
        try:
            _forward(raw, sender, cfg)
        except ForwardError as e:
            # The events are recorded: a retry finds the bounce's identity, records
            # nothing and only forwards.
            return Outcome(
                EX_TEMPFAIL,
                f"{summary}; forwarding to {escape(sender)} failed, will retry: {escape(str(e))}",
            )
        summary += f"; forwarded to {escape(sender)}"
    try:
        store.mark_bounce_forwarded(uid, key)
    except StoreError as e:
        # Forwarded already: retrying would forward it twice. Logged, not retried.
        log.error("bounce %s of message %s: could not mark it forwarded: %s", key, uid, e)
    return Outcome(EX_OK, summary)
