"""The Debian packaging's files, checked without building: systemd units, man pages,
debian/control. Fast; part of the normal test run."""

from __future__ import annotations

import configparser
import dataclasses
import importlib.machinery
import importlib.util
import re
import shutil
import subprocess
import typing
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from smtpeter import config
from smtpeter.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
PACKAGING = ROOT / "packaging"
DEBIAN = PACKAGING / "debian"
UNITS = sorted(p for p in (PACKAGING / "systemd").glob("*.service") if "upkeep" not in p.name)
UPKEEP = PACKAGING / "systemd" / "smtpeter-upkeep.service"
TIMER = PACKAGING / "systemd" / "smtpeter-upkeep.timer"
MAN8 = PACKAGING / "man" / "smtpeter.8"
MAN5 = PACKAGING / "man" / "smtpeter.yaml.5"
DAEMONS = ("authd", "deliveries", "milter", "tracker", "webhooks")


def _plain(troff: str) -> str:
    """troff source with font changes and escapes removed, enough to search it."""
    text = re.sub(r"\\f[BIRP]", "", troff)
    return text.replace("\\-", "-").replace("\\&", "").replace("\\e", "\\")


def _unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text(encoding="utf-8"), source=str(path))
    return parser


def test_a_unit_per_daemon() -> None:
    assert [u.name for u in UNITS] == [f"smtpeter-{d}.service" for d in DAEMONS]


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_settings(unit: Path) -> None:
    u = _unit(unit)
    assert set(u.sections()) == {"Unit", "Service", "Install"}
    service = u["Service"]
    daemon = unit.stem.removeprefix("smtpeter-")
    assert service["Type"] == "simple"
    command = "webhooks dispatch" if daemon == "webhooks" else daemon
    assert service["ExecStart"] == f"/usr/bin/smtpeter {command}"
    assert service["User"] == "smtpeter"
    assert service["Group"] == "smtpeter"
    assert service["Restart"] == "on-failure"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    if daemon == "deliveries":
        # It reads the log and writes the store; no socket, no network.
        assert service["ReadWritePaths"].split() == ["/var/lib/smtpeter"]
        assert service["RestrictAddressFamilies"].split() == ["AF_UNIX"]
        assert service["PrivateNetwork"] == "yes"
    elif daemon == "webhooks":
        # It POSTs to the endpoints and writes the store; no socket of its own.
        assert service["ReadWritePaths"].split() == ["/var/lib/smtpeter"]
        assert service["RestrictAddressFamilies"].split() == ["AF_UNIX", "AF_INET", "AF_INET6"]
        assert "PrivateNetwork" not in service
    else:
        assert service["ReadWritePaths"].split() == [
            "/var/lib/smtpeter",
            "/var/spool/postfix/smtpeter",
        ]
        assert service["RestrictAddressFamilies"].split() == ["AF_UNIX", "AF_INET", "AF_INET6"]
    for key in ("ProtectHome", "PrivateTmp", "PrivateDevices", "ProtectKernelTunables"):
        assert service[key] == "yes", key
    if daemon in ("authd", "milter"):
        # The daemons give their sockets group postfix.
        assert service["SupplementaryGroups"] == "postfix"
    if daemon == "authd":
        assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    if daemon == "tracker":
        assert service["TimeoutStopSec"] == "45"
    if daemon in ("milter", "tracker"):
        # The main process stops its workers; a second SIGTERM would hurry them.
        assert service["KillMode"] == "mixed"
    assert u["Install"]["WantedBy"] == "multi-user.target"


def test_deliveries_unit_reads_the_log_the_config_names() -> None:
    """smtpeter-deliveries.service runs `smtpeter deliveries` with the source left to
    deliveries.source, in the groups that read rsyslog's mail.log and the journal, and
    is installed by the package (debhelper enables and starts every unit it ships)."""
    service = _unit(PACKAGING / "systemd" / "smtpeter-deliveries.service")["Service"]
    assert set(service["SupplementaryGroups"].split()) == {"adm", "systemd-journal"}
    args = build_parser().parse_args(service["ExecStart"].split()[1:])
    assert args.command == "deliveries"
    assert (args.log, args.journal, args.once, args.from_start) == (None, False, False, False)
    install = (DEBIAN / "smtpeter.install").read_text(encoding="utf-8").splitlines()
    assert "packaging/systemd/smtpeter-deliveries.service lib/systemd/system/" in install
    assert "dh_installsystemd" in (DEBIAN / "rules").read_text(encoding="utf-8")


def test_webhooks_unit_runs_the_dispatcher_and_is_installed() -> None:
    """smtpeter-webhooks.service runs the dispatcher after the network; the package has it."""
    unit = _unit(PACKAGING / "systemd" / "smtpeter-webhooks.service")
    args = build_parser().parse_args(unit["Service"]["ExecStart"].split()[1:])
    assert (args.command, args.webhooks_command) == ("webhooks", "dispatch")
    assert "network-online.target" in unit["Unit"]["After"].split()
    install = (DEBIAN / "smtpeter.install").read_text(encoding="utf-8").splitlines()
    assert "packaging/systemd/smtpeter-webhooks.service lib/systemd/system/" in install


def test_upkeep_unit_and_timer() -> None:
    """The hourly upkeep runs `smtpeter store upkeep` as smtpeter, writing only the store."""
    service = _unit(UPKEEP)["Service"]
    assert service["Type"] == "oneshot"
    assert service["ExecStart"] == "/usr/bin/smtpeter store upkeep"
    assert (service["User"], service["Group"]) == ("smtpeter", "smtpeter")
    assert service["ReadWritePaths"].split() == ["/var/lib/smtpeter"]
    assert service["ProtectSystem"] == "strict" and service["PrivateNetwork"] == "yes"
    assert "Install" not in _unit(UPKEEP).sections()  # started by the timer alone
    timer = _unit(TIMER)
    assert timer["Timer"]["OnUnitActiveSec"] == "1h"
    assert timer["Install"]["WantedBy"] == "timers.target"
    parser = build_parser()
    args = parser.parse_args(service["ExecStart"].split()[1:])
    assert (args.command, args.action) == ("store", "upkeep")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_units_verify() -> None:
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *map(str, [*UNITS, UPKEEP, TIMER])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    problems = [
        line
        for line in (proc.stdout + proc.stderr).splitlines()
        # Not installed here: the package provides it.
        if line.strip() and "/usr/bin/smtpeter is not executable" not in line
    ]
    assert not problems, "\n".join(problems)


def _settings() -> list[tuple[str, Any, Any]]:
    """(section.key, type, default) for every setting of Config."""
    out = []
    for section in dataclasses.fields(config.Config):
        if section.name == "source":
            continue
        cls = typing.get_type_hints(config.Config)[section.name]
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            out.append((f"{section.name}.{f.name}", hints[f.name], getattr(cls(), f.name)))
    return out


def _yaml_default(key: str, value: Any) -> str:
    if key.endswith("socket_mode"):
        return f'"{value:04o}"'
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return "[" + ", ".join(value) + "]"
    return str(value)


def _ids(value: Any) -> str:
    return value if isinstance(value, str) else ""


@pytest.mark.parametrize("key,tp,default", _settings(), ids=_ids)
def test_every_setting_in_config_manual(key: str, tp: Any, default: Any) -> None:
    page = _plain(MAN5.read_text(encoding="utf-8"))
    want = _yaml_default(key, default)
    m = re.search(rf"^{re.escape(key)} \(([^,]+), default (.*)\)$", page, re.M)
    assert m, f"{key} is not documented in {MAN5.name}"
    assert m.group(2) == want, f"{key}: manual says default {m.group(2)}, code has {want}"
    # ...with a description under it.
    after = page[m.end() :].lstrip("\n").split("\n", 1)[0]
    assert after and not after.startswith("."), f"{key} has no description"


def _generator() -> ModuleType:
    path = PACKAGING / "man" / "gen-smtpeter-yaml-5"
    loader = importlib.machinery.SourceFileLoader("gen_smtpeter_yaml_5", str(path))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_config_manual_is_generated_from_the_example_file() -> None:
    assert _generator().render() == MAN5.read_text(encoding="utf-8"), (
        "packaging/man/smtpeter.yaml.5 is stale: run PYTHONPATH=milter python3 "
        "packaging/man/gen-smtpeter-yaml-5 > packaging/man/smtpeter.yaml.5"
    )


def test_every_command_in_manual() -> None:
    page = _plain(MAN8.read_text(encoding="utf-8"))
    parser = build_parser()
    sub = next(a for a in parser._actions if a.choices and "authd" in a.choices)
    assert isinstance(sub.choices, dict)
    for name, cmd in sub.choices.items():
        assert re.search(rf"\b{name}\b", page), f"smtpeter {name} is not in smtpeter.8"
        for action in cmd._actions:
            for opt in action.option_strings:
                if opt.startswith("--") and opt != "--help" and name not in ("sink", "local"):
                    assert opt in page, f"smtpeter {name} {opt} is not in smtpeter.8"
    for status in (0, 64, 65, 67, 69, 75, 78):
        assert re.search(rf"^\.B {status}$", MAN8.read_text(encoding="utf-8"), re.M), status


@pytest.mark.parametrize("page", [MAN8, MAN5], ids=lambda p: p.name)
def test_man_page_renders_without_warnings(page: Path) -> None:
    if shutil.which("groff") is None:
        pytest.skip("no groff")
    proc = subprocess.run(
        ["groff", "-man", "-ww", "-z", "-K", "utf8", str(page)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and not proc.stderr, proc.stderr


def _control() -> list[dict[str, str]]:
    paragraphs = []
    for block in re.split(r"\n\s*\n", (DEBIAN / "control").read_text(encoding="utf-8").strip()):
        fields: dict[str, str] = {}
        last = ""
        for line in block.splitlines():
            if line[:1].isspace():
                fields[last] += "\n" + line.strip()
            else:
                last, _, value = line.partition(":")
                fields[last] = value.strip()
        paragraphs.append(fields)
    return paragraphs


def test_control_depends_on_postfix() -> None:
    source, *binaries = _control()
    assert source["Source"] == "smtpeter"
    (pkg,) = binaries
    fields = pkg["Depends"].replace("\n", " ").split(",")
    depends = [d.split()[0] for d in fields if d.strip()]
    assert "postfix" in depends
    assert "libmilter-dev" in source["Build-Depends"]


def test_installed_files_exist() -> None:
    for line in (DEBIAN / "smtpeter.install").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            assert (ROOT / line.split()[0]).is_file(), line
    for line in (DEBIAN / "smtpeter.manpages").read_text(encoding="utf-8").splitlines():
        if line.strip():
            assert (ROOT / line.strip()).is_file(), line
    assert "packaging/smtpeter.yaml etc/smtpeter/" in (DEBIAN / "smtpeter.install").read_text()
