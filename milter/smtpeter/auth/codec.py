"""Codec for the Dovecot authentication protocol, server side, as Postfix speaks it.

The protocol is line based: each line is a command name and its parameters separated
by TAB, terminated by LF. Optional parameters are either booleans (``secured``) or
``name=value`` pairs; unknown ones are ignored. Values use Dovecot's "tab-escaping"
with ``\\001`` as the escape character: ``\\0010`` is NUL, ``\\0011`` is ``\\001``,
``\\001t`` TAB, ``\\001r`` CR and ``\\001n`` LF; any other character after ``\\001``
stands for itself.

Postfix (``smtpd_sasl_type = dovecot``) sends ``VERSION``, ``CPID``, then ``AUTH`` and
``CONT`` requests; it never sends anything else. It reads the server handshake up to
``DONE`` and then ``OK``, ``CONT`` and ``FAIL`` replies. Postfix does not unescape
reply values, so everything we send in replies should be plain printable text.

Everything here is pure: parse bytes to dataclasses, format dataclass-like values to
bytes. The server decides what the lines mean.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_MECHANISMS",
    "MAX_LINE_LENGTH",
    "PROTOCOL_MAJOR",
    "PROTOCOL_MINOR",
    "AuthRequest",
    "ClientLine",
    "ClientVersion",
    "ContRequest",
    "CpidLine",
    "InvalidSaslData",
    "ProtocolError",
    "decode_sasl_data",
    "encode_sasl_data",
    "format_cont",
    "format_fail",
    "format_handshake",
    "format_ok",
    "parse_client_line",
    "tab_escape",
    "tab_unescape",
]

PROTOCOL_MAJOR = 1
PROTOCOL_MINOR = 2

#: Dovecot expects lines to fit into 16384 bytes (the SASL payload is the largest part).
MAX_LINE_LENGTH = 16384

#: Mechanisms announced in the handshake, in order, with their security properties.
#: ``plaintext`` tells Postfix the mechanism sends the password in clear, so
#: ``smtpd_sasl_security_options = noplaintext`` hides it.
DEFAULT_MECHANISMS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("PLAIN", ("plaintext",)),
    ("LOGIN", ("plaintext",)),
)

_MAX_REQUEST_ID = 2**32 - 1

_ESCAPES = {"\x00": "\x010", "\x01": "\x011", "\t": "\x01t", "\r": "\x01r", "\n": "\x01n"}
_UNESCAPES = {"0": "\x00", "1": "\x01", "t": "\t", "r": "\r", "n": "\n"}


class ProtocolError(ValueError):
    """A line that does not follow the protocol; the server drops the connection."""


class InvalidSaslData(ValueError):
    """A SASL payload that is not valid base64 (client data: fail the request only)."""


@dataclass(frozen=True, slots=True)
class ClientVersion:
    """``VERSION <major> <minor>``: the client's protocol version."""

    major: int
    minor: int


@dataclass(frozen=True, slots=True)
class CpidLine:
    """``CPID <pid>``: the client's process id (informational)."""

    pid: int


@dataclass(frozen=True, slots=True)
class AuthRequest:
    """``AUTH <id> <mechanism> [params]``: start an authentication.

    ``mechanism`` is upper-cased (Postfix passes it on as the SMTP client typed it).
    ``resp`` is the raw base64 initial response, ``None`` when there was none; ``=``
    stands for an empty response (decode it with :func:`decode_sasl_data`).
    ``params`` holds every optional parameter, unescaped; booleans map to ``None``.
    """

    request_id: int
    mechanism: str
    params: Mapping[str, str | None] = field(default_factory=dict)

    @property
    def service(self) -> str | None:
        return self.params.get("service")

    @property
    def lip(self) -> str | None:
        return self.params.get("lip")

    @property
    def rip(self) -> str | None:
        return self.params.get("rip")

    @property
    def secured(self) -> bool:
        return "secured" in self.params

    @property
    def nologin(self) -> bool:
        return "nologin" in self.params

    @property
    def resp(self) -> str | None:
        return self.params.get("resp")


@dataclass(frozen=True, slots=True)
class ContRequest:
    """``CONT <id> <base64>``: the client's answer to a ``CONT`` challenge."""

    request_id: int
    data: str


ClientLine = ClientVersion | CpidLine | AuthRequest | ContRequest


def tab_escape(value: str) -> str:
    """Escape a parameter value with Dovecot's ``\\001`` tab-escaping."""
    if not any(ch in value for ch in _ESCAPES):
        return value
    return "".join(_ESCAPES.get(ch, ch) for ch in value)


def tab_unescape(value: str) -> str:
    """Undo :func:`tab_escape`. A trailing lone ``\\001`` is dropped, as Dovecot does."""
    if "\x01" not in value:
        return value
    out: list[str] = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\x01":
            if i + 1 < len(value):
                nxt = value[i + 1]
                out.append(_UNESCAPES.get(nxt, nxt))
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _parse_uint(text: str, what: str, maximum: int = _MAX_REQUEST_ID) -> int:
    if not text or not text.isascii() or not text.isdigit():
        raise ProtocolError(f"{what} is not an unsigned integer: {text[:40]!r}")
    number = int(text)
    if number > maximum:
        raise ProtocolError(f"{what} is out of range: {text[:40]!r}")
    return number


def parse_client_line(line: bytes) -> ClientLine:
    """Parse one client line (with or without its trailing LF).

    Raises :class:`ProtocolError` for anything Postfix would never send: an unknown
    command, a missing or non-numeric id, a line over :data:`MAX_LINE_LENGTH`, bytes
    that are not UTF-8.
    """
    if line.endswith(b"\n"):
        line = line[:-1]
    if len(line) >= MAX_LINE_LENGTH:
        raise ProtocolError(f"line longer than {MAX_LINE_LENGTH} bytes")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError("line is not valid UTF-8") from exc
    if not text:
        raise ProtocolError("empty line")
    command, *args = text.split("\t")

    if command == "VERSION":
        if len(args) < 2:
            raise ProtocolError("VERSION needs <major> <minor>")
        return ClientVersion(
            _parse_uint(args[0], "VERSION major"), _parse_uint(args[1], "VERSION minor")
        )
    if command == "CPID":
        if len(args) < 1:
            raise ProtocolError("CPID needs <pid>")
        return CpidLine(_parse_uint(args[0], "CPID pid"))
    if command == "AUTH":
        if len(args) < 2:
            raise ProtocolError("AUTH needs <id> <mechanism>")
        request_id = _parse_uint(args[0], "AUTH id")
        mechanism = args[1].upper()
        if not mechanism:
            raise ProtocolError("AUTH has an empty mechanism")
        params: dict[str, str | None] = {}
        for arg in args[2:]:
            if not arg:
                continue
            name, sep, value = arg.partition("=")
            params[tab_unescape(name)] = tab_unescape(value) if sep else None
        return AuthRequest(request_id, mechanism, params)
    if command == "CONT":
        if len(args) < 1:
            raise ProtocolError("CONT needs <id>")
        request_id = _parse_uint(args[0], "CONT id")
        data = args[1] if len(args) > 1 else ""
        return ContRequest(request_id, data)
    raise ProtocolError(f"unknown command {command[:40]!r}")


def decode_sasl_data(data: str) -> bytes:
    """Decode a base64 SASL payload. ``""`` and ``"="`` both mean an empty response."""
    if data in ("", "="):
        return b""
    try:
        return base64.b64decode(data.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise InvalidSaslData("invalid base64 in SASL data") from exc


def encode_sasl_data(data: bytes) -> str:
    """Encode a SASL challenge as base64 (empty bytes give an empty string)."""
    return base64.b64encode(data).decode("ascii")


def _line(*fields: str) -> bytes:
    return ("\t".join(fields) + "\n").encode("utf-8")


def format_handshake(
    *,
    spid: int,
    cuid: int,
    cookie: str,
    mechanisms: Iterable[tuple[str, Iterable[str]]] = DEFAULT_MECHANISMS,
) -> bytes:
    """The server handshake, in the order Dovecot sends it.

    ``VERSION``, the ``MECH`` lines, ``SPID``, ``CUID``, ``COOKIE``, ``DONE``. Postfix
    refuses a handshake where ``SPID`` comes before the first ``MECH``.
    """
    if len(cookie) != 32 or any(c not in "0123456789abcdef" for c in cookie):
        raise ValueError("cookie must be 32 lower-case hex digits")
    out = [_line("VERSION", str(PROTOCOL_MAJOR), str(PROTOCOL_MINOR))]
    for name, props in mechanisms:
        out.append(_line("MECH", tab_escape(name), *(tab_escape(p) for p in props)))
    out.append(_line("SPID", str(spid)))
    out.append(_line("CUID", str(cuid)))
    out.append(_line("COOKIE", cookie))
    out.append(_line("DONE"))
    return b"".join(out)


def format_cont(request_id: int, challenge: bytes) -> bytes:
    """``CONT <id> <base64>``; the TAB is sent even for an empty challenge."""
    return _line("CONT", str(request_id), encode_sasl_data(challenge))


def format_ok(request_id: int, user: str) -> bytes:
    """``OK <id> user=<name>``: Postfix requires ``user=``."""
    return _line("OK", str(request_id), "user=" + tab_escape(user))


def format_fail(
    request_id: int, *, user: str | None = None, reason: str | None = None, temp: bool = False
) -> bytes:
    """``FAIL <id> [user=<name>] [reason=<text>] [temp]``.

    Postfix shows ``reason`` to the SMTP client after ``535 5.7.8``, and ignores
    ``temp``: a temporary failure has to be signalled by closing the connection.
    """
    fields = ["FAIL", str(request_id)]
    if user is not None:
        fields.append("user=" + tab_escape(user))
    if reason is not None:
        fields.append("reason=" + tab_escape(reason))
    if temp:
        fields.append("temp")
    return _line(*fields)
