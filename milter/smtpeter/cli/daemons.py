"""The long-running processes: auth daemon, milter, local sink. Each runs in the
foreground (systemd, or the local stack, supervises it) and logs to stderr."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from smtpeter import logins, logsetup
from smtpeter.auth.credentials import Credentials
from smtpeter.auth.server import AuthServer
from smtpeter.auth.throttle import Throttle
from smtpeter.config import Config
from smtpeter.store import open_store

log = logging.getLogger("smtpeter")


def run_authd(cfg: Config) -> int:
    store = open_store(cfg.store)

    def lookup(name: str) -> Credentials | None:
        login = store.get_login(name)
        if login is None:
            return None
        return Credentials(login.name, login.password_hash, login.enabled)

    server = AuthServer(
        lookup,
        logins.verify_password,
        logins.dummy_hash(),
        failure_delay=cfg.auth.failure_delay,
        cache_ttl=cfg.auth.cache_ttl,
        cache_max_entries=cfg.auth.cache_max_entries,
        request_timeout=cfg.auth.request_timeout,
        hash_workers=cfg.auth.hash_workers,
        throttle=Throttle(
            throttle_after=cfg.auth.throttle_after,
            throttle_interval=cfg.auth.throttle_interval,
            lockout_after=cfg.auth.lockout_after,
            lockout_seconds=cfg.auth.lockout_seconds,
            max_entries=cfg.auth.throttle_max_addresses,
            ipv6_prefix=cfg.auth.throttle_ipv6_prefix,
            exempt=cfg.auth.throttle_exempt,
        ),
    )

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(server.stop()))
        # A reload (SIGHUP) drops cached credentials, e.g. after editing the store by hand.
        loop.add_signal_handler(signal.SIGHUP, server.cache.clear)
        await server.serve_unix(cfg.auth.socket, cfg.auth.socket_mode, cfg.auth.socket_group)

    asyncio.run(main())
    return 0


def run_milter(cfg: Config) -> int:
    from smtpeter.relay.workers import run

    return run(cfg)


def run_tracker(cfg: Config) -> int:
    from smtpeter.tracker.server import run_tracker

    return run_tracker(cfg)


def run_bounce(args: argparse.Namespace, cfg: Config) -> int:
    """One bounce from stdin; never lets an unexpected error become a permanent failure."""
    from smtpeter.bounces.processor import EX_TEMPFAIL, MAX_INPUT, process

    logsetup.add_syslog("smtpeter-bounce")
    try:
        raw = sys.stdin.buffer.read(MAX_INPUT + 1)
        outcome = process(raw, args.recipient, cfg, bounce_id=args.queue_id)
    except Exception:
        log.exception("bounce for %s: unexpected error; Postfix will retry", args.recipient)
        return EX_TEMPFAIL
    level = logging.INFO if outcome.status == 0 else logging.ERROR
    log.log(level, "bounce %s for %s: %s", args.queue_id or "-", args.recipient, outcome.what)
    return outcome.status


def run_deliveries(args: argparse.Namespace, cfg: Config) -> int:
    """Follow Postfix's log or the journal until SIGTERM or SIGINT (with --once, to
    its end). The source: --log, --journal (or --journal-file, --journal-directory),
    else deliveries.source."""
    import threading

    from smtpeter.cli import exits
    from smtpeter.deliveries import journal, reader

    files: list[str] = args.journal_file
    if args.log is not None and (files or args.journal_directory):
        print("smtpeter: deliveries: --log and --journal-file/--journal-directory "
              "exclude each other", file=sys.stderr)  # fmt: skip
        return exits.USAGE
    if files and args.journal_directory:
        print("smtpeter: deliveries: give --journal-file or --journal-directory, not both",
              file=sys.stderr)  # fmt: skip
        return exits.USAGE
    if args.log is not None:
        choice = reader.Choice(args.log, "--log")
    elif args.journal or files or args.journal_directory:
        choice = reader.Choice(None, "--journal")
    else:
        choice = reader.choose(cfg.deliveries.source)
    source: reader.Source
    if choice.path is None:
        source = journal.JournalSource(
            files=files, directory=args.journal_directory, from_start=args.from_start
        )
    else:
        source = reader.FileSource(choice.path)
    log.info("deliveries: reading %s (%s)", source.label, choice.why)
    path = choice.path
    if path is not None and os.path.exists(path) and not os.access(path, os.R_OK):
        # The follower would wait for it without a word.
        log.warning("deliveries: %s cannot be read by this user; give it group adm and "
                    "mode 0640", path)  # fmt: skip
    store = open_store(cfg.store)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        counts = reader.run_source(store, source, once=args.once, stop=stop)
    except journal.JournalError as e:
        log.error("deliveries: cannot read %s: %s", source.label, e)
        return exits.UNAVAILABLE
    log.info(
        "deliveries: %d entries of %s read, %d delivery results, %d events recorded",
        counts.lines, source.label, counts.results, counts.recorded,
    )  # fmt: skip
    return 0


def run_postfix_setup(args: argparse.Namespace, cfg: Config) -> int:
    """`smtpeter postfix setup`: print what changes, where the backup is, how to undo."""
    from pathlib import Path

    from smtpeter.cli import exits
    from smtpeter.postfix.configure import Dkim, SetupError, setup, undo
    from smtpeter.postfix.render import RenderError, parse_listeners

    config_dir = Path(args.postfix_dir)
    try:
        if args.undo:
            restored = undo(config_dir, reload=not args.no_reload)
            print(f"restored as before smtpeter's first setup: {', '.join(map(str, restored))}")
            return exits.OK
        listeners = None
        if args.listeners is not None:
            try:
                listeners = parse_listeners(args.listeners)
            except RenderError as e:
                print(f"smtpeter: postfix setup: {e}", file=sys.stderr)
                return exits.USAGE
        dkim = None
        if args.dkim_domain or args.dkim_selector:
            if not (args.dkim_domain and args.dkim_selector):
                print("smtpeter: postfix setup: give both --dkim-domain and --dkim-selector",
                      file=sys.stderr)  # fmt: skip
                return exits.USAGE
            dkim = Dkim(args.dkim_domain, args.dkim_selector)
        if args.mode is None:
            print("smtpeter: postfix setup: --mode relay or --mode addon is required",
                  file=sys.stderr)  # fmt: skip
            return exits.USAGE
        result = setup(
            cfg,
            args.mode,
            config_dir=config_dir,
            dry_run=args.dry_run,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            reload=not args.no_reload,
            dkim=dkim,
            listeners=listeners,
        )
    except SetupError as e:
        print(f"smtpeter: postfix setup: {e}", file=sys.stderr)
        return exits.CONFIG
    for warning in result.warnings:
        print(warning, file=sys.stderr)
    for note in result.notes:
        print(f"note: {note}")
    if result.dns_record:
        print(f"DKIM: publish this TXT record, then restart opendkim:\n  {result.dns_record}")
    if not result.changed:
        print(f"Postfix in {config_dir} is already set up ({args.mode}); nothing changed.")
        return exits.OK
    print(result.diff, end="")
    if args.dry_run:
        print("(dry run: nothing changed)")
        return exits.OK
    listening = ", ".join(f"{li.port} ({li.service})" for li in result.listeners)
    print(f"\nPostfix in {config_dir} set up ({args.mode}); `postfix check` passed.")
    print(f"SMTP API listeners: {listening}")
    print(f"Backup of every file changed: {result.backup}")
    print("To restore the configuration from before smtpeter: smtpeter postfix setup --undo")
    return exits.OK


def run_sink(host: str, port: int, maildir: str, reject: str | None, defer: str | None) -> int:
    from smtpeter.local.sink import serve

    asyncio.run(serve(host, port, maildir, reject, defer))
    return 0
