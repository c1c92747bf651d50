"""The inlinecss feature, with both engines."""

from __future__ import annotations

import http.server
import logging
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar, cast

import pytest

from smtpeter.features.inlinecss import ENGINES, Engine, make_inliner
from tests import mimedata

ALL_ENGINES: list[Engine] = ["css-inline", "premailer"]


def style_blocks(html: str) -> str:
    return "\n".join(re.findall(r"<style[^>]*>(.*?)</style>", html, flags=re.S))


def without_at_rules(css: str) -> str:
    """The CSS with every @media/@supports/... block (balanced braces) removed."""
    out: list[str] = []
    i = 0
    while i < len(css):
        if css.startswith("@", i) and (brace := css.find("{", i)) >= 0:
            depth, j = 0, brace
            while j < len(css):
                depth += {"{": 1, "}": -1}.get(css[j], 0)
                j += 1
                if depth == 0:
                    break
            i = j
            continue
        out.append(css[i])
        i += 1
    return "".join(out)


def squash(css: str) -> str:
    return re.sub(r"\s+", "", css)


@pytest.fixture(scope="module")
def newsletter() -> str:
    return mimedata.newsletter_html()


def test_engines_constant_matches_literal() -> None:
    assert set(ENGINES) == set(ALL_ENGINES)


def test_unknown_engine_names_the_choices() -> None:
    with pytest.raises(ValueError, match=r"'inliner'.*css-inline, premailer"):
        make_inliner(cast(Engine, "inliner"))


@pytest.mark.parametrize("engine", ALL_ENGINES)
def test_newsletter_rules_become_style_attributes(engine: Engine, newsletter: str) -> None:
    out = make_inliner(engine)(newsletter)
    title = re.search(r'<div class="article-title" style="([^"]*)"', out)
    assert title is not None
    assert squash(title.group(1)).rstrip(";") == (
        "font-size:18px;line-height:24px;font-weight:700;color:#202124"
    )
    # the element rule for td and the class rule for .article-body are merged
    body_cell = re.search(r'<td class="article-body" style="([^"]*)"', out)
    assert body_cell is not None
    assert "padding-left:20px" in squash(body_cell.group(1))
    assert "font-family:Helvetica" in squash(body_cell.group(1))
    assert out.count('style="') > 300


@pytest.mark.parametrize("engine", ALL_ENGINES)
def test_inlined_rules_leave_the_style_block_media_queries_stay(
    engine: Engine, newsletter: str
) -> None:
    out = make_inliner(engine)(newsletter)
    css = style_blocks(out)
    assert css.count("@media") == 3
    flat = squash(css)
    assert ".container{width:100%!important;max-width:100%!important" in flat
    assert "td,p,h1,h2,h3{color:#e8eaed!important" in flat
    leftover = squash(without_at_rules(css))
    for inlined in (".container{", ".article-title{", ".footer{", "td{", "body{", ".btn{"):
        assert inlined not in leftover, f"{inlined} still in <style>"


@pytest.mark.parametrize("engine", ALL_ENGINES)
def test_text_links_and_non_ascii_survive(engine: Engine, newsletter: str) -> None:
    out = make_inliner(engine)(newsletter)
    assert "By Zo\u00eb M\u00fcller" in out
    assert "10 \u20ac per month" in out or "\u20ac" in out
    assert (
        'href="https://news.example.com/articles/1?utm_source=newsletter&amp;utm_medium=email"'
        in out
    )
    assert 'src="cid:' not in out  # nothing invented
    assert 'src="https://cdn.example.com/img/hero.jpg"' in out


@pytest.mark.parametrize("engine", ALL_ENGINES)
def test_fragment_is_inlined(engine: Engine) -> None:
    out = make_inliner(engine)("<style>p { color: red; }</style><p>fragment</p>")
    assert re.search(r'<p style="color: ?red;?">fragment</p>', out)


@pytest.mark.parametrize("engine", ALL_ENGINES)
def test_inliner_is_reusable_and_thread_safe(engine: Engine) -> None:
    inline = make_inliner(engine)
    docs = [mimedata.SIMPLE_HTML.replace("Caf", f"Caf{i}") for i in range(16)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(inline, docs))
    for i, out in enumerate(results):
        # Each document inlined, and each its own (no state shared between threads):
        # the expectation comes from the input, not from the inliner run another way.
        p = re.search(r'<p style="([^"]*)">Caf' + str(i) + "\u00e9", out)
        assert p is not None, out
        assert re.search(r"color: ?#d93025", p.group(1))
        assert re.search(r"font-size: ?15px", p.group(1))
        box = re.search(r'<div class="box" style="([^"]*)"', out)
        assert box is not None and re.search(r"padding: ?8px", box.group(1))
        assert [f"Caf{j}" for j in range(16) if f"Caf{j}\u00e9" in out] == [f"Caf{i}"]


class _CountingHandler(http.server.BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).hits.append(self.path)
        payload = b"p { color: #ff0000; }"
        self.send_response(200)
        self.send_header("Content-Type", "text/css")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def css_server() -> Iterator[tuple[str, list[str]]]:
    hits: list[str] = []

    class Handler(_CountingHandler):
        pass

    Handler.hits = hits
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("engine", ALL_ENGINES)
def test_never_fetches_remote_or_local_stylesheets(
    engine: Engine, css_server: tuple[str, list[str]], tmp_path: Path
) -> None:
    base, hits = css_server
    local = tmp_path / "local.css"
    local.write_text("p { color: #00ff00; }")
    html = (
        "<html><head>"
        f'<link rel="stylesheet" href="{base}/link.css">'
        f'<link rel="stylesheet" href="{local}">'
        f'<link rel="stylesheet" href="file://{local}">'
        f'<style>@import url({base}/import.css); @import "file://{local}";'
        " h1 { color: #0000ff; }</style>"
        "</head><body><h1>Title</h1><p>text</p></body></html>"
    )
    out = make_inliner(engine)(html)
    assert hits == []
    assert "#ff0000" not in out
    assert "#00ff00" not in out
    assert re.search(r'<h1 style="color: ?#(0000ff|00f);?">', out)  # premailer shortens colours


@pytest.mark.parametrize("engine", ALL_ENGINES)
def test_css_parser_warnings_are_silent(
    engine: Engine, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    html = (
        "<html><head><style>"
        "p { *zoom: 1; mso-line-height-rule: exactly; -webkit-foo: bar; color: red; }"
        " td { width: expression(document.body.clientWidth); }"
        "</style></head><body><table><tr><td><p>x</p></td></tr></table></body></html>"
    )
    with caplog.at_level(logging.DEBUG):
        out = make_inliner(engine)(html)
    assert "<p style=" in out
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    captured = capsys.readouterr()
    assert captured.err == ""


@pytest.mark.parametrize("engine", ALL_ENGINES)
@pytest.mark.parametrize(
    "html",
    ["", "  \r\n", "<!-- nothing -->", "<p>no style block</p>", mimedata.TEXT_PLAIN],
    ids=["empty", "blank", "comment", "no-style", "plain-text"],
)
def test_nothing_to_inline_returns_input_unchanged(engine: Engine, html: str) -> None:
    assert make_inliner(engine)(html) == html


@pytest.mark.parametrize("engine", ALL_ENGINES)
def test_xhtml_with_xml_declaration(engine: Engine) -> None:
    html = (
        '\ufeff<?xml version="1.0" encoding="utf-8"?>\n'
        '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"'
        ' "http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">\n'
        '<html xmlns="http://www.w3.org/1999/xhtml"><head><style type="text/css">'
        "p { color: red; }</style></head><body><p>x</p></body></html>"
    )
    out = make_inliner(engine)(html)
    assert re.search(r'<p style="color: ?red;?">x</p>', out)
