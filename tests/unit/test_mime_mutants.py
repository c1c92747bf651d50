"""The MIME splicer on real-world shapes, asserting exact bytes: what the transform is
given (a part's content exactly, without the line break that belongs to the next
delimiter) and what comes out (every byte outside a changed part as it was)."""

from __future__ import annotations

import base64

import pytest

from smtpeter.relay.mime import Rewrite, rewrite_html_parts, rewrite_text_parts
from tests import mimedata
from tests.unit.test_mime import never

QP_FIELD = b"Content-Transfer-Encoding: quoted-printable\r\n"


class Recorder:
    """A transform that records every text it is given and appends a rule to it."""

    def __init__(self, suffix: str = "<hr>") -> None:
        self.seen: list[str] = []
        self.suffix = suffix

    def __call__(self, text: str) -> str:
        self.seen.append(text)
        return text + self.suffix


def run_html(content_type: str, body: bytes) -> tuple[Rewrite, list[str]]:
    recorder = Recorder()
    rw = rewrite_html_parts(mimedata.top_headers(content_type), body, recorder)
    return rw, recorder.seen


HTML_7BIT = b"Content-Type: text/html\r\n"
PLAIN = b"--b\r\nContent-Type: text/plain\r\n\r\nplain\r\n"

# (id, top-level Content-Type, body, texts the transform sees, the body after)
SHAPES = [
    (
        "crlf-preamble-epilogue",
        'multipart/alternative; boundary="b"',
        b"pre\r\n" + PLAIN + b"--b\r\n" + HTML_7BIT + b"\r\n<p>x</p>\r\n--b--\r\nepi\r\n",
        ["<p>x</p>"],
        b"pre\r\n"
        + PLAIN
        + b"--b\r\n"
        + HTML_7BIT
        + QP_FIELD
        + b"\r\n<p>x</p><hr>\r\n--b--\r\nepi\r\n",
    ),
    (
        "bare-lf",
        'multipart/alternative; boundary="b"',
        b"pre\n--b\nContent-Type: text/plain\n\nplain\n--b\nContent-Type: text/html\n\n"
        b"<p>x</p>\n--b--\nepi\n",
        ["<p>x</p>"],
        b"pre\n--b\nContent-Type: text/plain\n\nplain\n--b\nContent-Type: text/html\n"
        + QP_FIELD
        + b"\n<p>x</p><hr>\n--b--\nepi\n",
    ),
    (
        "body-ending-in-a-line-break",
        'multipart/mixed; boundary="b"',
        b"--b\r\n" + HTML_7BIT + b"\r\n<p>x</p>\r\n\r\n--b--\r\n",
        ["<p>x</p>\r\n"],
        b"--b\r\n" + HTML_7BIT + QP_FIELD + b"\r\n<p>x</p>\r\n<hr>\r\n\r\n--b--\r\n",
    ),
    (
        "lf-body-ending-in-a-line-break",
        'multipart/mixed; boundary="b"',
        b"--b\nContent-Type: text/html\n\n<p>x</p>\n\n--b--\n",
        ["<p>x</p>\n"],
        b"--b\nContent-Type: text/html\n" + QP_FIELD + b"\n<p>x</p>\r\n<hr>\r\n\n--b--\n",
    ),
    (
        "empty-html-body",
        'multipart/mixed; boundary="b"',
        b"--b\r\n" + HTML_7BIT + b"\r\n\r\n--b--\r\n",
        [""],
        b"--b\r\n" + HTML_7BIT + QP_FIELD + b"\r\n<hr>\r\n--b--\r\n",
    ),
    (
        "empty-part-then-html",
        'multipart/mixed; boundary="b"',
        b"--b\r\n--b\r\n" + HTML_7BIT + b"\r\n<p>x</p>\r\n--b--\r\n",
        ["<p>x</p>"],
        b"--b\r\n--b\r\n" + HTML_7BIT + QP_FIELD + b"\r\n<p>x</p><hr>\r\n--b--\r\n",
    ),
    (
        "headers-only-part-then-html",
        'multipart/mixed; boundary="b"',
        b"--b\r\nContent-Type: text/html\r\n--b\r\n" + HTML_7BIT + b"\r\n<p>x</p>\r\n--b--\r\n",
        ["<p>x</p>"],
        b"--b\r\nContent-Type: text/html\r\n--b\r\n"
        + HTML_7BIT
        + QP_FIELD
        + b"\r\n<p>x</p><hr>\r\n--b--\r\n",
    ),
    (
        "garbage-headers-then-html",
        'multipart/mixed; boundary="b"',
        b"--b\r\nnot a header\r\n\r\n<p>a</p>\r\n--b\r\n"
        + HTML_7BIT
        + b"\r\n<p>x</p>\r\n--b--\r\n",
        ["<p>x</p>"],
        b"--b\r\nnot a header\r\n\r\n<p>a</p>\r\n--b\r\n"
        + HTML_7BIT
        + QP_FIELD
        + b"\r\n<p>x</p><hr>\r\n--b--\r\n",
    ),
    (
        "unknown-charset-then-html",
        'multipart/mixed; boundary="b"',
        b"--b\r\nContent-Type: text/html; charset=x-nope\r\n\r\n<p>a</p>\r\n--b\r\n"
        + HTML_7BIT
        + b"\r\n<p>x</p>\r\n--b--\r\n",
        ["<p>x</p>"],
        b"--b\r\nContent-Type: text/html; charset=x-nope\r\n\r\n<p>a</p>\r\n--b\r\n"
        + HTML_7BIT
        + QP_FIELD
        + b"\r\n<p>x</p><hr>\r\n--b--\r\n",
    ),
    (
        "padding-and-lookalikes",
        'multipart/mixed; boundary="b"',
        b"--bx\r\n--b-- no\r\n--b \t\r\n" + HTML_7BIT + b"\r\n<p>x</p>\r\n--bb\r\n--b--\t\r\nepi",
        ["<p>x</p>\r\n--bb"],
        b"--bx\r\n--b-- no\r\n--b \t\r\n"
        + HTML_7BIT
        + QP_FIELD
        + b"\r\n<p>x</p>\r\n--bb<hr>\r\n--b--\t\r\nepi",
    ),
    (
        "odd-boundary-characters",
        'multipart/mixed; boundary="=_a.b+c(1)?/:x y\'"',
        b"--=_a.b+c(1)?/:x y'\r\n" + HTML_7BIT + b"\r\n<p>x</p>\r\n--=_a.b+c(1)?/:x y'--\r\n",
        ["<p>x</p>"],
        b"--=_a.b+c(1)?/:x y'\r\n"
        + HTML_7BIT
        + QP_FIELD
        + b"\r\n<p>x</p><hr>\r\n--=_a.b+c(1)?/:x y'--\r\n",
    ),
    (
        "boundary-of-200-characters",
        f'multipart/mixed; boundary="{"b" * 200}"',
        b"--" + b"b" * 200 + b"\r\n" + HTML_7BIT + b"\r\n<p>x</p>\r\n--" + b"b" * 200 + b"--\r\n",
        ["<p>x</p>"],
        b"--"
        + b"b" * 200
        + b"\r\n"
        + HTML_7BIT
        + QP_FIELD
        + b"\r\n<p>x</p><hr>\r\n--"
        + b"b" * 200
        + b"--\r\n",
    ),
    (
        "nested-unclosed-inner-with-lookalike-in-sibling",
        'multipart/mixed; boundary="o"',
        b'--o\r\nContent-Type: multipart/alternative; boundary="in"\r\n\r\n--in\r\n'
        + HTML_7BIT
        + b"\r\n<p>inner</p>\r\n--o\r\n"
        + HTML_7BIT
        + b"\r\n<p>a</p>\r\n--in--\r\n<p>b</p>\r\n--o--\r\n",
        ["<p>a</p>\r\n--in--\r\n<p>b</p>"],
        b'--o\r\nContent-Type: multipart/alternative; boundary="in"\r\n\r\n--in\r\n'
        + HTML_7BIT
        + b"\r\n<p>inner</p>\r\n--o\r\n"
        + HTML_7BIT
        + QP_FIELD
        + b"\r\n<p>a</p>\r\n--in--\r\n<p>b</p><hr>\r\n--o--\r\n",
    ),
    (
        "nested-closed-inner",
        'multipart/mixed; boundary="o"',
        b'--o\r\nContent-Type: multipart/alternative; boundary="in"\r\n\r\npre\r\n--in\r\n'
        + HTML_7BIT
        + b"\r\n<p>inner</p>\r\n--in--\r\nepi\r\n--o\r\n"
        + HTML_7BIT
        + b"\r\n<p>outer</p>\r\n--o--\r\n",
        ["<p>inner</p>", "<p>outer</p>"],
        b'--o\r\nContent-Type: multipart/alternative; boundary="in"\r\n\r\npre\r\n--in\r\n'
        + HTML_7BIT
        + QP_FIELD
        + b"\r\n<p>inner</p><hr>\r\n--in--\r\nepi\r\n--o\r\n"
        + HTML_7BIT
        + QP_FIELD
        + b"\r\n<p>outer</p><hr>\r\n--o--\r\n",
    ),
    (
        "8bit-bytes-in-part-headers",
        'multipart/mixed; boundary="b"',
        b'--b\r\nContent-Type: text/html; charset=utf-8;\r\n name="caf\xc3\xa9.html"\r\n'
        b'Content-Disposition: inline; filename="caf\xc3\xa9.html"\r\n'
        b"Content-Transfer-Encoding: 8bit\r\n\r\n<p>caf\xc3\xa9</p>\r\n--b--\r\n",
        ["<p>caf\u00e9</p>"],
        b'--b\r\nContent-Type: text/html; charset=utf-8;\r\n name="caf\xc3\xa9.html"\r\n'
        b'Content-Disposition: inline; filename="caf\xc3\xa9.html"\r\n'
        + QP_FIELD
        + b"\r\n<p>caf=C3=A9</p><hr>\r\n--b--\r\n",
    ),
    (
        "tab-folded-cte-and-a-second-cte-field",
        'multipart/mixed; boundary="b"',
        b"--b\r\nContent-Transfer-Encoding:\r\n\t8bit\r\nContent-Type: text/html\r\n"
        b"Content-Transfer-Encoding: x:y\r\n\tmore\r\nX-After: 1\r\n\r\n<p>x</p>\r\n--b--\r\n",
        ["<p>x</p>"],
        b"--b\r\n"
        + QP_FIELD
        + b"Content-Type: text/html\r\nX-After: 1\r\n\r\n<p>x</p><hr>\r\n--b--\r\n",
    ),
    (
        "empty-cte-value-means-7bit",
        'multipart/mixed; boundary="b"',
        b"--b\r\n" + HTML_7BIT + b"Content-Transfer-Encoding: \r\n\r\n<p>x</p>\r\n--b--\r\n",
        ["<p>x</p>"],
        b"--b\r\n" + HTML_7BIT + QP_FIELD + b"\r\n<p>x</p><hr>\r\n--b--\r\n",
    ),
]


@pytest.mark.parametrize(
    ("content_type", "body", "seen", "expected"),
    [s[1:] for s in SHAPES],
    ids=[s[0] for s in SHAPES],
)
def test_exact_bytes_for_real_world_shapes(
    content_type: str, body: bytes, seen: list[str], expected: bytes
) -> None:
    """Each HTML part's exact content is rewritten and every other byte is kept."""
    rw, texts = run_html(content_type, body)
    assert texts == seen
    assert rw.body == expected
    assert rw.parts_changed == len(seen)


def test_folded_content_type_then_base64_cte_is_decoded() -> None:
    """A folded Content-Type does not hide the fields after it (here: base64)."""
    encoded = base64.b64encode(b"<p>x</p>")
    body = (
        b"--b\r\nContent-Type: text/html;\r\n charset=utf-8\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded + b"\r\n--b--\r\n"
    )
    rw, seen = run_html('multipart/mixed; boundary="b"', body)
    assert seen == ["<p>x</p>"]
    new = base64.b64encode(b"<p>x</p><hr>")
    assert rw.body == body.replace(encoded, new)


UNTOUCHED = [
    (
        "missing-final-boundary",
        'multipart/mixed; boundary="b"',
        b"--b\r\n" + HTML_7BIT + b"\r\nx\r\n",
    ),
    (
        "close-delimiter-only",
        'multipart/mixed; boundary="b"',
        b"--b--\r\n" + HTML_7BIT + b"\r\nx\r\n",
    ),
    (
        "empty-boundary",
        'multipart/mixed; boundary=""',
        b"--\r\n" + HTML_7BIT + b"\r\nx\r\n----\r\n",
    ),
    (
        "boundary-of-201-characters",
        f'multipart/mixed; boundary="{"b" * 201}"',
        b"--" + b"b" * 201 + b"\r\n" + HTML_7BIT + b"\r\nx\r\n--" + b"b" * 201 + b"--\r\n",
    ),
    (
        "unregistered-type-xtext-html",
        'multipart/mixed; boundary="b"',
        b"--b\r\nContent-Type: Xtext/html\r\n\r\n<p>x</p>\r\n--b--\r\n",
    ),
]


@pytest.mark.parametrize(
    ("content_type", "body"), [u[1:] for u in UNTOUCHED], ids=[u[0] for u in UNTOUCHED]
)
def test_malformed_or_foreign_shapes_are_left_alone(content_type: str, body: bytes) -> None:
    """A multipart the splicer cannot delimit safely passes through unchanged."""
    headers = mimedata.top_headers(content_type)
    assert rewrite_html_parts(headers, body, never) == Rewrite(body=None)


def _nested(levels: int) -> tuple[str, bytes]:
    """``levels`` multiparts inside each other, the innermost holding an HTML part."""
    inner = mimedata.multipart(f"d{levels}", [HTML_7BIT + b"\r\n<p>deep</p>"])
    for k in range(levels - 1, 0, -1):
        inner = mimedata.multipart(
            f"d{k}", [mimedata.part([f'Content-Type: multipart/mixed; boundary="d{k + 1}"'], inner)]
        )
    return 'multipart/mixed; boundary="d1"', inner


def test_html_at_the_nesting_limit_is_rewritten_one_deeper_is_not() -> None:
    """Thirty-two nested multiparts are walked; a thirty-third is left as it is."""
    rw, seen = run_html(*_nested(32))
    assert seen == ["<p>deep</p>"] and rw.parts_changed == 1
    rw, seen = run_html(*_nested(33))
    assert seen == [] and rw.body is None


def plain_mark(text: str) -> str:
    return text.replace("hello", "hello [tracked]")


def test_a_message_without_content_type_is_plain_text() -> None:
    """A message with no Content-Type is text/plain (RFC 2045) and gets the plain transform."""
    headers = [("From", "a@example.com"), ("Subject", "hi")]
    rw = rewrite_text_parts(headers, b"hello\r\n", {"text/plain": plain_mark})
    assert rw.body == b"hello [tracked]\r\n"
    assert rw.header_changes == {"Content-Transfer-Encoding": "quoted-printable"}


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ('multipart/mixed; boundary="b"', b"--b\r\n\r\nhello [tracked]\r\n--b--\r\n"),
        ('multipart/digest; boundary="b"', None),
    ],
    ids=["mixed-child-is-text-plain", "digest-child-is-a-message"],
)
def test_a_child_without_content_type_takes_its_parents_default(
    content_type: str, expected: bytes | None
) -> None:
    """A headerless child is text/plain, except in a digest where it is message/rfc822."""
    body = b"--b\r\n\r\nhello\r\n--b--\r\n"
    rw = rewrite_text_parts(mimedata.top_headers(content_type), body, {"text/plain": plain_mark})
    if expected is None:
        assert rw == Rewrite(body=None)
    else:
        assert rw.body is not None
        assert rw.body.replace(QP_FIELD, b"") == expected
        assert rw.body.startswith(b"--b\r\n" + QP_FIELD + b"\r\n")


def test_a_digest_child_declared_text_plain_is_rewritten() -> None:
    """In a digest, a child that says it is text/plain is still a text part."""
    body = b"--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b--\r\n"
    headers = mimedata.top_headers('multipart/digest; boundary="b"')
    rw = rewrite_text_parts(headers, body, {"text/plain": plain_mark})
    assert rw.parts_changed == 1


def _single(cte: str, payload: bytes, transform_output: str) -> bytes | None:
    headers = mimedata.top_headers("text/html; charset=utf-8", cte)
    return rewrite_html_parts(headers, payload, lambda _: transform_output).body


@pytest.mark.parametrize(
    ("cte", "payload", "output", "expected"),
    [
        # line breaks of the transform's output become CRLF (also a bare CR)
        (
            "8bit",
            b"<p>x</p>\r\n",
            "<p>a</p>\n<p>b</p>\r<p>c</p>\r\n",
            b"<p>a</p>\r\n<p>b</p>\r\n<p>c</p>\r\n",
        ),
        ("quoted-printable", b"<p>x</p>", "<p>a\rb</p>", b"<p>a\r\nb</p>"),
        # base64 is of the CRLF form, and no line break is added that was not there
        ("base64", base64.b64encode(b"<p>x</p>"), "a\nb\rc", base64.b64encode(b"a\r\nb\r\nc")),
        ("base64", base64.b64encode(b"<p>x</p>") + b"\r\n", "abW", b"YWJX\r\n"),
        ("base64", base64.b64encode(b"<p>x</p>"), "abW", b"YWJX"),
        (
            "base64",
            base64.b64encode(b"<p>x</p>"),
            "W" * 60,
            base64.encodebytes(b"W" * 60).rstrip(b"\n").replace(b"\n", b"\r\n"),
        ),
    ],
    ids=[
        "8bit-newlines",
        "qp-bare-cr",
        "base64-newlines",
        "base64-ends-in-X-with-eol",
        "base64-ends-in-X",
        "base64-two-lines",
    ],
)
def test_re_encoding_is_canonical(cte: str, payload: bytes, output: str, expected: bytes) -> None:
    """Re-encoded bodies have CRLF line breaks and lose or gain no byte at the end."""
    assert _single(cte, payload, output) == expected
