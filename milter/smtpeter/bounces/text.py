"""Reading the text of bounces: status codes, addresses, header-style field blocks,
paragraphs and the sections of plain-text formats; shared by the detectors."""

from __future__ import annotations

import re

from smtpeter.bounces.report import MAX_DIAGNOSTIC, Failure, Kind

ENHANCED = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?!\d|\.\d)")
REPLY = re.compile(r"(?:^|(?<=[\s;:'\"(#<\[]))([245])\d\d(?=[ -]|$)", re.MULTILINE)
EXPIRED = re.compile(
    r"in the queue too long|retry time(?:out)? (?:not reached|exceeded)|message expired"
    r"|delivery time expired|too long in queue|timed out|expired in queue",
    re.IGNORECASE,
)
ADDR = r"[^\s@<>()\[\]\",;:]+@(?:[^\s@<>()\[\]\",;:]+|\[[^\]\s]+\])"
UTF8_ESCAPE = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")


def unfold(value: str) -> str:
    return " ".join(value.split())


def status_of(text: str | None) -> str | None:
    """The first enhanced status code in ``text``, else one derived from an SMTP reply."""
    if not text:
        return None
    m = ENHANCED.search(text)
    if m:
        return ".".join(m.groups())
    m = REPLY.search(text)
    return f"{m.group(1)}.0.0" if m else None


def failed_kind(status: str | None, default: Kind, reason: str | None = None) -> Kind:
    """The kind of a recipient whose delivery was given up."""
    if status is not None:
        return "hard" if status[0] == "5" else "soft" if status[0] == "4" else "unknown"
    if reason and EXPIRED.search(reason):
        return "soft"
    return default


def address(value: str) -> str | None:
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
    # A domain never holds "..": in Sendmail's "addr... User unknown" style the reason
    # runs on into it when written without a space.
    domain = domain.split("..", 1)[0].rstrip(".").lower()
    if not local or not domain or domain.startswith("."):
        return None
    return f"{local}@{domain}"


def _unescape(m: re.Match[str]) -> str:
    point = int(m.group(1), 16)
    if point > 0x10FFFF or 0xD800 <= point <= 0xDFFF:
        return m.group(0)
    return chr(point)


def mta(value: str | None) -> str | None:
    """``dns; mx.example.com (comment)`` → ``mx.example.com``."""
    if not value:
        return None
    typ, sep, rest = value.partition(";")
    name = rest if sep else typ
    name = re.sub(r"\(.*", "", name).strip().rstrip(".")
    return name or None


def message_id(value: str | None) -> str | None:
    if not value:
        return None
    m = re.search(r"<[^<>\s]+>", value)
    if m:
        return m.group(0)
    value = value.strip()
    return value if value and " " not in value else None


def clip(text: str | None) -> str | None:
    if not text:
        return None
    text = unfold(text)
    return text[:MAX_DIAGNOSTIC] or None


Block = list[tuple[str, str]]


def field_blocks(text: str) -> list[Block]:
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


RETURNED = (
    r"^[ \t]*-+ ?(?:This is a copy of|Below this line is|Enclosed is|Original message)",
    r"^[ \t]*-+ ?The header of the original",
    r"^Original message headers:",
    r"^Original headers follow",
    r"^Content-Type: message/rfc822",
)


def paragraphs(text: str) -> list[list[str]]:
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


def lines_after(text: str, pos: int) -> list[str]:
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


def until(text: str, *markers: str) -> str:
    """``text`` up to the first of ``markers`` (a regex each), matched at a line start."""
    ends = [m.start() for p in markers if (m := re.search(p, text, re.MULTILINE | re.I))]
    return text[: min(ends)] if ends else text


def angle_paragraphs(
    section: str, default: Kind, reporting: str | None, remote_rx: str | None = None
) -> list[Failure]:
    """Failures from paragraphs that start ``<addr>: reason`` (qmail, Yahoo, Postfix)."""
    failures: list[Failure] = []
    head = re.compile(r"^<([^<>\s]+)>(?:\s*\(expanded from:? <?([^<>\s]*)>?\))?:\s*(.*)$")
    for para in paragraphs(section):
        m = head.match(para[0].strip())
        if not m:
            continue
        recipient = address(m.group(1))
        if recipient is None:
            continue
        original = address(m.group(2)) if m.group(2) else None
        reason = " ".join([m.group(3), *(line.strip() for line in para[1:])]).strip()
        status = status_of(reason)
        if status is not None and status[0] == "2":
            continue  # a success report (Postfix's "delivery via ...: 250 2.0.0 Ok")
        remote = None
        if remote_rx and (r := re.search(remote_rx, reason)):
            remote = r.group(1)
        failures.append(
            Failure(
                recipient,
                status,
                default if default == "delay" else failed_kind(status, default, reason),
                clip(reason),
                reporting,
                remote,
                original,
            )
        )
    return failures


def text_failure(
    recipient: str,
    reason: str | None,
    kind: Kind,
    remote: str | None,
    original: str | None = None,
) -> Failure:
    """A failure read from a plain-text bounce: the status comes from the reason, and
    the kind from the status (or the section's kind) unless the section is a delay."""
    status = status_of(reason)
    final = kind if kind == "delay" else failed_kind(status, kind, reason)
    return Failure(recipient, status, final, clip(reason), None, remote, original)
