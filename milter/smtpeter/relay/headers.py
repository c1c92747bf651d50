"""The ``x-smtpeter-*`` instruction headers.

Every header whose name starts with ``x-smtpeter-`` (any letter case) is an
instruction to us and is removed before the message is queued. The four feature
headers take ``true`` or ``false`` (any case, surrounding white space and folding
ignored) and override the login's setting for one message. Other names (SMTPeter
documents more, such as ``x-smtpeter-preventscam``) are removed without effect here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from smtpeter.features import NAMES

PREFIX = "x-smtpeter-"
# Instruction headers that take true/false: the features, and per-message options.
OPTIONS: tuple[str, ...] = ("preventscam",)
BOOLEAN_NAMES: tuple[str, ...] = (*NAMES, *OPTIONS)
# SMTPeter's other documented instructions: accepted (and removed) without effect here.
OTHER_NAMES: tuple[str, ...] = ("tags", "images")
KNOWN_NAMES: tuple[str, ...] = (*BOOLEAN_NAMES, *OTHER_NAMES)
_FOLD = re.compile(r"\r?\n(?=[ \t])")


class HeaderError(ValueError):
    """A feature header with a value that is neither true nor false."""

    def __init__(self, name: str, value: str, reason: str) -> None:
        self.name = name
        self.value = value
        super().__init__(f"{name}: {reason}")


def is_instruction(name: str) -> bool:
    return name.lower().startswith(PREFIX)


def unfold(value: str) -> str:
    return _FOLD.sub("", value)


def parse_bool(name: str, raw: str) -> bool:
    value = " ".join(unfold(raw).split()).lower()
    if value == "true":
        return True
    if value == "false":
        return False
    raise HeaderError(name, raw, f'invalid value "{printable(raw)}" (expected true or false)')


def check_names(headers: Iterable[tuple[str, str]]) -> None:
    """Refuse an instruction we do not know: a misspelt one (x-smtpeter-trackclick)
    would otherwise be removed without effect, and the sender would never learn that
    tracking stayed on."""
    for name, raw in headers:
        lname = name.lower()
        if lname.startswith(PREFIX) and lname[len(PREFIX) :] not in KNOWN_NAMES:
            known = ", ".join(PREFIX + n for n in KNOWN_NAMES)
            raise HeaderError(name, raw, f"unknown instruction (known: {known})")


def parse_overrides(headers: Iterable[tuple[str, str]]) -> dict[str, bool]:
    """The feature overrides (and options such as preventscam) the instruction
    headers among ``headers`` ask for.

    Repeated copies of one feature header must agree; a conflict is an error, as
    guessing which copy the sender meant could turn on tracking they did not want.
    """
    out: dict[str, bool] = {}
    for name, raw in headers:
        lname = name.lower()
        if not lname.startswith(PREFIX):
            continue
        feature = lname[len(PREFIX) :]
        if feature not in BOOLEAN_NAMES:
            continue
        value = parse_bool(name, raw)
        if out.get(feature, value) != value:
            raise HeaderError(name, raw, "conflicting values in repeated header (true and false)")
        out[feature] = value
    return out


def printable(value: str, limit: int = 60) -> str:
    """A header value made safe for an SMTP reply and a log line: ASCII, no controls,
    no '%' (libmilter treats it as a format character), bounded length."""
    text = unfold(value).replace("\t", " ")
    cleaned = "".join(c if " " <= c < "\x7f" and c != "%" else "?" for c in text)
    cleaned = cleaned.strip()
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."
