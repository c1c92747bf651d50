"""Splicing rewritten text/html parts into the original message bytes."""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Callable
from email.message import EmailMessage

import pytest

from smtpeter.features.inlinecss import Engine, make_inliner
from smtpeter.relay.mime import Rewrite, rewrite_html_parts
from tests import mimedata
from tests.mimedata import Msg

MARK = 'data-smtpeter="1"'


def mark(html: str) -> str:
    """A transform that visibly changes every document."""
    assert "<body>" in html
    return html.replace("<body>", f"<body {MARK}>", 1)


def rebuild(msg: Msg, rewrite: Rewrite) -> bytes:
    """The message as the milter would leave it."""
    headers = list(msg.headers)
    for name, value in rewrite.header_changes.items():
        for i, (old_name, _) in enumerate(headers):
            if old_name.lower() == name.lower():
                headers[i] = (old_name, value)
                break
        else:
            headers.append((name, value))
    body = msg.body if rewrite.body is None else rewrite.body
    return Msg(headers, body).raw


def parse(raw: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def html_leaves(msg: EmailMessage) -> list[EmailMessage]:
    return [p for p in msg.walk() if p.get_content_type() == "text/html"]


def content(part: EmailMessage) -> str:
    """Decoded text of a part, with LF line endings."""
    text = part.get_content()
    assert isinstance(text, str)
    return text.replace("\r\n", "\n")


def assert_line_lengths(data: bytes, limit: int = 998) -> None:
    longest = max(len(line) for line in re.split(rb"\r?\n", data))
    assert longest <= limit, f"a line of {longest} bytes"


def assert_crlf_only(data: bytes) -> None:
    assert re.search(rb"(?<!\r)\n", data) is None, "bare LF in output"


# --- what must change ----------------------------------------------------------------


def test_alternative_html_rewritten_text_and_framing_identical() -> None:
    msg = mimedata.alternative()
    rw = rewrite_html_parts(msg.headers, msg.body, mark)
    assert rw.body is not None
    assert rw.parts_changed == 1
    assert rw.header_changes == {}
    # preamble, text part and epilogue: byte for byte
    assert rw.body.startswith(mimedata.PREAMBLE + b"--alt-b0undary\r\n" + mimedata.text_part())
    assert rw.body.endswith(b"\r\n--alt-b0undary--\r\n" + mimedata.EPILOGUE)
    parsed = parse(rebuild(msg, rw))
    text = next(p for p in parsed.walk() if p.get_content_type() == "text/plain")
    assert isinstance(text, EmailMessage)
    assert content(text) == mimedata.TEXT_PLAIN
    (html,) = html_leaves(parsed)
    assert html.get_content_charset() == "utf-8"
    assert html["Content-Transfer-Encoding"] == "quoted-printable"
    assert content(html) == mark(mimedata.newsletter_html())
    assert_line_lengths(rw.body, 76)
    assert_crlf_only(rw.body)


def test_only_the_html_part_bytes_differ() -> None:
    msg = mimedata.mixed_related()
    original_part = mimedata.html_part(mimedata.newsletter_html())
    start = msg.body.index(original_part)
    before, after = msg.body[:start], msg.body[start + len(original_part) :]
    rw = rewrite_html_parts(msg.headers, msg.body, mark)
    assert rw.body is not None
    assert rw.parts_changed == 1
    assert rw.body.startswith(before)
    assert rw.body.endswith(after)
    new_part = rw.body[len(before) : len(rw.body) - len(after)]
    # the part's own header lines are kept (CTE was already quoted-printable)
    assert new_part.startswith(original_part.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n")


def test_nested_related_html_rewritten_and_attachments_identical() -> None:
    msg = mimedata.mixed_related()
    rw = rewrite_html_parts(msg.headers, msg.body, mark)
    assert rw.body is not None
    pdf_raw = mimedata.b64(mimedata.pdf_bytes())
    png_raw = mimedata.b64(mimedata.png_bytes())
    assert pdf_raw in rw.body
    assert png_raw in rw.body
    parsed = parse(rebuild(msg, rw))
    by_type = {p.get_content_type(): p for p in parsed.walk()}
    assert by_type["application/pdf"].get_payload(decode=True) == mimedata.pdf_bytes()
    assert by_type["image/png"].get_payload(decode=True) == mimedata.png_bytes()
    assert by_type["image/png"]["Content-ID"] == "<logo@example.com>"
    (html,) = html_leaves(parsed)
    assert MARK in content(html)
    assert not parsed.defects
    assert all(not p.defects for p in parsed.walk())


def test_every_html_leaf_at_any_depth() -> None:
    leaf = mimedata.html_part(mimedata.SIMPLE_HTML)
    level3 = mimedata.multipart("L3", [mimedata.text_part(), leaf])
    level2 = mimedata.multipart(
        "L2", [leaf, mimedata.part(['Content-Type: multipart/alternative; boundary="L3"'], level3)]
    )
    body = mimedata.multipart(
        "L1", [mimedata.part(['Content-Type: multipart/related; boundary="L2"'], level2), leaf]
    )
    msg = Msg(mimedata.top_headers('multipart/mixed; boundary="L1"'), body)
    rw = rewrite_html_parts(msg.headers, msg.body, mark)
    assert rw.parts_changed == 3
    parsed = parse(rebuild(msg, rw))
    leaves = html_leaves(parsed)
    assert len(leaves) == 3
    assert all(MARK in content(p) for p in leaves)


@pytest.mark.parametrize(
    ("cte", "expected_header_changes"),
    [
        ("8bit", {"Content-Transfer-Encoding": "quoted-printable"}),
        ("7bit", {"Content-Transfer-Encoding": "quoted-printable"}),
        ("quoted-printable", {}),
        ("base64", {}),
    ],
)
def test_single_part_html_message(cte: str, expected_header_changes: dict[str, str]) -> None:
    msg = mimedata.single_part(cte=cte)
    rw = rewrite_html_parts(msg.headers, msg.body, mark)
    assert rw.body is not None
    assert rw.parts_changed == 1
    assert rw.header_changes == expected_header_changes
    assert rw.body.endswith(b"\r\n")
    assert_line_lengths(rw.body, 76)
    parsed = parse(rebuild(msg, rw))
    assert parsed.get_content_charset() == "utf-8"
    assert content(parsed) == mark(mimedata.SIMPLE_HTML)


def test_single_part_without_cte_header_gets_one() -> None:
    msg = mimedata.single_part(cte="8bit")
    headers = [(n, v) for n, v in msg.headers if n != "Content-Transfer-Encoding"]
    rw = rewrite_html_parts(headers, msg.body, mark)
    assert rw.header_changes == {"Content-Transfer-Encoding": "quoted-printable"}


def test_latin1_quoted_printable_keeps_charset() -> None:
    msg = mimedata.latin1_qp()

    def add_symbols(html: str) -> str:
        return mark(html).replace("</p>", " Preis: 5 \u20ac \u2603</p>")

    rw = rewrite_html_parts(msg.headers, msg.body, add_symbols)
    assert rw.body is not None
    parsed = parse(rebuild(msg, rw))
    (html,) = html_leaves(parsed)
    assert html.get_content_charset() == "iso-8859-1"
    raw = html.get_payload(decode=True)
    assert isinstance(raw, bytes)
    text = raw.decode("iso-8859-1")
    assert "Gr\u00fc\u00dfe aus K\u00f6ln" in text
    # characters outside ISO-8859-1 became character references
    assert "5 &#8364; &#9731;" in text
    assert MARK in text
    assert_line_lengths(rw.body, 76)


def test_base64_html_stays_base64() -> None:
    msg = mimedata.alternative(html_cte="base64")
    rw = rewrite_html_parts(msg.headers, msg.body, mark)
    assert rw.body is not None
    parsed = parse(rebuild(msg, rw))
    (html,) = html_leaves(parsed)
    assert html["Content-Transfer-Encoding"] == "base64"
    assert content(html) == mark(mimedata.newsletter_html())
    assert_line_lengths(rw.body, 76)
    assert_crlf_only(rw.body)
    assert rw.body.endswith(b"\r\n--alt-b0undary--\r\n" + mimedata.EPILOGUE)


def test_8bit_part_becomes_quoted_printable_other_header_lines_identical() -> None:
    headers = [
        "Content-Type: text/html;\r\n\tcharset=utf-8",
        "X-Custom: keep   me  exactly",
        "Content-Transfer-Encoding:\r\n 8bit",
        "Content-Description: the html",
    ]
    long_line = "<p>" + "x" * 5000 + "</p>"
    html = mimedata.SIMPLE_HTML.replace("</body>", long_line + "\n</body>")
    leaf = mimedata.part(headers, mimedata.crlf(html).encode("utf-8"))
    body = mimedata.multipart("cte-b", [mimedata.text_part(), leaf])
    msg = Msg(mimedata.top_headers('multipart/alternative; boundary="cte-b"'), body)
    rw = rewrite_html_parts(msg.headers, msg.body, mark)
    assert rw.body is not None
    assert (
        b"--cte-b\r\nContent-Type: text/html;\r\n\tcharset=utf-8\r\n"
        b"X-Custom: keep   me  exactly\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n"
        b"Content-Description: the html\r\n\r\n"
    ) in rw.body
    assert_line_lengths(rw.body, 76)
    (parsed_html,) = html_leaves(parse(rebuild(msg, rw)))
    assert long_line in content(parsed_html)


def test_part_without_cte_header_gets_one_appended() -> None:
    leaf = mimedata.part(
        ["Content-Type: text/html; charset=utf-8", "X-Before: 1"],
        mimedata.crlf(mimedata.SIMPLE_HTML).encode(),
    )
    body = mimedata.multipart("no-cte", [leaf])
    msg = Msg(mimedata.top_headers('multipart/mixed; boundary="no-cte"'), body)
    rw = rewrite_html_parts(msg.headers, msg.body, mark)
    assert rw.body is not None
    assert rw.body.startswith(
        b"--no-cte\r\nContent-Type: text/html; charset=utf-8\r\nX-Before: 1\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    )


def test_undeclared_charset_with_8bit_utf8_falls_back() -> None:
    leaf = mimedata.part(["Content-Type: text/html"], mimedata.crlf(mimedata.SIMPLE_HTML).encode())
    body = mimedata.multipart("ascii-b", [leaf])
    msg = Msg(mimedata.top_headers('multipart/mixed; boundary="ascii-b"'), body)
    rw = rewrite_html_parts(msg.headers, msg.body, mark)
    assert rw.body is not None
    (html,) = html_leaves(parse(rebuild(msg, rw)))
    text = content(html)
    assert "Caf&#233; cr&#232;me" in text  # written back as us-ascii
    assert rw.body.isascii()


def test_bare_lf_input_is_tolerated() -> None:
    msg = mimedata.mixed_related(mimedata.SIMPLE_HTML)
    lf_body = msg.body.replace(b"\r\n", b"\n")
    rw = rewrite_html_parts(msg.headers, lf_body, mark)
    assert rw.body is not None
    assert rw.parts_changed == 1
    assert mimedata.b64(mimedata.pdf_bytes()).replace(b"\r\n", b"\n") in rw.body
    (html,) = html_leaves(parse(rebuild(msg, rw)))
    assert MARK in content(html)


def test_lf_folded_top_level_headers() -> None:
    headers = mimedata.top_headers('multipart/alternative;\n boundary="alt-b0undary"')
    msg = mimedata.alternative(mimedata.SIMPLE_HTML)
    rw = rewrite_html_parts(headers, msg.body, mark)
    assert rw.parts_changed == 1


def test_boundary_lookalike_lines_are_not_delimiters() -> None:
    html = mimedata.SIMPLE_HTML
    preamble = b"--lookX is not a delimiter\r\n--look-- neither\r\n"
    body = mimedata.multipart("look", [mimedata.html_part(html)], preamble=preamble)
    msg = Msg(mimedata.top_headers('multipart/mixed; boundary="look"'), body)
    rw = rewrite_html_parts(msg.headers, msg.body, mark)
    assert rw.body is not None
    assert rw.body.startswith(preamble + b"--look\r\n")


def test_transport_padding_after_boundary() -> None:
    body = mimedata.multipart("pad", [mimedata.html_part(mimedata.SIMPLE_HTML)])
    body = body.replace(b"--pad\r\n", b"--pad  \r\n").replace(b"--pad--", b"--pad--\t")
    msg = Msg(mimedata.top_headers('multipart/mixed; boundary="pad"'), body)
    rw = rewrite_html_parts(msg.headers, msg.body, mark)
    assert rw.parts_changed == 1


# --- what must not change ----------------------------------------------------------


def never(html: str) -> str:
    raise AssertionError("the transform must not be called")


@pytest.mark.parametrize(
    "build",
    [mimedata.signed, mimedata.pkcs7, mimedata.encrypted, mimedata.html_attachment],
    ids=["multipart-signed", "pkcs7-mime", "multipart-encrypted", "html-attachment"],
)
def test_untouchable_messages(build: Callable[[], Msg]) -> None:
    msg = build()
    assert rewrite_html_parts(msg.headers, msg.body, never) == Rewrite(body=None)


def test_x_pkcs7_mime_single_part() -> None:
    msg = mimedata.single_part()
    headers = [
        (n, "application/x-pkcs7-mime; smime-type=signed-data" if n == "Content-Type" else v)
        for n, v in msg.headers
    ]
    assert rewrite_html_parts(headers, msg.body, never).body is None


def test_signed_subtree_inside_mixed_untouched() -> None:
    msg = mimedata.mixed_with_signed()
    rw = rewrite_html_parts(msg.headers, msg.body, mark)
    assert rw.body is not None
    assert rw.parts_changed == 1
    assert mimedata.signed().body in rw.body


def test_message_rfc822_not_descended() -> None:
    msg = mimedata.forwarded()
    rw = rewrite_html_parts(msg.headers, msg.body, mark)
    assert rw.body is not None
    assert rw.parts_changed == 1
    inner = mimedata.single_part(mimedata.SIMPLE_HTML, cte="quoted-printable").raw
    assert inner in rw.body


def test_digest_children_default_to_message_rfc822() -> None:
    inner = mimedata.single_part(mimedata.SIMPLE_HTML).raw
    body = mimedata.multipart("dig", [b"\r\n" + inner])
    msg = Msg(mimedata.top_headers('multipart/digest; boundary="dig"'), body)
    assert rewrite_html_parts(msg.headers, msg.body, never).body is None


@pytest.mark.parametrize(
    ("charset", "payload"),
    [
        ("x-unknown-charset", b"<html><body><p>\xff\xfe</p></body></html>"),
        ("utf-8", b"<html><body><p>broken \xc3\x28 utf-8</p></body></html>"),
        ("us-ascii", b"<html><body><p>neither ascii nor utf-8 \xe9</p></body></html>"),
    ],
)
def test_unknown_or_undecodable_charset_untouched(charset: str, payload: bytes) -> None:
    leaf = mimedata.part(
        [f"Content-Type: text/html; charset={charset}", "Content-Transfer-Encoding: 8bit"], payload
    )
    body = mimedata.multipart("cs", [mimedata.text_part(), leaf])
    msg = Msg(mimedata.top_headers('multipart/alternative; boundary="cs"'), body)
    assert rewrite_html_parts(msg.headers, msg.body, never).body is None


def test_unknown_cte_untouched() -> None:
    leaf = mimedata.part(
        ["Content-Type: text/html; charset=utf-8", "Content-Transfer-Encoding: x-uuencode"],
        b"begin 644 page.html\r\nM/&AT;6P^\r\nend",
    )
    body = mimedata.multipart("uu", [leaf])
    msg = Msg(mimedata.top_headers('multipart/mixed; boundary="uu"'), body)
    assert rewrite_html_parts(msg.headers, msg.body, never).body is None


def test_missing_closing_boundary_untouched() -> None:
    msg = mimedata.alternative(mimedata.SIMPLE_HTML)
    truncated = msg.body.replace(b"--alt-b0undary--", b"--alt-b0undary-")
    assert rewrite_html_parts(msg.headers, truncated, never).body is None


def test_malformed_inner_multipart_untouched_rest_rewritten() -> None:
    broken_inner = mimedata.part(
        ['Content-Type: multipart/alternative; boundary="gone"'],
        b"--gone\r\n" + mimedata.html_part(mimedata.SIMPLE_HTML),  # never closed
    )
    body = mimedata.multipart("ok", [broken_inner, mimedata.html_part(mimedata.SIMPLE_HTML)])
    msg = Msg(mimedata.top_headers('multipart/mixed; boundary="ok"'), body)
    rw = rewrite_html_parts(msg.headers, msg.body, mark)
    assert rw.parts_changed == 1
    assert rw.body is not None
    assert rw.body.startswith(b"--ok\r\n" + broken_inner + b"\r\n--ok\r\n")


def test_multipart_without_boundary_untouched() -> None:
    msg = mimedata.alternative(mimedata.SIMPLE_HTML)
    headers = mimedata.top_headers("multipart/alternative")
    assert rewrite_html_parts(headers, msg.body, never).body is None


def test_garbage_header_block_untouched() -> None:
    leaf = b"this is not a header\r\nContent-Type: text/html\r\n\r\n<html><body></body></html>"
    body = mimedata.multipart("g", [leaf])
    msg = Msg(mimedata.top_headers('multipart/mixed; boundary="g"'), body)
    assert rewrite_html_parts(msg.headers, msg.body, never).body is None


def test_plain_text_message_untouched() -> None:
    headers = mimedata.top_headers("text/plain; charset=utf-8", "8bit")
    body = mimedata.crlf(mimedata.TEXT_PLAIN).encode()
    assert rewrite_html_parts(headers, body, never).body is None
    assert rewrite_html_parts([("Subject", "no MIME at all")], body, never).body is None


def test_identity_transform_means_unchanged() -> None:
    msg = mimedata.mixed_related()
    assert rewrite_html_parts(msg.headers, msg.body, lambda html: html) == Rewrite(body=None)


def test_transform_exception_propagates() -> None:
    class Boom(RuntimeError):
        pass

    def explode(html: str) -> str:
        raise Boom("inliner crashed")

    msg = mimedata.alternative(mimedata.SIMPLE_HTML)
    with pytest.raises(Boom):
        rewrite_html_parts(msg.headers, msg.body, explode)


def test_absurd_nesting_left_alone() -> None:
    body = mimedata.multipart("d0", [mimedata.html_part(mimedata.SIMPLE_HTML)])
    for depth in range(1, 40):
        inner = mimedata.part([f'Content-Type: multipart/mixed; boundary="d{depth - 1}"'], body)
        body = mimedata.multipart(f"d{depth}", [inner])
    msg = Msg(mimedata.top_headers('multipart/mixed; boundary="d39"'), body)
    assert rewrite_html_parts(msg.headers, msg.body, never).body is None


# --- with the real inliners --------------------------------------------------------


@pytest.mark.parametrize("engine", ["css-inline", "premailer"])
def test_newsletter_inlined_in_mixed_message(engine: Engine) -> None:
    msg = mimedata.mixed_related()
    rw = rewrite_html_parts(msg.headers, msg.body, make_inliner(engine))
    assert rw.body is not None
    assert rw.parts_changed == 1
    assert_line_lengths(rw.body, 76)
    assert_crlf_only(rw.body)
    assert mimedata.b64(mimedata.pdf_bytes()) in rw.body
    assert mimedata.text_part() in rw.body
    parsed = parse(rebuild(msg, rw))
    (html_part,) = html_leaves(parsed)
    assert html_part.get_content_charset() == "utf-8"
    html = content(html_part)
    assert 'class="article-title" style="' in html
    assert "Zo\u00eb M\u00fcller" in html
    assert "@media only screen and (max-width: 640px)" in html or "max-width:640px" in html
    assert "!important" in html
    by_type = {p.get_content_type(): p for p in parsed.walk()}
    assert by_type["application/pdf"].get_payload(decode=True) == mimedata.pdf_bytes()


@pytest.mark.parametrize("engine", ["css-inline", "premailer"])
def test_latin1_message_inlined_keeps_charset(engine: Engine) -> None:
    msg = mimedata.latin1_qp()
    rw = rewrite_html_parts(msg.headers, msg.body, make_inliner(engine))
    assert rw.body is not None
    (html_part,) = html_leaves(parse(rebuild(msg, rw)))
    assert html_part.get_content_charset() == "iso-8859-1"
    html = content(html_part)
    assert "Gr\u00fc\u00dfe aus K\u00f6ln" in html
    assert re.search(r'<p style="color: ?#188038;?">', html)
