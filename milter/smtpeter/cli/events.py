"""`smtpeter events`, `smtpeter stats` and `smtpeter keys`: what happened to sent mail,
and the keys that sign tracking links."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shlex
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from smtpeter.cli import exits
from smtpeter.config import Config
from smtpeter.events import EVENT_TYPES, Event
from smtpeter.store import open_store, upkeep
from smtpeter.tracker import keys

_RELATIVE = re.compile(r"^(\d+)([mhd])$")


def parse_since(text: str) -> str:
    """`7d`, `12h`, `30m` ago, or an ISO 8601 date or time (UTC), as the store's
    timestamp format."""
    m = _RELATIVE.match(text)
    if m:
        unit = {"m": "minutes", "h": "hours", "d": "days"}[m.group(2)]
        when = datetime.now(UTC) - timedelta(**{unit: int(m.group(1))})
    else:
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"invalid --since {text!r}: use e.g. 7d, 12h, 30m, 2026-11-01 or "
                "2026-11-01T08:00:00Z"
            ) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# events' page size when --limit is not given.
LIMIT = 100


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid --limit {text!r}: a whole number, 1 or more")
    return value


def add_parsers(sub: Any) -> None:
    ev = sub.add_parser(
        "events",
        help="list opens, clicks, bounces and delivery results",
        description="List events, newest first, a page at a time: a table, or JSON lines "
        "with --json. When there are more, the page ends (on standard error) with the "
        "command for the next one. --follow prints the newest page oldest first, then each "
        "new event as it is recorded, until interrupted.",
    )
    ev.add_argument("--login", help="only messages sent by this login")
    ev.add_argument("--message", metavar="ID", help="a message's Message-ID, queue id or uid")
    ev.add_argument("--type", choices=EVENT_TYPES, help="only this kind of event")
    ev.add_argument("--tag", help="only events of messages with this x-smtpeter-tags tag")
    ev.add_argument("--since", type=parse_since, metavar="T", help="e.g. 7d, 12h, 2026-11-01")
    ev.add_argument(
        "--before",
        type=int,
        metavar="ID",
        help="the page after this event id (the last id of the previous page)",
    )
    ev.add_argument(
        "--limit", type=_positive, default=LIMIT, help=f"at most this many (default {LIMIT})"
    )
    ev.add_argument("--json", action="store_true", help="one JSON object per line")
    ev.add_argument(
        "--follow",
        "-f",
        action="store_true",
        help="then print new events as they are recorded (Ctrl-C stops)",
    )
    ev.add_argument(
        "--interval",
        type=float,
        default=1.0,
        metavar="S",
        help="with --follow, seconds between two looks at the store (default 1)",
    )

    st = sub.add_parser(
        "stats",
        help="messages, unique opens and clicks per login and day",
        description="Per login and per day messages were sent: messages, messages opened "
        "(unique opens), messages clicked (unique clicks), bounces.",
    )
    st.add_argument("--login", help="only this login")
    st.add_argument("--since", type=parse_since, metavar="T", help="e.g. 30d, 2026-11-01")
    st.add_argument("--tag", help="only messages with this x-smtpeter-tags tag")
    st.add_argument(
        "--reasons",
        action="store_true",
        help="instead: bounces and complaints per login, kind and reason, by when they"
        " came back (hard user-unknown, soft mailbox-full, complaint abuse, ...)",
    )
    st.add_argument("--json", action="store_true", help="one JSON object per line")

    sp = sub.add_parser(
        "store",
        help="the store's upkeep: finish an upgrade's backfill, prune old rows",
        description="status: the schema version and what upkeep has left to do. upkeep: "
        "count the rows an upgrade found (stats are counted live until then) and delete "
        "messages and events older than store.retention_days, in short transactions "
        "while the daemons run; smtpeter-upkeep.timer runs it hourly.",
    )
    sp.add_argument("action", choices=["status", "upkeep"])
    sp.add_argument(
        "--retention-days",
        type=int,
        metavar="N",
        help="keep N days instead of store.retention_days (0: prune nothing)",
    )
    sp.add_argument("--json", action="store_true", help="print JSON")

    k = sub.add_parser(
        "keys",
        help="list or rotate the keys that sign tracking links",
        description="Signing keys for click links and open pixels. rotate: new links are "
        "signed with a new key; links signed before keep working for "
        "tracker.key_retention_days.",
    )
    k.add_argument("action", choices=["list", "rotate"])
    k.add_argument("--json", action="store_true", help="print JSON")


def _print_events(found: list[Event], as_json: bool) -> None:
    for e in found:
        if as_json:
            print(json.dumps(dataclasses.asdict(e), ensure_ascii=False))
            continue
        what = e.url or " ".join(f"{k}={v}" for k, v in sorted(e.detail.items())) or "-"
        print(
            f"{e.id or 0:>9} {e.occurred_at[:19]:<20} {e.type:<9} "
            f"{(e.login or '-')[:16]:<16} {(e.recipient or '-')[:28]:<28} {what}"
        )


def run_events(args: argparse.Namespace, cfg: Config) -> int:
    if args.follow and args.before is not None:
        print("smtpeter events: --follow and --before do not go together", file=sys.stderr)
        return exits.USAGE
    store = open_store(cfg.store, create=False)
    filters = {"login": args.login, "message": args.message, "type": args.type,
               "since": args.since, "tag": args.tag}  # fmt: skip
    # One more than the page: whether there are more is then known, not guessed.
    found = store.events(**filters, before=args.before, limit=args.limit + 1)
    more = len(found) > args.limit
    found = found[: args.limit]
    if args.follow:
        found.reverse()  # as a log reads: oldest first
    if not args.json:
        print(f"{'ID':>9} {'TIME':<20} {'TYPE':<9} {'LOGIN':<16} {'RECIPIENT':<28} WHAT")
    _print_events(found, args.json)
    if more and not args.follow and found[-1].id is not None:
        # On stderr, so that --json output stays one event a line.
        print(f"more: {_next_page(args, found[-1].id)}", file=sys.stderr)
    if not args.follow:
        return exits.OK
    sys.stdout.flush()
    last = max((e.id or 0 for e in found), default=0)
    if not found:
        # Nothing matches yet: from the newest event recorded on.
        newest = store.events(limit=1)
        last = newest[0].id or 0 if newest else 0
    try:
        while True:
            time.sleep(args.interval)
            new = store.events(**filters, after=last, limit=1000)
            if new:
                _print_events(new, args.json)
                sys.stdout.flush()
                last = new[-1].id or last
    except KeyboardInterrupt:
        return exits.OK


def _next_page(args: argparse.Namespace, last: int) -> str:
    words = ["smtpeter", *(["--config", args.config] if args.config else []), "events"]
    for option in ("login", "message", "type", "tag", "limit"):
        value = getattr(args, option)
        if value is not None and not (option == "limit" and value == LIMIT):
            words += [f"--{option}", str(value)]
    if args.since is not None:
        words += ["--since", args.since]
    if args.json:
        words.append("--json")
    return shlex.join([*words, "--before", str(last)])


# (key, heading, width; a negative width is right-aligned) of each column.
_STATS_COLUMNS = (("login", "LOGIN", 24), ("day", "DAY", 10), ("messages", "MESSAGES", -8),
                  ("unique_opens", "OPENED", -7), ("unique_clicks", "CLICKED", -8),
                  ("bounces", "BOUNCES", -8), ("delivered", "DELIVERED", -9),
                  ("deferred", "DEFERRED", -8))  # fmt: skip
_REASON_COLUMNS = (("login", "LOGIN", 24), ("type", "TYPE", 9), ("kind", "KIND", 9),
                   ("reason", "REASON", 18), ("events", "EVENTS", -7),
                   ("recipients", "RECIPIENTS", -10))  # fmt: skip


def run_stats(args: argparse.Namespace, cfg: Config) -> int:
    store = open_store(cfg.store, create=False)
    if args.reasons:
        rows = store.bounce_reasons(login=args.login, since=args.since, tag=args.tag)
    else:
        rows = store.stats(login=args.login, since=args.since, tag=args.tag)
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return exits.OK
    columns = _REASON_COLUMNS if args.reasons else _STATS_COLUMNS

    def cell(value: object, width: int) -> str:
        text = str(value)[: abs(width)]
        return text.rjust(-width) if width < 0 else text.ljust(width)

    print(" ".join(cell(heading, width) for _, heading, width in columns).rstrip())
    for r in rows:
        print(" ".join(cell(r[key], width) for key, _, width in columns).rstrip())
    return exits.OK


def run_store(args: argparse.Namespace, cfg: Config) -> int:
    store = open_store(cfg.store, create=False)
    if args.action == "upkeep":
        days = cfg.store.retention_days if args.retention_days is None else args.retention_days
        if days < 0:
            print("smtpeter: --retention-days must be >= 0", file=sys.stderr)
            return exits.USAGE
        done = upkeep.run(store, retention_days=days)
        report: dict[str, object] = {
            "backfilled": done.backfilled,
            "indexed": done.indexed,
            "pruned": done.pruned,
            "longest_step_ms": round(done.longest_step * 1000, 1),
        }
    else:
        report = {"schema_version": store.schema_version(), **store.upkeep_status()}
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key}: {'-' if value is None else value}")
    return exits.OK


def run_keys(args: argparse.Namespace, cfg: Config) -> int:
    store = open_store(cfg.store)
    if args.action == "rotate":
        key = keys.rotate(store)
        print(json.dumps({"kid": key.kid, "rotated": True}) if args.json else
              f"new signing key {key.kid}; the previous keys are retired")  # fmt: skip
        return exits.OK
    listed: list[dict[str, str | None]] = [
        {
            "kid": k.kid,
            "created_at": datetime.fromtimestamp(k.created_at, UTC).isoformat(),
            "retired_at": (
                datetime.fromtimestamp(k.retired_at, UTC).isoformat() if k.retired_at else None
            ),
        }
        for k in store.signing_keys()
    ]
    if args.json:
        for item in listed:
            print(json.dumps(item))
    else:
        print(f"{'KEY':<10} {'CREATED':<26} RETIRED")
        for item in listed:
            created = str(item["created_at"])[:19]
            print(f"{item['kid']:<10} {created:<26} {item['retired_at'] or '-'}")
    if not listed:
        print("(no keys yet: the milter or tracker creates the first one)", file=sys.stderr)
    return exits.OK
