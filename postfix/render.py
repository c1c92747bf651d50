"""Render Postfix's main.cf and master.cf settings for smtpeter.

One set of templates (the ``*.cf.in`` files beside this module) and one set of
functions for every use: `smtpeter postfix setup` merges their output into an
existing Postfix, the local stack and the tests write it into a private instance,
so what is tested is what is shipped.

What smtpeter adds to a Postfix:

- main.cf: its own ``smtpeter_*`` parameters (TLS files, SASL socket, restrictions,
  our milter's default action), our milter first in ``smtpd_milters`` and
  ``non_smtpd_milters`` (other milters kept, in order, after it), the macros the
  milter reads, and for bounce tracking the bounce domain (matched exactly) with its
  transport. Nothing else of the server's global settings changes.
- master.cf: one smtpd service per SMTP API listener (25, 587, 465 with implicit
  TLS, 2525), each with every setting it needs as ``-o`` options, and the pipe
  that runs the bounce processor.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Literal

_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")

# The milter tells API sessions from the server's own by this {daemon_name}: only
# sessions on smtpeter's listeners are authenticated by smtpeter's auth daemon.
API_DAEMON_NAME = "smtpeter"
# SMTPeter's ports, and the master.cf service each is by default.
PORTS = ("25", "587", "465", "2525")
DEFAULT_SERVICES = {"25": "smtp", "587": "submission", "465": "submissions", "2525": "2525"}
# Macros our milter reads at MAIL (milter_mail_macros).
MAIL_MACROS = ("i", "{auth_type}", "{auth_authen}", "{daemon_name}")
# Postfix's default milter_mail_macros (3.7).
DEFAULT_MAIL_MACROS = (
    "i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mail_mailer}"
)

MilterAction = Literal["accept", "tempfail"]


class RenderError(ValueError):
    pass


def _template(name: str) -> str:
    return resources.files(__package__ or "smtpeter.postfix").joinpath(name).read_text("utf-8")


def _fill(name: str, values: Mapping[str, str]) -> str:
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
class Listener:
    """One SMTP API listener: SMTPeter's port and the master.cf service serving it
    (``smtp``, ``submission``, or ``127.0.0.1:2587`` in a private instance)."""

    port: str
    service: str

    def __post_init__(self) -> None:
        if self.port not in PORTS:
            raise RenderError(f"unknown listener {self.port!r} (one of {', '.join(PORTS)})")


def default_listeners(ports: tuple[str, ...] = PORTS) -> tuple[Listener, ...]:
    return tuple(Listener(p, DEFAULT_SERVICES[p]) for p in ports)


def parse_listeners(text: str) -> tuple[Listener, ...]:
    """A setup --listeners value: ports, each optionally with the master.cf service
    to serve it ("587,465=203.0.113.5:465,2525"), in SMTPeter's order."""
    services: dict[str, str] = {}
    for item in (i.strip() for i in text.split(",") if i.strip()):
        port, _, service = item.partition("=")
        services[port.strip()] = service.strip() or DEFAULT_SERVICES.get(port.strip(), "")
    ports = parse_ports(",".join(services))
    return tuple(Listener(p, services[p]) for p in ports)


def parse_ports(text: str) -> tuple[str, ...]:
    """A --listeners value ("25,587,465,2525") as ports in SMTPeter's order."""
    ports = {p.strip() for p in text.split(",") if p.strip()}
    unknown = sorted(ports - set(PORTS))
    if unknown or not ports:
        raise RenderError(
            f"--listeners: {', '.join(unknown) or 'nothing'} is not a listener "
            f"(choose from {','.join(PORTS)})"
        )
    return tuple(p for p in PORTS if p in ports)


@dataclass(frozen=True)
class RelaySettings:
    tls_cert_file: str
    tls_key_file: str
    # The auth socket as smtpd sees it (relative to the chroot when chrooted).
    auth_socket: str
    # The milter socket in libmilter's syntax, as in smtpeter.yaml; None leaves our
    # milter out (only the benchmark's baseline does that).
    milter_socket: str | None
    listeners: tuple[Listener, ...] = field(default_factory=default_listeners)
    chroot: bool = True
    # smtpd processes per listener ("-": Postfix's default_process_limit).
    maxproc: str = "-"
    # Bounce tracking: the domain of signed return paths (None: off), and the command
    # Postfix's pipe runs for each bounce and as whom.
    bounce_domain: str | None = None
    bounce_command: str = "/usr/bin/smtpeter bounce"
    bounce_user: str = "smtpeter"
    # What the server's own services (not our listeners) do when our milter is down:
    # tempfail on a dedicated relay, accept on an existing MX (addon mode).
    milter_default_action: MilterAction = "tempfail"


def _values(relay: RelaySettings) -> dict[str, str]:
    values = {k: str(v) for k, v in asdict(relay).items() if k != "listeners"}
    values["chroot"] = "y" if relay.chroot else "n"
    if relay.bounce_domain:
        values["bounce_domain_regexp"] = re.escape(relay.bounce_domain.lower())
    return values


def main_text(relay: RelaySettings) -> str:
    """Our own main.cf parameters, with their comments (the smtpeter_* block)."""
    values = _values(relay)
    text = _fill("relay-main.cf.in", values)
    if relay.bounce_domain:
        text += _fill("bounces-main.cf.in", values)
    return text


def milter_entry(relay: RelaySettings) -> str:
    """Our entry in smtpd_milters: its default action is a parameter, so that the
    API listeners can tempfail while the server's own services accept."""
    if relay.milter_socket is None:
        raise RenderError("no milter socket")
    address = postfix_milter_address(relay.milter_socket)
    return f"{{ {address}, default_action=$smtpeter_milter_default_action }}"


def split_list(value: str) -> list[str]:
    """The entries of a Postfix list (commas or white space between entries; a
    ``{ ... }`` group is one entry)."""
    entries: list[str] = []
    depth = 0
    current = ""
    for ch in value:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if depth == 0 and (ch == "," or ch.isspace()):
            if current:
                entries.append(current)
            current = ""
            continue
        current += ch
    if current.strip():
        entries.append(current.strip())
    return entries


def milter_address(entry: str) -> str:
    """The address of a smtpd_milters entry (``{ unix:/p, default_action=x }`` or
    ``unix:/p``)."""
    inner = entry.strip()
    if inner.startswith("{") and inner.endswith("}"):
        inner = inner[1:-1]
    return split_list(inner)[0] if split_list(inner) else ""


def merge_milters(current: str, ours: str) -> str:
    """Our milter first, every other milter kept in its order after it. A list that
    refers to $smtpd_milters already contains ours through it."""
    entries = split_list(current)
    if any(e in ("$smtpd_milters", "${smtpd_milters}") for e in entries):
        return current
    address = milter_address(ours)
    others = [e for e in entries if milter_address(e) != address]
    return ", ".join([ours, *others])


def merge_macros(current: str) -> str:
    """milter_mail_macros with the macros our milter reads added."""
    have = current.split()
    return " ".join(have + [m for m in MAIL_MACROS if m not in have])


def merge_domains(current: str, entry: str) -> str:
    entries = split_list(current)
    return current if entry in entries else ", ".join([*entries, entry])


def bounce_domain_entry(domain: str) -> str:
    """relay_domains entry for exactly the bounce domain: a regexp table, because a
    plain domain (and any fixed table) also matches every host below it."""
    return f"regexp:{{ {{/^{re.escape(domain.lower())}$$/ OK}} }}"


def bounce_transport_entry(domain: str) -> str:
    # transport_maps match the domain itself only (no parent_domain_matches_subdomains).
    return f"inline:{{ {domain}=smtpeter-bounce: }}"


def list_settings(relay: RelaySettings, current: Mapping[str, str]) -> dict[str, str]:
    """The shared main.cf lists (milters, macros, bounce domain) with ours merged into
    their current values; only the ones that need a change."""
    out: dict[str, str] = {}

    def put(name: str, value: str) -> None:
        if value != current.get(name, ""):
            out[name] = value

    if relay.milter_socket is not None:
        ours = milter_entry(relay)
        put("smtpd_milters", merge_milters(current.get("smtpd_milters", ""), ours))
        put("non_smtpd_milters", merge_milters(current.get("non_smtpd_milters", ""), ours))
        put(
            "milter_mail_macros",
            merge_macros(current.get("milter_mail_macros", DEFAULT_MAIL_MACROS)),
        )
    if relay.bounce_domain:
        put(
            "relay_domains",
            merge_domains(
                current.get("relay_domains", ""), bounce_domain_entry(relay.bounce_domain)
            ),
        )
        transport = bounce_transport_entry(relay.bounce_domain)
        maps = current.get("transport_maps", "")
        if transport not in split_list(maps):
            put("transport_maps", ", ".join([transport, *split_list(maps)]))
    return out


def _is_mx(relay: RelaySettings, listener: Listener) -> bool:
    """Port 25 with a bounce domain is that domain's MX: plaintext or STARTTLS, MAIL
    from anyone, RCPT to the bounce domain without AUTH (RFC 3207 section 4)."""
    return listener.port == "25" and bool(relay.bounce_domain)


def listener_entry(relay: RelaySettings, listener: Listener) -> str:
    """The master.cf service of one SMTP API listener."""
    values = _values(relay)
    mx = _is_mx(relay, listener)
    values.update(
        service=listener.service,
        port=listener.port,
        tls_level="may" if mx else "encrypt",
        wrappermode="yes" if listener.port == "465" else "no",
        delay_reject="yes" if mx else "no",
        sender_restrictions="" if mx else "$smtpeter_submission_sender_restrictions",
        relay_restrictions=(
            "$smtpeter_mx_relay_restrictions" if mx else "$smtpeter_submission_relay_restrictions"
        ),
        daemon_name=API_DAEMON_NAME,
    )
    return _fill("listener-master.cf.in", values)


def listener_options(relay: RelaySettings, listener: Listener) -> list[tuple[str, str]]:
    """The ``-o name=value`` options of a listener, in order."""
    options: list[tuple[str, str]] = []
    for line in listener_entry(relay, listener).splitlines()[1:]:
        name, _, value = line.strip().removeprefix("-o ").partition("=")
        options.append((name, value))
    return options


def bounce_services(relay: RelaySettings) -> str:
    """master.cf entries for bounce tracking (empty without a bounce domain)."""
    return _fill("bounces-master.cf.in", _values(relay)) if relay.bounce_domain else ""


def render_relay(relay: RelaySettings) -> tuple[str, str]:
    """The (main.cf, master.cf) text of a dedicated relay on a Postfix that has no
    settings of its own (the private instances)."""
    current = {"milter_mail_macros": DEFAULT_MAIL_MACROS}
    lists = list_settings(relay, current)
    main = main_text(relay)
    main += "".join(f"{name} = {value}\n" for name, value in lists.items())
    master = "# --- smtpeter: SMTP API listeners (25, 587, 465, 2525 behave the same) ---\n"
    master += "".join(listener_entry(relay, listener) for listener in relay.listeners)
    if relay.bounce_domain:
        master += "\n" + bounce_services(relay)
    return main, master


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
