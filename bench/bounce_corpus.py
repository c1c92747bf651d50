"""Bounce recognition measured on Sisimai's public corpus of real bounces.

Usage::

    PYTHONPATH=milter .venv/bin/python bench/bounce_corpus.py \\
        --corpus /tmp/sisimai --expected /tmp/sisimai/expected.json [--json] [--details]

It runs :func:`smtpeter.bounces.detect.detect` over every ``*.eml`` under ``--corpus``
and compares what it returns with what Sisimai's own test tables expect of each file.
Nothing of the corpus is kept in this repository; get it like this:

**The corpus** is https://github.com/sisimai/set-of-emails (BSD 2-Clause, (C) 2014
azumakuniyuki). Put its ``maildir/bsd/*.eml`` (about 630 real bounces named
``lhost-<MTA>-NN.eml``, ``rhost-<provider>-NN.eml``, ``rfc3464-NN.eml``,
``rfc3834-NN.eml`` (auto-replies), ``arf-NN.eml`` (feedback reports)) in
``<corpus>/bsd/`` and its ``maildir/not/*.eml`` (non-bounces) in ``<corpus>/not/``::

    git clone --depth 1 https://github.com/sisimai/set-of-emails /tmp/set-of-emails
    mkdir -p /tmp/sisimai && cp -r /tmp/set-of-emails/maildir/{bsd,not} /tmp/sisimai/

Every file in a directory named ``not`` is taken for a non-bounce.

**The expectations** are the per-file tables of Sisimai's test suites: in
https://github.com/sisimai/go-sisimai, ``fact/NN-lhost-<engine>_test.go``,
``fact/NN-rhost-<provider>_test.go``, ``fact/90-rfc3464_test.go``,
``fact/91-rfc3834_test.go`` and ``fact/95-arf_test.go``, the ``publiclist`` of each:
one row per failed recipient ``{"02", 1, "5.1.1", "550", "userunknown", true, ""}``
(file number, index, status, reply code, reason, hard bounce, feedback type). The
Office 365 samples have a table only in https://github.com/sisimai/rb-sisimai,
``test/public/lhost-office365.rb`` (``'01' => [['5.1.10', '550', 'userunknown',
true]]``). ``--build-expected`` turns those tables into the ``--expected`` file::

    python bench/bounce_corpus.py --build-expected /tmp/sisimai/expected.json \\
        --go-sisimai /path/to/go-sisimai [--rb-sisimai /path/to/rb-sisimai] \\
        --corpus /tmp/sisimai

(the repositories are git directories, read with ``git show HEAD:...``). The file is
``{"lhost-postfix-02.eml": [{"status": "5.2.1", "replycode": "550", "reason":
"userunknown", "hard": true}, ...], ...}``. The tables give no recipient addresses,
so addresses are not compared, only how many failed recipients were found.

**What is measured**, per family (the file name less ``-NN.eml``) and in total:

- *recognised*: of the messages Sisimai reads as a bounce (a row whose reason is not
  ``delivered``, ``feedback`` or ``vacation``), those with a failure of kind hard,
  soft or delay;
- *recipients*: of those, the ones where we found as many failed recipients as
  Sisimai (its bounce rows, against our failures that are not auto-replies);
- our failures and Sisimai's bounce rows are paired (:func:`pair`: by equal status,
  else in order); on the pairs:
  *status class* (the first digit of the status, where both give one), *hard/soft*
  (our kind hard against Sisimai's hard flag; soft and delay count as not hard,
  ``unknown`` as a disagreement) and *reason* (Sisimai's reason mapped to ours by
  :data:`REASON_MAP`, printed with the results; a delay, which has no reason of ours,
  agrees with ``expired``, the reason Sisimai gives delays);
- *crashes*: an exception out of ``detect`` or a failure it logged;
- *false hard*: a hard failure on a message Sisimai calls an auto-reply
  (``vacation``), a feedback report (``feedback``) or a delivery report
  (``delivered``), on a delay notice (a delivery-status whose every ``Action:`` is
  ``delayed``), or on a non-bounce; *full mailbox hard*: a hard verdict on a
  recipient Sisimai calls ``mailboxfull``;
- *parse time*: per message the best of ``--repeat`` runs of ``detect``; median, p95
  and maximum over the corpus.

Families are listed by the number of their messages that are *wrong*: not
recognised, or with a pair whose status class or hard/soft verdict disagrees, or a
false hard bounce, or a crash. ``--details`` lists every such message.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from smtpeter.bounces.detect import Failure, Report, detect

#: Sisimai's reasons that are no bounce: no failed recipient is expected for them.
NOT_BOUNCE = frozenset({"delivered", "feedback", "vacation"})

#: Sisimai's reason -> the reasons of ours (smtpeter.bounces.reasons) that agree with it.
#: The first is the best fit; the others are also counted as agreeing.
REASON_MAP: dict[str, tuple[str, ...]] = {
    "userunknown": ("user-unknown",),
    "hasmoved": ("user-unknown",),  # 5.1.6 mailbox moved, hard in both
    "hostunknown": ("host-unknown",),
    "notaccept": ("not-accepted", "host-unknown", "blocked"),  # null MX, or refuses us
    "mailboxfull": ("mailbox-full",),
    "systemfull": ("system-error", "mailbox-full"),
    "exceedlimit": ("message-too-large",),
    "mesgtoobig": ("message-too-large",),
    "expired": ("expired",),
    "suspend": ("mailbox-disabled",),
    "filtered": ("content-rejected", "policy", "mailbox-disabled"),
    "contenterror": ("content-rejected",),
    "notcompliantrfc": ("content-rejected", "policy"),
    "virusdetected": ("content-rejected",),
    "spamdetected": ("spam-detected",),
    "blocked": ("blocked",),
    "badreputation": ("blocked",),
    "requireptr": ("blocked", "policy"),
    "speeding": ("blocked", "policy"),
    "toomanyconn": ("blocked", "network-error", "system-error"),
    "rejected": ("policy", "blocked"),  # the envelope sender was refused
    "norelaying": ("policy",),
    "authfailure": ("policy",),  # SPF, DKIM, DMARC
    "policyviolation": ("policy",),
    "securityerror": ("policy",),
    "failedstarttls": ("policy", "network-error"),
    "networkerror": ("network-error",),
    "systemerror": ("system-error",),
    "mailererror": ("system-error",),
    "syntaxerror": ("system-error", "other"),
    "onhold": ("other",),
    "undefined": ("other",),
}

_FAMILY = re.compile(r"^(.*?)-\d+\.eml$")
_ACTION = re.compile(rb"^Action:[ \t]*([A-Za-z-]+)", re.I | re.M)
_GO_ROW = re.compile(
    r'\{"(\d+)"\s*,\s*(\d+)\s*,\s*"([^"]*)"\s*,\s*"([^"]*)"\s*,\s*"([^"]*)"\s*,'
    r'\s*(true|false)\s*,\s*"([^"]*)"\s*\}'
)
_RB_FILE = re.compile(r"'(\d+)'\s*=>\s*\[(.*?)\]\s*,?\s*$", re.M)
_RB_ROW = re.compile(r"\['([^']*)',\s*'([^']*)',\s*'([^']*)',\s*(true|false)(?:,\s*'([^']*)')?\]")
#: set-of-emails renamed these samples after go-sisimai's tables were written.
RENAMED = {"lhost-interscanmss": "lhost-trendmicro", "lhost-mailmarshalsmtp": "lhost-mailmarshal"}


@dataclass(frozen=True)
class Expected:
    """One of Sisimai's rows: a recipient of a message and its verdict."""

    status: str
    reason: str
    hard: bool
    replycode: str = ""
    feedback_type: str = ""


@dataclass
class Counts:
    """The tallies of one family, or of the whole corpus."""

    messages: int = 0
    no_expectation: int = 0
    bounces: int = 0
    recognised: int = 0
    recipients_agree: int = 0
    status_pairs: int = 0
    status_agree: int = 0
    hard_pairs: int = 0
    hard_agree: int = 0
    reason_pairs: int = 0
    reason_agree: int = 0
    crashes: int = 0
    not_bounces: int = 0
    false_hard: int = 0
    full_hard: int = 0
    wrong: int = 0

    def add(self, other: Counts) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)


@dataclass
class Outcome:
    """What happened to one message."""

    name: str
    family: str
    report: Report | None
    seconds: float
    crashed: str | None
    expected: list[Expected] | None
    non_bounce: bool
    delay_only: bool
    counts: Counts = field(default_factory=Counts)
    problems: list[str] = field(default_factory=list)


class _Catch(logging.Handler):
    """Keeps what ``detect`` logs: it logs, rather than raises, when a detector fails."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def family_of(name: str, non_bounce: bool) -> str:
    if non_bounce:
        return "not (non-bounces)"
    m = _FAMILY.match(name)
    return m.group(1) if m else name


def load_expected(path: Path) -> dict[str, list[Expected]]:
    data: dict[str, list[dict[str, Any]]] = json.loads(path.read_text())
    return {
        name: [
            Expected(
                status=str(r.get("status", "")),
                reason=str(r.get("reason", "")),
                hard=bool(r.get("hard", False)),
                replycode=str(r.get("replycode", "")),
                feedback_type=str(r.get("feedback_type", "")),
            )
            for r in rows
        ]
        for name, rows in data.items()
    }


def messages(corpus: Path) -> Iterator[tuple[Path, bool]]:
    """Every ``*.eml`` under the corpus, and whether it is in a ``not`` directory."""
    for path in sorted(corpus.rglob("*.eml")):
        yield path, "not" in path.relative_to(corpus).parts[:-1]


def run_one(raw: bytes, repeat: int, catch: _Catch) -> tuple[Report | None, float, str | None]:
    best = float("inf")
    report: Report | None = None
    crashed: str | None = None
    for _ in range(max(1, repeat)):
        catch.records.clear()
        start = time.perf_counter()
        try:
            report = detect(raw)
        except Exception as exc:  # noqa: BLE001 - counting crashes is the point
            crashed = f"{type(exc).__name__}: {exc}"
        best = min(best, time.perf_counter() - start)
        if catch.records and crashed is None:
            record = catch.records[0]
            crashed = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                exc_value = record.exc_info[1]
                crashed += f" ({type(exc_value).__name__}: {exc_value})"
    return report, best, crashed


def _verdict(failure: Failure) -> str:
    return {"hard": "hard", "soft": "soft", "delay": "soft"}.get(failure.kind, failure.kind)


def describe(failures: Iterable[Failure]) -> str:
    parts = [f"{f.kind}/{f.status or '-'}/{f.reason or '-'}" for f in failures]
    return ", ".join(parts) if parts else "no failures"


def pair(failed: list[Failure], rows: list[Expected]) -> list[tuple[Failure, Expected]]:
    """Our failures and Sisimai's rows, paired: a row takes the first failure left with
    the same status, else the first failure left (the tables name no recipients)."""
    left = list(failed)
    pairs: list[tuple[Failure, Expected]] = []
    for row in rows:
        if not left:
            break
        ours = next((f for f in left if f.status and f.status == row.status), left[0])
        left.remove(ours)
        pairs.append((ours, row))
    return pairs


def judge(out: Outcome) -> None:
    """Fill in the counts and problems of one message."""
    c = out.counts
    c.messages = 1
    failures = list(out.report.failures) if out.report else []
    failed = [f for f in failures if f.kind != "autoreply"]
    hard = [f for f in failures if f.kind == "hard"]
    if out.crashed:
        c.crashes = 1
        out.problems.append(f"crash: {out.crashed}")
    if out.non_bounce:
        c.not_bounces = 1
        if hard:
            c.false_hard = 1
            out.problems.append("false hard bounce on a non-bounce")
        return
    if out.expected is None:
        c.no_expectation = 1
        return
    rows = [e for e in out.expected if e.reason not in NOT_BOUNCE]
    if not rows or out.delay_only:
        c.not_bounces = 1
        if hard:
            c.false_hard = 1
            what = "delay notice" if out.delay_only else "/".join(e.reason for e in out.expected)
            out.problems.append(f"false hard bounce on a {what}")
        if not rows:
            return
    c.bounces = 1
    if any(f.kind in ("hard", "soft", "delay") for f in failures):
        c.recognised = 1
    else:
        out.problems.append("not recognised")
    if len(failed) == len(rows):
        c.recipients_agree = 1
    wrong = not c.recognised
    for ours, theirs in pair(failed, rows):
        if ours.status and theirs.status:
            c.status_pairs += 1
            if ours.status[0] == theirs.status[0]:
                c.status_agree += 1
            else:
                wrong = True
                out.problems.append(f"status {ours.status} vs {theirs.status}")
        c.hard_pairs += 1
        if (_verdict(ours) == "hard") == theirs.hard and _verdict(ours) != "unknown":
            c.hard_agree += 1
        else:
            wrong = True
            out.problems.append(f"{ours.kind} vs {'hard' if theirs.hard else 'soft'}")
        if theirs.reason == "mailboxfull" and ours.kind == "hard":
            c.full_hard += 1
            out.problems.append("full mailbox called hard")
        if theirs.reason in REASON_MAP:
            c.reason_pairs += 1
            # a delay has no reason of ours; Sisimai calls delays "expired"
            mine = ours.reason or ("expired" if ours.kind == "delay" else None)
            if mine in REASON_MAP[theirs.reason]:
                c.reason_agree += 1
    c.wrong = int(wrong or bool(c.false_hard) or bool(c.crashes))


def measure(corpus: Path, expected: dict[str, list[Expected]], repeat: int) -> list[Outcome]:
    catch = _Catch()
    logger = logging.getLogger("smtpeter")
    logger.addHandler(catch)
    logger.propagate = False  # counted, not printed
    outcomes: list[Outcome] = []
    try:
        for path, non_bounce in messages(corpus):
            raw = path.read_bytes()
            report, seconds, crashed = run_one(raw, repeat, catch)
            actions = {a.lower() for a in _ACTION.findall(raw)}
            out = Outcome(
                name=path.name,
                family=family_of(path.name, non_bounce),
                report=report,
                seconds=seconds,
                crashed=crashed,
                expected=None if non_bounce else expected.get(path.name),
                non_bounce=non_bounce,
                delay_only=actions == {b"delayed"},
            )
            judge(out)
            outcomes.append(out)
    finally:
        logger.removeHandler(catch)
        logger.propagate = True
    return outcomes


def _pct(n: int, d: int) -> str:
    return f"{n}/{d} {100 * n / d:.1f}%" if d else "-"


def tables(outcomes: list[Outcome]) -> tuple[dict[str, Counts], Counts]:
    families: dict[str, Counts] = {}
    total = Counts()
    for out in outcomes:
        families.setdefault(out.family, Counts()).add(out.counts)
        total.add(out.counts)
    return families, total


def timing(outcomes: list[Outcome]) -> dict[str, float]:
    ms = sorted(o.seconds * 1000 for o in outcomes)
    if not ms:
        return {}
    return {
        "median_ms": statistics.median(ms),
        "p95_ms": ms[min(len(ms) - 1, int(0.95 * len(ms)))],
        "max_ms": ms[-1],
    }


COLUMNS = (
    ("family", 26),
    ("msgs", 5),
    ("wrong", 5),
    ("recognised", 15),
    ("recipients", 15),
    ("status class", 15),
    ("hard/soft", 15),
    ("reason", 15),
    ("crash", 5),
    ("false hard", 10),
)


def _row(name: str, c: Counts) -> str:
    cells = (
        name,
        str(c.messages),
        str(c.wrong),
        _pct(c.recognised, c.bounces),
        _pct(c.recipients_agree, c.bounces),
        _pct(c.status_agree, c.status_pairs),
        _pct(c.hard_agree, c.hard_pairs),
        _pct(c.reason_agree, c.reason_pairs),
        str(c.crashes),
        f"{c.false_hard}/{c.not_bounces}",
    )
    return " ".join(
        cell.ljust(w) if i == 0 else cell.rjust(w)
        for i, (cell, (_, w)) in enumerate(zip(cells, COLUMNS, strict=True))
    )


def _header() -> str:
    return " ".join(n.ljust(w) if i == 0 else n.rjust(w) for i, (n, w) in enumerate(COLUMNS))


def _order(families: dict[str, Counts]) -> list[tuple[str, Counts]]:
    return sorted(families.items(), key=lambda kv: (-kv[1].wrong, -kv[1].messages, kv[0]))


def print_text(outcomes: list[Outcome], details: bool) -> None:
    families, total = tables(outcomes)
    t = timing(outcomes)
    print("Sisimai reason -> ours (first is the best fit):")
    for theirs, ours in REASON_MAP.items():
        print(f"  {theirs:16} -> {', '.join(ours)}")
    print(f"  {'/'.join(sorted(NOT_BOUNCE)):16} -> no failure expected (not a bounce)")
    print()
    print("Totals")
    print(_header())
    print(_row("all", total))
    print(
        f"messages without a Sisimai expectation: {total.no_expectation}; "
        f"full mailbox called hard: {total.full_hard}; "
        f"parse time median {t.get('median_ms', 0):.3f} ms, p95 {t.get('p95_ms', 0):.3f} ms, "
        f"max {t.get('max_ms', 0):.3f} ms"
    )
    print()
    print("Per family (most wrong first; false hard = false hard / messages that are no bounce)")
    print(_header())
    for name, c in _order(families):
        print(_row(name, c))
    if details:
        print()
        print("Messages judged wrong")
        for out in outcomes:
            if not out.problems:
                continue
            got = describe(out.report.failures) if out.report else "no report"
            det = out.report.detector if out.report else "-"
            theirs = ", ".join(
                f"{e.reason}/{e.status or '-'}/{'hard' if e.hard else 'soft'}"
                for e in out.expected or []
            )
            print(f"  {out.name}: ours {det}: {got}; Sisimai: {theirs or '-'}")
            print(f"      {'; '.join(out.problems)}")
            for f in out.report.failures[:3] if out.report else ():
                print(f"      diagnostic: {(f.diagnostic or '-')[:150]!r}")
        crashes = [o for o in outcomes if o.crashed]
        print(f"\nCrashes: {len(crashes)}")
        for o in crashes:
            print(f"  {o.name}: {o.crashed}")


def as_json(outcomes: list[Outcome]) -> dict[str, Any]:
    families, total = tables(outcomes)
    return {
        "reason_map": {k: list(v) for k, v in REASON_MAP.items()},
        "total": asdict(total),
        "timing": timing(outcomes),
        "families": {name: asdict(c) for name, c in _order(families)},
        "messages": [
            {
                "file": o.name,
                "family": o.family,
                "detector": o.report.detector if o.report else None,
                "failures": [
                    {
                        "recipient": f.recipient,
                        "kind": f.kind,
                        "status": f.status,
                        "reason": f.reason,
                    }
                    for f in (o.report.failures if o.report else ())
                ],
                "expected": [asdict(e) for e in o.expected] if o.expected is not None else None,
                "ms": round(o.seconds * 1000, 4),
                "crash": o.crashed,
                "problems": o.problems,
            }
            for o in outcomes
        ],
    }


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    )
    return done.stdout


def build_expected(
    go: Path, rb: Path | None, corpus: Path | None
) -> dict[str, list[dict[str, Any]]]:
    """Sisimai's public test tables as ``{file name: [row, ...]}``."""
    out: dict[str, list[dict[str, Any]]] = {}
    for path in _git(go, "ls-tree", "--name-only", "HEAD", "fact/").split():
        if not path.endswith("_test.go"):
            continue
        text = _git(go, "show", "HEAD:" + path)
        m = re.search(r"func Test(Lhost|Rhost)?(\w+)\(t", text)
        if m is None or "publiclist" not in text:
            continue
        kind = {"Lhost": "lhost-", "Rhost": "rhost-"}.get(m.group(1) or "", "")
        prefix = kind + m.group(2).lower()
        prefix = RENAMED.get(prefix, prefix)
        public = text.split("publiclist", 1)[1].split("EngineTest(", 1)[0]
        per_file: dict[str, dict[int, dict[str, Any]]] = {}
        for label, index, status, code, reason, hard, other in _GO_ROW.findall(public):
            row: dict[str, Any] = {"status": status, "replycode": code, "reason": reason}
            row["hard"] = hard == "true"
            if other:
                row["feedback_type"] = other
            per_file.setdefault(label, {})[int(index)] = row
        for label, rows in per_file.items():
            out[f"{prefix}-{label}.eml"] = [rows[i] for i in sorted(rows)]
    if rb is not None:
        # Only the Office 365 samples, which go-sisimai has no table for; rb-sisimai's
        # other rows may describe older files of the same name.
        text = _git(rb, "show", "HEAD:test/public/lhost-office365.rb")
        for label, body in _RB_FILE.findall(text):
            name = f"lhost-office365-{label}.eml"
            rows_rb = [
                {"status": s, "replycode": c, "reason": r, "hard": h == "true"}
                for s, c, r, h, _ in _RB_ROW.findall(body + "]")
            ]
            if rows_rb and name not in out:
                out[name] = rows_rb
    if corpus is not None:
        present = {p.name for p, _ in messages(corpus)}
        out = {k: v for k, v in out.items() if k in present}
    return dict(sorted(out.items()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--corpus", type=Path, help="directory of *.eml (non-bounces under not/)")
    ap.add_argument("--expected", type=Path, help="Sisimai's expectations, JSON")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--details", action="store_true", help="list every message judged wrong")
    ap.add_argument("--repeat", type=int, default=3, help="runs per message; the best is timed")
    ap.add_argument(
        "--build-expected",
        type=Path,
        metavar="OUT",
        help="write the expectations from Sisimai's test tables, then stop",
    )
    ap.add_argument("--go-sisimai", type=Path, help="go-sisimai git directory")
    ap.add_argument("--rb-sisimai", type=Path, help="rb-sisimai git directory (Office 365)")
    args = ap.parse_args(argv)
    if args.build_expected:
        if args.go_sisimai is None:
            ap.error("--build-expected needs --go-sisimai")
        table = build_expected(args.go_sisimai, args.rb_sisimai, args.corpus)
        args.build_expected.write_text(json.dumps(table, indent=1) + "\n")
        print(f"{len(table)} files, {sum(len(v) for v in table.values())} rows")
        return 0
    if args.corpus is None or args.expected is None:
        ap.error("--corpus and --expected are required")
    outcomes = measure(args.corpus, load_expected(args.expected), args.repeat)
    if args.json:
        json.dump(as_json(outcomes), sys.stdout, indent=1)
        print()
    else:
        print_text(outcomes, args.details)
    return 0


if __name__ == "__main__":
    sys.exit(main())
