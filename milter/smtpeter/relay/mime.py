"""Splice rewritten text/html parts into the original bytes of a message.

The milter hands us the top-level headers (as Postfix passed them) and the raw
body. We walk the MIME tree with our own boundary scanner on bytes, decode every
eligible text/html leaf, run a transform over it and put the re-encoded result
back in place. Everything else -- preamble, epilogue, boundaries, other parts'
headers and bodies, attachments -- is copied through byte for byte: Python's
``email`` package is used only to interpret header values, never to serialise.

Left untouched (the whole subtree):

* ``multipart/signed``, ``multipart/encrypted``, ``application/(x-)pkcs7-mime``;
* ``message/*`` parts (we never descend into an encapsulated message);
* text/html parts with ``Content-Disposition: attachment``;
* parts with an unknown or undecodable charset, or an unknown transfer encoding;
* malformed structure: a multipart without a boundary parameter or without its
  closing delimiter, a header block with lines that are not header fields.

A changed part is re-encoded in its original charset (characters outside it
become HTML character references); base64 stays base64, anything else becomes
quoted-printable, so no generated line exceeds 76 characters.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import Message

__all__ = ["Rewrite", "Transforms", "rewrite_html_parts", "rewrite_text_parts"]

# Content type ("text/html", "text/plain") -> the transform for parts of that type.
Transforms = Mapping[str, Callable[[str], str]]

_CRLF = b"\r\n"
_CTE_NAME = "Content-Transfer-Encoding"
_IDENTITY_CTES = frozenset({"7bit", "8bit", "binary"})
_KNOWN_CTES = _IDENTITY_CTES | {"quoted-printable", "base64"}
_OPAQUE_TYPES = frozenset(
    {
        "multipart/signed",
        "multipart/encrypted",
        "application/pkcs7-mime",
        "application/x-pkcs7-mime",
    }
)
# Deeper nesting than this is treated as hostile and left alone.
_MAX_DEPTH = 32

_FIELD_NAME = re.compile(rb"[!-9;-~]+:")
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_EOL = re.compile(rb"\r?\n")


@dataclass(frozen=True)
class Rewrite:
    """The outcome of :func:`rewrite_html_parts`.

    ``body`` is the new full body, or None when nothing changed. ``header_changes``
    maps a top-level header name to its new value; it is only filled when the
    message itself is the text/html leaf that changed and its transfer encoding
    changed with it (for example ``{"Content-Transfer-Encoding": "quoted-printable"}``);
    the milter applies it with chgheader (or addheader when the header is absent).
    """

    body: bytes | None
    header_changes: dict[str, str] = field(default_factory=dict)
    parts_changed: int = 0


@dataclass(frozen=True)
class _PartInfo:
    content_type: str  # "maintype/subtype", lower case
    boundary: str | None
    charset: str  # lower case, "us-ascii" when not declared
    cte: str  # lower case, "7bit" when not declared
    disposition: str | None  # lower case or None


@dataclass(frozen=True)
class _Edit:
    start: int
    end: int
    data: bytes


def rewrite_html_parts(
    headers: Sequence[tuple[str, str]],
    body: bytes,
    transform: Callable[[str], str],
) -> Rewrite:
    """Run ``transform`` over every eligible text/html part of a message."""
    return rewrite_text_parts(headers, body, {"text/html": transform})


def rewrite_text_parts(
    headers: Sequence[tuple[str, str]],
    body: bytes,
    transforms: Transforms,
) -> Rewrite:
    """Run the transform for its content type over every eligible text leaf.

    ``headers`` are the top-level (name, value) pairs as received from Postfix;
    folded values may contain ``"\\n"`` or ``"\\r\\n"`` followed by whitespace.
    ``body`` is the raw body (CRLF line endings; bare LF is tolerated).
    Exceptions raised by ``transform`` propagate to the caller.
    """
    top = _part_info([(name, _FOLD.sub("", value)) for name, value in headers], "text/plain")
    transform = _transform_for(top, transforms)
    if transform is not None:
        new = _rewrite_leaf_body(top, body, transform)
        if new is None:
            return Rewrite(body=None)
        new_body, new_cte = new
        changes: dict[str, str] = {}
        if new_cte != top.cte:
            changes[_CTE_NAME] = new_cte
        return Rewrite(body=new_body, header_changes=changes, parts_changed=1)
    if not _is_walkable_multipart(top):
        return Rewrite(body=None)
    assert top.boundary is not None
    edits: list[_Edit] = []
    _walk_multipart(body, 0, len(body), top, transforms, edits, depth=1)
    if not edits:
        return Rewrite(body=None)
    return Rewrite(body=_splice(body, edits), parts_changed=len(edits))


# --- tree walk -------------------------------------------------------------------


def _walk_multipart(
    data: bytes,
    start: int,
    end: int,
    info: _PartInfo,
    transforms: Transforms,
    edits: list[_Edit],
    depth: int,
) -> None:
    """Collect edits for the multipart whose body is ``data[start:end]``.

    Edits are appended in ascending, non-overlapping order. A malformed multipart
    contributes nothing (its bytes then pass through unchanged).
    """
    if depth > _MAX_DEPTH or info.boundary is None:
        return
    ranges = _split_parts(data, start, end, info.boundary)
    if ranges is None:
        return
    child_default = "message/rfc822" if info.content_type == "multipart/digest" else "text/plain"
    found: list[_Edit] = []
    for part_start, part_end in ranges:
        split = _split_header_block(data, part_start, part_end)
        if split is None:
            continue
        header_end, body_start = split
        fields = _parse_header_block(data[part_start:header_end])
        if fields is None:
            continue
        child = _part_info(fields, child_default)
        transform = _transform_for(child, transforms)
        if transform is not None:
            new = _rewrite_leaf_body(child, data[body_start:part_end], transform)
            if new is None:
                continue
            new_body, new_cte = new
            header_block = data[part_start:header_end]
            if new_cte != child.cte:
                header_block = _set_cte(header_block, new_cte)
            separator = data[header_end:body_start]
            found.append(_Edit(part_start, part_end, header_block + separator + new_body))
        elif _is_walkable_multipart(child):
            _walk_multipart(data, body_start, part_end, child, transforms, found, depth + 1)
    edits.extend(found)


def _split_parts(data: bytes, start: int, end: int, boundary: str) -> list[tuple[int, int]] | None:
    """Return the (start, end) offsets of each body part, or None when malformed.

    Per RFC 2046 the line break before a delimiter line belongs to the delimiter,
    so a part ends before it. Preamble and epilogue are not returned.
    """
    try:
        raw_boundary = boundary.encode("ascii")
    except UnicodeEncodeError:
        return None
    if not raw_boundary or len(raw_boundary) > 200:
        return None
    delimiter = re.compile(rb"^--" + re.escape(raw_boundary) + rb"(--)?[ \t]*\r?$", re.MULTILINE)
    ranges: list[tuple[int, int]] = []
    part_start: int | None = None
    for match in delimiter.finditer(data, start, end):
        line_start = match.start()
        if part_start is not None:
            part_end = line_start
            if part_end > part_start and data[part_end - 1 : part_end] == b"\n":
                part_end -= 1
                if part_end > part_start and data[part_end - 1 : part_end] == b"\r":
                    part_end -= 1
            ranges.append((part_start, max(part_start, part_end)))
        if match.group(1) is not None:  # close delimiter
            return ranges if part_start is not None else None
        line_end = match.end()
        # skip the delimiter line's own line break
        if data[line_end : line_end + 1] == b"\n":
            line_end += 1
        part_start = min(line_end, end)
    return None  # no close delimiter: leave the whole multipart alone


def _split_header_block(data: bytes, start: int, end: int) -> tuple[int, int] | None:
    """Find the blank line ending a part's header block.

    Returns (end of header block, start of body): ``data[start:header_end]`` holds
    the header lines with their line breaks, ``data[header_end:body_start]`` the
    blank line. None when there is no blank line (a part with no body).
    """
    pos = start
    while pos < end:
        nl = data.find(b"\n", pos, end)
        line_end = end if nl < 0 else nl
        line = data[pos:line_end]
        if line in (b"", b"\r"):
            if nl < 0:
                return None
            return pos, nl + 1
        if nl < 0:
            return None
        pos = nl + 1
    return None


def _parse_header_block(block: bytes) -> list[tuple[str, str]] | None:
    """Parse header lines into (name, unfolded value); None if a line is not a field."""
    fields: list[tuple[str, str]] = []
    for raw in _EOL.split(block):
        if not raw:
            continue
        if raw[:1] in (b" ", b"\t"):
            if not fields:
                return None
            name, value = fields[-1]
            fields[-1] = (name, value + raw.decode("ascii", "surrogateescape"))
            continue
        match = _FIELD_NAME.match(raw)
        if match is None:
            return None
        name = raw[: match.end() - 1].decode("ascii")
        value = raw[match.end() :].decode("ascii", "surrogateescape").lstrip(" \t")
        fields.append((name, value))
    return fields


def _part_info(fields: Sequence[tuple[str, str]], default_type: str) -> _PartInfo:
    msg = Message()
    msg.set_default_type(default_type)
    for name, value in fields:
        msg[name] = value
    boundary = msg.get_boundary()
    charset = msg.get_content_charset() or "us-ascii"
    cte = str(msg.get(_CTE_NAME, "7bit")).strip().lower() or "7bit"
    disposition = msg.get_content_disposition()
    return _PartInfo(
        content_type=msg.get_content_type(),
        boundary=boundary,
        charset=charset.strip().lower(),
        cte=cte,
        disposition=disposition,
    )


def _transform_for(info: _PartInfo, transforms: Transforms) -> Callable[[str], str] | None:
    """The transform for an inline leaf of a wanted type; attachments are never touched."""
    if info.disposition == "attachment":
        return None
    return transforms.get(info.content_type)


def _is_walkable_multipart(info: _PartInfo) -> bool:
    return (
        info.content_type.startswith("multipart/")
        and info.content_type not in _OPAQUE_TYPES
        and info.cte in _IDENTITY_CTES
        and info.boundary is not None
    )


# --- one leaf --------------------------------------------------------------------


def _rewrite_leaf_body(
    info: _PartInfo, raw: bytes, transform: Callable[[str], str]
) -> tuple[bytes, str] | None:
    """Return (encoded new body, its CTE), or None when the part stays as it is."""
    if info.cte not in _KNOWN_CTES:
        return None
    try:
        codec = codecs.lookup(info.charset)
    except LookupError:
        return None
    decoded = _decode_cte(raw, info.cte)
    if decoded is None:
        return None
    text = _decode_charset(decoded, codec.name)
    if text is None:
        return None
    new_text = transform(text)
    if new_text == text:
        return None
    new_bytes = new_text.encode(codec.name, errors="xmlcharrefreplace")
    if info.cte == "base64":
        encoded, new_cte = _encode_base64(new_bytes), "base64"
    else:
        encoded, new_cte = _encode_qp(new_bytes), "quoted-printable"
    # Keep a final line break where there was one (a message body ends with CRLF).
    if raw.endswith(b"\n") and not encoded.endswith(b"\n"):
        encoded += _CRLF
    return encoded, new_cte


def _decode_cte(raw: bytes, cte: str) -> bytes | None:
    if cte in _IDENTITY_CTES:
        return raw
    if cte == "quoted-printable":
        return binascii.a2b_qp(raw)
    try:
        return binascii.a2b_base64(raw)
    except binascii.Error:
        return None


def _decode_charset(data: bytes, codec_name: str) -> str | None:
    try:
        return data.decode(codec_name)
    except UnicodeDecodeError:
        pass
    if codec_name == "ascii":
        # Undeclared or mislabelled 8-bit content: UTF-8 is by far the likeliest.
        # The result is written back as ASCII with character references.
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return None


def _normalise_newlines(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")


def _encode_qp(data: bytes) -> bytes:
    encoded = binascii.b2a_qp(_normalise_newlines(data), quotetabs=False, istext=True)
    return encoded.replace(b"\n", _CRLF)


def _encode_base64(data: bytes) -> bytes:
    canonical = _normalise_newlines(data).replace(b"\n", _CRLF)
    return base64.encodebytes(canonical).rstrip(b"\n").replace(b"\n", _CRLF)


def _set_cte(block: bytes, cte: str) -> bytes:
    """Replace (or add) the Content-Transfer-Encoding field of a header block.

    Every other header line is kept byte-identical; the first CTE field is
    replaced in place (continuation lines included), any further ones dropped.
    """
    new_field = f"{_CTE_NAME}: {cte}".encode("ascii") + _CRLF
    lines = block.splitlines(keepends=True)
    out: list[bytes] = []
    replaced = False
    in_cte = False
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            if not in_cte:
                out.append(line)
            continue
        name, sep, _ = line.partition(b":")
        in_cte = bool(sep) and name.strip().lower() == b"content-transfer-encoding"
        if not in_cte:
            out.append(line)
        elif not replaced:
            out.append(new_field)
            replaced = True
    if not replaced:
        if out and not out[-1].endswith(b"\n"):
            out[-1] += _CRLF
        out.append(new_field)
    return b"".join(out)


def _splice(data: bytes, edits: Sequence[_Edit]) -> bytes:
    chunks: list[bytes] = []
    pos = 0
    for edit in edits:
        chunks.append(data[pos : edit.start])
        chunks.append(edit.data)
        pos = edit.end
    chunks.append(data[pos:])
    return b"".join(chunks)
