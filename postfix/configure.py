"""Apply smtpeter's settings to the system Postfix (`smtpeter postfix setup`).

Both modes give the SMTP API listeners of its own, each a master.cf smtpd service
carrying every setting it needs as ``-o`` options (TLS required, AUTH through our
auth daemon, our milter with default_action=tempfail). They differ in what they
take of the server:

- relay: a dedicated SMTP API relay. Its listeners are 25, 587, 465 and 2525 (or
  those of --listeners); port 25 is also the bounce domain's MX. Existing services
  on those ports are extended, never replaced; a server that receives mail for
  domains of its own, or whose listener belongs to another SASL, is refused.
- addon: an existing MX. Its own services (port 25, its mailbox users' submission)
  keep every setting they have; our milter runs on them only to remove x-smtpeter-*
  headers, with default_action=accept, so the MX's mail never waits on smtpeter.
  The API gets the listeners the MX does not use (587, 465, 2525 by default).

Shared lists (smtpd_milters, non_smtpd_milters, milter_mail_macros, relay_domains,
transport_maps) are merged: our entry added, every existing entry kept in order.
Where a change cannot be merged safely, setup refuses and says which setting in
which file, and the way out.

The change is computed on a copy of the files with Postfix's own postconf and
shown as a diff of every file it touches (--dry-run stops there), then installed
after a backup; `postfix check` validates it (a failure restores the backup) and
Postfix is reloaded. A second run changes nothing. --undo restores the files of
before the first setup byte for byte.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from smtpeter.postfix.render import (
    API_DAEMON_NAME,
    DEFAULT_MAIL_MACROS,
    DEFAULT_SERVICES,
    PORTS,
    Listener,
    RelaySettings,
    bounce_domain_entry,
    bounce_services,
    default_listeners,
    list_settings,
    listener_entry,
    main_text,
    milter_address,
    split_list,
)

from smtpeter.config import DEFAULT_PATH, Config

Mode = Literal["relay", "addon"]
SNAKEOIL = ("/etc/ssl/certs/ssl-cert-snakeoil.pem", "/etc/ssl/private/ssl-cert-snakeoil.key")
STATE_NAME = "smtpeter-setup.json"
# The port each well-known master.cf service name listens on.
_NAMED_PORTS = {"smtp": "25", "submission": "587", "submissions": "465", "smtps": "465"}
# Settings that make a Postfix the final or relay destination of domains of its own:
# relay mode would take their port 25 away from the mail they receive.
_RECEIVING = ("virtual_mailbox_domains", "virtual_alias_domains", "relay_domains")


class SetupError(RuntimeError):
    pass


@dataclass
class Plan:
    main: dict[str, str] = field(default_factory=dict)
    # "service/type" -> the whole entry on one line.
    master: dict[str, str] = field(default_factory=dict)
    # Other files and their new text (opendkim.conf).
    files: dict[Path, str] = field(default_factory=dict)
    # System changes besides files, said before they are made.
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    listeners: tuple[Listener, ...] = ()


def _postconf(config_dir: Path, *args: str) -> str:
    result = subprocess.run(
        ["postconf", "-c", str(config_dir), *args], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SetupError(f"postconf {' '.join(args)[:80]} failed: {result.stderr.strip()}")
    return result.stdout


def parse_main(text: str) -> dict[str, str]:
    """name = value pairs of main.cf text (continuation lines joined, comments dropped)."""
    out: dict[str, str] = {}
    name: str | None = None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace() and name is not None:
            out[name] += " " + line.strip()
            continue
        name, _, value = line.partition("=")
        name = name.strip()
        out[name] = value.strip()
    return out


def parse_master(text: str) -> dict[str, str]:
    """ "service/type" -> the whole entry on one line, from master.cf text."""
    out: dict[str, str] = {}
    key: str | None = None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace() and key is not None:
            out[key] += " " + line.strip()
            continue
        fields = line.split()
        key = f"{fields[0]}/{fields[1]}"
        out[key] = " ".join(fields)
    return out


def _tokens(entry: str) -> list[str]:
    """A master.cf entry split on white space, a ``{ ... }`` group kept whole."""
    tokens: list[str] = []
    depth = 0
    current = ""
    for ch in entry:
        depth += ch == "{"
        depth -= ch == "}"
        if ch.isspace() and depth == 0:
            if current:
                tokens.append(current)
            current = ""
        else:
            current += ch
    return [*tokens, current] if current else tokens


def _options(entry: str) -> tuple[list[str], list[tuple[str, str]], list[str]]:
    """(the 8 fixed fields, the -o options, the other arguments) of an entry."""
    tokens = _tokens(entry)
    fixed, rest = tokens[:8], tokens[8:]
    options: list[tuple[str, str]] = []
    others: list[str] = []
    i = 0
    while i < len(rest):
        if rest[i] == "-o" and i + 1 < len(rest):
            option = rest[i + 1]
            if option.startswith("{"):
                option = option[1:-1].strip()
                name, _, value = option.partition("=")
                options.append((name.strip(), value.strip()))
            else:
                name, _, value = option.partition("=")
                options.append((name, value))
            i += 2
        else:
            others.append(rest[i])
            i += 1
    return fixed, options, others


def _format_option(name: str, value: str) -> str:
    return f"-o {{ {name} = {value} }}" if re.search(r"\s", value) else f"-o {name}={value}"


def service_port(service: str) -> str:
    """The port a master.cf inet service name listens on ("127.0.0.1:2587" -> 2587)."""
    name = service.rsplit(":", 1)[-1]
    return _NAMED_PORTS.get(name, name)


def is_ours(entry: str) -> bool:
    return any(
        (n, v) == ("milter_macro_daemon_name", API_DAEMON_NAME) for n, v in _options(entry)[1]
    )


def _chroot_relative(path: str, queue_dir: str) -> str:
    """A socket path as chrooted smtpd sees it: relative to the queue directory
    (smtpd runs there, chrooted or not)."""
    queue = queue_dir.rstrip("/") + "/"
    if not path.startswith(queue):
        raise SetupError(
            f"{path} is outside Postfix's queue directory {queue_dir}: a chrooted smtpd "
            "cannot reach it (put the sockets under it, e.g. /var/spool/postfix/smtpeter/)"
        )
    return path[len(queue) :]


def _tls(current: dict[str, str], cert: str | None, key: str | None, plan: Plan) -> tuple[str, str]:
    if cert or key:
        if not (cert and key):
            raise SetupError("give both --tls-cert and --tls-key")
        for p in (cert, key):
            if not os.path.exists(p):
                raise SetupError(f"TLS file {p} does not exist")
        return cert, key
    cur_cert, cur_key = current.get("smtpd_tls_cert_file"), current.get("smtpd_tls_key_file")
    if cur_cert and cur_key and os.path.exists(cur_cert) and os.path.exists(cur_key):
        return cur_cert, cur_key
    if not os.path.exists(SNAKEOIL[0]):
        subprocess.run(["make-ssl-cert", "generate-default-snakeoil"], capture_output=True)
    if not os.path.exists(SNAKEOIL[0]):
        raise SetupError(
            "no TLS certificate: give --tls-cert and --tls-key (or install ssl-cert for a "
            "self-signed one)"
        )
    plan.warnings.append(
        "WARNING: using the self-signed snakeoil certificate; clients will not trust it. "
        "Run again with --tls-cert/--tls-key for a real one."
    )
    return SNAKEOIL


def _extend(key: str, existing: str, ours: str, main_cf: Path) -> str:
    """An existing service of the server's, with our options added. A different value
    for an option we need is refused; its own other options stay."""
    fixed, options, others = _options(existing)
    if fixed[7:8] != ["smtpd"]:
        raise SetupError(
            f"{main_cf.parent / 'master.cf'}: {key} runs {' '.join(fixed[7:8]) or '?'}, "
            "not smtpd (postscreen?): relay mode cannot take that port. Leave it out with "
            "--listeners, or use --mode addon."
        )
    have = dict(options)
    added: list[tuple[str, str]] = []
    for name, value in _options(ours)[1]:
        if name == "syslog_name" and name in have:
            continue  # its own log name stays
        if name in have and have[name] != value:
            raise SetupError(
                f"{main_cf.parent / 'master.cf'}: {key} sets -o {name}={have[name]}, and "
                f"the SMTP API needs {name}={value} there. That listener is configured for "
                "something else (another SASL?): leave its port out with --listeners, use "
                "--mode addon (which leaves the server's services alone), or remove the option."
            )
        if name not in have:
            added.append((name, value))
    parts = [*fixed, *others, *(_format_option(n, v) for n, v in [*options, *added])]
    return " ".join(parts)


def _listeners(
    mode: Mode,
    asked: tuple[Listener, ...] | None,
    services: dict[str, str],
    plan: Plan,
    master_cf: Path,
) -> list[tuple[Listener, str | None]]:
    """The listeners to set up, each with the existing entry it takes over (or None).
    An existing service counts when it has the listener's name or listens on its port."""
    by_port: dict[str, str] = {}
    for key in services:
        service, kind = key.rsplit("/", 1)
        if kind == "inet":
            by_port.setdefault(service_port(service), key)
    default = PORTS if mode == "relay" else ("587", "465", "2525")
    chosen = asked if asked is not None else default_listeners(default)
    out: list[tuple[Listener, str | None]] = []
    for wanted in chosen:
        port = wanted.port
        found = f"{wanted.service}/inet" if f"{wanted.service}/inet" in services else None
        if found is None and wanted.service == DEFAULT_SERVICES[port]:
            found = by_port.get(port)
        entry = services[found] if found else None
        service = found.rsplit("/", 1)[0] if found else wanted.service
        if entry is not None and not is_ours(entry) and mode == "addon":
            if asked is None:
                plan.notes.append(
                    f"port {port} is the server's own ({found} in {master_cf}): left to its "
                    "users, not used for the SMTP API"
                )
                continue
            raise SetupError(
                f"{master_cf}: port {port} is already served by {found}, the server's own "
                f"(its users submit there). Addon mode leaves it alone: choose other "
                f"--listeners (from {','.join(PORTS)}), or remove that service first."
            )
        out.append((Listener(port, service), entry))
    if not out:
        raise SetupError(
            f"{master_cf}: every SMTP API port ({', '.join(c.port for c in chosen)}) is the "
            "server's own; "
            "free one, or choose --listeners"
        )
    return out


def plan_setup(
    cfg: Config,
    mode: Mode,
    config_dir: Path,
    *,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    dkim: Dkim | None = None,
    listeners: tuple[Listener, ...] | None = None,
) -> Plan:
    plan = Plan()
    main_cf = config_dir / "main.cf"
    if not main_cf.exists():
        raise SetupError(
            f"no {main_cf}: configure Postfix first (dpkg-reconfigure postfix, e.g. as an "
            "Internet site)"
        )
    current = parse_main(_postconf(config_dir, "-n"))
    queue_dir = _postconf(config_dir, "-h", "queue_directory").strip()
    cert, key = _tls(current, tls_cert, tls_key, plan)
    milter = cfg.milter.socket
    if milter.startswith(("unix:", "local:")):
        milter = "unix:" + _chroot_relative(milter.split(":", 1)[1], queue_dir)
    services = parse_master(_postconf(config_dir, "-M"))
    smtp = _options(services["smtp/inet"])[0] if "smtp/inet" in services else []
    chosen = _listeners(mode, listeners, services, plan, config_dir / "master.cf")
    relay = RelaySettings(
        tls_cert_file=cert,
        tls_key_file=key,
        auth_socket=_chroot_relative(cfg.auth.socket, queue_dir),
        milter_socket=milter,
        listeners=tuple(listener for listener, _ in chosen),
        # New services follow the server's own smtp service (Debian: chrooted).
        chroot=smtp[4:5] != ["n"],
        bounce_domain=cfg.bounces.domain,
        bounce_command=_bounce_command(cfg),
        milter_default_action="tempfail" if mode == "relay" else "accept",
    )
    plan.listeners = relay.listeners
    if mode == "relay" and any(listener.port == "25" for listener in relay.listeners):
        for name in _RECEIVING:
            ours_entry = bounce_domain_entry(cfg.bounces.domain) if cfg.bounces.domain else ""
            if [e for e in split_list(current.get(name, "")) if e != ours_entry]:
                raise SetupError(
                    f"{main_cf}: {name} = {current[name]}: this Postfix receives mail for "
                    "domains of its own, and relay mode would make port 25 refuse it. Use "
                    "--mode addon, or leave 25 out with --listeners."
                )
        if current.get("smtpd_sasl_auth_enable") == "yes" and current.get(
            "smtpd_sasl_path"
        ) not in (None, relay.auth_socket):
            raise SetupError(
                f"{main_cf}: smtpd_sasl_auth_enable = yes: users authenticate on port 25 "
                "with another SASL, which relay mode would replace. Use --mode addon, or "
                "leave 25 out with --listeners."
            )

    plan.main.update(parse_main(main_text(relay)))
    lists = {
        "smtpd_milters": current.get("smtpd_milters", ""),
        "non_smtpd_milters": current.get("non_smtpd_milters", ""),
        "milter_mail_macros": current.get("milter_mail_macros", DEFAULT_MAIL_MACROS),
        "relay_domains": current.get("relay_domains", _default_relay_domains(config_dir)),
        "transport_maps": current.get("transport_maps", ""),
    }
    plan.main.update(list_settings(relay, lists))
    for (listener, existing), key in zip(chosen, _keys(relay.listeners), strict=True):
        ours = " ".join(parse_master(listener_entry(relay, listener)).values())
        if existing is not None and is_ours(existing):
            # Set up before: its own columns and options stay, ours are renewed.
            names = {name for name, _ in _options(ours)[1]} - {"syslog_name"}
            fixed, options, others = _options(existing)
            kept = [_format_option(n, v) for n, v in options if n not in names]
            existing = " ".join([*fixed, *others, *kept])
        plan.master[key] = ours if existing is None else _extend(key, existing, ours, main_cf)
    plan.master.update(parse_master(bounce_services(relay)))
    if dkim is not None:
        signer = _plan_dkim(dkim, queue_dir, plan)
        milters = plan.main.get("smtpd_milters", lists["smtpd_milters"])
        if signer not in [milter_address(e) for e in split_list(milters)]:
            # Last: OpenDKIM signs the message as our milter (and any other) left it.
            entry = f"{{ {signer}, default_action=tempfail }}"
            plan.main["smtpd_milters"] = f"{milters}, {entry}"
    # Values equal to what main.cf already says are no change.
    plan.main = {k: v for k, v in plan.main.items() if current.get(k) != v}
    return plan


def _bounce_command(cfg: Config) -> str:
    """The command Postfix's pipe runs for each bounce: the installed smtpeter (else
    this one), with the config file setup was given when it is not the default."""
    # Not `python -m smtpeter`: pipe runs the command in Postfix's queue directory,
    # where our socket directory "smtpeter" would shadow the package.
    beside = Path(sys.executable).parent / "smtpeter"
    installed = shutil.which("smtpeter") or (str(beside) if beside.exists() else None)
    command = [installed or "/usr/bin/smtpeter"]
    if cfg.source and Path(cfg.source) != DEFAULT_PATH:
        command += ["--config", str(Path(cfg.source).resolve())]
    return shlex.join([*command, "bounce"])


def _keys(listeners: tuple[Listener, ...]) -> list[str]:
    return [f"{listener.service}/inet" for listener in listeners]


def _default_relay_domains(config_dir: Path) -> str:
    # The default depends on compatibility_level: $mydestination before 2, else empty.
    expanded = _postconf(config_dir, "-hx", "relay_domains").strip()
    return "$mydestination" if expanded else ""


@dataclass(frozen=True)
class Dkim:
    """DKIM signing by OpenDKIM (Debian's package), placed after our milter so that
    it signs the message as rewritten."""

    domain: str
    selector: str
    conf: Path = Path("/etc/opendkim.conf")
    keys_dir: Path = Path("/etc/opendkim/keys")

    @property
    def key_file(self) -> Path:
        return self.keys_dir / self.domain / f"{self.selector}.private"

    @property
    def dns_file(self) -> Path:
        return self.keys_dir / self.domain / f"{self.selector}.txt"

    def socket(self, queue_dir: str) -> Path:
        return Path(queue_dir) / "opendkim" / "opendkim.sock"


_DKIM_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")


def _conf_settings(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.strip().partition(" ")
            name, _, tabbed = name.partition("\t")
            out[name] = (value or tabbed).strip()
    return out


def _opendkim_address(socket: str, queue_dir: str) -> str | None:
    """OpenDKIM's Socket setting as a Postfix milter address, if smtpd can reach it."""
    kind, _, rest = socket.partition(":")
    if kind in ("local", "unix") or socket.startswith("/"):
        path = rest if kind else socket
        queue = queue_dir.rstrip("/") + "/"
        return f"unix:{path[len(queue) :]}" if path.startswith(queue) else None
    if kind == "inet":
        port, _, host = rest.partition("@")
        return f"inet:{host or 'localhost'}:{port}"
    return None


def _plan_dkim(dkim: Dkim, queue_dir: str, plan: Plan) -> str:
    """Plan opendkim.conf's change (shown in the diff) and return the signer's milter
    address. Only what signing for the domain needs is changed; a configuration that
    already signs for something else is refused rather than rewritten."""
    for value, what in ((dkim.domain, "--dkim-domain"), (dkim.selector, "--dkim-selector")):
        if not _DKIM_NAME.match(value):
            raise SetupError(f"{what}: {value!r} is not a valid DNS name")
    if shutil.which("opendkim") is None or shutil.which("opendkim-genkey") is None:
        raise SetupError("DKIM needs OpenDKIM: apt-get install opendkim opendkim-tools")
    text = dkim.conf.read_text() if dkim.conf.exists() else ""
    have = _conf_settings(text)
    for table in ("KeyTable", "SigningTable"):
        if table in have:
            raise SetupError(
                f"{dkim.conf}: {table} is set: OpenDKIM already signs from tables. Add "
                f"{dkim.domain} there yourself and run setup without --dkim-domain; smtpeter "
                "keeps OpenDKIM's milter after its own."
            )
    wanted = {"Domain": dkim.domain, "Selector": dkim.selector, "KeyFile": str(dkim.key_file)}
    for name, value in wanted.items():
        if have.get(name, value) != value:
            raise SetupError(
                f"{dkim.conf}: {name} is {have[name]}, not {value}: OpenDKIM is set up for "
                "something else. Change it yourself and run setup without --dkim-domain."
            )
    address = _opendkim_address(have.get("Socket", ""), queue_dir)
    if address is None:
        # A socket inside Postfix's chroot, in a directory only group postfix may
        # enter: that directory is the access control, so the socket itself may be
        # world-writable (UMask 000; OpenDKIM's UMask applies to its socket and pid file).
        wanted["Socket"] = f"local:{dkim.socket(queue_dir)}"
        wanted["UMask"] = "000"
        address = f"unix:{_chroot_relative(str(dkim.socket(queue_dir)), queue_dir)}"
    lines = text.splitlines()
    out: list[str] = []
    for line in lines:
        first = line.split(None, 1)[0] if line.strip() and not line.startswith("#") else ""
        if first in wanted:
            out.append(f"{first}\t\t\t{wanted.pop(first)}")
        else:
            out.append(line)
    if wanted:
        out.append("# Added by smtpeter postfix setup --dkim-domain:")
        out += [f"{name}\t\t\t{value}" for name, value in wanted.items()]
    new = "\n".join(out) + "\n"
    if new != text:
        plan.files[dkim.conf] = new
        plan.notes.append("restart opendkim afterwards (systemctl restart opendkim)")
    if not dkim.key_file.exists():
        plan.notes.append(f"a 2048-bit key will be made: {dkim.key_file}")
    return address


def prepare_dkim(dkim: Dkim, queue_dir: str) -> str:
    """Make the key if missing and the socket directory; returns the DNS TXT record
    to publish."""
    if not dkim.key_file.exists():
        dkim.key_file.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["opendkim-genkey", "-b", "2048", "-d", dkim.domain, "-s", dkim.selector,
             "-D", str(dkim.key_file.parent)],
            check=True, capture_output=True,
        )  # fmt: skip
    shutil.chown(dkim.key_file, "opendkim", "opendkim")
    dkim.key_file.chmod(0o600)
    socket_dir = dkim.socket(queue_dir).parent
    socket_dir.mkdir(exist_ok=True)
    shutil.chown(socket_dir, "opendkim", "postfix")
    socket_dir.chmod(0o750)
    return " ".join(dkim.dns_file.read_text().split()) if dkim.dns_file.exists() else ""


def _apply_to(directory: Path, plan: Plan) -> None:
    # One at a time: postconf -e appends new parameters in the order it is given
    # them only one by one, and our block should read in its documented order.
    for name, value in plan.main.items():
        _postconf(directory, "-e", f"{name}={value}")
    for key, entry in plan.master.items():
        _postconf(directory, "-M", f"{key}={entry}")


def _diff(old: Path, new_text: str, label: Path) -> str:
    a = old.read_text().splitlines(keepends=True) if old.exists() else []
    b = new_text.splitlines(keepends=True)
    return "".join(difflib.unified_diff(a, b, f"{label}", f"{label} (smtpeter)"))


@dataclass
class Result:
    changed: bool
    diff: str
    backup: Path | None
    warnings: list[str]
    dns_record: str | None = None
    notes: list[str] = field(default_factory=list)
    listeners: tuple[Listener, ...] = ()


def setup(
    cfg: Config,
    mode: Mode,
    *,
    config_dir: Path = Path("/etc/postfix"),
    dry_run: bool = False,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    reload: bool = True,
    dkim: Dkim | None = None,
    listeners: tuple[Listener, ...] | None = None,
) -> Result:
    plan = plan_setup(
        cfg, mode, config_dir, tls_cert=tls_cert, tls_key=tls_key, dkim=dkim, listeners=listeners
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in ("main.cf", "master.cf"):
            src = config_dir / name
            if src.exists():
                shutil.copy2(src, work / name)
            else:
                (work / name).write_text("")
        _apply_to(work, plan)
        new = {config_dir / n: (work / n).read_text() for n in ("main.cf", "master.cf")}
        new.update(plan.files)
        changed = {p: t for p, t in new.items() if not p.exists() or p.read_text() != t}
        diff = "".join(_diff(p, t, p) for p, t in changed.items())
        result = Result(bool(changed), diff, None, plan.warnings, None, plan.notes, plan.listeners)
        if dry_run or not changed:
            if not changed and dkim is not None and not dry_run:
                result.dns_record = prepare_dkim(dkim, _queue_dir(config_dir))
            return result
        result.backup = _backup(config_dir, mode, list(changed))
        if dkim is not None:
            result.dns_record = prepare_dkim(dkim, _queue_dir(config_dir))
        for path, text in changed.items():
            if path.parent == config_dir:
                shutil.copy2(work / path.name, path)  # keeps the copy's mode
            else:
                path.write_text(text)
    check = subprocess.run(
        ["postfix", "-c", str(config_dir), "check"], capture_output=True, text=True
    )
    if check.returncode != 0:
        _restore(config_dir, result.backup)
        raise SetupError(
            f"postfix check failed, previous configuration restored:\n{check.stderr.strip()}"
        )
    if reload:
        _reload(config_dir)
    return result


def _queue_dir(config_dir: Path) -> str:
    return _postconf(config_dir, "-h", "queue_directory").strip()


def _state_file(config_dir: Path) -> Path:
    return config_dir / "smtpeter-backup" / STATE_NAME


def _backup(config_dir: Path, mode: Mode, changing: list[Path]) -> Path:
    """Back up every file about to change; the first copy of each file (from before
    any smtpeter setup) is the one --undo restores."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    backup = config_dir / "smtpeter-backup" / stamp
    backup.mkdir(parents=True, exist_ok=True)
    state_path = _state_file(config_dir)
    state: dict[str, Any] = (
        json.loads(state_path.read_text()) if state_path.exists() else {"mode": mode}
    )
    originals: dict[str, str | None] = state.setdefault("files", {})
    for path in [config_dir / "main.cf", config_dir / "master.cf", *changing]:
        copy = backup / (path.name if path.parent == config_dir else f"{path.name}.orig")
        if path.exists():
            shutil.copy2(path, copy)
        originals.setdefault(str(path), str(copy) if path.exists() else None)
    state.setdefault("original", str(backup))
    state_path.write_text(json.dumps(state, indent=1))
    (backup / STATE_NAME).write_text(json.dumps(state, indent=1))
    return backup


def _restore(config_dir: Path, backup: Path | None) -> None:
    """Give back the files as they were before the setup whose backup this is."""
    if backup is None:
        return
    state = json.loads((backup / STATE_NAME).read_text())
    for target, _ in state["files"].items():
        path = Path(target)
        copy = backup / (path.name if path.parent == config_dir else f"{path.name}.orig")
        if copy.exists():
            shutil.copy2(copy, path)


def _reload(config_dir: Path) -> None:
    status = subprocess.run(["postfix", "-c", str(config_dir), "status"], capture_output=True)
    if status.returncode == 0:
        subprocess.run(["postfix", "-c", str(config_dir), "reload"], capture_output=True)


def undo(config_dir: Path = Path("/etc/postfix"), *, reload: bool = True) -> list[Path]:
    """Restore every file smtpeter's setups changed as it was before the first one."""
    state_path = _state_file(config_dir)
    if not state_path.exists():
        raise SetupError(f"nothing to undo: no smtpeter setup recorded in {state_path.parent}")
    state = json.loads(state_path.read_text())
    files: dict[str, str | None] = state.get("files") or {
        # A backup made by 0.1: main.cf and master.cf in one directory.
        str(config_dir / n): str(Path(state["original"]) / n)
        for n in ("main.cf", "master.cf")
    }
    restored: list[Path] = []
    for target, copy in files.items():
        if copy is None:
            Path(target).unlink(missing_ok=True)
        else:
            shutil.copy2(copy, target)
        restored.append(Path(target))
    state_path.unlink()
    if reload:
        _reload(config_dir)
    return restored
