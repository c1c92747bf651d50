"""Apply smtpeter's settings to the system Postfix (`smtpeter postfix setup`).

Two modes:

- relay: a dedicated SMTP API relay. Ports 25 and 587 both require STARTTLS and
  AUTH (our auth daemon), every message passes our milter; with a bounce domain,
  mail for it is accepted without AUTH and handed to the bounce processor.
- addon: an existing MX keeps receiving mail on port 25 as before (our milter is
  attached there only to strip x-smtpeter-* headers: unauthenticated mail never gets
  a feature), and submission on 587 gets our SASL and the features.

The change is computed on a copy of main.cf and master.cf with Postfix's own
postconf, shown as a diff (--dry-run stops there), then installed after a backup;
`postfix check` validates it (a failure restores the backup) and Postfix is
reloaded. A second run with the same settings changes nothing. --undo restores the
backup taken before the first setup.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from smtpeter.postfix.render import (
    RelaySettings,
    postfix_milter_address,
    render_addon,
    render_relay,
)

from smtpeter.config import Config

Mode = Literal["relay", "addon"]
SNAKEOIL = ("/etc/ssl/certs/ssl-cert-snakeoil.pem", "/etc/ssl/private/ssl-cert-snakeoil.key")
STATE_NAME = "smtpeter-setup.json"


class SetupError(RuntimeError):
    pass


@dataclass
class Plan:
    main: dict[str, str] = field(default_factory=dict)
    master: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


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


def _tls(config_dir: Path, cert: str | None, key: str | None, plan: Plan) -> tuple[str, str]:
    if cert or key:
        if not (cert and key):
            raise SetupError("give both --tls-cert and --tls-key")
        for p in (cert, key):
            if not os.path.exists(p):
                raise SetupError(f"TLS file {p} does not exist")
        return cert, key
    current = parse_main(_postconf(config_dir, "-n"))
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


def plan_setup(
    cfg: Config,
    mode: Mode,
    config_dir: Path,
    *,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    dkim: Dkim | None = None,
) -> Plan:
    plan = Plan()
    if not (config_dir / "main.cf").exists():
        raise SetupError(
            f"no {config_dir / 'main.cf'}: configure Postfix first "
            "(dpkg-reconfigure postfix, e.g. as an Internet site)"
        )
    queue_dir = _postconf(config_dir, "-h", "queue_directory").strip()
    cert, key = _tls(config_dir, tls_cert, tls_key, plan)
    milter_path = cfg.milter.socket.split(":", 1)[1]
    milter = cfg.milter.socket
    if cfg.milter.socket.startswith(("unix:", "local:")):
        milter = "unix:" + _chroot_relative(milter_path, queue_dir)
    relay = RelaySettings(
        tls_cert_file=cert,
        tls_key_file=key,
        auth_socket=_chroot_relative(cfg.auth.socket, queue_dir),
        milter_socket=milter,
        chroot=True,
        bounce_domain=cfg.bounces.domain,
        bounce_command=f"{shutil.which('smtpeter') or '/usr/bin/smtpeter'} bounce",
        reinject_listen=f"{cfg.bounces.reinject_host}:{cfg.bounces.reinject_port}",
    )
    ours = f"{{ {postfix_milter_address(milter)}, default_action=tempfail }}"
    signer = (
        f"{{ unix:{_chroot_relative(str(dkim.socket(queue_dir)), queue_dir)},"
        " default_action=tempfail }"
        if dkim is not None
        else None
    )
    if mode == "relay":
        main_text, master_text = render_relay(relay)
        plan.main = parse_main(main_text)
        plan.master = parse_master(master_text)
        if signer is not None:
            # After ours: OpenDKIM signs the message as our milter left it.
            plan.main["smtpd_milters"] = f"{ours}, {signer}"
        return plan
    # addon: port 25 as it was, our milter added to the milters already there.
    current = parse_main(_postconf(config_dir, "-n"))
    milters = current.get("smtpd_milters", "")
    if postfix_milter_address(milter) not in milters:
        milters = f"{ours}, {milters}" if milters else ours
    if signer is not None and "opendkim/opendkim.sock" not in milters:
        milters = f"{milters}, {signer}"
    plan.main["smtpd_milters"] = milters
    if cfg.bounces.domain:
        domains = current.get("relay_domains", "")
        if cfg.bounces.domain not in re.split(r"[\s,]+", domains):
            plan.main["relay_domains"] = f"{domains}, {cfg.bounces.domain}".strip(", ")
        ours_map = f"inline:{{ {cfg.bounces.domain}=smtpeter-bounce: }}"
        maps = current.get("transport_maps", "")
        if ours_map not in maps:
            plan.main["transport_maps"] = f"{ours_map}, {maps}".strip(", ")
        plan.main["smtpeter-bounce_destination_recipient_limit"] = "1"
    plan.master = parse_master(render_addon(relay))
    return plan


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


def prepare_dkim(dkim: Dkim, queue_dir: str) -> str:
    """Make the key if missing, point opendkim.conf at it and at a socket inside
    Postfix's chroot; returns the DNS TXT record to publish."""
    for value, what in ((dkim.domain, "--dkim-domain"), (dkim.selector, "--dkim-selector")):
        if not _DKIM_NAME.match(value):
            raise SetupError(f"{what}: {value!r} is not a valid DNS name")
    if shutil.which("opendkim") is None or shutil.which("opendkim-genkey") is None:
        raise SetupError("DKIM needs OpenDKIM: apt-get install opendkim opendkim-tools")
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
    settings = {
        "Domain": dkim.domain,
        "Selector": dkim.selector,
        "KeyFile": str(dkim.key_file),
        "Socket": f"local:{dkim.socket(queue_dir)}",
        "Mode": "s",
        # The socket directory (group postfix, 0750) is the access control.
        "UMask": "000",
    }
    lines = dkim.conf.read_text().splitlines() if dkim.conf.exists() else []
    out: list[str] = []
    for line in lines:
        name = line.split(None, 1)[0] if line.strip() and not line.startswith("#") else None
        if name in settings:
            out.append(f"{name}\t\t\t{settings.pop(name)}")
        else:
            out.append(line)
    out += [f"{name}\t\t\t{value}" for name, value in settings.items()]
    dkim.conf.write_text("\n".join(out) + "\n")
    return " ".join(dkim.dns_file.read_text().split())


def _apply_to(directory: Path, plan: Plan) -> None:
    if plan.main:
        _postconf(directory, "-e", *(f"{k}={v}" for k, v in plan.main.items()))
    for key, entry in plan.master.items():
        _postconf(directory, "-M", f"{key}={entry}")


def _diff(old: Path, new: Path, name: str) -> str:
    a = old.read_text().splitlines(keepends=True) if old.exists() else []
    b = new.read_text().splitlines(keepends=True)
    return "".join(difflib.unified_diff(a, b, f"{old}", f"{old} (smtpeter)"))


@dataclass
class Result:
    changed: bool
    diff: str
    backup: Path | None
    warnings: list[str]
    dns_record: str | None = None


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
) -> Result:
    plan = plan_setup(cfg, mode, config_dir, tls_cert=tls_cert, tls_key=tls_key, dkim=dkim)
    dns_record = None
    if dkim is not None and not dry_run:
        queue_dir = _postconf(config_dir, "-h", "queue_directory").strip()
        dns_record = prepare_dkim(dkim, queue_dir)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in ("main.cf", "master.cf"):
            src = config_dir / name
            if src.exists():
                shutil.copy2(src, work / name)
            else:
                (work / name).write_text("")
        _apply_to(work, plan)
        diff = "".join(_diff(config_dir / n, work / n, n) for n in ("main.cf", "master.cf"))
        if not diff:
            return Result(False, "", None, plan.warnings, dns_record)
        if dry_run:
            return Result(True, diff, None, plan.warnings)
        backup = _backup(config_dir, mode)
        for name in ("main.cf", "master.cf"):
            shutil.copy2(work / name, config_dir / name)
    check = subprocess.run(
        ["postfix", "-c", str(config_dir), "check"], capture_output=True, text=True
    )
    if check.returncode != 0:
        _restore(config_dir, backup)
        raise SetupError(
            f"postfix check failed, previous configuration restored:\n{check.stderr.strip()}"
        )
    if reload:
        _reload(config_dir)
    return Result(True, diff, backup, plan.warnings, dns_record)


def _state_file(config_dir: Path) -> Path:
    return config_dir / "smtpeter-backup" / STATE_NAME


def _backup(config_dir: Path, mode: Mode) -> Path:
    """Back up main.cf and master.cf; the first backup (before any smtpeter setup) is
    the one --undo restores."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    backup = config_dir / "smtpeter-backup" / stamp
    backup.mkdir(parents=True, exist_ok=True)
    for name in ("main.cf", "master.cf"):
        if (config_dir / name).exists():
            shutil.copy2(config_dir / name, backup / name)
    state = _state_file(config_dir)
    if not state.exists():
        state.write_text(json.dumps({"original": str(backup), "mode": mode}))
    return backup


def _restore(config_dir: Path, backup: Path) -> None:
    for name in ("main.cf", "master.cf"):
        if (backup / name).exists():
            shutil.copy2(backup / name, config_dir / name)
        else:
            (config_dir / name).unlink(missing_ok=True)


def _reload(config_dir: Path) -> None:
    status = subprocess.run(["postfix", "-c", str(config_dir), "status"], capture_output=True)
    if status.returncode == 0:
        subprocess.run(["postfix", "-c", str(config_dir), "reload"], capture_output=True)


def undo(config_dir: Path = Path("/etc/postfix"), *, reload: bool = True) -> Path:
    """Restore main.cf and master.cf as they were before the first setup."""
    state = _state_file(config_dir)
    if not state.exists():
        raise SetupError(f"nothing to undo: no smtpeter setup recorded in {state.parent}")
    original = Path(json.loads(state.read_text())["original"])
    _restore(config_dir, original)
    state.unlink()
    if reload:
        _reload(config_dir)
    return original
