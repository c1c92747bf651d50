"""The ``x-smtpeter-*`` instruction headers.

Every header whose name starts with ``x-smtpeter-`` (any letter case) is an
instruction to us and is removed before the message is queued. The feature headers
(inlinecss, trackclicks, trackopens, trackbounces, unsubscribe) and preventscam take
``true`` or ``false`` (any case, surrounding white space and folding
ignored) and override the login's setting for one message. ``x-smtpeter-tags``
(``newsletter, 2026-12``) and ``x-smtpeter-metadata`` (a JSON object of string
values) are stored with the message and carried on its events. Other names (SMTPeter
documents more, such as ``x-smtpeter-images``) are removed without effect here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from smtpeter.features import NAMES

PREFIX = "x-smtpeter-"
# Instruction headers that take true/false: the features, and per-message options.
OPTIONS: tuple[str, ...] = ("preventscam",)
BOOLEAN_NAMES: tuple[str, ...] = (*NAMES, *OPTIONS)
# SMTPeter's other documented instructions: accepted (and removed) without effect here.
OTHER_NAMES: tuple[str, ...] = ("tags", "metadata", "images")
# Limits on what one message carries to every one of its events.
MAX_TAGS = 20
MAX_TAG_LENGTH = 64
MAX_METADATA_BYTES = 2048
MAX_METADATA_KEY = 64
_TAG = re.compile(r"^[^\s;,\x00-\x1f\x7f]+$")
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


def _only(headers: Iterable[tuple[str, str]], name: str) -> list[tuple[str, str]]:
    return [(n, v) for n, v in headers if n.lower() == PREFIX + name]


def parse_tags(headers: Iterable[tuple[str, str]]) -> tuple[str, ...]:
    """The message's tags: ``x-smtpeter-tags`` is a comma-separated list (several
    copies add up), each tag without white space or ';', at most MAX_TAG_LENGTH
    characters, at most MAX_TAGS of them; duplicates are kept once, in order."""
    tags: dict[str, None] = {}
    for name, raw in _only(headers, "tags"):
        for part in unfold(raw).split(","):
            tag = part.strip()
            if not tag:
                continue
            if not _TAG.match(tag) or len(tag) > MAX_TAG_LENGTH:
                raise HeaderError(
                    name, raw, f'invalid tag "{printable(tag, 24)}" (no white space or ";", at most'
                    f" {MAX_TAG_LENGTH} characters)"
                )  # fmt: skip
            tags[tag] = None
    if len(tags) > MAX_TAGS:
        raise HeaderError(
            _only(headers, "tags")[0][0], "", f"{len(tags)} tags (at most {MAX_TAGS})"
        )
    return tuple(tags)


def parse_metadata(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """``x-smtpeter-metadata``: one JSON object whose values are strings, at most
    MAX_METADATA_BYTES of UTF-8 and keys of at most MAX_METADATA_KEY characters."""
    found = _only(headers, "metadata")
    if not found:
        return {}
    name, raw = found[0]
    if len(found) > 1:
        raise HeaderError(name, raw, "repeated header (give one JSON object)")
    text = unfold(raw).strip()
    if len(text.encode("utf-8", "surrogateescape")) > MAX_METADATA_BYTES:
        raise HeaderError(name, raw, f"longer than {MAX_METADATA_BYTES} bytes")
    try:
        value = json.loads(text)
    except ValueError as e:
        raise HeaderError(name, raw, f"invalid JSON ({printable(str(e), 80)})") from None
    if not isinstance(value, dict):
        raise HeaderError(name, raw, "expected a JSON object of string values")
    for key, item in value.items():
        if not isinstance(item, str):
            raise HeaderError(name, raw, f'value of "{printable(key)}" is not a string')
        if not key or len(key) > MAX_METADATA_KEY:
            raise HeaderError(name, raw, f"keys are 1 to {MAX_METADATA_KEY} characters")
    return value


def printable(value: str, limit: int = 60) -> str:
    """A header value made safe for an SMTP reply and a log line: ASCII, no controls,
    no '%' (libmilter treats it as a format character), bounded length."""
    text = unfold(value).replace("\t", " ")
    cleaned = "".join(c if " " <= c < "\x7f" and c != "%" else "?" for c in text)
    cleaned = cleaned.strip()
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."
