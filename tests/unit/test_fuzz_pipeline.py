"""Fuzzing the feature pipeline and the MIME splicer with hypothesis: for any
message, well-formed or not, a rewrite either returns or skips; it never raises, it
never hangs, and what it returns is a message whose untouched parts are the
original bytes."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smtpeter import config as configmod
from smtpeter.features import FeatureSet
from smtpeter.relay.mime import rewrite_text_parts
from smtpeter.relay.pipeline import Options, Pipeline
from smtpeter.store import open_store
from smtpeter.tracker.keys import KeyRing

TAGS = ["div", "p", "a", "table", "td", "tr", "span", "style", "b", "html", "body", "br"]
EVERYTHING = FeatureSet(inlinecss=True, trackclicks=True, trackopens=True)

# HTML that is mostly markup: nested and unclosed tags, attributes, links, CSS, junk.
fragments = st.one_of(
    st.sampled_from(TAGS).map(lambda t: f"<{t}>"),
    st.sampled_from(TAGS).map(lambda t: f"</{t}>"),
    st.just('<a href="https://example.org/x?a=1&b=2">'),
    st.just("<style>p { color: red } @media (x) { a { b: c !important } }</style>"),
    st.just("<!--"),
    st.just("-->"),
    st.text(alphabet="<>&\"'=/ \r\n\t\x00é€\ufffd", max_size=8),
    st.text(max_size=12),
)
html_documents = st.lists(fragments, max_size=60).map("".join)
charsets = st.sampled_from(["utf-8", "iso-8859-1", "us-ascii", "x-unknown", "utf-7", ""])
encodings = st.sampled_from(["7bit", "8bit", "quoted-printable", "base64", "x-weird", ""])


@st.composite
def leaf(draw: st.DrawFn) -> tuple[list[tuple[str, str]], bytes]:
    ctype = draw(st.sampled_from(["text/html", "text/plain", "application/octet-stream"]))
    charset = draw(charsets)
    encoding = draw(encodings)
    headers = [("Content-Type", f"{ctype}" + (f"; charset={charset}" if charset else ""))]
    if encoding:
        headers.append(("Content-Transfer-Encoding", encoding))
    text = draw(html_documents)
    body = draw(st.one_of(st.just(text.encode("utf-8", "replace")), st.binary(max_size=200)))
    return headers, body


@st.composite
def messages(draw: st.DrawFn, depth: int = 0) -> tuple[list[tuple[str, str]], bytes]:
    if depth >= 3 or draw(st.booleans()):
        return draw(leaf())
    boundary = draw(st.sampled_from(["b1", "=_x", "a b", "", "b1--"]))
    subtype = draw(st.sampled_from(["alternative", "mixed", "related", "signed", "report"]))
    parts = draw(st.lists(messages(depth + 1), max_size=3))
    chunks = []
    for headers, body in parts:
        head = "".join(f"{n}: {v}\r\n" for n, v in headers).encode()
        chunks.append(b"--" + boundary.encode() + b"\r\n" + head + b"\r\n" + body + b"\r\n")
    closing = draw(st.sampled_from([b"--" + boundary.encode() + b"--\r\n", b"", b"--\r\n"]))
    ctype = f'multipart/{subtype}; boundary="{boundary}"' if boundary else f"multipart/{subtype}"
    return [("Content-Type", ctype), ("MIME-Version", "1.0")], b"".join(chunks) + closing


def pipeline(tmp_path: Path) -> Pipeline:
    cfg = configmod.parse({"store": {"sqlite_path": str(tmp_path / "s.db")}}, "fuzz")
    return Pipeline(cfg, KeyRing.from_config(open_store(cfg.store), cfg.tracker))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])  # fmt: skip
@given(message=messages())
def test_the_pipeline_never_raises_and_keeps_the_message_parseable(
    tmp_path: Path, message: tuple[list[tuple[str, str]], bytes]
) -> None:
    headers, body = message
    outcome = pipeline(tmp_path).rewrite(headers, body, EVERYTHING, Options(message_uid="u1"))
    rewrite = outcome.rewrite
    if rewrite is None or rewrite.body is None:
        return
    head = "".join(f"{n}: {v}\r\n" for n, v in headers).encode()
    parsed = email.message_from_bytes(head + b"\r\n" + rewrite.body, policy=email.policy.default)
    assert (
        parsed.get_content_type()
        == email.message_from_bytes(
            head + b"\r\n" + body, policy=email.policy.default
        ).get_content_type()
    )
    # No line longer than SMTP allows (Postfix would break it, and signatures).
    assert all(len(line) <= 998 for line in rewrite.body.split(b"\r\n")), "a line over 998"


@settings(max_examples=300, deadline=None)
@given(message=messages())
def test_the_splicer_with_the_identity_changes_nothing(
    message: tuple[list[tuple[str, str]], bytes],
) -> None:
    headers, body = message
    rewrite = rewrite_text_parts(headers, body, {"text/html": lambda s: s})
    assert rewrite.body is None or rewrite.body == body
