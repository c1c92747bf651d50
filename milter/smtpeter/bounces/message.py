"""A bounce as the detectors read it: its top-level headers and the text of its own
parts (never of the returned original, whose Message-ID alone is kept)."""

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
from collections.abc import Iterator
from dataclasses import dataclass
from email.errors import HeaderParseError
from email.generator import BytesGenerator
from email.header import decode_header, make_header
from email.message import Message

from smtpeter.bounces.report import MAX_DEPTH, MAX_PARTS, MAX_RAW, MAX_TEXT
from smtpeter.bounces.text import field_blocks, message_id, unfold

log = logging.getLogger("smtpeter.bounce")


@dataclass
class BounceMessage:
    """What the detectors read: top-level headers, the report's own parts."""

    top: Message
    texts: list[str]
    """Text of the parts outside any returned message, in order (HTML stripped)."""
    statuses: list[str]
    """Bodies of delivery-status parts."""
    original_ids: list[str]
    is_report: bool

    def header(self, name: str) -> str:
        return header_of(self.top, name)

    @property
    def text(self) -> str:
        return "\n\n".join(self.texts)


def header_of(msg: Message, name: str) -> str:
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
    return unfold(text)


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


def _is_dsn(msg: Message) -> bool:
    return msg.get_content_type() == "multipart/report" and str(
        msg.get_param("report-type", "") or ""
    ).strip().lower() in ("delivery-status", "global-delivery-status")


def read(raw: bytes) -> BounceMessage | None:
    """The parsed bounce, read once for the detectors and the complaint reader; None
    for an empty message or one the email package cannot read (logged); never raises."""
    if not raw or not raw.strip():
        return None
    try:
        return parse(raw)
    except Exception:  # a bad message must never stop the bounce processor
        log.warning("bounce parsing failed on a %d byte message", len(raw), exc_info=True)
        return None


def parse(raw: bytes) -> BounceMessage:
    data = raw[:MAX_RAW].replace(b"\r\n", b"\n")
    top = email.message_from_bytes(data, policy=email.policy.compat32)
    found = _read(top)
    if not found.statuses and not found.is_report:
        # A DSN wrapped whole in a message/rfc822 part (a gateway that adds a
        # disclaimer to everything): read the DSN, once.
        for part in _leaves(top):
            inner = part.get_payload() if part.get_content_type() == "message/rfc822" else None
            if (
                isinstance(inner, list)
                and inner
                and isinstance(inner[0], Message)
                and _is_dsn(inner[0])
            ):
                wrapped = _read(inner[0])
                return BounceMessage(top, wrapped.texts, wrapped.statuses,
                                     wrapped.original_ids, True)  # fmt: skip
    return found


def _read(top: Message) -> BounceMessage:
    is_report = _is_dsn(top)
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
                mid = message_id(header_of(inner[0], "message-id"))
                if mid:
                    ids.append(mid)
        elif ptype in ("text/rfc822-headers", "message/global-headers"):
            body = (
                _text_of(part)
                if ptype.startswith("text/")
                else _body_bytes(part).decode("utf-8", errors="replace")
            )
            for block in field_blocks(body)[:1]:
                for name, value in block:
                    if name == "message-id" and (mid := message_id(value)):
                        ids.append(mid)
        elif ptype == "text/html":
            html.append(_strip_html(_text_of(part)))
        elif part.get_content_maintype() == "text" or part is top:
            texts.append(_text_of(part))
    if not any(t.strip() for t in texts):
        texts.extend(html)
    return BounceMessage(top, texts, statuses, ids, is_report)
