"""Render Postfix's main.cf and master.cf settings for smtpeter.

One function per use, one set of templates (the ``*.cf.in`` files beside this
module): what the tests run is what is shipped. ``relay-*`` holds the settings a
dedicated smtpeter relay needs in any Postfix; ``instance-*`` adds what a private
Postfix instance (local stack, tests) needs around them.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from importlib import resources

_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


class RenderError(ValueError):
    pass


def _template(name: str) -> str:
    return resources.files(__package__ or "smtpeter.postfix").joinpath(name).read_text("utf-8")


def _fill(name: str, values: dict[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        key = m.group(1)
        if key not in values:
            raise RenderError(f"{name}: no value for {{{{{key}}}}}")
        return values[key]

    return _PLACEHOLDER.sub(sub, _template(name))


def postfix_milter_address(socket: str) -> str:
    """libmilter's socket syntax (unix:/p, inet:port@host) in Postfix's syntax
    (unix:/p, inet:host:port)."""
    kind, _, rest = socket.partition(":")
    if kind in ("unix", "local"):
        return f"unix:{rest}"
    if kind in ("inet", "inet6"):
        port, _, host = rest.partition("@")
        return f"inet:{host or 'localhost'}:{port}"
    raise RenderError(f"unsupported milter socket {socket!r}")


@dataclass(frozen=True)
class RelaySettings:
    tls_cert_file: str
    tls_key_file: str
    # The auth socket as smtpd sees it (relative to the chroot when chrooted).
    auth_socket: str
    # The milter socket in libmilter's syntax, as in smtpeter.yaml; None leaves our
    # milter out (only the benchmark's baseline does that).
    milter_socket: str | None
    smtp_listen: str = "smtp"
    submission_listen: str = "submission"
    chroot: bool = True
    # smtpd processes per listener ("-": Postfix's default_process_limit).
    maxproc: str = "-"
    # Bounce tracking: the domain of signed return paths (None: off), the command
    # Postfix's pipe runs for each bounce and as whom, and the loopback listener
    # forwarded bounces are handed back through.
    bounce_domain: str | None = None
    bounce_command: str = "/usr/bin/smtpeter bounce"
    bounce_user: str = "smtpeter"
    reinject_listen: str = "127.0.0.1:10026"


@dataclass(frozen=True)
class InstanceSettings:
    config_dir: str
    queue_dir: str
    data_dir: str
    log_file: str
    log_dir: str
    relayhost: str
    myhostname: str = "smtpeter.localhost"
    # Further master.cf lines (the benchmark adds a plain listener).
    extra_services: str = ""
    # Further main.cf lines (the tests shorten the queue lifetime).
    extra_main: str = ""


def render_relay(relay: RelaySettings) -> tuple[str, str]:
    """The (main.cf, master.cf) settings of a dedicated smtpeter relay."""
    values = {k: str(v) for k, v in asdict(relay).items()}
    values["chroot"] = "y" if relay.chroot else "n"
    values["smtpd_milters"] = (
        f"{{ {postfix_milter_address(relay.milter_socket)}, default_action=tempfail }}"
        if relay.milter_socket is not None
        else ""
    )
    policy = "access-bounces.cf.in" if relay.bounce_domain else "access-submission.cf.in"
    values["access_policy"] = _fill(policy, values)
    master = _fill("relay-master.cf.in", values)
    if relay.bounce_domain:
        master += "\n" + _fill("bounces-master.cf.in", values)
    return _fill("relay-main.cf.in", values), master


def render_addon(relay: RelaySettings) -> str:
    """The master.cf entries of addon mode: submission with our SASL, plus bounces."""
    values = {k: str(v) for k, v in asdict(relay).items()}
    values["chroot"] = "y" if relay.chroot else "n"
    master = _fill("addon-master.cf.in", values)
    if relay.bounce_domain:
        master += "\n" + _fill("bounces-master.cf.in", values)
    return master


def render_instance(relay: RelaySettings, instance: InstanceSettings) -> dict[str, str]:
    """Complete main.cf and master.cf for a private Postfix instance running the relay."""
    main, master = render_relay(relay)
    values = {k: str(v) for k, v in asdict(instance).items()}
    return {
        "main.cf": _fill("instance-main.cf.in", values)
        + "\n"
        + main
        + (f"\n{instance.extra_main}\n" if instance.extra_main else ""),
        "master.cf": master
        + "\n"
        + _fill("instance-master.cf.in", values)
        + (f"\n{instance.extra_services}\n" if instance.extra_services else ""),
    }
