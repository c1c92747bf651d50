"""Test messages, built as bytes with CRLF line endings.

Each builder returns a :class:`Msg`: the top-level headers as a milter receives them
(name, value) and the raw body, plus ``raw`` for the whole message (for SMTP
end-to-end tests). The binary payloads are deterministic so tests can compare them.
"""

from __future__ import annotations

import base64
import binascii
import random
from dataclasses import dataclass
from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"
CRLF = b"\r\n"

TEXT_PLAIN = (
    "Hello Zoë,\n\nThis is the plain-text version of our newsletter.\n"
    "Read it online: https://news.example.com/web/42\n\n-- \nThe Example team\n"
)

SIMPLE_HTML = (
    "<!DOCTYPE html>\n<html>\n<head>\n<style>\n"
    "p { color: #d93025; font-size: 15px; }\n"
    ".box { padding: 8px; background-color: #f1f3f4; }\n"
    "@media only screen and (max-width: 600px) { .box { padding: 2px !important; } }\n"
    "</style>\n</head>\n<body>\n"
    '<div class="box"><p>Caf\u00e9 cr\u00e8me, na\u00efve \u00fcber price: 10 \u20ac</p></div>\n'
    "</body>\n</html>\n"
)

LATIN1_HTML = (
    "<html><head><style>p { color: #188038; }</style></head><body>\n"
    "<p>Gr\u00fc\u00dfe aus K\u00f6ln, caf\u00e9 \u00e0 2 \u00a3.</p>\n"
    "</body></html>\n"
)


@dataclass(frozen=True)
class Msg:
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def raw(self) -> bytes:
        head = b"".join(
            f"{name}: {value}".encode("utf-8", "surrogateescape") + CRLF
            for name, value in self.headers
        )
        return head + CRLF + self.body


def newsletter_html() -> str:
    """The ~45 KB newsletter (102 rules, three @media blocks with !important)."""
    return (DATA_DIR / "newsletter.html").read_text(encoding="utf-8")


def pdf_bytes() -> bytes:
    rnd = random.Random(7)
    return b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + rnd.randbytes(6000) + b"\n%%EOF\n"


def png_bytes() -> bytes:
    rnd = random.Random(11)
    return b"\x89PNG\r\n\x1a\n" + rnd.randbytes(2500)


# --- encoders (CRLF) ---------------------------------------------------------------


def crlf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\n", "\r\n")


def qp(text: str, charset: str = "utf-8") -> bytes:
    encoded = binascii.b2a_qp(text.replace("\r\n", "\n").encode(charset), istext=True)
    return encoded.replace(b"\n", CRLF)


def b64(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", CRLF)


def part(headers: list[str], body: bytes) -> bytes:
    """A body part: header lines, blank line, body (no trailing line break)."""
    return "".join(h + "\r\n" for h in headers).encode("ascii") + CRLF + body


def multipart(
    boundary: str, parts: list[bytes], preamble: bytes = b"", epilogue: bytes = b""
) -> bytes:
    out = preamble
    for p in parts:
        out += b"--" + boundary.encode() + CRLF + p + CRLF
    return out + b"--" + boundary.encode() + b"--" + CRLF + epilogue


def top_headers(content_type: str, cte: str | None = None) -> list[tuple[str, str]]:
    headers = [
        (
            "Received",
            "from client.example.net (client.example.net [192.0.2.7])\r\n\tby mx.example.com",
        ),
        ("From", "Example News <news@example.com>"),
        ("To", "zoe@example.org"),
        ("Subject", "The Example Weekly \u2014 May"),
        ("Date", "Mon, 6 May 2024 09:00:00 +0200"),
        ("Message-ID", "<20240506090000.42@example.com>"),
        ("MIME-Version", "1.0"),
        ("Content-Type", content_type),
    ]
    if cte is not None:
        headers.append(("Content-Transfer-Encoding", cte))
    return headers


def html_part(
    html: str, charset: str = "utf-8", cte: str = "quoted-printable", extra: list[str] | None = None
) -> bytes:
    if cte == "quoted-printable":
        payload = qp(html, charset)
    elif cte == "base64":
        payload = b64(crlf(html).encode(charset))
    else:
        payload = crlf(html).encode(charset)
    headers = [f'Content-Type: text/html; charset="{charset}"', f"Content-Transfer-Encoding: {cte}"]
    return part(headers + (extra or []), payload)


def text_part(text: str = TEXT_PLAIN) -> bytes:
    return part(
        ["Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: quoted-printable"],
        qp(text),
    )


# --- messages ----------------------------------------------------------------------

PREAMBLE = b"This is a multi-part message in MIME format.\r\n"
EPILOGUE = b"This epilogue should pass through untouched.\r\n"


def alternative(html: str | None = None, html_cte: str = "quoted-printable") -> Msg:
    """multipart/alternative: text/plain + text/html, with preamble and epilogue."""
    body = multipart(
        "alt-b0undary",
        [text_part(), html_part(html or newsletter_html(), cte=html_cte)],
        PREAMBLE,
        EPILOGUE,
    )
    return Msg(top_headers('multipart/alternative;\r\n boundary="alt-b0undary"'), body)


def mixed_related(html: str | None = None) -> Msg:
    """mixed[ related[ alternative[text, html], inline png ], pdf attachment ]."""
    alt = multipart("=_alt_3", [text_part(), html_part(html or newsletter_html())])
    image = part(
        [
            "Content-Type: image/png; name=logo.png",
            "Content-Transfer-Encoding: base64",
            "Content-ID: <logo@example.com>",
            'Content-Disposition: inline; filename="logo.png"',
        ],
        b64(png_bytes()),
    )
    related = multipart(
        "=_rel_2",
        [part(['Content-Type: multipart/alternative; boundary="=_alt_3"'], alt), image],
    )
    pdf = part(
        [
            'Content-Type: application/pdf; name="report.pdf"',
            "Content-Transfer-Encoding: base64",
            'Content-Disposition: attachment;\r\n\tfilename="report.pdf"',
        ],
        b64(pdf_bytes()),
    )
    body = multipart(
        "=_mix_1",
        [
            part(
                [
                    'Content-Type: multipart/related;\r\n\ttype="multipart/alternative";'
                    ' boundary="=_rel_2"'
                ],
                related,
            ),
            pdf,
        ],
        PREAMBLE,
    )
    return Msg(top_headers('multipart/mixed; boundary="=_mix_1"'), body)


def signed(html: str = SIMPLE_HTML) -> Msg:
    """multipart/signed around a multipart/alternative with an HTML part."""
    alt = multipart("sig-alt", [text_part(), html_part(html)])
    signature = part(
        ['Content-Type: application/pgp-signature; name="signature.asc"'],
        b"-----BEGIN PGP SIGNATURE-----\r\n\r\niQEzBAEBCAAdFiEE0000\r\n=abcd\r\n"
        b"-----END PGP SIGNATURE-----",
    )
    body = multipart(
        "sig-outer",
        [part(['Content-Type: multipart/alternative; boundary="sig-alt"'], alt), signature],
    )
    return Msg(
        top_headers(
            'multipart/signed; micalg=pgp-sha256;\r\n\tprotocol="application/pgp-signature";'
            ' boundary="sig-outer"'
        ),
        body,
    )


def mixed_with_signed(html: str = SIMPLE_HTML) -> Msg:
    """mixed[ html, signed[ alternative[text, html], signature ] ]: only the first changes."""
    inner = signed(html)
    content_type = dict(inner.headers)["Content-Type"]
    body = multipart(
        "outer-mix", [html_part(html), part([f"Content-Type: {content_type}"], inner.body)]
    )
    return Msg(top_headers('multipart/mixed; boundary="outer-mix"'), body)


def pkcs7() -> Msg:
    return Msg(
        top_headers(
            'application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"', "base64"
        ),
        b64(random.Random(3).randbytes(900)),
    )


def encrypted() -> Msg:
    body = multipart(
        "enc-b",
        [
            part(["Content-Type: application/pgp-encrypted"], b"Version: 1"),
            part(
                ['Content-Type: application/octet-stream; name="encrypted.asc"'],
                b"-----BEGIN PGP MESSAGE-----\r\n\r\nhQEMA000\r\n-----END PGP MESSAGE-----",
            ),
            html_part(SIMPLE_HTML),  # would be odd, but must stay untouched
        ],
    )
    return Msg(
        top_headers('multipart/encrypted; protocol="application/pgp-encrypted"; boundary="enc-b"'),
        body,
    )


def latin1_qp() -> Msg:
    """multipart/alternative whose HTML is ISO-8859-1 quoted-printable."""
    body = multipart(
        "latin-b",
        [text_part(), html_part(LATIN1_HTML, charset="iso-8859-1")],
    )
    return Msg(top_headers('multipart/alternative; boundary="latin-b"'), body)


def single_part(html: str = SIMPLE_HTML, cte: str = "8bit", charset: str = "utf-8") -> Msg:
    """A message that is one text/html part (folded Content-Type, LF folding)."""
    if cte == "base64":
        body = b64(crlf(html).encode(charset))
    elif cte == "quoted-printable":
        body = qp(html, charset)
    else:
        body = crlf(html).encode(charset)
    headers = top_headers(f"text/html;\n\tcharset={charset}", cte)
    return Msg(headers, body)


def html_attachment() -> Msg:
    """mixed[ text, text/html attachment ]."""
    body = multipart(
        "att-b",
        [
            text_part(),
            html_part(SIMPLE_HTML, extra=['Content-Disposition: attachment; filename="page.html"']),
        ],
    )
    return Msg(top_headers('multipart/mixed; boundary="att-b"'), body)


def forwarded() -> Msg:
    """mixed[ html, message/rfc822[ html message ] ]: only the outer html changes."""
    inner = single_part(SIMPLE_HTML, cte="quoted-printable")
    body = multipart(
        "fwd-b",
        [
            html_part(SIMPLE_HTML),
            part(["Content-Type: message/rfc822", "Content-Disposition: inline"], inner.raw),
        ],
    )
    return Msg(top_headers('multipart/mixed; boundary="fwd-b"'), body)
