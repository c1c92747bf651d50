"""The inlinecss feature: move <style> rules into style="" attributes.

Many mail clients (Gmail's older apps, Outlook.com, some webmail) ignore or strip
<style> blocks, so a newsletter only looks as designed when every rule is copied
onto the elements it selects. Two engines are offered:

``css-inline``
    A Rust library (html5ever + a CSS selector engine) behind a Python binding.
    About a hundred times faster than premailer on a typical newsletter (around a
    millisecond for 40 KB). Adds missing <html>/<head>/<body> tags to a fragment.
``premailer``
    The long-standing pure-Python inliner (lxml + cssutils). Slow (around 100 ms
    for the same newsletter), but some senders are used to its exact output: it
    also copies a few CSS properties into legacy HTML attributes (bgcolor, align,
    width) for old Outlook versions.

Both engines are configured the same way:

* No remote or local resource is ever loaded: no <link rel=stylesheet>, no
  ``@import``, no base URL. The HTML comes from whoever submitted the message;
  letting it make our mail server fetch URLs (internal ones included) or read
  ``file://`` paths would be a server-side request forgery hole. css-inline runs
  with ``load_remote_stylesheets=False`` and no ``base_url``; premailer with
  ``allow_network=False`` and ``allow_loading_external_files=False``, and its
  CSS parser (cssutils) gets a fetcher that refuses everything, because cssutils
  resolves ``@import`` rules on its own even when premailer's network is off.
* Rules that were inlined are removed from the <style> blocks; what cannot go
  into a style attribute (``@media`` blocks with their ``!important`` flags,
  ``:hover`` rules) stays in a <style> block, so mobile overrides keep working
  (premailer strips ``!important`` by default: we turn that off).
* cssutils' warnings about CSS it does not know (vendor hacks are common in
  newsletters) are silenced; they would flood the mail log.

A document without a <style> block is returned unchanged (nothing to inline, and
both engines would otherwise re-serialise it, which would count as a change).

The inliner object is built once by :func:`make_inliner`; the returned callable
is what the milter calls for every text/html part.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from typing import Any, Literal, get_args

import css_inline
import cssutils  # type: ignore[import-untyped]
from premailer import Premailer

__all__ = ["ENGINES", "Engine", "make_inliner", "nesting_depth", "not_inlinable"]

Engine = Literal["css-inline", "premailer"]
ENGINES: tuple[str, ...] = get_args(Engine)

# Only <style> blocks are ever read (no <link>, no @import), so a document without
# one has nothing to inline and is returned as it is (the part then stays untouched).
_STYLE_TAG = re.compile(r"<style[\s>/]", re.IGNORECASE)
# An XML declaration with an encoding makes lxml refuse a str document (XHTML
# newsletters often start with one); it means nothing in text/html, so premailer
# gets the document without it.
_XML_DECLARATION = re.compile(r"\A[\s\ufeff]*<\?xml[^>]*\?>\s*", re.IGNORECASE)

logging.getLogger("CSSUTILS").setLevel(logging.CRITICAL)
cssutils.log.setLevel(logging.CRITICAL)


def make_inliner(engine: Engine) -> Callable[[str], str]:
    """Return a function that inlines the CSS of one HTML document.

    Raises ValueError for an unknown engine name.
    """
    if engine == "css-inline":
        return _make_css_inline()
    if engine == "premailer":
        return _make_premailer()
    raise ValueError(f"unknown CSS inlining engine {engine!r}; valid choices: {', '.join(ENGINES)}")


def _make_css_inline() -> Callable[[str], str]:
    inliner = css_inline.CSSInliner(
        inline_style_tags=True,
        # Keep the <style> block but drop every rule that was inlined: what
        # stays is what cannot live in a style attribute (@media, :hover).
        keep_style_tags=True,
        remove_inlined_selectors=True,
        keep_at_rules=True,
        keep_link_tags=False,
        base_url=None,
        load_remote_stylesheets=False,
    )

    def inline(html: str) -> str:
        if _STYLE_TAG.search(html) is None:
            return html
        result: str = inliner.inline(html)
        return result

    return inline


def _refuse_fetch(url: str) -> None:
    """cssutils fetcher: never load an ``@import``-ed stylesheet."""
    return None


@functools.lru_cache(maxsize=128)
def _parse_css_offline(css_body: str, validate: bool) -> Any:
    parser = cssutils.CSSParser(fetcher=_refuse_fetch, validate=validate)
    return parser.parseString(css_body)


class _OfflinePremailer(Premailer):  # type: ignore[misc]
    """Premailer whose CSS parser cannot fetch anything."""

    def _parse_css_string(self, css_body: str, validate: bool = True) -> Any:
        return _parse_css_offline(css_body, validate)


def _make_premailer() -> Callable[[str], str]:
    premailer = _OfflinePremailer(
        base_url=None,
        disable_link_rewrites=True,
        keep_style_tags=False,
        strip_important=False,
        disable_validation=True,
        cssutils_logging_level=logging.CRITICAL,
        allow_network=False,
        allow_loading_external_files=False,
    )

    def inline(html: str) -> str:
        if _STYLE_TAG.search(html) is None:
            return html
        result: str = premailer.transform(
            _XML_DECLARATION.sub("", html, count=1), pretty_print=False
        )
        return result

    return inline


# Elements that never hold others (void), and those whose end tag HTML lets a writer
# leave out (the parser closes them itself, so an unclosed one is no nesting).
_FLAT = frozenset(
    (
        *("area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta"),
        *("param", "source", "track", "wbr", "p", "li", "dt", "dd", "tr", "td", "th"),
        *("option", "optgroup", "thead", "tbody", "tfoot", "colgroup", "caption"),
        *("rb", "rt", "rp", "html", "head", "body"),
    )
)
_ANY_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9:-]*)[^<>]*?(/?)>")  # never past a "<": linear
_RAW_TEXT = ("<!--", "-->"), ("<script", "</script"), ("<style", "</style")


def _without_raw_text(html: str) -> str:
    """The document without comments, scripts and style sheets (their text is not
    markup), in one linear pass: an unterminated one runs to the end."""
    lower = html.lower()
    out: list[str] = []
    i = 0
    while True:
        starts = [(found, end) for start, end in _RAW_TEXT if (found := lower.find(start, i)) >= 0]
        if not starts:
            out.append(html[i:])
            return "".join(out)
        found, end = min(starts)
        out.append(html[i:found])
        close = lower.find(end, found + 4)
        if close < 0:
            return "".join(out)
        i = close + len(end)


def nesting_depth(html: str) -> int:
    """How deep the elements of a document nest, counted in one linear pass without
    building the tree (a bound checked before an inliner sees the document)."""
    depth = deepest = 0
    for m in _ANY_TAG.finditer(_without_raw_text(html)):
        closing, name, self_closing = m.group(1), m.group(2).lower(), m.group(3)
        if name in _FLAT or self_closing:
            continue
        if closing:
            depth = max(0, depth - 1)
        else:
            depth += 1
            deepest = max(deepest, depth)
    return deepest


def not_inlinable(html: str, *, max_depth: int, max_bytes: int) -> str | None:
    """Why a document must not be given to the inliner, or None. The inliners build a
    tree of the whole document: css-inline crashes the process (SIGSEGV) on about
    12,000 nested elements, and both take time and memory in proportion to size."""
    if max_bytes and len(html) > max_bytes:
        return f"HTML part of {len(html)} characters (features.max_html_bytes {max_bytes})"
    if max_depth and (depth := nesting_depth(html)) > max_depth:
        return f"elements nested {depth} deep (features.max_html_depth {max_depth})"
    return None
