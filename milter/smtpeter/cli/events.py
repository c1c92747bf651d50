"""`smtpeter events`, `smtpeter stats` and `smtpeter keys`: what happened to sent mail,
and the keys that sign tracking links."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from smtpeter.cli import exits
from smtpeter.config import Config
from smtpeter.events import EVENT_TYPES
from smtpeter.store import open_store
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


def add_parsers(sub: Any) -> None:
    ev = sub.add_parser(
        "events",
        help="list opens, clicks and bounces",
        description="List tracking events, oldest first: a table, or JSON lines with --json.",
    )
    ev.add_argument("--login", help="only messages sent by this login")
    ev.add_argument("--message", metavar="ID", help="a message's Message-ID, queue id or uid")
    ev.add_argument("--type", choices=EVENT_TYPES, help="only this kind of event")
    ev.add_argument("--since", type=parse_since, metavar="T", help="e.g. 7d, 12h, 2026-11-01")
    ev.add_argument("--limit", type=int, default=1000, help="at most this many (default 1000)")
    ev.add_argument("--json", action="store_true", help="one JSON object per line")

    st = sub.add_parser(
        "stats",
        help="messages, unique opens and clicks per login and day",
        description="Per login and per day messages were sent: messages, messages opened "
        "(unique opens), messages clicked (unique clicks), bounces.",
    )
    st.add_argument("--login", help="only this login")
    st.add_argument("--since", type=parse_since, metavar="T", help="e.g. 30d, 2026-11-01")
    st.add_argument("--json", action="store_true", help="one JSON object per line")

    k = sub.add_parser(
        "keys",
        help="list or rotate the keys that sign tracking links",
        description="Signing keys for click links and open pixels. rotate: new links are "
        "signed with a new key; links signed before keep working for "
        "tracker.key_retention_days.",
    )
    k.add_argument("action", choices=["list", "rotate"])
    k.add_argument("--json", action="store_true", help="print JSON")


def run_events(args: argparse.Namespace, cfg: Config) -> int:
    store = open_store(cfg.store, create=False)
    found = store.events(
        login=args.login, message=args.message, type=args.type, since=args.since, limit=args.limit
    )
    if args.json:
        for e in found:
            print(json.dumps(dataclasses.asdict(e), ensure_ascii=False))
        return exits.OK
    print(f"{'TIME':<20} {'TYPE':<6} {'LOGIN':<16} {'RECIPIENT':<28} WHAT")
    for e in found:
        what = e.url or " ".join(f"{k}={v}" for k, v in sorted(e.detail.items())) or "-"
        print(
            f"{e.occurred_at[:19]:<20} {e.type:<6} {(e.login or '-')[:16]:<16} "
            f"{(e.recipient or '-')[:28]:<28} {what}"
        )
    return exits.OK


def run_stats(args: argparse.Namespace, cfg: Config) -> int:
    store = open_store(cfg.store, create=False)
    rows = store.stats(login=args.login, since=args.since)
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return exits.OK
    print(f"{'LOGIN':<24} {'DAY':<10} {'MESSAGES':>8} {'OPENED':>7} {'CLICKED':>8} {'BOUNCES':>8}")
    for r in rows:
        print(
            f"{str(r['login'])[:24]:<24} {r['day']:<10} {r['messages']:>8} "
            f"{r['unique_opens']:>7} {r['unique_clicks']:>8} {r['bounces']:>8}"
        )
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
