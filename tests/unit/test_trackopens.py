"""The trackopens feature: one tracking pixel before the last </body>."""

from __future__ import annotations

from pathlib import Path

import pytest

from smtpeter.features.trackopens import add_pixel, pixel_tag

NEWSLETTER = Path(__file__).resolve().parent.parent / "data" / "newsletter.html"
URL = "https://t.example/o/abc"
PIXEL = (
    '<img src="https://t.example/o/abc" width="1" height="1" alt="" border="0" '
    'style="display:block;width:1px;height:1px;border:0;" />'
)


def test_pixel_tag() -> None:
    assert pixel_tag(URL) == PIXEL


def test_pixel_before_body_end() -> None:
    html = "<html><body><p>Hi</p></body></html>"
    assert add_pixel(html, URL) == f"<html><body><p>Hi</p>{PIXEL}</body></html>"


def test_pixel_url_html_escaped() -> None:
    out = add_pixel("<body></body>", 'https://t.example/o?a=1&b="2"')
    assert 'src="https://t.example/o?a=1&amp;b=&quot;2&quot;"' in out
    assert out.endswith("/></body>")


@pytest.mark.parametrize("end_tag", ["</BODY>", "</Body>", "</body >", "</body\n>", "</body/>"])
def test_body_end_in_any_case_and_spacing(end_tag: str) -> None:
    html = f"<BODY><p>Hi</p>{end_tag}\n</HTML>"
    assert add_pixel(html, URL) == f"<BODY><p>Hi</p>{PIXEL}{end_tag}\n</HTML>"


def test_last_body_end_wins() -> None:
    html = "<body>a</body>b</body>c"
    assert add_pixel(html, URL) == f"<body>a</body>b{PIXEL}</body>c"


@pytest.mark.parametrize(
    "trailer",
    [
        "<!-- </body> -->",
        "<!--[if mso]></body><![endif]-->",
        "<script>var s = '</body>';</script>",
        "<style>/* </body> */</style>",
        '<img alt="</body>">',
    ],
)
def test_body_end_in_comment_script_style_ignored(trailer: str) -> None:
    html = f"<body>x</body>{trailer}"
    assert add_pixel(html, URL) == f"<body>x{PIXEL}</body>{trailer}"


def test_body_end_only_in_comment_appends() -> None:
    html = "<p>x</p><!-- </body> -->"
    assert add_pixel(html, URL) == html + PIXEL


def test_no_body_end_appends() -> None:
    assert add_pixel("<p>Hi</p>", URL) == f"<p>Hi</p>{PIXEL}"
    assert add_pixel("", URL) == PIXEL


def test_not_a_body_end() -> None:
    html = "<p>x</p></bodyx></body-y>"
    assert add_pixel(html, URL) == html + PIXEL


def test_exactly_once_per_call() -> None:
    out = add_pixel("<body></body></body>", URL)
    assert out.count(PIXEL) == 1


def test_newsletter() -> None:
    html = NEWSLETTER.read_text(encoding="utf-8")
    out = add_pixel(html, URL)
    assert out.count(PIXEL) == 1
    at = out.index(PIXEL)
    assert out[at + len(PIXEL) :].lower().startswith("</body>")
    assert out[:at] + out[at + len(PIXEL) :] == html
