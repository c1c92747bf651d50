"""What Postfix and the operator see of the Dovecot auth codec, found by mutation testing
(scripts/mutation, see tests/README.md): the exact reason a refused line is logged with
(the daemon logs ``protocol error, closing: <reason>``), the edges of what is accepted,
and payload decoding."""

from __future__ import annotations

import base64

import pytest

from smtpeter.auth.codec import (
    MAX_LINE_LENGTH,
    AuthRequest,
    ClientVersion,
    ContRequest,
    CpidLine,
    InvalidSaslData,
    ProtocolError,
    decode_sasl_data,
    format_handshake,
    parse_client_line,
)
from tests.unit.test_auth_codec import COOKIE

LONG = "x" * 50
BIG = "9" * 50


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"", "empty line"),
        (b"\n", "empty line"),
        (b"AUTH\t1\tPLAIN\tservice=\xff\n", "line is not valid UTF-8"),
        (b"CONT\t1\t" + b"A" * (MAX_LINE_LENGTH - 7), f"line longer than {MAX_LINE_LENGTH} bytes"),
        (b"VERSION\t1\n", "VERSION needs <major> <minor>"),
        (b"VERSION\tone\t2\n", "VERSION major is not an unsigned integer: 'one'"),
        (b"VERSION\t1\ttwo\n", "VERSION minor is not an unsigned integer: 'two'"),
        (b"CPID\n", "CPID needs <pid>"),
        (b"CPID\tme\n", "CPID pid is not an unsigned integer: 'me'"),
        (b"AUTH\t1\n", "AUTH needs <id> <mechanism>"),
        (b"AUTH\tx\tPLAIN\n", "AUTH id is not an unsigned integer: 'x'"),
        (b"AUTH\t1\t\n", "AUTH has an empty mechanism"),
        (b"CONT\n", "CONT needs <id>"),
        (b"CONT\tabc\tYQ==\n", "CONT id is not an unsigned integer: 'abc'"),
        (f"AUTH\t{LONG}\tPLAIN\n".encode(), f"AUTH id is not an unsigned integer: {LONG[:40]!r}"),
        (f"AUTH\t{BIG}\tPLAIN\n".encode(), f"AUTH id is out of range: {BIG[:40]!r}"),
        (f"{LONG}\t1\n".encode(), f"unknown command {LONG[:40]!r}"),
        (b"HELLO\t1\n", "unknown command 'HELLO'"),
    ],
)
def test_refused_line_is_logged_with_its_exact_reason(line: bytes, reason: str) -> None:
    """A refused line raises ProtocolError whose text (shown in the log) names the fault."""
    with pytest.raises(ProtocolError) as caught:
        parse_client_line(line)
    assert str(caught.value) == reason


@pytest.mark.parametrize("number", ["\u0661\u0662", "\uff11", "\u00b2"])
def test_non_ascii_digits_are_not_a_request_id(number: str) -> None:
    """An id of non-ASCII digits (Arabic-Indic, full-width, superscript) is refused."""
    with pytest.raises(ProtocolError) as caught:
        parse_client_line(f"AUTH\t{number}\tPLAIN\n".encode())
    assert str(caught.value) == f"AUTH id is not an unsigned integer: {number!r}"


def test_largest_request_id_is_accepted() -> None:
    """Request id 2**32-1 (Dovecot's largest) is accepted; one more is refused."""
    assert parse_client_line(b"AUTH\t4294967295\tPLAIN\n") == AuthRequest(4294967295, "PLAIN")
    assert parse_client_line(b"CONT\t4294967295\t=\n") == ContRequest(4294967295, "=")
    with pytest.raises(ProtocolError):
        parse_client_line(b"AUTH\t4294967296\tPLAIN\n")


def test_line_just_under_the_limit_is_accepted() -> None:
    """A line of MAX_LINE_LENGTH-1 bytes (plus LF) is parsed; one byte more is refused."""
    data = "A" * (MAX_LINE_LENGTH - 1 - len("CONT\t1\t"))
    assert parse_client_line(f"CONT\t1\t{data}\n".encode()) == ContRequest(1, data)
    with pytest.raises(ProtocolError):
        parse_client_line(f"CONT\t1\t{data}A\n".encode())


def test_auth_with_no_parameters_at_all() -> None:
    """``AUTH <id> <mech>`` with no optional parameter is a valid request."""
    assert parse_client_line(b"AUTH\t3\tLOGIN\n") == AuthRequest(3, "LOGIN", {})


def test_only_tab_separates_fields() -> None:
    """Spaces belong to a value; only TAB separates parameters."""
    req = parse_client_line(b"AUTH\t1\tPLAIN\tservice=smtp\tfoo=a b\n")
    assert isinstance(req, AuthRequest)
    assert req.params == {"service": "smtp", "foo": "a b"}


def test_empty_parameter_is_skipped_not_the_end() -> None:
    """An empty field between parameters is ignored; the parameters after it still count."""
    req = parse_client_line(b"AUTH\t1\tPLAIN\t\tservice=smtp\t\trip=198.51.100.7\n")
    assert isinstance(req, AuthRequest)
    assert req.params == {"service": "smtp", "rip": "198.51.100.7"}


@pytest.mark.parametrize(
    ("raw", "value"),
    [(b"a\x01t", "a\t"), (b"\x010", "\0"), (b"a\x01", "a"), (b"\x01\x01\x01n", "\x01\n")],
)
def test_escape_at_the_end_of_a_value(raw: bytes, value: str) -> None:
    """An escape as the last two characters of a value is decoded, a lone trailing one dropped."""
    req = parse_client_line(b"AUTH\t1\tPLAIN\tfoo=" + raw + b"\n")
    assert isinstance(req, AuthRequest)
    assert req.params["foo"] == value


def test_cpid_and_version_numbers() -> None:
    """CPID and VERSION carry their numbers through, extra fields ignored."""
    assert parse_client_line(b"CPID\t0\n") == CpidLine(0)
    assert parse_client_line(b"VERSION\t1\t2\textra\n") == ClientVersion(1, 2)


@pytest.mark.parametrize("data", ["XXXX", "YQ==", "AAAA"])
def test_four_character_payloads_decode(data: str) -> None:
    """A short base64 payload decodes to its bytes, not to an empty response."""
    assert decode_sasl_data(data) == base64.b64decode(data)
    assert decode_sasl_data(data) != b""


def test_invalid_base64_reason() -> None:
    """Invalid SASL data raises InvalidSaslData with a readable reason."""
    with pytest.raises(InvalidSaslData) as caught:
        decode_sasl_data("not*base64")
    assert str(caught.value) == "invalid base64 in SASL data"


@pytest.mark.parametrize(
    "cookie",
    [
        COOKIE.upper(),
        COOKIE[:-1] + "X",
        COOKIE[:-1],
        COOKIE + "0",
        "g" * 32,
    ],
)
def test_handshake_refuses_a_cookie_that_is_not_32_lower_hex(cookie: str) -> None:
    """The handshake's cookie must be exactly 32 lower-case hex digits."""
    with pytest.raises(ValueError) as caught:
        format_handshake(spid=1, cuid=1, cookie=cookie)
    assert str(caught.value) == "cookie must be 32 lower-case hex digits"


def test_handshake_with_other_mechanisms() -> None:
    """Announced mechanisms and their properties are written one MECH line each, escaped."""
    out = format_handshake(
        spid=7, cuid=8, cookie=COOKIE, mechanisms=[("X\tY", ("a", "b\n")), ("Z", ())]
    )
    assert out.split(b"\n")[1:3] == [b"MECH\tX\x01tY\ta\tb\x01n", b"MECH\tZ"]
