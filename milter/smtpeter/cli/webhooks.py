"""`smtpeter webhooks add|list|remove|test|rotate-secret|retry|dispatch`: a login's
signed webhook endpoints, and the dispatcher that delivers to them."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from smtpeter import logins
from smtpeter.cli import exits
from smtpeter.config import Config
from smtpeter.logins import LoginError
from smtpeter.store import Store, open_store
from smtpeter.store.webhooks import Webhook, WebhookError
from smtpeter.webhooks import WEBHOOK_TYPES, parse_types, signing
from smtpeter.webhooks.targets import TargetError, resolve

_EVENTS_HELP = f"comma-separated event types ({','.join(WEBHOOK_TYPES)}; default: all)"


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "webhooks",
        help="a login's signed webhook endpoints, and their dispatcher",
        description="Every event of a login's messages (open, click, bounce, delivered, "
        "...) POSTed as signed JSON to the login's endpoints by the dispatcher "
        "(smtpeter webhooks dispatch, smtpeter-webhooks.service).",
    )
    wsub = p.add_subparsers(dest="webhooks_command", metavar="COMMAND", required=True)
    add = wsub.add_parser("add", help="add an endpoint; prints its secret once")
    add.add_argument("login")
    add.add_argument("--url", required=True, help="http:// or https:// URL to POST to")
    add.add_argument("--events", metavar="TYPES", help=_EVENTS_HELP)
    add.add_argument("--json", action="store_true", help="print JSON instead of text")
    listing = wsub.add_parser("list", help="endpoints with their backlog")
    listing.add_argument("login", nargs="?", help="only this login's endpoints")
    listing.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    for name, text in (
        ("remove", "remove an endpoint and its undelivered events"),
        ("test", "POST one signed test event to an endpoint now; print the reply"),
        ("rotate-secret", "give an endpoint a new secret (printed once); both sign a while"),
        ("retry", "make an endpoint's failed events due again"),
    ):
        cmd = wsub.add_parser(name, help=text)
        cmd.add_argument("login")
        cmd.add_argument("--url", help="the endpoint (needed when the login has several)")
        if name == "rotate-secret":
            cmd.add_argument(
                "--overlap-hours",
                type=float,
                default=24.0,
                help="sign with the old secret too for this long (default 24)",
            )
        cmd.add_argument("--json", action="store_true", help="print JSON instead of text")
    wsub.add_parser(
        "dispatch",
        help="run the dispatcher (foreground)",
        description="Deliver the outbox to every endpoint until SIGTERM.",
    )


def _fail(message: str, status: int) -> int:
    print(f"smtpeter: webhooks: {message}", file=sys.stderr)
    return status


def _pick(store: Store, login: str, url: str | None) -> Webhook:
    if store.get_login(login) is None:
        raise LoginError(f"no login named {login!r}")
    hooks = store.webhooks(login)
    if url is not None:
        for hook in hooks:
            if hook.url == url:
                return hook
        raise WebhookError(f"login {login!r} has no endpoint {url}")
    if len(hooks) == 1:
        return hooks[0]
    if not hooks:
        raise WebhookError(f"login {login!r} has no endpoint")
    raise WebhookError(
        f"login {login!r} has {len(hooks)} endpoints: give --url "
        f"({', '.join(h.url for h in hooks)})"
    )


def _types(hook: Webhook) -> str:
    return ",".join(hook.types) if hook.types else "all"


def _age(since: float | None, now: float) -> str:
    if since is None:
        return "-"
    seconds = max(int(now - since), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def run(args: argparse.Namespace, cfg: Config) -> int:
    cmd = args.webhooks_command
    if cmd == "dispatch":
        from smtpeter.webhooks.dispatcher import run as dispatch

        return dispatch(cfg)
    try:
        if args.login is not None:
            logins.check_name(args.login)
        store = open_store(cfg.store, create=False)
        if cmd == "add":
            return _add(args, cfg, store)
        if cmd == "list":
            return _list(args, store)
        hook = _pick(store, args.login, args.url)
        if cmd == "remove":
            store.remove_webhook(hook.id)
            result: dict[str, object] = {"id": hook.id, "login": hook.login, "url": hook.url}
            print(json.dumps({**result, "removed": True}) if args.json else
                  f"endpoint {hook.url} of login {hook.login} removed")  # fmt: skip
            return exits.OK
        if cmd == "retry":
            count = store.retry_failed_webhooks(hook.id, time.time())
            print(json.dumps({"id": hook.id, "url": hook.url, "requeued": count}) if args.json
                  else f"{count} failed events of {hook.url} are due again")  # fmt: skip
            return exits.OK
        if cmd == "rotate-secret":
            if args.overlap_hours < 0:
                return _fail("--overlap-hours must be >= 0", exits.USAGE)
            until = time.time() + args.overlap_hours * 3600
            hook = store.rotate_webhook_secret(hook.id, signing.new_secret(), until)
            if args.json:
                print(json.dumps({"id": hook.id, "url": hook.url, "secret": hook.secret,
                                  "old_secret_until": until}))  # fmt: skip
            else:
                print(f"endpoint {hook.url} of login {hook.login}: new secret (shown once):")
                print(f"  {hook.secret}")
                print(f"Requests are signed with the old secret as well for "
                      f"{args.overlap_hours:g} hours: switch the receiver to the new one "
                      "within that time.")  # fmt: skip
            return exits.OK
        return _test(args, cfg, hook)
    except LoginError as e:
        status = exits.NOUSER if str(e).startswith("no login") else exits.DATAERR
        return _fail(str(e), status)
    except WebhookError as e:
        missing = " has no endpoint" in str(e) or "no login" in str(e)
        status = exits.NOUSER if missing else exits.DATAERR
        return _fail(str(e), status)


def _add(args: argparse.Namespace, cfg: Config, store: Store) -> int:
    if store.get_login(args.login) is None:
        raise LoginError(f"no login named {args.login!r}")
    try:
        types = parse_types(args.events)
    except ValueError as e:
        return _fail(f"--events: {e}", exits.USAGE)
    try:
        resolve(args.url, allow_private=cfg.webhooks.allow_private_targets)
    except TargetError as e:
        return _fail(f"--url refused: {e}", exits.DATAERR)
    hook = store.add_webhook(args.login, args.url, types, signing.new_secret())
    if args.json:
        print(json.dumps({"id": hook.id, "login": hook.login, "url": hook.url,
                          "events": list(hook.types) or "all", "secret": hook.secret}))  # fmt: skip
        return exits.OK
    print(f"endpoint {hook.url} added for login {hook.login} (events: {_types(hook)})")
    print(f"secret (shown once; requests carry {signing.HEADER}, see README):")
    print(f"  {hook.secret}")
    return exits.OK


def _list(args: argparse.Namespace, store: Store) -> int:
    if args.login is not None and store.get_login(args.login) is None:
        raise LoginError(f"no login named {args.login!r}")
    now = time.time()
    rows = []
    for hook in store.webhooks(args.login):
        backlog = store.webhook_backlog(hook.id)
        errors = store.webhook_last_errors(hook.id) if backlog.failed else []
        rows.append((hook, backlog, errors[0] if errors else None))
    if args.json:
        for hook, backlog, error in rows:
            print(json.dumps({
                "id": hook.id, "login": hook.login, "url": hook.url,
                "events": list(hook.types) or "all", "pending": backlog.pending,
                "failed": backlog.failed,
                "oldest_pending_seconds": None if backlog.oldest_pending_at is None
                else round(now - backlog.oldest_pending_at, 3),
                "last_failure": error, "created_at": hook.created_at,
            }))  # fmt: skip
        return exits.OK
    print(f"{'LOGIN':<20} {'PENDING':>7} {'FAILED':>6} {'OLDEST':>6}  {'EVENTS':<24} URL")
    for hook, backlog, error in rows:
        age = _age(backlog.oldest_pending_at, now)
        print(f"{hook.login:<20} {backlog.pending:>7} {backlog.failed:>6} {age:>6}  "
              f"{_types(hook):<24} {hook.url}")  # fmt: skip
        if error:
            print(f"{'':<20} last failure: {error}")
    return exits.OK


def _test(args: argparse.Namespace, cfg: Config, hook: Webhook) -> int:
    from smtpeter.webhooks.client import DeliveryError
    from smtpeter.webhooks.dispatcher import send_test

    started = time.monotonic()
    try:
        reply = send_test(hook, cfg.webhooks)
    except TargetError as e:
        return _fail(f"{hook.url} refused: {e}", exits.DATAERR)
    except DeliveryError as e:
        if args.json:
            print(json.dumps({"url": hook.url, "ok": False, "error": str(e)}))
        return _fail(f"{hook.url}: {e}", exits.UNAVAILABLE)
    ms = (time.monotonic() - started) * 1000
    if args.json:
        print(json.dumps({"url": hook.url, "ok": reply.ok, "status": reply.status,
                          "reason": reply.reason, "ms": round(ms, 1)}))  # fmt: skip
    else:
        print(f"{hook.url}: {reply.describe()} in {ms:.0f} ms")
    return exits.OK if reply.ok else exits.UNAVAILABLE
