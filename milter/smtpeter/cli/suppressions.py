"""`smtpeter suppressions list|add|remove`: the addresses a login's mail is no longer
sent to (see smtpeter.suppression for what puts them there)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from smtpeter import logins
from smtpeter.cli import exits
from smtpeter.config import Config
from smtpeter.logins import LoginError
from smtpeter.store import Suppression, open_store


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "suppressions",
        help="list, add or remove suppressed recipients",
        description="The suppression list: recipients a login's mail is refused for at "
        "RCPT (after a hard bounce, a complaint or repeated soft bounces of a mailbox), "
        "when the login's policy is refuse (`smtpeter login set L --suppression off` "
        "turns it off for a login).",
    )
    ssub = p.add_subparsers(dest="suppressions_command", metavar="COMMAND", required=True)
    listing = ssub.add_parser("list", help="list entries, newest first")
    listing.add_argument("--login", help="only this login's entries")
    listing.add_argument("--limit", type=int, default=1000, help="at most N (default 1000)")
    listing.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    add = ssub.add_parser("add", help="suppress an address for a login")
    add.add_argument("address", help="the recipient address")
    add.add_argument("--login", required=True, help="the login whose mail it is refused for")
    add.add_argument("--reason", default="manual", help="why, shown in the refusal")
    add.add_argument("--json", action="store_true", help="print JSON instead of text")
    remove = ssub.add_parser("remove", help="take an address off a login's list")
    remove.add_argument("address", help="the recipient address")
    remove.add_argument("--login", required=True, help="the login whose list it is on")
    remove.add_argument("--json", action="store_true", help="print JSON instead of text")


def _check_address(address: str) -> str:
    bare = address.strip().strip("<>")
    local, at, domain = bare.rpartition("@")
    if not at or not local or not domain or any(c.isspace() or c in "<>" for c in bare):
        raise LoginError(f"invalid address {address!r}: use local@domain")
    return bare.lower()


def run(args: argparse.Namespace, cfg: Config) -> int:
    cmd = args.suppressions_command
    try:
        store = open_store(cfg.store, create=False)
        if cmd == "list":
            if args.login is not None:
                logins.check_name(args.login)
            entries = store.suppressions(login=args.login, limit=args.limit)
            if args.json:
                for entry in entries:
                    print(json.dumps(dataclasses.asdict(entry)))
            else:
                _table(entries)
            return exits.OK
        logins.check_name(args.login)
        address = _check_address(args.address)
        if cmd == "add":
            if store.get_login(args.login) is None:
                raise LoginError(f"no login named {args.login!r}")
            added = store.suppress(args.login, address, args.reason)
            result = {"login": args.login, "address": address, "added": added}
            text = f"{address} suppressed for login {args.login}"
            if not added:
                text = f"{address} was already suppressed for login {args.login}"
        else:
            removed = store.unsuppress(args.login, address)
            if not removed:
                print(
                    f"smtpeter: {address} is not suppressed for login {args.login}",
                    file=sys.stderr,
                )
                return exits.NOUSER
            result = {"login": args.login, "address": address, "removed": True}
            text = f"{address} removed from the suppression list of login {args.login}"
        print(json.dumps(result) if args.json else text)
    except LoginError as e:
        print(f"smtpeter: {e}", file=sys.stderr)
        return exits.NOUSER if str(e).startswith("no login") else exits.DATAERR
    return exits.OK


def _table(entries: list[Suppression]) -> None:
    print(f"{'LOGIN':<20} {'ADDRESS':<40} {'SINCE':<10} {'STATUS':<7} REASON")
    for e in entries:
        print(
            f"{e.login:<20} {e.address:<40} {e.created_at[:10]:<10} {e.status or '-':<7} {e.reason}"
        )
