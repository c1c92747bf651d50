"""The trackclicks feature: point every http(s) link of a message at our tracker.

The document is never parsed into a tree and serialised again: the rest of the
markup must stay exactly as the sender (and the CSS inliner) left it. Instead a
small scanner walks the text the way an HTML tokenizer would -- comments, bogus
comments (``<!DOCTYPE>``, ``<![endif]>``), start and end tags with their
attributes, the raw content of ``<script>``/``<style>`` and friends -- and only the
value of an ``href`` on ``<a>``/``<area>`` is replaced (plus the removal of our own
``data-smtpeter-notrack`` directive).

Rules, the ones a browser follows wherever it matters:

* Tag and attribute names are ASCII case-insensitive; values may be double-quoted,
  single-quoted or unquoted, with white space around ``=``; a ``>`` inside a quoted
  value does not end the tag. Only the first ``href`` of a tag counts.
* Nothing inside a comment (Outlook's ``<!--[if mso]>...<![endif]-->`` included) or
  inside ``script``, ``style``, ``textarea``, ``title``, ``xmp``, ``iframe``,
  ``noembed``, ``noframes`` is a link; after ``<plaintext>`` nothing is.
* Character references in a value are decoded with the attribute rules of HTML:
  ``&amp;`` becomes ``&``, but ``&copy=2`` or ``&notify`` (a legacy entity name
  without ``;`` followed by ``=`` or a letter or digit) stay as written, as
  browsers keep them. The URL is then stripped of leading and trailing spaces and
  control characters, and of tabs and newlines inside it, as a browser's URL
  parser does, so the tracker redirects where a click would have gone.
* A new value is written HTML-escaped and double-quoted.
"""

from __future__ import annotations

import html as htmllib
import re
from collections.abc import Callable
from html.entities import html5 as _HTML5_ENTITIES

__all__ = ["LinkFor", "markup_tokens", "track_links", "track_text_links"]

LinkFor = Callable[[str], str | None]
"""Original URL (character references decoded) -> tracking URL, or None to leave it."""

NOTRACK_ATTRIBUTE = "data-smtpeter-notrack"

_WS = "\t\n\f\r "
_NAME_START = r"[^\t\n\f\r />]"
_NAME_CHAR = r"[^\t\n\f\r />=]"
_VALUE = r"""(?:"[^"]*+"?|'[^']*+'?|[^\t\n\f\r >]*+)"""
# One attribute, as the tokenizer reads it. Possessive quantifiers keep a tag
# without its closing ">" from backtracking (the tag then runs to the end).
_ATTR_SRC = rf"{_NAME_START}{_NAME_CHAR}*+(?:[\t\n\f\r ]*+=[\t\n\f\r ]*+{_VALUE})?"
_ATTRS_SRC = rf"(?:[\t\n\f\r /]++|{_ATTR_SRC})*+"
_TAG_NAME = r"[A-Za-z][^\t\n\f\r />]*+"

_TOKEN = re.compile(
    "<(?:"
    # A comment; "<!-->" and "<!--->" are (abruptly closed) comments too, and an
    # unclosed one runs to the end of the document.
    r"!--(?:-?>|.*?--!?>|.*\Z)"
    # A bogus comment: <!DOCTYPE ...>, <![if !mso]>, <?xml ...?>, </ 3>.
    r"|(?:[!?]|/(?![A-Za-z]))[^>]*+>?"
    rf"|/(?P<end>{_TAG_NAME}){_ATTRS_SRC}(?:>|\Z)"
    rf"|(?P<start>{_TAG_NAME})(?P<attrs>{_ATTRS_SRC})(?P<close>>|\Z)"
    ")",
    re.DOTALL,
)
_ATTR = re.compile(
    rf"(?P<name>{_NAME_START}{_NAME_CHAR}*+)"
    rf"(?:[\t\n\f\r ]*+=[\t\n\f\r ]*+(?P<value>{_VALUE}))?"
)

# Elements whose content is text, not markup, up to their own end tag.
_RAW_TEXT_END = {
    name: re.compile(rf"</{name}[\t\n\f\r />]", re.IGNORECASE)
    for name in ("script", "style", "textarea", "title", "xmp", "iframe", "noembed", "noframes")
}

_TRACKABLE = re.compile(r"https?://", re.IGNORECASE)
_SHOWN_AS_URL = re.compile(r"(?:https?://|www\.)", re.IGNORECASE)
_C0_OR_SPACE = "".join(chr(i) for i in range(0x21))
_TAB_OR_NEWLINE = {0x09: None, 0x0A: None, 0x0D: None}

_CHAR_REF = re.compile(
    r"&(?:#[xX][0-9A-Fa-f]+;?|#[0-9]+;?|(?P<name>[A-Za-z][A-Za-z0-9]*)(?P<semi>;?))"
)
# Entity names a browser also recognises without their ";" (&amp, &copy, &not, ...).
_LEGACY_NAMES = frozenset(name for name in _HTML5_ENTITIES if not name.endswith(";"))
_LONGEST_LEGACY = max(len(name) for name in _LEGACY_NAMES)


def markup_tokens(html: str) -> list[re.Match[str]]:
    """The comments, bogus comments, start and end tags of a document, in order.

    The content of raw-text elements (``<script>``, ``<style>``, ...) is skipped:
    their own end tag is the next token. Text between tokens is whatever lies
    between one match's end and the next one's start.
    """
    tokens: list[re.Match[str]] = []
    pos = 0
    end = len(html)
    while pos < end:
        match = _TOKEN.search(html, pos)
        if match is None:
            break
        tokens.append(match)
        pos = _after(match, html)
    return tokens


def _after(match: re.Match[str], html: str) -> int:
    """Where scanning resumes after a token (past the content of a raw-text element)."""
    name = match.group("start")
    if name is None or not match.group("close"):
        return match.end()
    lname = name.lower()
    raw_end = _RAW_TEXT_END.get(lname)
    if raw_end is not None:
        found = raw_end.search(html, match.end())
        return len(html) if found is None else found.start()
    if lname == "plaintext":
        return len(html)
    return match.end()


class _Pending:
    """An <a> whose visible text decides whether it is tracked (preventscam)."""

    __slots__ = ("index", "text", "url")

    def __init__(self, url: str) -> None:
        self.url = url  # what link_for is asked about if the link is tracked
        self.index = -1  # where its href value sits in the output pieces
        self.text: list[str] = []


def track_links(html: str, link_for: LinkFor, *, preventscam: bool = False) -> str:
    """Replace the http(s) links of ``<a>`` and ``<area>`` by ``link_for(url)``.

    ``data-smtpeter-notrack`` on a link keeps it as it is (the attribute itself is
    removed). With ``preventscam``, a link whose visible text is itself a URL
    (``http://``, ``https://``, ``www.``) is left alone, so that what the reader
    sees and where the link goes stay the same; ``link_for`` is not asked about it.
    Everything else is returned byte for byte.
    """
    out: list[str] = []
    copied = 0  # html[:copied] is in out
    pending: _Pending | None = None
    pos = 0
    end = len(html)
    while pos < end:
        match = _TOKEN.search(html, pos)
        if match is None:
            break
        if pending is not None:
            pending.text.append(html[pos : match.start()])
        pos = _after(match, html)

        end_name = match.group("end")
        if end_name is not None:
            if pending is not None and end_name.lower() == "a":
                _settle(pending, out, link_for)
                pending = None
            continue
        name = match.group("start")
        if name is None:
            continue
        if not match.group("close"):
            break  # a tag cut off by the end of the document is no tag
        lname = name.lower()
        if lname != "a" and lname != "area":
            continue
        if pending is not None and lname == "a":
            # An <a> start tag closes an open one.
            _settle(pending, out, link_for)
            pending = None

        edits, href = _inspect(html, match.start("attrs"), match.end("attrs"))
        if href is not None:
            url = _link_url(href.group("value"))
            if url is not None and preventscam and lname == "a":
                start, stop = href.span("value")
                edits.append((start, stop, None))
                pending = _Pending(url)
            elif url is not None:
                new = link_for(url)
                if new is not None:
                    start, stop = href.span("value")
                    edits.append((start, stop, _quote(new)))
        if not edits:
            continue
        edits.sort(key=lambda edit: edit[0])
        for start, stop, replacement in edits:
            out.append(html[copied:start])
            if replacement is None:
                assert pending is not None
                pending.index = len(out)
                out.append(html[start:stop])
            else:
                out.append(replacement)
            copied = stop

    if pending is not None:
        if pos < end:
            pending.text.append(html[pos:])
        _settle(pending, out, link_for)
    if not out:
        return html
    out.append(html[copied:])
    return "".join(out)


def _inspect(
    html: str, start: int, stop: int
) -> tuple[list[tuple[int, int, str | None]], re.Match[str] | None]:
    """The removals of our notrack directive in a tag's attributes, and its href.

    The href is None when the tag has no valued href or carries the directive.
    """
    edits: list[tuple[int, int, str | None]] = []
    href: re.Match[str] | None = None
    seen_href = False
    for attr in _ATTR.finditer(html, start, stop):
        name = attr.group("name").lower()
        if name == "href":
            if not seen_href:
                seen_href = True
                if attr.group("value") is not None:
                    href = attr
        elif name == NOTRACK_ATTRIBUTE:
            begin = attr.start()
            while begin > start and html[begin - 1] in _WS:
                begin -= 1
            edits.append((begin, attr.end(), ""))
    if edits:
        href = None
    return edits, href


def _link_url(value: str) -> str | None:
    """The URL an href value points at, if it is an http(s) URL."""
    if value and value[0] in "\"'":
        value = value[1:-1]
    if "&" in value:
        value = _CHAR_REF.sub(_decode_reference, value)
    url = value.strip(_C0_OR_SPACE)
    if not _TRACKABLE.match(url):
        return None
    return url.translate(_TAB_OR_NEWLINE)


def _decode_reference(ref: re.Match[str]) -> str:
    """One character reference in an attribute value, decoded as a browser does."""
    name = ref.group("name")
    if name is None:
        return htmllib.unescape(ref.group())  # numeric
    if ref.group("semi") and name + ";" in _HTML5_ENTITIES:
        return _HTML5_ENTITIES[name + ";"]
    for length in range(min(len(name), _LONGEST_LEGACY), 1, -1):
        prefix = name[:length]
        if prefix in _LEGACY_NAMES:
            if length < len(name):
                return ref.group()  # "&notify": followed by a letter or digit
            following = ref.string[ref.end() : ref.end() + 1]
            if ref.group("semi") or following == "=":
                return ref.group()
            return _HTML5_ENTITIES[prefix]
    return ref.group()


def _quote(url: str) -> str:
    return '"' + htmllib.escape(url, quote=True) + '"'


def _settle(pending: _Pending, out: list[str], link_for: LinkFor) -> None:
    """Track a pending link unless its visible text shows a URL."""
    shown = "".join(pending.text)
    if "&" in shown:
        shown = htmllib.unescape(shown)
    shown = " ".join(shown.split())
    if _SHOWN_AS_URL.match(shown):
        return
    new = link_for(pending.url)
    if new is not None:
        out[pending.index] = _quote(new)


# --- plain text -------------------------------------------------------------------

_TEXT_URL = re.compile(r"\bhttps?://[^\s<>\"]+", re.IGNORECASE)
_TRAILING = ".,;:!?'*"
_CLOSERS = {")": "(", "]": "[", "}": "{"}


def track_text_links(text: str, link_for: LinkFor) -> str:
    """Replace the http(s) URLs of a plain-text part by ``link_for(url)``.

    A URL runs up to white space, ``<``, ``>`` or ``"``; trailing punctuation
    (``.,;:!?'*``) is not part of it, nor is a closing bracket without its opening
    one inside the URL ("(see https://x/a_(b))." keeps "https://x/a_(b)").
    """

    def replace(match: re.Match[str]) -> str:
        url = _trim(match.group())
        if len(url) <= len("https://") and url.lower() in ("http://", "https://"):
            return match.group()
        new = link_for(url)
        if new is None:
            return match.group()
        return new + match.group()[len(url) :]

    return _TEXT_URL.sub(replace, text)


def _trim(url: str) -> str:
    """The URL without trailing punctuation and unbalanced closing brackets."""
    # Only closers and punctuation are dropped, so the openers never change and
    # the closers are counted down (recounting would make ")))..." quadratic).
    opened = {closer: url.count(opener) for closer, opener in _CLOSERS.items()}
    closed = {closer: url.count(closer) for closer in _CLOSERS}
    end = len(url)
    while end:
        last = url[end - 1]
        if last in _CLOSERS:
            if opened[last] >= closed[last]:
                break
            closed[last] -= 1
        elif last not in _TRAILING:
            break
        end -= 1
    return url[:end]
