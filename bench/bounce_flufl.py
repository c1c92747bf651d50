"""What flufl.bounce would add to our bounce detection: as a fallback, and as a second opinion.

flufl.bounce (https://gitlab.com/flufl/flufl.bounce, Apache-2.0) is not a dependency
of ours; measure it from a virtualenv of its own, never from ``.venv``::

    .venv/bin/python -m venv /tmp/flufl-venv
    /tmp/flufl-venv/bin/pip install flufl.bounce==6.0.0
    /tmp/flufl-venv/bin/pip install -e . --no-deps    # smtpeter.bounces needs only stdlib
    /tmp/flufl-venv/bin/python bench/bounce_flufl.py \\
        --sisimai /tmp/sisimai --expected /tmp/sisimai/expected.json \\
        --flufl-tests /tmp/flufl_bounce-6.0.0/tests [--json] [--details]

``--sisimai`` and ``--expected`` are the corpus and expectations of
``bench/bounce_corpus.py`` (its docstring says how to get them). ``--flufl-tests`` is
the ``tests/`` folder of flufl.bounce's source distribution (``pip download
--no-binary :all: --no-deps flufl.bounce==6.0.0``, then untar): its ``data/*.txt``
messages and, in ``test_detectors.py``, the ``DETECTORS`` table of the addresses each
message must give. Either corpus may be left out. Without flufl.bounce importable the
script says so and exits 0, measuring nothing.

For each message it runs our :func:`smtpeter.bounces.detect.detect` and flufl.bounce's
``all_failures`` (which returns its temporary and permanent address sets) on
``email.message_from_bytes`` of the same bytes, and prints, per corpus:

- **fallback**: on the messages where ``detect`` found nothing (no failure at all, not
  even an auto-reply), how many flufl.bounce recognises (gives an address), how many
  of its addresses are right and how many *wrong*. On Sisimai's set, whose tables give
  no addresses, right means "as many addresses as Sisimai's rows" and wrong means an
  address that is the sender's or the reporting system's (a top-level From/To/Cc/
  Reply-To/Sender/Return-Path/Delivered-To/X-Original-To/Envelope-To, or a From/Sender/
  Return-Path/Reply-To of an enclosed original message) and never follows a
  ``Final-Recipient:``/``Original-Recipient:``; ``--details`` lists every address so
  the rest can be judged by eye. On flufl's own set right and wrong are against its table.
- **no-bounces**: on Sisimai's auto-replies, feedback reports, delivery reports, delay
  notices and non-bounces, what flufl.bounce returns at all, and what it returns
  where the fallback would run; a permanent address there is a false hard bounce, any
  address on a message that is no delay is a false bounce.
- **second opinion**: where ``detect`` found failed recipients, how often flufl.bounce's
  address set is the same as ours, empty, a part of ours, more than ours, or differs.
- **time**: per message the best of ``--repeat`` runs (parse plus scan; the same for
  ``detect``), median, p95 and maximum; and flufl.bounce's exceptions (it re-raises
  whatever a detector raises).
"""

from __future__ import annotations

import argparse
import ast
import email
import importlib
import json
import logging
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.message import Message
from email.utils import getaddresses
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.bounce_corpus import NOT_BOUNCE, Outcome, load_expected, measure  # noqa: E402
from smtpeter.bounces.detect import Report, detect  # noqa: E402

Scan = Callable[[Message], tuple[frozenset[bytes], frozenset[bytes]]]

_SENDER_HEADERS = (
    "from",
    "to",
    "cc",
    "reply-to",
    "sender",
    "return-path",
    "delivered-to",
    "x-original-to",
    "envelope-to",
)
_ORIGINAL_SENDER_HEADERS = ("from", "sender", "return-path", "reply-to")
_PLAUSIBLE = re.compile(r"^[^@\s\"(){}\[\],:;<>\\|]+@(?:[a-z0-9-]+\.)+[a-z0-9-]{2,}$")
_RECIPIENT_FIELD = re.compile(
    rb"^(?:Final|Original)-Recipient:[ \t]*(?:rfc822;)?[ \t]*<?([^>\s]+)", re.I | re.M
)


def load_flufl() -> tuple[Scan, str] | None:
    """flufl.bounce's ``all_failures`` and version, or None when it is not importable."""
    try:
        module = importlib.import_module("flufl.bounce")
    except ImportError:
        return None
    scan: Scan = module.all_failures
    version = str(getattr(module, "__version__", "?"))
    # it logs a detector's exception before re-raising it: counted here, not printed
    log = logging.getLogger("flufl.bounce")
    log.addHandler(logging.NullHandler())
    log.propagate = False
    return scan, version


def _address(raw: bytes | str) -> str:
    text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else raw
    return text.strip().strip("<>").lower()


@dataclass
class Verdict:
    """What flufl.bounce said of one message."""

    temporary: frozenset[str] = frozenset()
    permanent: frozenset[str] = frozenset()
    seconds: float = 0.0
    crashed: str | None = None

    @property
    def addresses(self) -> frozenset[str]:
        return self.temporary | self.permanent


def run_flufl(scan: Scan, raw: bytes, repeat: int) -> Verdict:
    verdict = Verdict(seconds=float("inf"))
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        try:
            temporary, permanent = scan(email.message_from_bytes(raw))
        except Exception as exc:  # noqa: BLE001 - counting crashes is the point
            verdict.crashed = f"{type(exc).__name__}: {exc}"
        else:
            verdict.temporary = frozenset(_address(a) for a in temporary)
            verdict.permanent = frozenset(_address(a) for a in permanent)
        verdict.seconds = min(verdict.seconds, time.perf_counter() - start)
    return verdict


def run_ours(raw: bytes, repeat: int) -> tuple[Report, float]:
    best = float("inf")
    report = detect(raw)
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        report = detect(raw)
        best = min(best, time.perf_counter() - start)
    return report, best


def failed_recipients(report: Report | None) -> frozenset[str]:
    """Our failed recipients (auto-replies left out), lowercased."""
    if report is None:
        return frozenset()
    return frozenset(f.recipient.lower() for f in report.failures if f.kind != "autoreply")


def found_nothing(report: Report | None) -> bool:
    """The fallback's gate: ``detect`` gave no failure at all, not even an auto-reply."""
    return report is None or not report.failures


def not_recipients(raw: bytes) -> frozenset[str]:
    """Addresses of a bounce that are the sender's or the reporter's, never a recipient's."""
    msg = email.message_from_bytes(raw)
    found: set[str] = set()

    def take(part: Message, names: Iterable[str]) -> None:
        for name in names:
            values = [str(v) for v in part.get_all(name, [])]
            found.update(_address(a) for _, a in getaddresses(values) if "@" in a)

    take(msg, _SENDER_HEADERS)
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype == "message/rfc822" and part.is_multipart():
            for inner in part.get_payload():
                if isinstance(inner, Message):
                    take(inner, _ORIGINAL_SENDER_HEADERS)
        elif ctype == "text/rfc822-headers":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                take(email.message_from_bytes(payload), _ORIGINAL_SENDER_HEADERS)
    reported = {_address(a) for a in _RECIPIENT_FIELD.findall(raw)}
    return frozenset(found - reported)


def wrong_addresses(raw: bytes, addresses: frozenset[str]) -> frozenset[str]:
    """Of flufl.bounce's addresses, those that are surely no failed recipient: not shaped
    like an address at all, or the sender's or the reporter's (:func:`not_recipients`)."""
    bad = {a for a in addresses if not _PLAUSIBLE.match(a)}
    return frozenset(bad | (addresses & not_recipients(raw)))


def compare(ours: frozenset[str], theirs: frozenset[str]) -> str:
    if theirs == ours:
        return "same"
    if not theirs:
        return "flufl empty"
    if theirs < ours:
        return "flufl fewer (a part of ours)"
    if theirs > ours:
        return "flufl more (ours and others)"
    if theirs & ours:
        return "overlap, each has others"
    return "disjoint"


def timing(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)
    if not ms:
        return {}
    return {
        "median_ms": round(statistics.median(ms), 3),
        "p95_ms": round(ms[min(len(ms) - 1, int(0.95 * len(ms)))], 3),
        "max_ms": round(ms[-1], 3),
    }


@dataclass
class Result:
    """The figures of one corpus."""

    corpus: str
    figures: dict[str, Any] = field(default_factory=dict)
    second_opinion: Counter[str] = field(default_factory=Counter)
    details: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "corpus": self.corpus,
            "figures": self.figures,
            "second_opinion": dict(self.second_opinion),
            "details": self.details,
        }


def _category(out: Outcome) -> str:
    """What a Sisimai message is: ``bounce``, ``delay``, or the kind of no-bounce."""
    if out.non_bounce:
        return "non-bounce"
    if out.expected is None:
        return "no expectation"
    rows = [e for e in out.expected if e.reason not in NOT_BOUNCE]
    if not rows:
        return "/".join(sorted({e.reason for e in out.expected}))
    return "delay" if out.delay_only else "bounce"


def measure_sisimai(scan: Scan, corpus: Path, expected_path: Path, repeat: int) -> Result:
    outcomes = measure(corpus, load_expected(expected_path), repeat)
    res = Result("sisimai")
    tally = Counter[str]()
    no_bounce: dict[str, Counter[str]] = {}
    flufl_seconds: list[float] = []
    for out in outcomes:
        path = next(corpus.rglob(out.name))
        raw = path.read_bytes()
        verdict = run_flufl(scan, raw, repeat)
        flufl_seconds.append(verdict.seconds)
        if verdict.crashed:
            tally["flufl crashes"] += 1
            res.details.append(f"{out.name}: flufl crashed: {verdict.crashed}")
        ours = failed_recipients(out.report)
        gate = found_nothing(out.report)
        category = _category(out)
        tally["messages"] += 1
        if out.counts.not_bounces:
            c = no_bounce.setdefault(category, Counter())
            c["messages"] += 1
            c["flufl any address"] += bool(verdict.addresses)
            c["flufl permanent address"] += bool(verdict.permanent)
            c["flufl malformed address"] += any(not _PLAUSIBLE.match(a) for a in verdict.addresses)
            if gate:
                c["fallback runs"] += 1
                c["fallback any address"] += bool(verdict.addresses)
                c["fallback permanent address"] += bool(verdict.permanent)
            if verdict.addresses:
                res.details.append(
                    f"{out.name} [{category}, fallback {'runs' if gate else 'off'}]: "
                    f"flufl temporary {sorted(verdict.temporary)} "
                    f"permanent {sorted(verdict.permanent)}; ours {sorted(ours)}"
                )
        if not out.counts.bounces or out.expected is None:
            continue
        rows = [e for e in out.expected if e.reason not in NOT_BOUNCE]
        tally["bounces"] += 1
        if out.counts.recognised:
            tally["recognised by us"] += 1
            if ours:
                res.second_opinion[compare(ours, verdict.addresses)] += 1
                if verdict.addresses and verdict.addresses != ours:
                    extra = verdict.addresses - ours
                    wrong = wrong_addresses(raw, extra)
                    tally["second opinion: flufl's other addresses"] += len(extra)
                    tally["second opinion: of those surely wrong"] += len(wrong)
                    res.details.append(
                        f"{out.name} [second opinion]: ours {sorted(ours)}, "
                        f"flufl {sorted(verdict.addresses)}; surely wrong {sorted(wrong)}"
                    )
            continue
        tally["not recognised by us"] += 1
        if not gate:
            tally["not recognised, fallback gated off (auto-reply found)"] += 1
            continue
        if not verdict.addresses:
            continue
        wrong = wrong_addresses(raw, verdict.addresses)
        tally["fallback recognises"] += 1
        tally["fallback addresses"] += len(verdict.addresses)
        tally["fallback wrong addresses"] += len(wrong)
        usable = not wrong and len(verdict.addresses) == len(rows)
        tally["fallback recognises, as many addresses as Sisimai, none wrong"] += usable
        hard = any(e.hard for e in rows)
        tally["fallback permanent where Sisimai hard"] += bool(verdict.permanent) and hard
        tally["fallback permanent where Sisimai soft"] += bool(verdict.permanent) and not hard
        res.details.append(
            f"{out.name} [fallback]: flufl temporary {sorted(verdict.temporary)} "
            f"permanent {sorted(verdict.permanent)}; wrong {sorted(wrong)}; Sisimai "
            f"{len(rows)} row(s) {[(e.status, e.reason, e.hard) for e in rows]}"
        )
    res.figures = {
        "counts": dict(tally),
        "recognised with fallback": tally["recognised by us"] + tally["fallback recognises"],
        "recognised with fallback, none wrong": tally["recognised by us"]
        + tally["fallback recognises, as many addresses as Sisimai, none wrong"],
        "no-bounces": {k: dict(v) for k, v in sorted(no_bounce.items())},
        "time ours": timing([o.seconds for o in outcomes]),
        "time flufl": timing(flufl_seconds),
    }
    return res


def flufl_table(tests: Path) -> dict[str, tuple[frozenset[str], bool]]:
    """flufl.bounce's ``DETECTORS`` table: file -> (expected addresses, temporary)."""
    tree = ast.parse((tests / "test_detectors.py").read_text())
    rows: list[tuple[str, str, list[bytes], bool]] = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "DETECTORS" for t in node.targets
        ):
            rows = ast.literal_eval(node.value)
    if not rows:
        raise SystemExit(f"no DETECTORS table in {tests / 'test_detectors.py'}")
    table: dict[str, tuple[frozenset[str], bool]] = {}
    for _module, name, addresses, temporary in rows:
        old, old_temporary = table.get(name, (frozenset(), False))
        new = frozenset(_address(a) for a in addresses)
        table[name] = (old | new, temporary if new else old_temporary)
    # test_scan_unrecognized: a message that is no bounce at all
    table.setdefault("dumbass_01.txt", (frozenset(), False))
    return table


def measure_flufl_tests(scan: Scan, tests: Path, repeat: int) -> Result:
    res = Result("flufl.bounce tests")
    tally = Counter[str]()
    ours_seconds: list[float] = []
    flufl_seconds: list[float] = []
    for name, (expected, temporary) in sorted(flufl_table(tests).items()):
        raw = (tests / "data" / name).read_bytes()
        report, seconds = run_ours(raw, repeat)
        ours_seconds.append(seconds)
        verdict = run_flufl(scan, raw, repeat)
        flufl_seconds.append(verdict.seconds)
        if verdict.crashed:
            tally["flufl crashes"] += 1
            res.details.append(f"{name}: flufl crashed: {verdict.crashed}")
        tally["messages"] += 1
        tally["expected addresses"] += len(expected)
        good_kinds = {"delay"} if temporary else {"hard", "soft"}
        ours_good = {f.recipient.lower() for f in report.failures if f.kind in good_kinds}
        bouncing = any(f.kind in ("hard", "soft") for f in report.failures)
        recognised = bool(expected & ours_good) if expected else not bouncing
        tally["recognised by us"] += recognised
        tally["addresses by us"] += len(expected & ours_good)
        tally["addresses by us, any kind"] += len(expected & failed_recipients(report))
        ours = failed_recipients(report)
        if ours:
            res.second_opinion[compare(ours, verdict.addresses)] += 1
        theirs = verdict.temporary if temporary else verdict.permanent
        if not found_nothing(report):
            continue
        tally["fallback runs"] += 1
        tally["fallback runs, expected addresses"] += len(expected)
        right = expected & theirs
        wrong = verdict.addresses - expected
        tally["fallback right addresses"] += len(right)
        tally["fallback wrong addresses"] += len(wrong)
        if expected and right and not recognised:
            tally["fallback newly recognises"] += 1
        if not expected and verdict.addresses:
            tally["fallback false bounce on a no-bounce"] += 1
        res.details.append(
            f"{name} [fallback]: expected {sorted(expected)} "
            f"{'temporary' if temporary else 'permanent'}; flufl temporary "
            f"{sorted(verdict.temporary)} permanent {sorted(verdict.permanent)}"
        )
    res.figures = {
        "counts": dict(tally),
        "recognised with fallback": tally["recognised by us"] + tally["fallback newly recognises"],
        "addresses with fallback": tally["addresses by us"] + tally["fallback right addresses"],
        "time ours": timing(ours_seconds),
        "time flufl": timing(flufl_seconds),
    }
    return res


def print_text(results: list[Result], version: str, details: bool) -> None:
    print(f"flufl.bounce {version}")
    for res in results:
        print(f"\n== {res.corpus}")
        for key, value in res.figures.items():
            if isinstance(value, dict) and value and isinstance(next(iter(value.values())), dict):
                print(f"{key}:")
                for sub, counts in value.items():
                    print(f"  {sub}: {json.dumps(counts)}")
            elif isinstance(value, dict):
                print(f"{key}:")
                for sub, n in value.items():
                    print(f"  {sub}: {n}")
            else:
                print(f"{key}: {value}")
        print("second opinion, where we found failed recipients:")
        for what, n in res.second_opinion.most_common():
            print(f"  {what}: {n}")
        if details:
            print("details:")
            for line in res.details:
                print(f"  {line}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--sisimai", type=Path, help="Sisimai's set-of-emails (bsd/, not/)")
    ap.add_argument("--expected", type=Path, help="Sisimai's expectations, JSON")
    ap.add_argument("--flufl-tests", type=Path, help="tests/ of flufl.bounce's sdist")
    ap.add_argument("--repeat", type=int, default=3, help="runs per message; the best is timed")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--details", action="store_true", help="list what flufl.bounce said")
    args = ap.parse_args(argv)
    loaded = load_flufl()
    if loaded is None:
        print(
            "flufl.bounce is not importable here: nothing measured. Run this with the "
            "python of a virtualenv that has flufl.bounce (see the docstring).",
            file=sys.stderr,
        )
        return 0
    scan, version = loaded
    results: list[Result] = []
    if args.sisimai:
        if not args.expected:
            ap.error("--sisimai needs --expected")
        results.append(measure_sisimai(scan, args.sisimai, args.expected, args.repeat))
    if args.flufl_tests:
        results.append(measure_flufl_tests(scan, args.flufl_tests, args.repeat))
    if not results:
        ap.error("give --sisimai/--expected, --flufl-tests, or both")
    if args.json:
        json.dump({"flufl.bounce": version, "results": [r.as_dict() for r in results]}, sys.stdout)
        print()
    else:
        print_text(results, version, args.details)
    return 0


if __name__ == "__main__":
    sys.exit(main())
