"""The local stack: a private Postfix on loopback, our auth daemon and milter, and a
sink that writes every relayed message to a Maildir, all under one directory.

``smtpeter local up`` and the end-to-end tests both use :class:`LocalStack`, and the
Postfix settings come from the same renderer a real installation uses, so what is
tested is what is shipped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smtpeter import config as configmod
from smtpeter.local import isolate
from smtpeter.postfix.render import (
    PORTS,
    InstanceSettings,
    Listener,
    RelaySettings,
    render_instance,
)
from smtpeter.store import open_store

DEFAULT_ROOT = Path("/var/lib/smtpeter-local")
# deliveries reads Postfix's log (maillog_file): the delivery results of our messages.
COMPONENTS = ("sink", "authd", "milter", "tracker", "deliveries", "webhooks")


class StackError(RuntimeError):
    pass


@dataclass(frozen=True)
class Ports:
    # Loopback ports standing in for SMTPeter's 25, 587, 465 (implicit TLS) and 2525.
    smtp: int = 2525
    submission: int = 2587
    submissions: int = 2465
    alternate: int = 2626
    sink: int = 2526
    tracker: int = 2580

    @classmethod
    def free(cls) -> Ports:
        """A free loopback port for each (what tests and a second stack on one machine
        use)."""
        return cls(*(free_port() for _ in dataclasses.fields(cls)))

    def listener(self, port: str) -> int:
        """The loopback port standing in for one of SMTPeter's."""
        return {
            "25": self.smtp,
            "587": self.submission,
            "465": self.submissions,
            "2525": self.alternate,
        }[port]


BOUNCE_DOMAIN = "bounces.localhost"
# The unprivileged user Postfix's pipe runs the bounce processor as (made by
# scripts/bootstrap, as the Debian package does).
SERVICE_USER = "smtpeter"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def unix_open(path: Path) -> bool:
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(0.5)
        return s.connect_ex(str(path)) == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still answers kill(0); reap it if it is one.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


@dataclass
class LocalStack:
    root: Path = DEFAULT_ROOT
    ports: Ports = field(default_factory=Ports)
    # Extra settings merged into the generated smtpeter.yaml, e.g. {"milter": {"workers": 1}}.
    settings: dict[str, Any] = field(default_factory=dict)
    sink_reject: str | None = None
    sink_defer: str | None = None
    # Further main.cf lines for the private Postfix.
    extra_main: str = ""
    python: str = sys.executable
    # False runs Postfix without our milter (the benchmark's baseline).
    with_milter: bool = True
    # Further master.cf service lines for the private Postfix.
    extra_services: str = ""
    # At most this many smtpd processes per listener (None: Postfix's default).
    max_smtpd: int | None = None
    # Postfix's smtp-sink (C, one file per message in Maildir/new) instead of our
    # Python sink: the benchmarks use it so the sink takes little of the CPU.
    fast_sink: bool = False
    # SMTPeter's listeners to run (each on its loopback stand-in port).
    listeners: tuple[str, ...] = PORTS

    # -- paths ----------------------------------------------------------------------
    @property
    def config_file(self) -> Path:
        return self.root / "smtpeter.yaml"

    @property
    def postfix_dir(self) -> Path:
        return self.root / "postfix"

    @property
    def maildir(self) -> Path:
        return self.root / "Maildir"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def cert_file(self) -> Path:
        return self.root / "tls" / "cert.pem"

    @property
    def state_file(self) -> Path:
        return self.root / "stack.json"

    def pid_file(self, component: str) -> Path:
        return self.run_dir / f"{component}.pid"

    def log_file(self, component: str) -> Path:
        return self.log_dir / f"{component}.log"

    # -- config ---------------------------------------------------------------------
    def load_state(self) -> None:
        """Pick up the ports of a stack created earlier in the same directory."""
        if self.state_file.exists():
            data = json.loads(self.state_file.read_text())
            known = {f.name for f in dataclasses.fields(Ports)}
            # A stack made by an older version may name ports this one has no more.
            self.ports = Ports(**{k: v for k, v in data["ports"].items() if k in known})
            self.listeners = tuple(data.get("listeners", PORTS))
            self.sink_reject = data.get("sink_reject")
            self.sink_defer = data.get("sink_defer")

    def config(self) -> configmod.Config:
        return configmod.load(self.config_file)

    def _write_config(self) -> configmod.Config:
        base: dict[str, Any] = {
            "store": {"sqlite_path": str(self.data_dir / "smtpeter.db")},
            "auth": {"socket": str(self.run_dir / "auth.sock"), "failure_delay": 1.0},
            # The private Postfix's message_size_limit (Postfix's default) is not the
            # system Postfix's, which the milter would read by default.
            "milter": {
                "socket": f"unix:{self.run_dir / 'milter.sock'}",
                "message_size_limit": 10240000,
            },
            "tracker": {
                "listen_port": self.ports.tracker,
                "base_url": f"http://127.0.0.1:{self.ports.tracker}",
            },
            # No bounces.sendmail here: pipe(8) exports this instance's MAIL_CONFIG,
            # so the default /usr/sbin/sendmail forwards into it. Feedback reports to
            # fbl@ the bounce domain are complaints (the whole domain goes to the
            # bounce processor).
            "bounces": {"domain": BOUNCE_DOMAIN, "feedback_address": f"fbl@{BOUNCE_DOMAIN}"},
            # Receivers of the local stack's webhooks are on this machine (loopback).
            "webhooks": {"allow_private_targets": True},
        }
        for section, values in self.settings.items():
            base.setdefault(section, {}).update(values)
        cfg = configmod.parse(base, str(self.config_file))
        self.config_file.write_text(
            "# smtpeter local stack: generated by `smtpeter local up`.\n" + configmod.to_yaml(cfg)
        )
        return cfg

    def _write_tls(self) -> None:
        if self.cert_file.exists():
            return
        self.cert_file.parent.mkdir(parents=True, exist_ok=True)
        key = self.cert_file.with_name("key.pem")
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
                "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                "-keyout", str(key), "-out", str(self.cert_file),
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
        key.chmod(0o600)

    def _write_postfix(self, cfg: configmod.Config) -> None:
        relay = RelaySettings(
            tls_cert_file=str(self.cert_file),
            tls_key_file=str(self.cert_file.with_name("key.pem")),
            auth_socket=cfg.auth.socket,
            milter_socket=cfg.milter.socket if self.with_milter else None,
            listeners=tuple(
                Listener(port, f"127.0.0.1:{self.ports.listener(port)}") for port in self.listeners
            ),
            chroot=False,
            maxproc=str(self.max_smtpd) if self.max_smtpd else "-",
            bounce_domain=cfg.bounces.domain,
            bounce_command=shlex.join(
                [self.python, "-m", "smtpeter", "--config", str(self.config_file), "bounce"]
            ),
            bounce_user=SERVICE_USER,
        )
        instance = InstanceSettings(
            config_dir=str(self.postfix_dir),
            queue_dir=str(self.root / "queue"),
            data_dir=str(self.root / "postfix-data"),
            log_file=str(self.log_file("postfix")),
            log_dir=str(self.log_dir),
            relayhost=f"[127.0.0.1]:{self.ports.sink}",
            extra_services=self.extra_services,
            extra_main=self.extra_main,
        )
        self.postfix_dir.mkdir(parents=True, exist_ok=True)
        for name, text in render_instance(relay, instance).items():
            (self.postfix_dir / name).write_text(text)
        data_dir = Path(instance.data_dir)
        data_dir.mkdir(exist_ok=True)
        shutil.chown(data_dir, "postfix")

    def prepare(self) -> configmod.Config:
        """Create the directory tree, certificate and every config file."""
        for d in (self.root, self.run_dir, self.log_dir, self.maildir, self.root / "queue"):
            d.mkdir(parents=True, exist_ok=True)
        # Postfix's smtpd (user postfix) must reach the sockets under run/.
        for d in (self.root, self.run_dir):
            d.chmod(0o755)
        self.state_file.write_text(
            json.dumps(
                {
                    "ports": dataclasses.asdict(self.ports),
                    "listeners": list(self.listeners),
                    "sink_reject": self.sink_reject,
                    "sink_defer": self.sink_defer,
                }
            )
        )
        self._write_tls()
        cfg = self._write_config()
        self._write_store(cfg)
        self._write_postfix(cfg)
        return cfg

    def _write_store(self, cfg: configmod.Config) -> None:
        """Create the store owned by the service user: the bounce processor runs as
        that user, and SQLite gives the files it creates for root to the owner of
        the database file."""
        try:
            pwd.getpwnam(SERVICE_USER)
        except KeyError:
            raise StackError(
                f"user {SERVICE_USER!r} does not exist: run scripts/bootstrap first"
            ) from None
        self.data_dir.mkdir(exist_ok=True)
        shutil.chown(self.data_dir, SERVICE_USER, SERVICE_USER)
        open_store(cfg.store).close()
        for path in self.data_dir.iterdir():
            shutil.chown(path, SERVICE_USER, SERVICE_USER)

    # -- processes ------------------------------------------------------------------
    def _command(self, component: str) -> list[str]:
        base = [self.python, "-m", "smtpeter", "--config", str(self.config_file)]
        if component == "sink" and self.fast_sink:
            new = self.maildir / "new"
            new.mkdir(parents=True, exist_ok=True)
            shutil.chown(new, "postfix")
            return ["smtp-sink", "-u", "postfix", "-d", f"{new}/%H%M%S.",
                    f"127.0.0.1:{self.ports.sink}", "256"]  # fmt: skip
        if component == "sink":
            cmd = [*base, "sink", "--port", str(self.ports.sink), "--maildir", str(self.maildir)]
            if self.sink_reject:
                cmd += ["--reject", self.sink_reject]
            return [*cmd, "--defer", self.sink_defer] if self.sink_defer else cmd
        if component == "deliveries":
            return [*base, "deliveries", "--log", str(self.log_file("postfix"))]
        if component == "webhooks":
            return [*base, "webhooks", "dispatch"]
        return [*base, component]

    def pid(self, component: str) -> int | None:
        try:
            pid = int(self.pid_file(component).read_text())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    def _ready(self, component: str) -> bool:
        cfg = self.config()
        if component == "sink":
            return port_open(self.ports.sink)
        if component == "authd":
            return unix_open(Path(cfg.auth.socket))
        if component == "milter":
            return unix_open(Path(cfg.milter.socket.split(":", 1)[1]))
        if component == "tracker":
            return port_open(cfg.tracker.listen_port)
        if component in ("deliveries", "webhooks"):
            # They wait for the log file or the outbox themselves: running is ready.
            return self.pid(component) is not None
        return self.postfix_running() and all(
            port_open(self.ports.listener(port)) for port in self.listeners
        )

    def _wait(self, component: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._ready(component):
                return
            if component in COMPONENTS and self.pid(component) is None:
                break
            time.sleep(0.05)
        raise StackError(
            f"{component} did not start; see {self.log_file(component)}:\n"
            + self._tail(self.log_file(component))
        )

    @staticmethod
    def _tail(path: Path, lines: int = 15) -> str:
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def start_component(self, component: str) -> None:
        if self.pid(component) is not None:
            return
        with open(self.log_file(component), "ab") as log:
            proc = subprocess.Popen(
                self._command(component),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid_file(component).write_text(str(proc.pid))
        self._wait(component)

    def stop_component(self, component: str, timeout: float = 20.0) -> None:
        pid = self.pid(component)
        if pid is None:
            self.pid_file(component).unlink(missing_ok=True)
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _pid_alive(pid):
            os.killpg(pid, signal.SIGKILL)
        self.pid_file(component).unlink(missing_ok=True)

    def postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["postfix", "-c", str(self.postfix_dir), *args],
            capture_output=True,
            text=True,
            check=check,
        )

    def postfix_running(self) -> bool:
        return self.postfix("status", check=False).returncode == 0

    def start_postfix(self) -> None:
        if self.postfix_running():
            return
        # In a mount namespace of its own, so that sendmail(1) run by its pipe (the
        # bounce processor, user smtpeter) is accepted by postdrop: see isolate.py.
        result = isolate.start_postfix(self.postfix_dir, self.run_dir / "postfix-etc")
        if result.returncode != 0:
            raise StackError(
                "postfix did not start:\n" + result.stderr + self._tail(self.log_file("postfix"))
            )
        self._wait("postfix")

    def stop_postfix(self) -> None:
        if self.postfix_running():
            self.postfix("stop", check=False)

    def running(self) -> dict[str, bool]:
        state = {c: self.pid(c) is not None for c in COMPONENTS}
        state["postfix"] = self.postfix_dir.exists() and self.postfix_running()
        return state

    def start(self) -> None:
        """Bring every part up (each only if it is not running already)."""
        self.prepare()
        for component in COMPONENTS:
            self.start_component(component)
        self.start_postfix()

    def stop(self) -> None:
        if self.postfix_dir.exists():
            self.stop_postfix()
        for component in reversed(COMPONENTS):
            self.stop_component(component)

    # -- messages -------------------------------------------------------------------
    def delivered(self) -> list[Path]:
        new = self.maildir / "new"
        return sorted(new.iterdir(), key=lambda p: p.name) if new.exists() else []

    def queue_empty(self) -> bool:
        result = subprocess.run(
            ["postqueue", "-c", str(self.postfix_dir), "-j"], capture_output=True, text=True
        )
        return result.returncode == 0 and not result.stdout.strip()

    def flush(self) -> None:
        subprocess.run(["postqueue", "-c", str(self.postfix_dir), "-f"], capture_output=True)


@contextlib.contextmanager
def running_stack(stack: LocalStack) -> Iterator[LocalStack]:
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
