"""`smtpeter local up|down|status`: the whole stack on loopback, for trying smtpeter out.

Nothing leaves the machine: the private Postfix relays every message to a local sink
that writes it into a Maildir.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

from smtpeter import logins
from smtpeter.cli import exits
from smtpeter.features import FeatureSet
from smtpeter.local.stack import DEFAULT_ROOT, LocalStack, Ports, StackError
from smtpeter.logins import Login
from smtpeter.postfix.render import PORTS, RenderError, parse_ports
from smtpeter.store import open_store

DEMO = "demo"
# Ports fields, each a --NAME-port option.
_PORT_OPTIONS = {
    "smtp": "standing in for 25",
    "submission": "standing in for 587",
    "submissions": "standing in for 465, implicit TLS",
    "alternate": "standing in for 2525",
    "sink": "of the local sink",
    "tracker": "of the click and open tracker",
}


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "local",
        help="run the whole stack locally (private Postfix on loopback, local sink)",
        description="Run a private Postfix on loopback with the smtpeter auth daemon, "
        "milter and a local sink that keeps every message in a Maildir.",
    )
    p.add_argument("action", choices=["up", "down", "status"])
    p.add_argument(
        "--dir",
        type=Path,
        default=DEFAULT_ROOT,
        help=f"where the stack keeps everything (default {DEFAULT_ROOT})",
    )
    for field, what in _PORT_OPTIONS.items():
        p.add_argument(
            f"--{field.replace('_', '-')}-port",
            type=int,
            default=getattr(Ports, field),
            help=f"loopback port {what} (default %(default)s)",
        )
    p.add_argument(
        "--listeners",
        default=",".join(PORTS),
        metavar="PORTS",
        help="which of SMTPeter's listeners to run, comma-separated (default %(default)s)",
    )


def _command() -> str:
    """How to call smtpeter here: by name if it is on PATH, else by its full path."""
    mine = Path(sys.executable).parent / "smtpeter"
    found = shutil.which("smtpeter")
    if found and Path(found).resolve() == mine.resolve():
        return "smtpeter"
    return shlex.quote(str(mine)) if mine.exists() else "smtpeter"


def _describe(stack: LocalStack, password: str | None) -> str:
    p = stack.ports
    cfg = shlex.quote(str(stack.config_file))
    smtpeter = _command()
    kinds = {"465": "implicit TLS"}
    ports = ", ".join(
        f"{p.listener(port)} (as {port}{', ' + kinds[port] if port in kinds else ''})"
        for port in stack.listeners
    )
    # The swaks line: 587 if it runs, else the first listener (465: implicit TLS).
    via = "587" if "587" in stack.listeners else stack.listeners[0]
    send_port, tls = p.listener(via), "--tlsc" if via == "465" else "--tls"
    lines = [
        "  Host:       127.0.0.1",
        f"  Ports:      {ports}; TLS and AUTH required",
        f"  TLS cert:   {stack.cert_file} (self-signed)",
        f"  Login:      {DEMO} (inlinecss, trackclicks and trackopens on)",
    ]
    if password is not None:
        lines.append(f"  Password:   {password}   (shown once; includes the spaces)")
    else:
        lines.append(
            f"  Password:   unchanged; new one: smtpeter --config {cfg} login rotate {DEMO}"
        )
    lines += [
        f"  Config:     {stack.config_file}",
        f"  Delivered:  {stack.maildir}/new/ (nothing leaves this machine)",
        f"  Tracker:    http://127.0.0.1:{p.tracker} (tracked links and pixels point here)",
        f"  Logs:       {stack.log_dir}/",
        "",
        "Send a message:",
        f"  swaks --server 127.0.0.1:{send_port} {tls} --auth LOGIN --auth-user {DEMO} \\",
        f"        --auth-password {shlex.quote(password or '<password>')} \\",
        "        --from you@example.com --to someone@example.com \\",
        "        --header 'x-smtpeter-trackclicks: false'",
        "Manage logins, see opens and clicks:",
        f"  {smtpeter} --config {cfg} login list",
        f"  {smtpeter} --config {cfg} events",
        "Stop it:",
        f"  {smtpeter} local down --dir {shlex.quote(str(stack.root))}"
        "   (or: bash scripts/local-stack down)",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    stack = LocalStack(root=args.dir)
    stack.load_state()
    if args.action == "status":
        state = stack.running()
        width = max(map(len, state), default=0)
        for part, up in state.items():
            print(f"{part:<{width}} {'running' if up else 'stopped'}")
        return exits.OK if all(state.values()) else exits.UNAVAILABLE
    if args.action == "down":
        stack.stop()
        print(f"smtpeter local stack in {stack.root} stopped")
        return exits.OK
    state = stack.running() if stack.state_file.exists() else {}
    if state and all(state.values()):
        print(f"smtpeter local stack in {stack.root} is already running; nothing changed.")
        print(_describe(stack, None))
        return exits.OK
    if not stack.state_file.exists():
        try:
            stack.listeners = parse_ports(args.listeners)
        except RenderError as e:
            print(f"smtpeter: local up: {e}", file=sys.stderr)
            return exits.USAGE
        stack.ports = Ports(**{field: getattr(args, f"{field}_port") for field in _PORT_OPTIONS})
    try:
        stack.start()
    except StackError as e:
        print(f"smtpeter: {e}", file=sys.stderr)
        stack.stop()
        return exits.UNAVAILABLE
    store = open_store(stack.config().store)
    password = logins.generate_password()
    hashed = logins.hash_password(password)
    if store.get_login(DEMO) is None:
        demo = FeatureSet(inlinecss=True, trackclicks=True, trackopens=True)
        store.create_login(Login(DEMO, hashed, features=demo))
    else:
        store.update_login(DEMO, password_hash=hashed)
    print(f"smtpeter local stack is up in {stack.root}")
    print(_describe(stack, password))
    return exits.OK
