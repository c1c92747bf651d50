"""Values from the network made safe for a log line.

:func:`escape` is used for everything a client, a remote MTA or a message controls
that goes into a log line (request paths, user agents, envelope addresses, header
names, bounce contents...): one value can never end a line, start a fake one, or
hide text from whoever reads the log. The rules:

* printable text stays as it is, non-ASCII letters included (the log is UTF-8);
* a backslash becomes ``\\\\``, so that an escape below is never ambiguous;
* every other character becomes a visible escape: C0 controls (CR, LF, TAB, NUL...),
  DEL and C1 controls as ``\\x0a``, ``\\x7f``, ``\\x85``; other non-printable code
  points (U+2028 line separator, bidi overrides, non-ASCII spaces, unassigned) as
  ``\\u2028`` or ``\\U000e0001``;
* bytes that are not UTF-8 (given as ``bytes``, or as the lone surrogates of Python's
  ``surrogateescape``) become ``\\xNN`` of the byte;
* with ``limit``, the value is cut to that many characters (before escaping) and
  ``...`` is appended;
* with ``quoted``, the result is put in double quotes and a ``"`` inside becomes
  ``\\"``, so that a field with spaces still ends where it seems to.
"""

from __future__ import annotations


def _escape_char(c: str) -> str:
    if c == "\\":
        return "\\\\"
    if c.isprintable():
        return c
    n = ord(c)
    if 0xDC80 <= n <= 0xDCFF:  # a byte that was not UTF-8, kept by surrogateescape
        return f"\\x{n - 0xDC00:02x}"
    if n < 0x100:
        return f"\\x{n:02x}"
    if n < 0x10000:
        return f"\\u{n:04x}"
    return f"\\U{n:08x}"


def escape(value: str | bytes, limit: int | None = None, *, quoted: bool = False) -> str:
    """``value`` as one line of visible text (see the module's rules)."""
    text = value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value
    cut = limit is not None and len(text) > limit
    if cut:
        text = text[:limit]
    if not (text.isprintable() and "\\" not in text):
        text = "".join(map(_escape_char, text))
    if cut:
        text += "..."
    if quoted:
        return '"' + text.replace('"', '\\"') + '"'
    return text
