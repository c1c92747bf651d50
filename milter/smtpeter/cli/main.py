"""The `smtpeter` command: logins, the daemons, and the local stack."""

from __future__ import annotations

import argparse
import sys

from smtpeter import __version__, logsetup
from smtpeter import config as configmod
from smtpeter.cli import events, exits, local, logins, suppressions, webhooks
from smtpeter.store import StoreError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smtpeter",
        description="The SMTPeter SMTP API for Postfix: SMTP logins with per-login "
        "features, and the daemons Postfix talks to.",
        epilog=f"The config file is {configmod.DEFAULT_PATH} unless --config or "
        f"${configmod.ENV_VAR} names another. Exit status follows sysexits(3).",
    )
    parser.add_argument("--config", metavar="FILE", help="config file to use")
    parser.add_argument("--version", action="version", version=f"smtpeter {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    logins.add_parser(sub)
    suppressions.add_parser(sub)
    webhooks.add_parser(sub)
    sub.add_parser(
        "authd",
        help="run the SASL auth daemon Postfix talks to (foreground)",
        description="Run the auth daemon (Dovecot auth protocol) in the foreground.",
    )
    sub.add_parser(
        "milter",
        help="run the milter (foreground, pre-forked workers)",
        description="Run the milter in the foreground with its worker processes.",
    )
    sub.add_parser(
        "tracker",
        help="run the click and open tracking HTTP service (foreground)",
        description="Run the tracking HTTP service in the foreground.",
    )
    events.add_parsers(sub)
    deliveries = sub.add_parser(
        "deliveries",
        help="record Postfix's delivery results from its log or the journal (foreground)",
        description="Follow Postfix's log (rsyslog's mail.log, the file Postfix's "
        "maillog_file names, or the systemd journal) and record each recipient's "
        "delivered, deferred or failed result for the messages the milter recorded. "
        "Without --log or --journal, deliveries.source of the config file decides "
        "(auto: /var/log/mail.log if it exists, else maillog_file, else the journal). "
        "Resumes where it stopped (the position is kept in the store).",
    )
    where = deliveries.add_mutually_exclusive_group()
    where.add_argument("--log", metavar="FILE", help="read the log file FILE")
    where.add_argument(
        "--journal", action="store_true", help="read the systemd journal (with journalctl)"
    )
    deliveries.add_argument(
        "--journal-file",
        metavar="FILE",
        action="append",
        default=[],
        help="read these journal files instead of this machine's journal (repeatable; "
        "implies --journal)",
    )
    deliveries.add_argument(
        "--journal-directory",
        metavar="DIR",
        help="read the journal files in DIR instead of this machine's (implies --journal)",
    )
    deliveries.add_argument(
        "--from-start",
        action="store_true",
        help="on the journal's first reading, begin at its start, not at its end",
    )
    deliveries.add_argument(
        "--once", action="store_true", help="read what the log has now, then exit"
    )
    bounce = sub.add_parser(
        "bounce",
        help="process one bounce from stdin (run by Postfix's pipe transport)",
        description="Read a bounce on stdin, record its events and forward it to the "
        "original sender. Exit 0 when done or dropped, 75 (EX_TEMPFAIL) to have Postfix "
        "retry later.",
    )
    bounce.add_argument("--recipient", required=True, help="the return path it was sent to")
    bounce.add_argument("--sender", default="", help="the bounce's envelope sender")
    bounce.add_argument("--queue-id", default="", help="Postfix's queue id of the bounce")
    sink = sub.add_parser(
        "sink",
        help="run a local SMTP sink that writes to a Maildir",
        description="Accept all mail on a loopback port and write it to a "
        "Maildir (for the local stack and tests).",
    )
    sink.add_argument("--host", default="127.0.0.1")
    sink.add_argument("--port", type=int, required=True)
    sink.add_argument("--maildir", required=True)
    sink.add_argument("--reject", metavar="REGEX", help="refuse recipients matching REGEX with 550")
    sink.add_argument("--defer", metavar="REGEX", help="refuse recipients matching REGEX with 450")
    check = sub.add_parser(
        "config",
        help="check the config file and print it with defaults",
        description="Validate the config file; print the effective settings.",
    )
    check.add_argument("action", choices=["check", "show"])
    local.add_parser(sub)
    pf = sub.add_parser(
        "postfix",
        help="set up the system Postfix for smtpeter",
        description="Set up the system Postfix to serve the SMTP API.",
    )
    pfsub = pf.add_subparsers(dest="postfix_command", metavar="COMMAND", required=True)
    setup = pfsub.add_parser(
        "setup",
        help="apply smtpeter's settings to main.cf and master.cf",
        description="Give Postfix the SMTP API's listeners (25, 587, 465 with implicit TLS, "
        "2525), each requiring TLS and AUTH by smtpeter's auth daemon. relay: a dedicated "
        "relay; its port 25 is also the bounce domain's MX. addon: an existing MX keeps every "
        "service it has (its users, their SASL, inbound mail on 25: our milter only removes "
        "x-smtpeter-* headers there and never holds mail up); the API gets the ports the MX "
        "does not use. Merges into existing settings, refuses what it cannot merge, shows a "
        "diff of every file; idempotent; backs up first; checks with `postfix check` and "
        "reloads Postfix.",
    )
    setup.add_argument("--mode", choices=["relay", "addon"], help="required unless --undo")
    setup.add_argument("--dry-run", action="store_true", help="show the diff, change nothing")
    setup.add_argument("--undo", action="store_true", help="restore the backup of the first setup")
    setup.add_argument("--tls-cert", help="certificate file (default: Postfix's, else snakeoil)")
    setup.add_argument("--tls-key", help="its private key")
    setup.add_argument("--postfix-dir", default="/etc/postfix", help="Postfix's config directory")
    setup.add_argument("--no-reload", action="store_true", help="do not reload Postfix")
    setup.add_argument(
        "--listeners",
        metavar="PORTS",
        help="SMTP API listeners, comma-separated from 25,587,465,2525, each optionally "
        "PORT=SERVICE to name its master.cf service, e.g. 465=203.0.113.5:465 (default: "
        "relay all four; addon 587,465,2525 less those the MX already serves)",
    )
    setup.add_argument("--dkim-domain", help="sign with OpenDKIM after our milter, for domain D")
    setup.add_argument("--dkim-selector", help="DKIM selector (key made if missing)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "local":
        logsetup.setup("warning")
        return local.run(args)
    try:
        cfg = configmod.load(args.config)
    except configmod.ConfigError as e:
        print(f"smtpeter: config error: {e}", file=sys.stderr)
        # Postfix's pipe bounces a message for a non-temporary status: keep it queued.
        return exits.TEMPFAIL if args.command == "bounce" else exits.CONFIG
    daemon = args.command in ("authd", "milter", "tracker", "sink", "bounce", "deliveries")
    daemon = daemon or (args.command == "webhooks" and args.webhooks_command == "dispatch")
    logsetup.setup(cfg.logging.level if daemon else "warning")
    from smtpeter.cli import daemons

    try:
        if args.command == "login":
            return logins.run(args, cfg)
        if args.command == "suppressions":
            return suppressions.run(args, cfg)
        if args.command == "webhooks":
            return webhooks.run(args, cfg)
        if args.command == "bounce":
            return daemons.run_bounce(args, cfg)
        if args.command == "deliveries":
            return daemons.run_deliveries(args, cfg)
        if args.command == "events":
            return events.run_events(args, cfg)
        if args.command == "stats":
            return events.run_stats(args, cfg)
        if args.command == "keys":
            return events.run_keys(args, cfg)
        if args.command == "store":
            return events.run_store(args, cfg)
        if args.command == "postfix":
            return daemons.run_postfix_setup(args, cfg)
        if args.command == "config":
            if args.action == "show":
                print(configmod.to_yaml(cfg), end="")
            else:
                print(f"{cfg.source or 'built-in defaults'}: OK")
            return exits.OK
        if args.command == "authd":
            return daemons.run_authd(cfg)
        if args.command == "milter":
            return daemons.run_milter(cfg)
        if args.command == "tracker":
            return daemons.run_tracker(cfg)
        if args.command == "sink":
            return daemons.run_sink(args.host, args.port, args.maildir, args.reject, args.defer)
    except StoreError as e:
        print(f"smtpeter: {e}", file=sys.stderr)
        return exits.TEMPFAIL if args.command == "bounce" else exits.UNAVAILABLE
    except KeyboardInterrupt:
        return exits.FAILURE
    return exits.USAGE
