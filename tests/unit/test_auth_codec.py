"""The Dovecot auth protocol codec: golden lines in, golden lines out."""

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
    encode_sasl_data,
    format_cont,
    format_fail,
    format_handshake,
    format_ok,
    parse_client_line,
    tab_escape,
    tab_unescape,
)

COOKIE = "0123456789abcdef0123456789abcdef"


def test_parse_version_and_cpid() -> None:
    assert parse_client_line(b"VERSION\t1\t0\n") == ClientVersion(1, 0)
    assert parse_client_line(b"CPID\t4242\n") == CpidLine(4242)
    assert parse_client_line(b"CPID\t4242") == CpidLine(4242)


def test_parse_auth_as_postfix_sends_it() -> None:
    line = (
        b"AUTH\t7\tPLAIN\tservice=smtp\tnologin\tlip=192.0.2.1\trip=198.51.100.7"
        b"\tsecured\tresp=AGFsaWNlAHNlY3JldA==\n"
    )
    req = parse_client_line(line)
    assert isinstance(req, AuthRequest)
    assert req.request_id == 7
    assert req.mechanism == "PLAIN"
    assert req.service == "smtp"
    assert req.nologin
    assert req.lip == "192.0.2.1"
    assert req.rip == "198.51.100.7"
    assert req.secured
    assert req.resp == "AGFsaWNlAHNlY3JldA=="
    assert decode_sasl_data(req.resp) == b"\0alice\0secret"


def test_parse_auth_minimal_and_lowercase_mechanism() -> None:
    req = parse_client_line(b"AUTH\t1\tlogin\tservice=smtp\n")
    assert isinstance(req, AuthRequest)
    assert req.mechanism == "LOGIN"
    assert not req.secured
    assert req.resp is None
    assert req.rip is None


def test_parse_auth_empty_response() -> None:
    req = parse_client_line(b"AUTH\t2\tPLAIN\tservice=smtp\tresp==\n")
    assert isinstance(req, AuthRequest)
    assert req.resp == "="
    assert decode_sasl_data(req.resp) == b""


def test_parse_auth_unescapes_params_and_ignores_unknown() -> None:
    req = parse_client_line(b"AUTH\t3\tPLAIN\tfoo=a\x01tb\tfuture-flag\n")
    assert isinstance(req, AuthRequest)
    assert req.params == {"foo": "a\tb", "future-flag": None}


def test_parse_cont() -> None:
    assert parse_client_line(b"CONT\t9\tYWxpY2U=\n") == ContRequest(9, "YWxpY2U=")
    assert parse_client_line(b"CONT\t9\t\n") == ContRequest(9, "")
    assert parse_client_line(b"CONT\t9\n") == ContRequest(9, "")


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"\n",
        b"HELLO\t1\n",
        b"VERSION\t1\n",
        b"VERSION\tone\ttwo\n",
        b"CPID\n",
        b"AUTH\t1\n",
        b"AUTH\tx\tPLAIN\n",
        b"AUTH\t-1\tPLAIN\n",
        b"AUTH\t99999999999\tPLAIN\n",
        b"AUTH\t1\t\n",
        b"CONT\n",
        b"CONT\tabc\tYQ==\n",
        b"AUTH\t1\tPLAIN\tservice=\xff\n",
        b"CONT\t1\t" + b"A" * MAX_LINE_LENGTH + b"\n",
    ],
)
def test_parse_rejects_malformed(line: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_client_line(line)


def test_decode_sasl_data() -> None:
    assert decode_sasl_data("") == b""
    assert decode_sasl_data("=") == b""
    assert decode_sasl_data("YWxpY2U=") == b"alice"
    for bad in ("YWxpY2U", "!!!!", "YW=xpY2U", "é"):
        with pytest.raises(InvalidSaslData):
            decode_sasl_data(bad)


def test_encode_sasl_data() -> None:
    assert encode_sasl_data(b"") == ""
    assert encode_sasl_data(b"Username:") == "VXNlcm5hbWU6"


def test_tab_escape_roundtrip() -> None:
    raw = "a\tb\nc\rd\x01e\x00f\\g"
    escaped = tab_escape(raw)
    assert escaped == "a\x01tb\x01nc\x01rd\x011e\x010f\\g"
    assert "\t" not in escaped and "\n" not in escaped
    assert tab_unescape(escaped) == raw
    assert tab_escape("plain") == "plain"
    # Any other character after \001 stands for itself; a trailing \001 is dropped.
    assert tab_unescape("a\x01xb\x01") == "axb"


def test_handshake_golden() -> None:
    assert format_handshake(spid=123, cuid=4, cookie=COOKIE) == (
        b"VERSION\t1\t2\n"
        b"MECH\tPLAIN\tplaintext\n"
        b"MECH\tLOGIN\tplaintext\n"
        b"SPID\t123\n"
        b"CUID\t4\n"
        b"COOKIE\t" + COOKIE.encode() + b"\n"
        b"DONE\n"
    )


def test_handshake_rejects_bad_cookie() -> None:
    with pytest.raises(ValueError):
        format_handshake(spid=1, cuid=1, cookie="xyz")


def test_format_replies_golden() -> None:
    assert format_cont(5, b"") == b"CONT\t5\t\n"
    assert format_cont(5, b"Password:") == b"CONT\t5\t" + base64.b64encode(b"Password:") + b"\n"
    assert format_ok(5, "alice") == b"OK\t5\tuser=alice\n"
    assert (
        format_fail(5, user="alice", reason="Authentication failed")
        == b"FAIL\t5\tuser=alice\treason=Authentication failed\n"
    )
    assert format_fail(6) == b"FAIL\t6\n"
    assert format_fail(6, reason="x", temp=True) == b"FAIL\t6\treason=x\ttemp\n"
    # Values are tab-escaped so they can never split the line.
    assert format_ok(7, "a\tb") == b"OK\t7\tuser=a\x01tb\n"
