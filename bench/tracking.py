"""Time click and open tracking on the test newsletter.

Usage: python bench/tracking.py [--runs N]

Prints the median time per message (default 21 runs) of track_links, add_pixel and
the two together, on the bare HTML of tests/data/newsletter.html, with and without
preventscam, and how many links were rewritten.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from smtpeter.features.trackclicks import track_links
from smtpeter.features.trackopens import add_pixel

NEWSLETTER = Path(__file__).resolve().parent.parent / "tests" / "data" / "newsletter.html"
PIXEL_URL = "https://t.example/o/0123456789abcdef?s=signature"


def link_for(url: str) -> str:
    return "https://t.example/c/0123456789abcdef?s=signature"


def median_ms(func: Callable[[], object], runs: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        func()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        func()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    html = NEWSLETTER.read_text(encoding="utf-8")
    links = track_links(html, link_for).count("https://t.example/c/")
    print(f"newsletter: {len(html.encode('utf-8'))} bytes, {links} links rewritten")
    cases: list[tuple[str, Callable[[], object]]] = [
        ("track_links", lambda: track_links(html, link_for)),
        ("track_links preventscam", lambda: track_links(html, link_for, preventscam=True)),
        ("add_pixel", lambda: add_pixel(html, PIXEL_URL)),
        ("track_links + add_pixel", lambda: add_pixel(track_links(html, link_for), PIXEL_URL)),
    ]
    for name, func in cases:
        print(f"{name:<26} {median_ms(func, args.runs):7.3f} ms (median of {args.runs})")


if __name__ == "__main__":
    main()
