"""Time the two CSS inlining engines on the test newsletter.

Usage: python bench/inliners.py [--runs N]

Prints the median time per message for each engine, on the bare HTML and through
the MIME splicer (a multipart/alternative message with a quoted-printable HTML
part), and the premailer / css-inline ratio.
"""

from __future__ import annotations

import argparse
import binascii
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from smtpeter.features.inlinecss import Engine, make_inliner
from smtpeter.relay.mime import rewrite_html_parts

NEWSLETTER = Path(__file__).resolve().parent.parent / "tests" / "data" / "newsletter.html"
ENGINES: tuple[Engine, ...] = ("css-inline", "premailer")


def build_message(html: str) -> tuple[list[tuple[str, str]], bytes]:
    def qp(text: str) -> bytes:
        return binascii.b2a_qp(text.encode("utf-8"), istext=True).replace(b"\n", b"\r\n")

    text = "Plain-text version of the newsletter.\n"
    body = (
        b"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + qp(text) + b"\r\n"
        b"--b1\r\nContent-Type: text/html; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + qp(html) + b"\r\n"
        b"--b1--\r\n"
    )
    headers = [("MIME-Version", "1.0"), ("Content-Type", 'multipart/alternative; boundary="b1"')]
    return headers, body


def median_ms(func: Callable[[], object], runs: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        func()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        func()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21, help="timed runs per case (default 21)")
    args = parser.parse_args()
    runs: int = args.runs

    html = NEWSLETTER.read_text(encoding="utf-8")
    headers, body = build_message(html)
    print(f"{NEWSLETTER.name}: {len(html.encode()) / 1024:.1f} KiB, median of {runs} runs")

    html_ms: dict[str, float] = {}
    for engine in ENGINES:
        inline = make_inliner(engine)

        def inline_only(inline: Callable[[str], str] = inline) -> object:
            return inline(html)

        html_ms[engine] = median_ms(inline_only, runs)

        def splice(inline: Callable[[str], str] = inline) -> object:
            return rewrite_html_parts(headers, body, inline)

        mime_ms = median_ms(splice, runs)
        print(
            f"  {engine:<10}  inline {html_ms[engine]:8.2f} ms/message"
            f"   MIME decode+inline+splice {mime_ms:8.2f} ms/message"
        )
    splice_only = median_ms(lambda: rewrite_html_parts(headers, body, lambda h: h + " "), runs)
    print(f"  MIME decode+encode+splice alone: {splice_only:.2f} ms/message")
    ratio = html_ms["premailer"] / html_ms["css-inline"]
    print(f"  premailer / css-inline: {ratio:.0f}x")


if __name__ == "__main__":
    main()
