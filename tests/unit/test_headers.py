"""Parsing the x-smtpeter-* instruction headers."""

from __future__ import annotations

import pytest

from smtpeter.relay.headers import HeaderError, is_instruction, parse_overrides, printable


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([("x-smtpeter-inlinecss", "true")], {"inlinecss": True}),
        ([("X-SMTPeter-InlineCSS", "FALSE")], {"inlinecss": False}),
        ([("X-SMTPETER-TRACKCLICKS", "  True  ")], {"trackclicks": True}),
        ([("x-smtpeter-trackopens", "\r\n\ttrue")], {"trackopens": True}),
        ([("x-smtpeter-trackbounces", "false"), ("x-smtpeter-trackbounces", "false")],
         {"trackbounces": False}),
        ([("x-smtpeter-campaign", "whatever")], {}),
        ([("X-SMTPeter-PreventScam", "TRUE")], {"preventscam": True}),
        ([("Subject", "x-smtpeter-inlinecss: true")], {}),
    ],
)  # fmt: skip
def test_overrides(headers: list[tuple[str, str]], expected: dict[str, bool]) -> None:
    assert parse_overrides(headers) == expected


@pytest.mark.parametrize("value", ["yes", "1", "", "tru", "true false", "on", "t\u00fcr"])
def test_bad_values_name_header_and_value(value: str) -> None:
    with pytest.raises(HeaderError) as err:
        parse_overrides([("X-SMTPeter-InlineCSS", value)])
    assert err.value.name == "X-SMTPeter-InlineCSS"
    assert str(err.value).startswith("X-SMTPeter-InlineCSS: invalid value")


def test_conflict() -> None:
    with pytest.raises(HeaderError, match="conflicting"):
        parse_overrides([("x-smtpeter-inlinecss", "true"), ("X-SMTPeter-InlineCSS", "false")])


def test_is_instruction() -> None:
    assert is_instruction("X-SMTPeter-Anything")
    assert not is_instruction("X-SMTPeterish")


def test_printable_is_safe_for_an_smtp_reply() -> None:
    assert printable('50% "off"\r\n\tnow') == '50? "off" now'
    assert printable("\u00fcber") == "?ber"
    assert len(printable("x" * 500)) == 60
