"""Recognising what comes back to a VERP bounce address.

:func:`detect` reads one raw message and says which recipients failed and how.
Detectors run in order and the first that yields wins:

1. ``dsn``: an RFC 3464 delivery status notification (``message/delivery-status``,
   or RFC 6533's ``message/global-delivery-status``). When one is present it is
   authoritative: a DSN that only reports ``delivered`` or ``relayed`` recipients
   yields no failures, and the human-readable text beside it is not second-guessed.
2. One small detector per common non-standard format: ``qmail``, ``yahoo``,
   ``exim``, ``postfix`` (pre-DSN plain text), ``sendmail`` (pre-DSN plain text),
   ``exchange`` (plain NDRs), ``gmail`` (its old plain text).
3. ``autoreply``: vacation and out-of-office replies. They are not bounces; the
   report carries the replier's address with kind ``autoreply``.
4. ``generic``: in a message whose sender or subject says it is a bounce, lines
   holding a 5xx SMTP reply and an address.

Every detector is conservative: a false bounce would count a good address as dead,
so when a format is not understood the answer is no failures. Text inside the
returned original message is never read for failures (it may itself quote SMTP
replies), only for its Message-ID.

How a failed recipient is classified: a permanent status (5.x.x, or a 5xx reply)
is ``hard``; a transient one (4.x.x or 4xx) that ended the delivery attempt, such
as a 4xx that expired in the queue, is ``soft``; without a status, ``hard`` only
when the format itself says the error is permanent (qmail, Exim, Sendmail), ``soft``
when the text says the message expired, else ``unknown``. A delay notice is
``delay`` whatever its status.

Nothing here raises: bad input of any kind gives ``Report((), False, "none", None)``.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import contextlib
import email
import email.policy
import io
import logging
import quopri
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.errors import HeaderParseError
from email.generator import BytesGenerator
from email.header import decode_header, make_header
from email.message import Message
from typing import Literal

__all__ = ["Failure", "Kind", "Report", "detect"]

log = logging.getLogger(__name__)

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


def detect(raw: bytes) -> Report:
    """Read a bounce, delay notice or auto-reply; never raises."""
    try:
        return _detect(raw)
    except Exception:  # a bad message must never stop the bounce processor
        log.warning("bounce detection failed on a %d byte message", len(raw), exc_info=True)
        return NOTHING


# ---------------------------------------------------------------------------
# Text helpers


ENHANCED = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?!\d|\.\d)")
REPLY = re.compile(r"(?:^|(?<=[\s;:'\"(#<\[]))([245])\d\d(?=[ -]|$)", re.MULTILINE)
EXPIRED = re.compile(
    r"in the queue too long|retry time(?:out)? (?:not reached|exceeded)|message expired"
    r"|delivery time expired|too long in queue|timed out|expired in queue",
    re.IGNORECASE,
)
ADDR = r"[^\s@<>()\[\]\",;:]+@(?:[^\s@<>()\[\]\",;:]+|\[[^\]\s]+\])"
UTF8_ESCAPE = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")


def _unfold(value: str) -> str:
    return " ".join(value.split())


def _status_of(text: str | None) -> str | None:
    """The first enhanced status code in ``text``, else one derived from an SMTP reply."""
    if not text:
        return None
    m = ENHANCED.search(text)
    if m:
        return ".".join(m.groups())
    m = REPLY.search(text)
    return f"{m.group(1)}.0.0" if m else None


def _failed_kind(status: str | None, default: Kind, reason: str | None = None) -> Kind:
    """The kind of a recipient whose delivery was given up."""
    if status is not None:
        return "hard" if status[0] == "5" else "soft" if status[0] == "4" else "unknown"
    if reason and EXPIRED.search(reason):
        return "soft"
    return default


def _address(value: str) -> str | None:
    """A bare address from a DSN field or a line of text; None if it is not one.

    Accepts ``rfc822;`` and RFC 6533 ``utf-8;`` address types (decoding the
    ``\\x{HEX}`` escapes of the latter) and an untyped address; any other type
    (``x400;``, ``unknown;``) is not an address we sent to.
    """
    typ, sep, rest = value.partition(";")
    if sep and "@" not in typ:
        kind = typ.strip().lower()
        if kind in ("utf-8", "utf8"):
            rest = UTF8_ESCAPE.sub(_unescape, rest)
        elif kind != "rfc822":
            return None
        value = rest
    value = value.strip()
    inner = re.search(r"<([^<>]*)>", value)
    if inner:
        value = inner.group(1).strip()
    if value.lower().startswith("mailto:"):
        value = value[7:]
    if not re.fullmatch(ADDR, value):
        return None
    local, _, domain = value.rpartition("@")
    domain = domain.rstrip(".").lower()
    if not local or not domain or domain.startswith("."):
        return None
    return f"{local}@{domain}"


def _unescape(m: re.Match[str]) -> str:
    point = int(m.group(1), 16)
    if point > 0x10FFFF or 0xD800 <= point <= 0xDFFF:
        return m.group(0)
    return chr(point)


def _mta(value: str | None) -> str | None:
    """``dns; mx.example.com (comment)`` → ``mx.example.com``."""
    if not value:
        return None
    typ, sep, rest = value.partition(";")
    name = rest if sep else typ
    name = re.sub(r"\(.*", "", name).strip().rstrip(".")
    return name or None


def _message_id(value: str | None) -> str | None:
    if not value:
        return None
    m = re.search(r"<[^<>\s]+>", value)
    if m:
        return m.group(0)
    value = value.strip()
    return value if value and " " not in value else None


def _clip(text: str | None) -> str | None:
    if not text:
        return None
    text = _unfold(text)
    return text[:MAX_DIAGNOSTIC] or None


# ---------------------------------------------------------------------------
# The message


@dataclass
class _Message:
    """What the detectors read: top-level headers, the report's own parts."""

    top: Message
    texts: list[str]
    """Text of the parts outside any returned message, in order (HTML stripped)."""
    statuses: list[str]
    """Bodies of delivery-status parts."""
    original_ids: list[str]
    is_report: bool

    def header(self, name: str) -> str:
        return _header(self.top, name)

    @property
    def text(self) -> str:
        return "\n\n".join(self.texts)


def _header(msg: Message, name: str) -> str:
    value = msg.get(name)
    if value is None:
        return ""
    text = str(value)
    # A bad encoded-word leaves the header as it is (bad base64 in one raises
    # HeaderParseError, which is no ValueError).
    with contextlib.suppress(
        ValueError, LookupError, UnicodeError, binascii.Error, TypeError, HeaderParseError
    ):
        text = str(make_header(decode_header(text)))
    return _unfold(text)


def _leaves(msg: Message) -> Iterator[Message]:
    """Parts outside any message/* part, depth-first, capped."""
    stack: list[tuple[Message, int]] = [(msg, 0)]
    count = 0
    while stack and count < MAX_PARTS:
        part, depth = stack.pop()
        count += 1
        payload = part.get_payload()
        if part.get_content_maintype() == "multipart" and isinstance(payload, list):
            if depth < MAX_DEPTH:
                stack.extend((p, depth + 1) for p in reversed(payload) if isinstance(p, Message))
            continue
        yield part


def _body_bytes(part: Message) -> bytes:
    """The body of a message/* part as it was sent, transfer encoding undone."""
    buf = io.BytesIO()
    BytesGenerator(buf, mangle_from_=False, policy=email.policy.compat32).flatten(part)
    data = buf.getvalue()
    if data.startswith(b"\n"):
        body = data[1:]
    else:
        _, _, body = data.partition(b"\n\n")
    cte = str(part.get("content-transfer-encoding", "")).strip().lower()
    if cte == "base64":
        try:
            body = base64.b64decode(re.sub(rb"[^A-Za-z0-9+/=]", b"", body) + b"==")
        except (binascii.Error, ValueError):
            return b""
    elif cte == "quoted-printable":
        body = quopri.decodestring(body)
    return body[:MAX_TEXT]


def _text_of(part: Message) -> str:
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return ""
    data = data[:MAX_TEXT]
    charset = part.get_content_charset() or "utf-8"
    try:
        if codecs.lookup(charset).name == "ascii":
            charset = "utf-8"  # a superset: 8-bit text mislabelled us-ascii is still read
        text = data.decode(charset, errors="replace")
    except (LookupError, ValueError):
        text = data.decode("utf-8", errors="replace")
    return text.replace("\r\n", "\n")


def _strip_html(html: str) -> str:
    """Crude text of an HTML part, for NDRs that have no text/plain part. Linear in
    the input whatever it holds (no regex here can rescan the rest of the text)."""
    for tag in ("script", "style"):
        lower = html.lower()
        out: list[str] = []
        at = 0
        while (start := lower.find(f"<{tag}", at)) >= 0:
            out.append(html[at:start])
            end = lower.find(f"</{tag}", start)
            if end < 0:
                at = len(html)
                break
            close = lower.find(">", end)
            at = len(html) if close < 0 else close + 1
        out.append(html[at:])
        html = " ".join(out)
    html = re.sub(r"(?i)<br\s*/?>|</?(?:p|div|tr|li|h\d)\b[^<>]*>", "\n", html)
    html = re.sub(r"<[^<>]*>", " ", html)
    for entity, char in (("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&nbsp;", " ")):
        html = html.replace(entity, char)
    html = html.replace("&amp;", "&")
    return "\n".join(line.strip() for line in html.split("\n"))


def _parse(raw: bytes) -> _Message:
    data = raw[:MAX_RAW].replace(b"\r\n", b"\n")
    top = email.message_from_bytes(data, policy=email.policy.compat32)
    ctype = top.get_content_type()
    report_type = str(top.get_param("report-type", "") or "").strip().lower()
    is_report = ctype == "multipart/report" and report_type in (
        "delivery-status",
        "global-delivery-status",
    )
    texts: list[str] = []
    html: list[str] = []
    statuses: list[str] = []
    ids: list[str] = []
    for part in _leaves(top):
        ptype = part.get_content_type()
        if ptype in ("message/delivery-status", "message/global-delivery-status"):
            statuses.append(_body_bytes(part).decode("utf-8", errors="replace"))
        elif ptype in ("message/rfc822", "message/global"):
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                mid = _message_id(_header(inner[0], "message-id"))
                if mid:
                    ids.append(mid)
        elif ptype in ("text/rfc822-headers", "message/global-headers"):
            body = (
                _text_of(part)
                if ptype.startswith("text/")
                else _body_bytes(part).decode("utf-8", errors="replace")
            )
            for block in _blocks(body)[:1]:
                for name, value in block:
                    if name == "message-id" and (mid := _message_id(value)):
                        ids.append(mid)
        elif ptype == "text/html":
            html.append(_strip_html(_text_of(part)))
        elif part.get_content_maintype() == "text" or part is top:
            texts.append(_text_of(part))
    if not any(t.strip() for t in texts):
        texts.extend(html)
    return _Message(top, texts, statuses, ids, is_report)


# ---------------------------------------------------------------------------
# RFC 3464 / RFC 6533


Block = list[tuple[str, str]]


def _blocks(text: str) -> list[Block]:
    """Header-style field blocks separated by blank lines; names lowercased,
    folded values unfolded. Lines that are neither fields nor continuations are
    skipped."""
    blocks: list[list[tuple[str, list[str]]]] = []
    block: list[tuple[str, list[str]]] = []
    for line in text.replace("\r", "").split("\n")[:5000]:
        if not line.strip():
            if block:
                blocks.append(block)
                block = []
        elif line[0] in " \t":
            if block:
                block[-1][1].append(line.strip())
        else:
            name, sep, value = line.partition(":")
            if sep and name.strip() and " " not in name.strip():
                block.append((name.strip().lower(), [value.strip()]))
    if block:
        blocks.append(block)
    return [[(name, " ".join(parts).strip()) for name, parts in b] for b in blocks]


def _records(blocks: list[Block]) -> tuple[dict[str, str], list[dict[str, str]]]:
    """The per-message fields and the per-recipient records.

    Blocks without a recipient field are per-message. A block holding several
    recipients without the blank lines between them is split where a recipient
    field repeats.
    """
    message: dict[str, str] = {}
    records: list[dict[str, str]] = []
    for block in blocks:
        if not any(n in ("final-recipient", "original-recipient") for n, _ in block):
            for name, value in block:
                message.setdefault(name, value)
            continue
        record: dict[str, str] = {}
        for name, value in block:
            starts = name == "original-recipient" and (
                "original-recipient" in record or "final-recipient" in record
            )
            starts = starts or (name == "final-recipient" and "final-recipient" in record)
            if starts:
                records.append(record)
                record = {}
            record.setdefault(name, value)
        records.append(record)
    return message, records


def _dsn(msg: _Message) -> list[Failure] | None:
    """Failures from the delivery-status parts; None when there is no such part with
    at least one recipient."""
    failures: list[Failure] = []
    seen = False
    for status_text in msg.statuses:
        message, records = _records(_blocks(status_text))
        reporting = _mta(message.get("reporting-mta"))
        for record in records:
            recipient = _address(record.get("original-recipient", "")) or _address(
                record.get("final-recipient", "")
            )
            if recipient is None:
                continue
            seen = True
            action = (record.get("action", "").split() or [""])[0].lower()
            if action not in ("failed", "delayed"):
                continue
            diagnostic = _clip(record.get("diagnostic-code"))
            status = _dsn_status(record.get("status"), diagnostic)
            kind: Kind = "delay" if action == "delayed" else _failed_kind(status, "unknown")
            failures.append(
                Failure(
                    recipient=recipient,
                    status=status,
                    kind=kind,
                    diagnostic=diagnostic,
                    reporting_mta=reporting,
                    remote_mta=_mta(record.get("remote-mta")),
                )
            )
    return failures if seen else None


def _dsn_status(field: str | None, diagnostic: str | None) -> str | None:
    """The Status field; the Diagnostic-Code's code when Status is missing, or is only
    the class (``5.0.0``, as Exim writes) and the remote reply was more precise."""
    reply = diagnostic.partition(";")[2] if diagnostic and ";" in diagnostic else diagnostic
    status = _status_of(field)
    detail = _status_of(reply)
    if status is None:
        return detail
    if detail and status.endswith(".0.0") and detail[0] == status[0]:
        return detail
    return status


# ---------------------------------------------------------------------------
# Plain-text formats

# Where a plain-text bounce starts quoting the returned message.
RETURNED = (
    r"^[ \t]*-+ ?(?:This is a copy of|Below this line is|Enclosed is|Original message)",
    r"^[ \t]*-+ ?The header of the original",
    r"^Original message headers:",
    r"^Original headers follow",
    r"^Content-Type: message/rfc822",
)

Detector = Callable[[_Message], list[Failure]]


def _paragraphs(text: str) -> list[list[str]]:
    paras: list[list[str]] = []
    current: list[str] = []
    for line in text.split("\n"):
        if line.strip():
            current.append(line.rstrip())
        elif current:
            paras.append(current)
            current = []
    if current:
        paras.append(current)
    return paras


def _lines_after(text: str, pos: int) -> list[str]:
    """The lines after the one holding ``pos``, up to the first blank line (blank
    lines right after it skipped)."""
    start = text.find("\n", pos)
    lines: list[str] = []
    for line in text[start + 1 :].split("\n") if start >= 0 else []:
        if line.strip():
            lines.append(line)
        elif lines:
            break
    return lines


def _until(text: str, *markers: str) -> str:
    """``text`` up to the first of ``markers`` (a regex each), matched at a line start."""
    ends = [m.start() for p in markers if (m := re.search(p, text, re.MULTILINE | re.I))]
    return text[: min(ends)] if ends else text


def _angle_paragraphs(
    section: str, default: Kind, reporting: str | None, remote_rx: str | None = None
) -> list[Failure]:
    """Failures from paragraphs that start ``<addr>: reason`` (qmail, Yahoo, Postfix)."""
    failures: list[Failure] = []
    head = re.compile(r"^<([^<>\s]+)>(?:\s*\(expanded from <[^<>]*>\))?:\s*(.*)$")
    for para in _paragraphs(section):
        m = head.match(para[0].strip())
        if not m:
            continue
        recipient = _address(m.group(1))
        if recipient is None:
            continue
        reason = " ".join([m.group(2), *(line.strip() for line in para[1:])]).strip()
        status = _status_of(reason)
        if status is not None and status[0] == "2":
            continue  # a success report (Postfix's "delivery via ...: 250 2.0.0 Ok")
        remote = None
        if remote_rx and (r := re.search(remote_rx, reason)):
            remote = r.group(1)
        failures.append(
            Failure(
                recipient,
                status,
                default if default == "delay" else _failed_kind(status, default, reason),
                _clip(reason),
                reporting,
                remote,
            )
        )
    return failures


def _qmail(msg: _Message) -> list[Failure]:
    text = msg.text
    m = re.search(r"This is the qmail-send program at ([^\s]+?)\.?\s*$", text, re.M)
    if not m:
        return []
    body = _until(text[m.end() :], r"--- Below this line is", r"--- Enclosed is", r"--- Original")
    # qmail only bounces after giving up; its text says the error is permanent.
    return _angle_paragraphs(
        body, "hard", m.group(1), r"(?:Connected to |^)(\d{1,3}(?:\.\d{1,3}){3})\b"
    )


def _yahoo(msg: _Message) -> list[Failure]:
    text = msg.text
    m = re.search(
        r"Sorry, we were unable to deliver your message to the following address"
        r"|Unable to deliver message to the following address",
        text,
    )
    if not m:
        return []
    body = _until(text[m.end() :], r"--- Below this line is", r"--- Original message follows")
    return _angle_paragraphs(body, "unknown", None)


def _postfix(msg: _Message) -> list[Failure]:
    text = msg.text
    m = re.search(
        r"This is the (?:mail system|Postfix program) at host ([^\s]+?)\.?\s*$", text, re.M
    )
    if not m:
        return []
    if re.search(r"successfully delivered|delivery status report", text, re.I):
        return []  # Postfix's success and trace reports share the greeting
    kind: Kind = "delay" if "THIS IS A WARNING ONLY" in text else "unknown"
    body = _until(text[m.end() :], r"^--- ", r"^Reporting-MTA:", r"^Content-Type:")
    return _angle_paragraphs(body, kind, m.group(1), r"host ([^\s\[]+)\[")


def _exim(msg: _Message) -> list[Failure]:
    text = msg.text
    if "This message was created automatically by mail delivery software" not in text:
        return []
    failed = re.search(r"following address(?:\(es\)|es)? failed:[ \t]*$", text, re.M)
    delayed = re.search(
        r"address(?:\(es\)|es)? to which the message has not yet been delivered", text
    )
    if failed:
        kind: Kind = "hard"  # Exim says "This is a permanent error" above the list
        found = failed
    elif delayed:
        kind = "delay"
        found = delayed
    else:
        return []
    start = text.find("\n", found.end())
    if start < 0:
        return []
    section = _until(
        text[start:],
        r"^-+ This is a copy of",
        r"^-+ The header of the original",
        r"^Reporting-MTA:",
        r"^Content-Type:",
        r"^The message identifier is",
        r"^If any of these addresses",
        r"^No action is required",
    )
    failures: list[Failure] = []
    entries: list[tuple[str, list[str]]] = []
    for line in section.split("\n"):
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if indent <= 2 and (addr := _address(line.strip())):
            entries.append((addr, []))
        elif indent > 2 and entries:
            entries[-1][1].append(line.strip())
        elif indent <= 2 and not line.strip().startswith("("):
            break  # prose we do not know ends the list; "(generated from ...)" does not
    for recipient, lines in entries:
        reason = " ".join(lines)
        remote = re.search(r"\bhost ([^\s\[]+) \[", reason)
        failures.append(_text_failure(recipient, reason, kind, remote.group(1) if remote else None))
    return failures


def _text_failure(recipient: str, reason: str | None, kind: Kind, remote: str | None) -> Failure:
    """A failure read from a plain-text bounce: the status comes from the reason, and
    the kind from the status (or the section's kind) unless the section is a delay."""
    status = _status_of(reason)
    final = kind if kind == "delay" else _failed_kind(status, kind, reason)
    return Failure(recipient, status, final, _clip(reason), None, remote)


def _sendmail(msg: _Message) -> list[Failure]:
    text = msg.text
    failures: list[Failure] = []
    sections = re.finditer(
        r"The following addresses had (permanent fatal|transient non-fatal) errors -+[ \t]*$",
        text,
        re.M,
    )
    remote = re.search(r"\.\.\. while talking to ([^\s:]+?)\.?:", text)
    for section in sections:
        kind: Kind = "hard" if section.group(1).startswith("permanent") else "delay"
        current: str | None = None
        reasons: dict[str, str] = {}
        order: list[str] = []
        for line in _lines_after(text, section.end()):
            stripped = line.strip()
            if (m := re.match(r"\(reason: (.*)\)$", stripped)) and current:
                reasons[current] = m.group(1)
            elif not line[0].isspace() and (addr := _address(stripped)):
                current = addr
                order.append(addr)
        failures += [
            _text_failure(r, reasons.get(r), kind, remote.group(1) if remote else None)
            for r in order
        ]
    return failures


EXCHANGE_LINE = (
    re.compile(rf"\s*<?(?:mailto:)?(?P<a>{ADDR})>?\s*(?:\((?:mailto:)?{ADDR}\))?\s*"),
    re.compile(rf"\s*[^@<>()\n]{{1,80}}?\s*[(<](?:mailto:)?(?P<a>{ADDR})[)>]\s*"),
)


def _exchange(msg: _Message) -> list[Failure]:
    text = msg.text
    m = re.search(r"Delivery has failed to these recipients or groups:", text)
    if not m:
        return []
    rest = text[m.end() :]
    diag_at = re.search(r"Diagnostic information for administrators:", rest)
    listing = _until(rest, r"Diagnostic information for administrators:", r"Original message")
    diagnostics = _until(rest[diag_at.end() :], r"Original message") if diag_at else ""
    generating = re.search(r"Generating server:\s*(\S+)", diagnostics)
    recipients: list[str] = []
    for line in listing.split("\n"):
        for rx in EXCHANGE_LINE:
            if (lm := rx.fullmatch(line)) and (addr := _address(lm.group("a"))):
                if addr not in recipients:
                    recipients.append(addr)
                break
    # In the administrators' section each address is followed by the remote reply.
    reasons: dict[str, str] = {}
    diag_lines = [line.strip() for line in diagnostics.split("\n")]
    for i, line in enumerate(diag_lines):
        addr = _address(line) if "@" in line else None
        if addr and addr not in reasons:
            following = [x for x in diag_lines[i + 1 : i + 4] if x]
            if following:
                reasons[addr] = following[0]
    remote = re.search(r"\b(?:Remote server|Receiving server):[ \t]*(\S+)", diagnostics, re.I)
    failures: list[Failure] = []
    for recipient in recipients[:MAX_FAILURES]:
        reason = reasons.get(recipient)
        status = _status_of(reason)
        failures.append(
            Failure(
                recipient,
                status,
                _failed_kind(status, "unknown", reason),
                _clip(reason),
                generating.group(1) if generating else None,
                remote.group(1) if remote else None,
            )
        )
    return failures


def _gmail(msg: _Message) -> list[Failure]:
    text = msg.text
    m = re.search(
        r"Delivery to the following recipients? (failed permanently|has been delayed):", text
    )
    if not m:
        return []
    kind: Kind = "hard" if m.group(1).startswith("failed") else "delay"
    paras = _paragraphs(text[m.end() :])
    if not paras:
        return []
    recipients = [a for line in paras[0] if (a := _address(line.strip()))]
    if len(recipients) != len(paras[0]):
        return []
    err = re.search(r"The error that the other server returned was:[ \t]*$", text, re.M)
    reason = "\n".join(_lines_after(text, err.end())) if err else None
    status = _status_of(reason)
    remote = re.search(r"by ([^\s\[]+?)\.? \[", text)
    return [
        Failure(
            r,
            status,
            kind if kind == "delay" else _failed_kind(status, kind, reason),
            _clip(reason),
            None,
            remote.group(1) if remote else None,
        )
        for r in recipients
    ]


TEXT_DETECTORS: tuple[tuple[str, Detector], ...] = (
    ("qmail", _qmail),
    ("yahoo", _yahoo),
    ("exim", _exim),
    ("postfix", _postfix),
    ("sendmail", _sendmail),
    ("exchange", _exchange),
    ("gmail", _gmail),
)


# ---------------------------------------------------------------------------
# Auto-replies and the generic fallback

BOUNCE_SENDER = re.compile(
    r"mailer-daemon|mail-daemon|postmaster|mail delivery (?:system|subsystem)", re.I
)
BOUNCE_SUBJECT = re.compile(
    r"undeliver|delivery (?:status notification|failure|failed|has failed|report)"
    r"|returned mail|mail delivery failed|failure notice|non-?deliver|could not be delivered"
    r"|delivery problem|unzustellbar|non remis",
    re.I,
)
AUTOREPLY_SUBJECT = re.compile(
    r"^(?:(?:re|aw|fw|fwd):\s*)?(?:out of (?:the )?office|automatic reply|auto[- ]?reply"
    r"|auto[- ]?response|autosvar|abwesenheitsnotiz|automatische antwort|r[ée]ponse automatique"
    r"|respuesta autom[aá]tica|risposta automatica|automatisch antwoord|vacation|on vacation"
    r"|absence)\b"
    r"|\bis out of (?:the )?office\b",
    re.I,
)


def _looks_like_bounce(msg: _Message) -> bool:
    return bool(
        BOUNCE_SENDER.search(msg.header("from")) or BOUNCE_SUBJECT.search(msg.header("subject"))
    )


def _is_autoreply(msg: _Message) -> bool:
    auto = msg.header("auto-submitted").lower()
    precedence = msg.header("precedence").lower()
    return (
        auto.startswith("auto-replied")
        or precedence == "auto_reply"
        or bool(msg.header("x-autoreply") or msg.header("x-autorespond"))
        or msg.header("x-autogenerated").lower() == "reply"
        or bool(AUTOREPLY_SUBJECT.search(msg.header("subject")))
    )


def _autoreply(msg: _Message) -> list[Failure]:
    sender = _address(msg.header("from"))
    if sender is None:
        return []
    return [Failure(sender, None, "autoreply", _clip(msg.header("subject")), None, None)]


def _generic(msg: _Message) -> list[Failure]:
    """Lines with a 5xx reply and one address, in a message that says it is a bounce.

    Lines about the sender (``Sender address rejected``, ``MAIL FROM``) are skipped,
    and so are addresses the bounce was sent to (our own return path).
    """
    ours = {a for v in (msg.header("to"), msg.header("delivered-to")) if (a := _address(v))}
    failures: dict[str, Failure] = {}
    line_rx = re.compile(rf"(?:^|[\s;:'\"(#])(5\d\d)[ -].*?<?(?:mailto:)?({ADDR})>?")
    for line in _until(msg.text, *RETURNED).split("\n")[:5000]:
        if len(line) > 2000 or re.search(r"sender|mail from", line, re.I):
            continue
        m = line_rx.search(line)
        if not m:
            continue
        recipient = _address(m.group(2))
        if recipient is None or recipient in ours or recipient in failures:
            continue
        diagnostic = line[m.start(1) :]
        failures[recipient] = Failure(
            recipient, _status_of(diagnostic), "hard", _clip(diagnostic), None, None
        )
    return list(failures.values())


# ---------------------------------------------------------------------------


def _original_id(msg: _Message) -> str | None:
    if msg.original_ids:
        return msg.original_ids[0]
    for status_text in msg.statuses:
        message, _ = _records(_blocks(status_text))
        if mid := _message_id(message.get("x-original-message-id")):
            return mid
    m = re.search(r"^Message-ID:[ \t]*(<[^<>\s]+>)", msg.text, re.I | re.M)
    return m.group(1) if m else None


def _unique(failures: list[Failure]) -> tuple[Failure, ...]:
    """One failure per recipient (the first reported), at most MAX_FAILURES."""
    seen: dict[str, Failure] = {}
    for failure in failures:
        seen.setdefault(failure.recipient, failure)
    return tuple(seen.values())[:MAX_FAILURES]


def _detect(raw: bytes) -> Report:
    if not raw or not raw.strip():
        return NOTHING
    msg = _parse(raw)
    original = _original_id(msg)
    failures = _dsn(msg)
    if failures is not None:
        return Report(_unique(failures), msg.is_report, "dsn", original)
    for name, detector in TEXT_DETECTORS:
        found = detector(msg)
        if found:
            return Report(_unique(found), msg.is_report, name, original)
    bounce = _looks_like_bounce(msg)
    if not bounce and _is_autoreply(msg):
        in_reply_to = _message_id(msg.header("in-reply-to"))
        return Report(_unique(_autoreply(msg)), False, "autoreply", in_reply_to or original)
    if bounce:
        found = _generic(msg)
        if found:
            return Report(_unique(found), msg.is_report, "generic", original)
    return NOTHING
