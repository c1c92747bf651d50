"""The trackclicks feature: rewriting http(s) links without touching anything else."""

from __future__ import annotations

import html as htmllib
import re
from pathlib import Path

import pytest

from smtpeter.features.trackclicks import markup_tokens, track_links, track_text_links

NEWSLETTER = Path(__file__).resolve().parent.parent / "data" / "newsletter.html"
TRACKER = "https://t.example/"


class FakeTracker:
    """A deterministic link_for: c/1, c/2, ... and None for our own links."""

    def __init__(self, prefix: str = TRACKER + "c/") -> None:
        self.prefix = prefix
        self.asked: list[str] = []

    def __call__(self, url: str) -> str | None:
        if url.startswith(TRACKER):
            return None
        self.asked.append(url)
        return f"{self.prefix}{len(self.asked)}"


def track(html: str, *, preventscam: bool = False) -> tuple[str, list[str]]:
    tracker = FakeTracker()
    return track_links(html, tracker, preventscam=preventscam), tracker.asked


def untouched(html: str, *, preventscam: bool = False) -> None:
    out, asked = track(html, preventscam=preventscam)
    assert out == html
    assert asked == []


# --- what gets rewritten ------------------------------------------------------------


def test_double_quoted_href() -> None:
    out, asked = track('<p><a href="https://example.com/a">A</a></p>')
    assert out == '<p><a href="https://t.example/c/1">A</a></p>'
    assert asked == ["https://example.com/a"]


def test_http_and_https() -> None:
    out, asked = track('<a href="http://example.com/">x</a><a href="https://example.com/">y</a>')
    assert out == '<a href="https://t.example/c/1">x</a><a href="https://t.example/c/2">y</a>'
    assert asked == ["http://example.com/", "https://example.com/"]


def test_single_quoted_href() -> None:
    out, asked = track("<a class='b' href='https://example.com/a?q=\"x\"'>A</a>")
    assert out == "<a class='b' href=\"https://t.example/c/1\">A</a>"
    assert asked == ['https://example.com/a?q="x"']


def test_unquoted_href() -> None:
    out, asked = track("<a href=https://example.com/a?b=c class=x>A</a>")
    assert out == '<a href="https://t.example/c/1" class=x>A</a>'
    assert asked == ["https://example.com/a?b=c"]


def test_unquoted_href_ending_the_tag() -> None:
    out, asked = track("<a href=https://example.com/a>A</a>")
    assert out == '<a href="https://t.example/c/1">A</a>'
    assert asked == ["https://example.com/a"]


def test_uppercase_tag_and_attribute() -> None:
    out, asked = track('<A HREF="https://example.com/A">A</A><a Href="https://example.com/b">b</a>')
    assert out == '<A HREF="https://t.example/c/1">A</A><a Href="https://t.example/c/2">b</a>'
    assert asked == ["https://example.com/A", "https://example.com/b"]


def test_uppercase_scheme() -> None:
    out, asked = track('<a href="HTTPS://EXAMPLE.COM/Path">x</a><a href="Http://e.com/">y</a>')
    assert out == '<a href="https://t.example/c/1">x</a><a href="https://t.example/c/2">y</a>'
    assert asked == ["HTTPS://EXAMPLE.COM/Path", "Http://e.com/"]


def test_white_space_around_equals_and_between_attributes() -> None:
    html = '<a\n  class="x"\n  href\n =\n  "https://example.com/a"\n  target="_blank"\n>A</a>'
    out, asked = track(html)
    assert out == html.replace('"https://example.com/a"', '"https://t.example/c/1"')
    assert asked == ["https://example.com/a"]


def test_tab_separated_attributes() -> None:
    out, _ = track('<a\thref="https://example.com/"\ttitle="t">x</a>')
    assert out == '<a\thref="https://t.example/c/1"\ttitle="t">x</a>'


def test_slash_between_attributes() -> None:
    out, asked = track('<a/href="https://example.com/"/>x</a>')
    assert out == '<a/href="https://t.example/c/1"/>x</a>'
    assert asked == ["https://example.com/"]


def test_area_href() -> None:
    html = '<map name="m"><area shape="rect" coords="0,0,1,1" href="https://example.com/r"></map>'
    out, asked = track(html)
    assert out == html.replace("https://example.com/r", "https://t.example/c/1")
    assert asked == ["https://example.com/r"]


def test_amp_entity_decoded_before_link_for() -> None:
    out, asked = track('<a href="https://example.com/?a=1&amp;b=2&#38;c=3&#x26;d=4">x</a>')
    assert out == '<a href="https://t.example/c/1">x</a>'
    assert asked == ["https://example.com/?a=1&b=2&c=3&d=4"]


def test_other_entities_decoded() -> None:
    _, asked = track('<a href="https://example.com/?q=caf&eacute;&quot;&lt;&#233;">x</a>')
    assert asked == ['https://example.com/?q=café"<é']


def test_bare_ampersands_stay_as_browsers_read_them() -> None:
    # Legacy entity names without ";" are not decoded in an attribute when "=" or a
    # letter or digit follows (browsers keep "&copy=2" and "&notify"), but are at
    # the end of the value or before another character.
    _, asked = track(
        '<a href="https://example.com/?a=1&copy=2&notify=3&x=&amp">x</a>'
        '<a href="https://example.com/?a=1&b=2&unknown;">y</a>'
    )
    assert asked == [
        "https://example.com/?a=1&copy=2&notify=3&x=&",
        "https://example.com/?a=1&b=2&unknown;",
    ]


def test_new_url_is_html_escaped_and_double_quoted() -> None:
    def link_for(url: str) -> str:
        return "https://t.example/c?u=1&s=\"q'<>"

    out = track_links("<a href='https://example.com/'>x</a>", link_for)
    assert out == '<a href="https://t.example/c?u=1&amp;s=&quot;q&#x27;&lt;&gt;">x</a>'


def test_fragment_goes_to_link_for() -> None:
    out, asked = track('<a href="https://example.com/y#frag">x</a>')
    assert out == '<a href="https://t.example/c/1">x</a>'
    assert asked == ["https://example.com/y#frag"]


def test_non_ascii_url_passed_as_is() -> None:
    out, asked = track('<a href="https://bücher.example/straße?q=ü">x</a>')
    assert out == '<a href="https://t.example/c/1">x</a>'
    assert asked == ["https://bücher.example/straße?q=ü"]


def test_white_space_inside_value_stripped() -> None:
    out, asked = track('<a href="  \n https://example.com/a\t ">x</a>')
    assert out == '<a href="https://t.example/c/1">x</a>'
    assert asked == ["https://example.com/a"]


def test_newlines_inside_url_removed_as_browsers_do() -> None:
    _, asked = track('<a href="https://example.com/very/\r\n  long">x</a>')
    assert asked == ["https://example.com/very/  long"]


def test_greater_than_inside_quoted_value() -> None:
    html = '<a title="a > b" href="https://example.com/a">x</a><a title=\'>\' href=https://e.com/>y</a>'
    out, asked = track(html)
    assert out == (
        '<a title="a > b" href="https://t.example/c/1">x</a>'
        "<a title='>' href=\"https://t.example/c/2\">y</a>"
    )
    assert asked == ["https://example.com/a", "https://e.com/"]


def test_link_markup_inside_another_attribute_is_not_a_link() -> None:
    untouched('<img alt="<a href=\'https://example.com/\'>" src="x.png">')


def test_only_first_href_counts() -> None:
    out, asked = track('<a href="https://example.com/1" href="https://example.com/2">x</a>')
    assert out == '<a href="https://t.example/c/1" href="https://example.com/2">x</a>'
    assert asked == ["https://example.com/1"]


def test_first_href_without_scheme_shadows_later_one() -> None:
    untouched('<a href="#top" href="https://example.com/2">x</a>')


def test_link_spanning_lines_with_nested_markup() -> None:
    html = (
        '<a\n href="https://example.com/a"\n style="color:#00f;\n  font-weight:bold">'
        '<img src="https://example.com/logo.png" alt="logo"><span>Go</span></a>'
    )
    out, asked = track(html)
    assert out == html.replace('"https://example.com/a"', '"https://t.example/c/1"')
    assert asked == ["https://example.com/a"]


# --- what stays as it is -------------------------------------------------------------


@pytest.mark.parametrize(
    "href",
    [
        "mailto:info@example.com",
        "MAILTO:info@example.com",
        "tel:+31201234567",
        "sms:+31612345678",
        "#anchor",
        "/relative/path",
        "relative.html",
        "//example.com/protocol-relative",
        "javascript:alert(1)",
        "data:text/html,hi",
        "ftp://example.com/file",
        "",
        "   ",
        "https:example.com",
        "xhttps://example.com",
    ],
)
def test_other_hrefs_untouched(href: str) -> None:
    untouched(f'<a href="{href}">x</a>')


def test_href_without_value_untouched() -> None:
    untouched("<a href>x</a><a href >y</a><a href= >z</a>")


def test_link_for_returning_none_leaves_link() -> None:
    out, asked = track('<a href="https://t.example/c/99">x</a><a href="https://e.com/">y</a>')
    assert out == '<a href="https://t.example/c/99">x</a><a href="https://t.example/c/1">y</a>'
    assert asked == ["https://e.com/"]


def test_inside_comment_untouched() -> None:
    untouched('<p>x</p><!-- <a href="https://example.com/">old</a> --><p>y</p>')


def test_inside_unclosed_comment_untouched() -> None:
    untouched('<p>x</p><!-- <a href="https://example.com/">old</a>')


def test_after_abruptly_closed_comment_tracked() -> None:
    out, _ = track('<!--><a href="https://example.com/">x</a><!---><a href="https://e.com/">y</a>')
    assert (
        out
        == '<!--><a href="https://t.example/c/1">x</a><!---><a href="https://t.example/c/2">y</a>'
    )


def test_inside_outlook_conditional_comment_untouched() -> None:
    html = (
        '<!--[if mso]><table><tr><td><a href="https://example.com/mso">Outlook</a>'
        "</td></tr></table><![endif]-->"
    )
    untouched(html)


def test_downlevel_revealed_conditional_content_tracked() -> None:
    # <!--[if !mso]><!--> ... <!--<![endif]--> is shown by every client but Outlook.
    html = '<!--[if !mso]><!--><a href="https://example.com/">x</a><!--<![endif]-->'
    out, _ = track(html)
    assert out == html.replace("https://example.com/", "https://t.example/c/1")


def test_vml_roundrect_href_untouched() -> None:
    untouched(
        '<v:roundrect xmlns:v="urn:schemas-microsoft-com:vml" href="https://example.com/btn" '
        'style="height:40px;width:200px;" arcsize="10%" fillcolor="#1a73e8">'
        "<center>Click</center></v:roundrect>"
    )


def test_inside_style_untouched() -> None:
    untouched('<style>/* <a href="https://example.com/"> */ a { color: red; }</style>')


def test_inside_script_untouched() -> None:
    untouched(
        '<SCRIPT type="text/javascript">var s = \'<a href="https://example.com/">\';</SCRIPT>'
    )


def test_after_style_and_script_tracked() -> None:
    html = '<style>p{}</style ><script>x="</a>"</script><a href="https://example.com/">x</a>'
    out, _ = track(html)
    assert out == html.replace("https://example.com/", "https://t.example/c/1")


def test_inside_textarea_untouched() -> None:
    untouched('<textarea><a href="https://example.com/">x</a></textarea>')


@pytest.mark.parametrize("tag", ["link", "base", "img", "div", "abbr", "v:roundrect", "svg:a"])
def test_href_of_other_tags_untouched(tag: str) -> None:
    untouched(f'<{tag} href="https://example.com/">x</{tag}>')


@pytest.mark.parametrize("attr", ["data-href", "xhref", "href-x", "hreflang"])
def test_other_attributes_untouched(attr: str) -> None:
    untouched(f'<a {attr}="https://example.com/">x</a>')


def test_text_that_looks_like_a_link_untouched() -> None:
    untouched('<p>Write &lt;a href="https://example.com/"&gt; to link.</p>')


def test_doctype_and_xml_declaration_untouched() -> None:
    html = (
        '<?xml version="1.0"?>\n<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0//EN" "x">\n<p>hi</p>'
    )
    untouched(html)


# --- data-smtpeter-notrack -----------------------------------------------------------


def test_notrack_leaves_link_and_removes_attribute() -> None:
    out, asked = track('<a href="https://example.com/" data-smtpeter-notrack>x</a>')
    assert out == '<a href="https://example.com/">x</a>'
    assert asked == []


def test_notrack_with_value_and_any_case() -> None:
    out, asked = track(
        '<A DATA-SMTPETER-NOTRACK="1" HREF="https://example.com/">x</A>'
        "<a data-Smtpeter-NoTrack = 'yes' href=https://e.com/>y</a>"
    )
    assert out == '<A HREF="https://example.com/">x</A><a href=https://e.com/>y</a>'
    assert asked == []


def test_notrack_removal_leaves_no_double_space() -> None:
    out, _ = track('<a class="x" data-smtpeter-notrack href="https://e.com/" id="i">x</a>')
    assert out == '<a class="x" href="https://e.com/" id="i">x</a>'


def test_notrack_on_own_line() -> None:
    out, _ = track('<a\n  href="https://e.com/"\n  data-smtpeter-notrack\n>x</a>')
    assert out == '<a\n  href="https://e.com/"\n>x</a>'


def test_notrack_only_affects_its_own_link() -> None:
    out, asked = track(
        '<a data-smtpeter-notrack href="https://e.com/1">1</a><a href="https://e.com/2">2</a>'
    )
    assert out == '<a href="https://e.com/1">1</a><a href="https://t.example/c/1">2</a>'
    assert asked == ["https://e.com/2"]


def test_notrack_removed_from_non_http_link() -> None:
    out, _ = track('<a href="mailto:x@e.com" data-smtpeter-notrack="">x</a>')
    assert out == '<a href="mailto:x@e.com">x</a>'


def test_notrack_in_comment_untouched() -> None:
    untouched('<!-- <a data-smtpeter-notrack href="https://e.com/">x</a> -->')


# --- preventscam ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "https://example.com/",
        "http://example.com/",
        "HTTPS://EXAMPLE.COM",
        "www.example.com",
        "WWW.Example.com/page",
        "  <b>https://</b><i>example.com</i>  ",
        "\n   www.example.com\n",
        "&#119;ww.example.com",
        "<!-- hidden -->www.example.com",
    ],
)
def test_preventscam_leaves_links_showing_a_url(text: str) -> None:
    html = f'<a href="https://example.com/">{text}</a>'
    untouched(html, preventscam=True)
    out, _ = track(html)
    assert out != html


@pytest.mark.parametrize(
    "text",
    ["Read more", "see https://example.com/", '<img src="x.png" alt="https://example.com/">', ""],
)
def test_preventscam_tracks_other_links(text: str) -> None:
    html = f'<a href="https://example.com/">{text}</a>'
    out, asked = track(html, preventscam=True)
    assert out == f'<a href="https://t.example/c/1">{text}</a>'
    assert asked == ["https://example.com/"]


def test_preventscam_text_ends_at_next_link() -> None:
    # An <a> start tag closes an open <a>: the first link's text is "Hi".
    html = '<a href="https://e.com/1">Hi<a href="https://e.com/2">www.e.com</a>'
    out, asked = track(html, preventscam=True)
    assert out == '<a href="https://t.example/c/1">Hi<a href="https://e.com/2">www.e.com</a>'
    assert asked == ["https://e.com/1"]


def test_preventscam_unclosed_link_at_end() -> None:
    untouched('<p><a href="https://e.com/">www.e.com', preventscam=True)
    out, _ = track('<p><a href="https://e.com/">e', preventscam=True)
    assert out == '<p><a href="https://t.example/c/1">e'


def test_preventscam_keeps_order_of_link_for_calls() -> None:
    html = (
        '<a href="https://e.com/1">one</a><a href="https://e.com/2">www.e.com</a>'
        '<area href="https://e.com/3"><a HREF=https://e.com/4 data-x>four</a>'
    )
    out, asked = track(html, preventscam=True)
    assert asked == ["https://e.com/1", "https://e.com/3", "https://e.com/4"]
    assert out == (
        '<a href="https://t.example/c/1">one</a><a href="https://e.com/2">www.e.com</a>'
        '<area href="https://t.example/c/2"><a HREF="https://t.example/c/3" data-x>four</a>'
    )


def test_preventscam_ignores_style_text_in_link() -> None:
    html = '<a href="https://e.com/"><style>p{}</style>www.e.com</a>'
    untouched(html, preventscam=True)


# --- whole documents -----------------------------------------------------------------

EDGE_CASES = """<!DOCTYPE html>
<html xmlns:v="urn:schemas-microsoft-com:vml" xmlns:o="urn:schemas-microsoft-com:office:office">
<HEAD>
<style type="text/css">
  a[href^="https://"] { color: #1a73e8 !important; }
  /* <a href="https://in-style.example/"> */
</style>
<!--[if gte mso 9]><xml><o:OfficeDocumentSettings><o:AllowPNG/></o:OfficeDocumentSettings></xml>
<![endif]-->
</HEAD>
<BODY>
<TABLE WIDTH=600><TR><TD>
<A HREF=https://upper.example/path?a=1&amp;b=2 TARGET=_blank>Upper</A>
<a title="1 > 0" href = 'https://quoted.example/x'>gt</a>
<a
   class="btn"
   href="https://lines.example/a
   "
   style="display:inline-block">multi-line</a>
<!--[if mso]>
<v:roundrect href="https://vml.example/btn" style="height:40px;width:200px;" arcsize="10%">
<center><a href="https://in-mso.example/">Outlook</a></center></v:roundrect>
<![endif]-->
<!--[if !mso]><!-->
<a href="https://not-mso.example/" class="btn">Others</a>
<!--<![endif]-->
<v:roundrect href="https://vml-outside.example/btn"></v:roundrect>
<a href="mailto:hello@example.com">mail</a> <a href="#top">top</a>
<a href="https://t.example/c/already">ours</a>
<script>document.write('<a href="https://in-script.example/">x</a>')</script>
<img src="https://img.example/x.png" alt="<a href='https://in-alt.example/'>">
</TD></TR></TABLE>
</BODY>
</html>
"""


def test_edge_case_document() -> None:
    out, asked = track(EDGE_CASES)
    assert asked == [
        "https://upper.example/path?a=1&b=2",
        "https://quoted.example/x",
        "https://lines.example/a",
        "https://not-mso.example/",
    ]
    assert_identical_but_for_hrefs(
        EDGE_CASES,
        out,
        [
            "https://upper.example/path?a=1&amp;b=2",
            "'https://quoted.example/x'",
            '"https://lines.example/a\n   "',
            '"https://not-mso.example/"',
        ],
    )


def assert_identical_but_for_hrefs(original: str, tracked: str, old_values: list[str]) -> None:
    """Putting the old values back in place of c/1, c/2, ... gives the original."""
    pieces = re.split(r'"https://t\.example/c/(\d+)"', tracked)
    numbers = [int(n) for n in pieces[1::2]]
    assert numbers == list(range(1, len(old_values) + 1))
    restored = "".join(
        piece if i % 2 == 0 else old_values[int(piece) - 1] for i, piece in enumerate(pieces)
    )
    assert restored == original


def anchor_hrefs(html: str) -> list[str]:
    """The double-quoted http(s) href values of <a> tags (enough for the newsletter)."""
    without_comments = re.sub(r"<!--.*?-->", lambda m: " " * len(m.group()), html, flags=re.S)
    return re.findall(r'<a\s[^>]*?href="(https?://[^"]*)"', without_comments, flags=re.I)


def test_newsletter_every_link_tracked_and_rest_identical() -> None:
    html = NEWSLETTER.read_text(encoding="utf-8")
    originals = anchor_hrefs(html)
    assert len(originals) == 54
    out, asked = track(html)
    assert asked == [htmllib.unescape(value) for value in originals]
    assert anchor_hrefs(out) == [f"{TRACKER}c/{n}" for n in range(1, 55)]
    assert_identical_but_for_hrefs(html, out, [f'"{value}"' for value in originals])


def test_newsletter_tracking_twice_changes_nothing() -> None:
    html = NEWSLETTER.read_text(encoding="utf-8")
    once, _ = track(html)
    twice, asked = track(once)
    assert twice == once
    assert asked == []


def test_document_without_links_returned_as_is() -> None:
    html = "<html><body><p>No links &amp; nothing to do.</p></body></html>"
    assert track_links(html, FakeTracker()) is html


# --- the scanner ---------------------------------------------------------------------


def test_markup_tokens_skip_raw_text() -> None:
    html = '<p a="<b>">t<!-- <i> --><style><u></style><x-y/></p>'
    tokens = [m.group() for m in markup_tokens(html)]
    assert tokens == ['<p a="<b>">', "<!-- <i> -->", "<style>", "</style>", "<x-y/>", "</p>"]


def test_unterminated_tag_at_end_is_not_a_link() -> None:
    untouched('<p>x</p><a href="https://e.com/"')
    untouched('<p>x</p><a href="https://e.com/>x</a>')


# --- plain text ----------------------------------------------------------------------


def text_track(text: str) -> tuple[str, list[str]]:
    tracker = FakeTracker()
    return track_text_links(text, tracker), tracker.asked


def test_text_links_replaced() -> None:
    out, asked = text_track("Read https://example.com/a?b=1&c=2 and http://e.com/x today")
    assert out == "Read https://t.example/c/1 and https://t.example/c/2 today"
    assert asked == ["https://example.com/a?b=1&c=2", "http://e.com/x"]


@pytest.mark.parametrize(
    ("text", "url", "rest"),
    [
        ("See https://e.com/a.", "https://e.com/a", "."),
        ("See https://e.com/a, then", "https://e.com/a", ", then"),
        ("Go: https://e.com/a!?", "https://e.com/a", "!?"),
        ("(see https://e.com/a)", "https://e.com/a", ")"),
        ("(see https://e.com/wiki/A_(b)).", "https://e.com/wiki/A_(b)", ")."),
        ("<https://e.com/a>", "https://e.com/a", ">"),
        ('"https://e.com/a"', "https://e.com/a", '"'),
        ("https://e.com/a\nnext", "https://e.com/a", "\nnext"),
        ("HTTPS://E.COM/A;", "HTTPS://E.COM/A", ";"),
    ],
)
def test_text_link_boundaries(text: str, url: str, rest: str) -> None:
    out, asked = text_track(text)
    assert asked == [url]
    assert out.endswith("https://t.example/c/1" + rest)
    assert out.replace("https://t.example/c/1", url) == text


@pytest.mark.parametrize(
    "text",
    [
        "mail me at info@example.com",
        "ftp://example.com/file",
        "www.example.com",
        "xhttps://example.com/",
        "just http:// and nothing",
        "already https://t.example/c/5 tracked",
    ],
)
def test_text_without_trackable_links_untouched(text: str) -> None:
    out, asked = text_track(text)
    assert out == text
    assert asked == []


# --- hostile input stays linear ------------------------------------------------------


@pytest.mark.timeout(30)  # a hang guard; how fast it is, bench/ measures
@pytest.mark.parametrize(
    ("html", "links"),
    [
        ("<" * 200_000, []),
        ("<a " * 100_000, []),
        ('<a x="' + "y" * 200_000, []),
        ("<!--" * 50_000, []),
        ("<a " + "b=c " * 50_000 + ">", []),
        ('<a href="https://e.com/">' + "<b>" * 50_000, ["https://e.com/"]),
        (
            '<a href="https://e.com/?' + "&" * 200_000 + '">x</a>',
            ["https://e.com/?" + "&" * 200_000],
        ),
    ],
)
def test_hostile_markup_is_handled(html: str, links: list[str]) -> None:
    tracker = FakeTracker()
    out = track_links(html, tracker, preventscam=True)
    # Exactly the real links are tracked, and nothing else of the markup changes.
    assert tracker.asked == links
    expected = html
    for i, link in enumerate(links, 1):
        expected = expected.replace(f'href="{link}"', f'href="{TRACKER}c/{i}"', 1)
    assert out == expected


@pytest.mark.timeout(30)
def test_long_run_of_closing_brackets() -> None:
    text = "https://e.com/" + ")" * 200_000
    out, asked = text_track(text)
    assert asked == ["https://e.com/"]
    assert out == "https://t.example/c/1" + ")" * 200_000
