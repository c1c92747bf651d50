"""Instruction headers: what mutation testing (scripts/mutation) found unchecked. The
error a sender gets back names the header and value exactly as sent; an instruction
that is not a feature does not hide the feature headers after it; the safe form of a
value for an SMTP reply drops DEL and keeps exactly ``limit`` characters."""

from __future__ import annotations

import pytest

from smtpeter.relay.headers import HeaderError, parse_overrides, printable


def test_an_invalid_value_is_reported_as_sent() -> None:
    with pytest.raises(HeaderError) as err:
        parse_overrides([("X-SMTPeter-TrackOpens", " Yes please ")])
    assert err.value.name == "X-SMTPeter-TrackOpens"
    assert err.value.value == " Yes please "
    assert str(err.value) == (
        'X-SMTPeter-TrackOpens: invalid value "Yes please" (expected true or false)'
    )


def test_a_conflict_names_the_header_and_the_value_that_conflicts() -> None:
    with pytest.raises(HeaderError) as err:
        parse_overrides([("x-smtpeter-trackclicks", "true"), ("X-SMTPeter-TrackClicks", "False")])
    assert err.value.name == "X-SMTPeter-TrackClicks"
    assert err.value.value == "False"
    assert str(err.value) == (
        "X-SMTPeter-TrackClicks: conflicting values in repeated header (true and false)"
    )


def test_instructions_that_are_not_features_do_not_hide_later_ones() -> None:
    headers = [
        ("Subject", "hello"),
        ("X-SMTPeter-Tags", "newsletter"),
        ("X-SMTPeter-Images", "embed"),
        ("X-SMTPeter-TrackClicks", "false"),
        ("X-SMTPeter-InlineCSS", "true"),
    ]
    assert parse_overrides(headers) == {"trackclicks": False, "inlinecss": True}


def test_del_and_other_controls_become_question_marks() -> None:
    assert printable("a\x7fb\x00c\x1bd~") == "a?b?c?d~"


def test_a_value_of_exactly_the_limit_is_kept_whole() -> None:
    assert printable("x" * 60) == "x" * 60
    assert printable("x" * 61) == "x" * 57 + "..."
    assert printable("abcdef", limit=6) == "abcdef"
    assert printable("abcdefg", limit=6) == "abc..."
