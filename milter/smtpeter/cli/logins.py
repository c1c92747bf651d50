"""`smtpeter login ...`: create, list, show, change, rotate, disable, enable, delete."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from smtpeter import logins
from smtpeter.cli import exits
from smtpeter.config import Config
from smtpeter.features import NAMES, FeatureSet
from smtpeter.logins import Login, LoginError
from smtpeter.store import SUPPRESSION_POLICIES, open_store


def add_parser(sub: Any) -> None:
    p = sub.add_parser("login", help="manage SMTP logins", description="Manage SMTP logins.")
    lsub = p.add_subparsers(dest="login_command", metavar="COMMAND", required=True)

    def cmd(name: str, help: str, with_name: bool = True) -> argparse.ArgumentParser:
        c: argparse.ArgumentParser = lsub.add_parser(name, help=help, description=help)
        if with_name:
            c.add_argument("name", help="login name: letters, digits, '.', '_', '-', '@'")
        c.add_argument("--json", action="store_true", help="print JSON instead of text")
        return c

    create = cmd("create", "create a login and print its password (shown once)")
    for f in NAMES:
        create.add_argument(f"--{f}", action="store_true", help=f"turn {f} on for this login")
    create.add_argument("--disabled", action="store_true", help="create the login disabled")
    create.add_argument(
        "--rewrite-signed", action="store_true",
        help="apply content features to mail that already has a DKIM-Signature (breaks it)",
    )  # fmt: skip
    create.add_argument(
        "--suppression", choices=SUPPRESSION_POLICIES, default="refuse",
        help="refuse: a recipient on this login's suppression list is refused at RCPT "
        "(the default); off: mail to it goes out",
    )  # fmt: skip
    cmd("list", "list logins", with_name=False)
    cmd("show", "show one login")
    change = cmd("set", "turn features on or off for a login")
    for f in NAMES:
        change.add_argument(
            f"--{f}", dest=f, action=argparse.BooleanOptionalAction, default=None,
            help=f"turn {f} on (--{f}) or off (--no-{f})",
        )  # fmt: skip
    change.add_argument(
        "--rewrite-signed", dest="rewrite_signed", action=argparse.BooleanOptionalAction,
        default=None, help="rewrite the body of DKIM-signed mail too (--rewrite-signed) or "
        "leave it as signed (--no-rewrite-signed, the default)",
    )  # fmt: skip
    change.add_argument(
        "--suppression", choices=SUPPRESSION_POLICIES, default=None,
        help="refuse suppressed recipients at RCPT (refuse) or send to them (off)",
    )  # fmt: skip
    cmd("rotate", "give a login a new password and print it (shown once)")
    cmd("disable", "refuse AUTH for a login (its messages in the queue still go out)")
    cmd("enable", "allow AUTH for a disabled login")
    cmd("delete", "delete a login")


def _as_dict(login: Login, password: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": login.name,
        "enabled": login.enabled,
        "features": login.features.as_dict(),
        "rewrite_signed": login.rewrite_signed,
        "suppression": login.suppression,
        "created_at": login.created_at,
        "updated_at": login.updated_at,
    }
    if password is not None:
        data["password"] = password
    return data


def _print(login: Login, as_json: bool, password: str | None = None) -> None:
    if as_json:
        print(json.dumps(_as_dict(login, password)))
        return
    print(f"login:    {login.name}")
    if password is not None:
        print(f"password: {password}")
    print(f"enabled:  {'yes' if login.enabled else 'no'}")
    print(f"features: {', '.join(login.features.enabled()) or 'none'}")
    print(f"signed:   {'rewritten' if login.rewrite_signed else 'left as signed'}")
    refused = "refused at RCPT" if login.suppression == "refuse" else "off (mailed anyway)"
    print(f"suppressed recipients: {refused}")
    print(f"created:  {login.created_at}")
    print(f"updated:  {login.updated_at}")
    if password is not None:
        print(
            "\nThe password is shown only this once; it includes the spaces. "
            "Use `smtpeter login rotate` for a new one.",
            file=sys.stderr,
        )


def run(args: argparse.Namespace, cfg: Config) -> int:
    cmd = args.login_command
    try:
        if cmd != "list":
            logins.check_name(args.name)
        store = open_store(cfg.store, create=cmd == "create")
        if cmd == "create":
            password = logins.generate_password()
            login = store.create_login(
                Login(
                    name=args.name,
                    password_hash=logins.hash_password(password),
                    enabled=not args.disabled,
                    features=FeatureSet(**{f: bool(getattr(args, f)) for f in NAMES}),
                    rewrite_signed=args.rewrite_signed,
                    suppression=args.suppression,
                )
            )
            _print(login, args.json, password)
        elif cmd == "list":
            all_logins = store.list_logins()
            if args.json:
                for login in all_logins:
                    print(json.dumps(_as_dict(login)))
            else:
                print(f"{'LOGIN':<32} {'ENABLED':<8} FEATURES")
                for login in all_logins:
                    features = ",".join(login.features.enabled()) or "-"
                    print(f"{login.name:<32} {'yes' if login.enabled else 'no':<8} {features}")
        elif cmd == "show":
            found = store.get_login(args.name)
            if found is None:
                raise LoginError(f"no login named {args.name!r}")
            _print(found, args.json)
        elif cmd == "set":
            changes = {f: getattr(args, f) for f in NAMES if getattr(args, f) is not None}
            if not changes and args.rewrite_signed is None and args.suppression is None:
                print(
                    "smtpeter: login set: name at least one --FEATURE, --no-FEATURE,"
                    " --[no-]rewrite-signed or --suppression",
                    file=sys.stderr,
                )
                return exits.USAGE
            updated = store.update_login(
                args.name,
                features=changes,
                rewrite_signed=args.rewrite_signed,
                suppression=args.suppression,
            )
            _print(updated, args.json)
        elif cmd == "rotate":
            password = logins.generate_password()
            login = store.update_login(args.name, password_hash=logins.hash_password(password))
            _print(login, args.json, password)
        elif cmd in ("disable", "enable"):
            _print(store.update_login(args.name, enabled=cmd == "enable"), args.json)
        elif cmd == "delete":
            store.delete_login(args.name)
            if args.json:
                print(json.dumps({"name": args.name, "deleted": True}))
            else:
                print(f"login {args.name} deleted")
    except LoginError as e:
        print(f"smtpeter: {e}", file=sys.stderr)
        return exits.NOUSER if str(e).startswith("no login") else exits.DATAERR
    return exits.OK
