"""One YAML config file, every default in one place, validated at start.

A config error names the file, the key (dotted path) and what was expected, so a
sysadmin can fix it without reading our source. Unknown keys are errors too: a
misspelt setting that is silently ignored is worse than a refusal to start.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import shlex
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

DEFAULT_PATH = Path("/etc/smtpeter/smtpeter.yaml")
ENV_VAR = "SMTPETER_CONFIG"

Inliner = Literal["css-inline", "premailer"]
LogLevel = Literal["debug", "info", "warning", "error"]


class ConfigError(Exception):
    """A config file that cannot be used; the message says where and why."""


@dataclass(frozen=True)
class StoreConfig:
    # SQLite database file (WAL mode). The directory must be writable by the daemons.
    sqlite_path: str = "/var/lib/smtpeter/smtpeter.db"
    # Seconds one SQLite statement waits for a lock held by another process before
    # the store retries it (see retry_seconds).
    busy_timeout: float = 1.0
    # Seconds one store operation (a login lookup, a message or event write) keeps
    # waiting and retrying while the database is locked, with a warning logged, before
    # it fails and the client gets a 4xx. Well under Postfix's 10 s AUTH reply limit
    # and its milter timeouts (milter_command_timeout 30 s, milter_content_timeout
    # 300 s). 0: no retries (busy_timeout alone).
    retry_seconds: float = 5.0
    # Days messages and their events are kept; `smtpeter store upkeep` (hourly, by
    # smtpeter-upkeep.timer) deletes older ones in small batches. The per-day counts
    # of `smtpeter stats` are kept. 0: keep everything.
    retention_days: int = 0


@dataclass(frozen=True)
class AuthConfig:
    # Unix socket Postfix's smtpd connects to (smtpd_sasl_path). Debian runs smtpd
    # chrooted in /var/spool/postfix, so the default lies inside the chroot.
    socket: str = "/var/spool/postfix/smtpeter/auth.sock"
    socket_mode: int = 0o660
    socket_group: str | None = "postfix"
    # Delay before a failed authentication is answered; Postfix gives up after 10 s.
    failure_delay: float = 2.0
    # Verified (login, password) pairs are remembered this long (keyed by a keyed hash).
    cache_ttl: float = 300.0
    cache_max_entries: int = 10000
    # Threads verifying password hashes (argon2id, ~20 ms each).
    hash_workers: int = 2
    # A request a client abandoned mid-conversation is dropped after this many seconds.
    request_timeout: float = 300.0
    # Password guessing (auth/throttle.py). After throttle_after failures from one
    # client address (IPv6: its /throttle_ipv6_prefix network), its attempts are paced:
    # at most one password every throttle_interval seconds is checked, across all its
    # connections; an attempt that would wait too long fails at once. A login with
    # throttle_after failures (from anywhere) makes each attempt on it wait
    # throttle_interval, never more. 0 turns pacing off.
    throttle_after: int = 10
    throttle_interval: float = 1.0
    # At lockout_after failures the address is locked for lockout_seconds: every AUTH
    # from it fails unchecked. Counts are forgotten lockout_seconds after an address's
    # last failure. 0 turns locking off.
    lockout_after: int = 30
    lockout_seconds: float = 600.0
    # At most this many addresses (and as many login names) are tracked, least
    # recently seen dropped first.
    throttle_max_addresses: int = 100000
    throttle_ipv6_prefix: int = 64
    # Client networks never paced nor locked (their failures still count per login and
    # are logged), as Postfix exempts $mynetworks from its own rate limits.
    throttle_exempt: tuple[str, ...] = ("127.0.0.0/8", "::1")


@dataclass(frozen=True)
class MilterConfig:
    # Where the milter listens: unix:/path or inet:port@host (libmilter syntax).
    socket: str = "unix:/var/spool/postfix/smtpeter/milter.sock"
    socket_mode: int = 0o660
    socket_group: str | None = "postfix"
    # Pre-forked worker processes sharing the socket; 0 means one per CPU core.
    workers: int = 0
    # Seconds libmilter waits on Postfix before dropping a session.
    timeout: int = 600
    # Seconds the HTML feature pipeline may take for one message before the message
    # is answered with a temporary failure.
    feature_timeout: float = 60.0
    # At most this many x-smtpeter-* headers in one message: more is refused (5xx) on
    # the API's listeners; on the server's own services they are then left as they
    # are (removing tens of thousands makes Postfix's cleanup fail).
    max_instruction_headers: int = 100
    # Postfix's message_size_limit in bytes: a rewrite that would take a message past
    # it is not applied (the message goes out untouched). null: read it from Postfix
    # (postconf) at start; 0: no limit.
    message_size_limit: int | None = None


@dataclass(frozen=True)
class FeaturesConfig:
    # CSS inliner: css-inline (Rust, ~1 ms for a 40 KB newsletter) or premailer
    # (pure Python over lxml, ~100 ms). Neither ever fetches remote stylesheets.
    inliner: Inliner = "css-inline"
    # Track links in text/plain parts too (off: plain text stays byte for byte).
    track_plain_text: bool = False
    # An HTML part nested deeper than this, or larger than max_html_bytes
    # characters, is not inlined (it goes out as it was; the skip is logged and
    # recorded): css-inline crashes on about 12,000 nested elements. 0: no bound.
    max_html_depth: int = 1000
    max_html_bytes: int = 5000000


@dataclass(frozen=True)
class TrackerConfig:
    # The tracker's address as recipients reach it (behind a reverse proxy: the
    # proxy's https URL). Click links and open pixels start with it.
    base_url: str = "http://127.0.0.1:8025"
    # Where the tracker's HTTP server listens.
    listen_host: str = "127.0.0.1"
    listen_port: int = 8025
    # Server worker processes.
    workers: int = 1
    # Addresses of reverse proxies whose X-Forwarded-For header is believed.
    trusted_proxies: tuple[str, ...] = ()
    # A link or pixel older than this many days gives 404 (no redirect, no event).
    link_lifetime_days: int = 400
    # After a signing key is retired (smtpeter keys rotate), the links it signed keep
    # working this many days.
    key_retention_days: int = 400
    # Events are written in batches at most this many seconds apart.
    event_flush_seconds: float = 0.5
    # Events held in memory while the store is slow or down; beyond this the oldest
    # are dropped with an error in the log.
    event_queue_max: int = 100000
    # One log line per request. The events hold the same facts; turning the lines
    # off makes a redirect about a third cheaper.
    access_log: bool = True


@dataclass(frozen=True)
class BouncesConfig:
    # The domain of signed return paths (trackbounces). Postfix must receive mail for
    # it (MX record) and hand it to `smtpeter bounce`; null turns trackbounces off.
    domain: str | None = None
    # Return paths look like <prefix>+<token>@<domain>.
    prefix: str = "b"
    # A bounce to a return path older than this many days is dropped uncounted.
    address_lifetime_days: int = 30
    # Forward each bounce to the message's original envelope sender (unless that was
    # empty), so the sender's own bounce handling keeps working.
    forward: bool = True
    # The sendmail(1) command the bounce processor hands forwarded bounces back to
    # Postfix with (null sender, through pickup and non_smtpd_milters). Split into
    # words like a shell command line; the processor adds the sender and recipient.
    sendmail: str = "/usr/sbin/sendmail"
    # A hard bounce or a complaint puts the address on the sending login's
    # suppression list at once. Soft bounces that are about the mailbox itself (full,
    # disabled) do after this many messages to it bounced so; 0: never. Blocks,
    # policy and spam verdicts, timeouts never do.
    soft_bounce_limit: int = 5
    # The address registered with mailbox providers' feedback loops (e.g.
    # fbl@bounces.example.com): RFC 5965 reports sent to it become complaints for the
    # message they return (found by its signed return path, else its Message-ID). At
    # the bounce domain it needs nothing more; elsewhere, route it to the smtpeter-bounce
    # transport yourself. null: only reports sent to a signed return path count.
    feedback_address: str | None = None


@dataclass(frozen=True)
class DeliveriesConfig:
    # Where `smtpeter deliveries` reads Postfix's delivery results: auto, journal, or
    # the absolute path of a log file. auto: /var/log/mail.log if it exists (rsyslog),
    # else the file Postfix's maillog_file names (postconf), else the journal (a
    # Debian 12 without rsyslog).
    source: str = "auto"


@dataclass(frozen=True)
class WebhooksConfig:
    # Let endpoints be on private, loopback, link-local and other non-public addresses
    # (10.0.0.0/8, 127.0.0.1, 169.254.169.254, fd00::/8, ...). Off, such a URL is
    # refused, also when a DNS name resolves to one at delivery time: a webhook must
    # not become a way to reach the machines behind this server.
    allow_private_targets: bool = False
    # Seconds to connect to an endpoint, and for the whole request (connect, TLS,
    # sending, the reply's status line and headers).
    connect_timeout: float = 5.0
    request_timeout: float = 10.0
    # A failed delivery (no 2xx reply) is retried with exponential backoff, from
    # retry_first_seconds doubling up to retry_max_seconds between attempts, until
    # retry_hours after its first attempt (at least 24); then it stays in the outbox
    # marked failed (smtpeter webhooks list shows it; webhooks retry re-queues it).
    retry_hours: float = 24.0
    retry_first_seconds: float = 30.0
    retry_max_seconds: float = 3600.0
    # Requests in flight at once to one endpoint (each endpoint has its own worker, so
    # a slow one never holds up another).
    max_in_flight: int = 4
    # Seconds between looks at the outbox for new events, and at the endpoints.
    poll_seconds: float = 1.0


@dataclass(frozen=True)
class LoggingConfig:
    level: LogLevel = "info"


@dataclass(frozen=True)
class Config:
    store: StoreConfig = field(default_factory=StoreConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    milter: MilterConfig = field(default_factory=MilterConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    bounces: BouncesConfig = field(default_factory=BouncesConfig)
    deliveries: DeliveriesConfig = field(default_factory=DeliveriesConfig)
    webhooks: WebhooksConfig = field(default_factory=WebhooksConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    # The file this was read from (None for built-in defaults).
    source: str | None = None


_MODE_KEYS = {"socket_mode"}
_DOMAIN = re.compile(
    r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]*$", re.I
)
_PREFIX = re.compile(r"^[A-Za-z0-9_-]{1,16}$")
# A plain local part (no quoting, no routing characters) at a domain.
_FEEDBACK = re.compile(r"^[A-Za-z0-9._+-]{1,64}@" + _DOMAIN.pattern.lstrip("^"), re.I)


def _command_words(command: str) -> list[str] | None:
    """A command line split as a shell would (no expansion), None if it is empty or
    its quotes do not balance."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    return words or None


def _network(text: str) -> bool:
    """True if ``text`` is an IP address or network (host bits may be set)."""
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


def _expected(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_expected(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, str(tp)
    )


def _coerce(value: Any, tp: Any, key: str, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, key, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {key}: expected {_expected(tp)}, got {value!r}")
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise ConfigError(f"{where}: {key}: expected {_expected(tp)}, got {value!r}")
    if origin is tuple:
        (item,) = typing.get_args(tp)[:1]
        if isinstance(value, list):
            return tuple(_coerce(v, item, f"{key}[{i}]", where) for i, v in enumerate(value))
        raise ConfigError(f"{where}: {key}: expected a list, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is str and isinstance(value, str) and value:
        return value
    raise ConfigError(f"{where}: {key}: expected {_expected(tp)}, got {value!r}")


def _build(cls: type[Any], data: Any, prefix: str, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {prefix or 'top level'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    # Config.source is where the file was read from, not a setting.
    known = {f.name for f in dataclasses.fields(cls) if cls is not Config or f.name != "source"}
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else str(name)
        if name not in known:
            raise ConfigError(
                f"{where}: {key}: unknown setting (known: {', '.join(sorted(known))})"
            )
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(typing.cast(type[Any], tp), value, key, where)
        elif name in _MODE_KEYS:
            kwargs[name] = _parse_mode(value, key, where)
        else:
            kwargs[name] = _coerce(value, tp, key, where)
    return cls(**kwargs)


def _parse_mode(value: Any, key: str, where: str) -> int:
    # YAML reads 0660 as the octal integer 432 already; "0660" and "660" are strings.
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0o777:
        return value
    if isinstance(value, str):
        try:
            mode = int(value, 8)
        except ValueError:
            mode = -1
        if 0 <= mode <= 0o777:
            return mode
    raise ConfigError(f'{where}: {key}: expected an octal file mode such as "0660", got {value!r}')


def _validate(cfg: Config, where: str) -> None:
    checks: list[tuple[bool, str, str]] = [
        (0 <= cfg.auth.failure_delay < 10, "auth.failure_delay", "a number from 0 to below 10"),
        (cfg.auth.cache_ttl >= 0, "auth.cache_ttl", "a number of seconds >= 0"),
        (cfg.auth.cache_max_entries >= 0, "auth.cache_max_entries", "an integer >= 0"),
        (cfg.auth.hash_workers >= 1, "auth.hash_workers", "an integer >= 1"),
        (cfg.auth.request_timeout > 0, "auth.request_timeout", "a number of seconds > 0"),
        (cfg.auth.throttle_after >= 0, "auth.throttle_after", "an integer >= 0"),
        (
            0 < cfg.auth.throttle_interval <= 8,
            "auth.throttle_interval",
            "a number of seconds above 0 and at most 8",
        ),
        (cfg.auth.lockout_after >= 0, "auth.lockout_after", "an integer >= 0"),
        (cfg.auth.lockout_seconds > 0, "auth.lockout_seconds", "a number of seconds > 0"),
        (
            cfg.auth.throttle_max_addresses >= 1,
            "auth.throttle_max_addresses",
            "an integer >= 1",
        ),
        (
            0 <= cfg.auth.throttle_ipv6_prefix <= 128,
            "auth.throttle_ipv6_prefix",
            "a prefix length from 0 to 128",
        ),
        (
            all(_network(n) for n in cfg.auth.throttle_exempt),
            "auth.throttle_exempt",
            "a list of IP addresses or networks such as 192.0.2.0/24",
        ),
        (0 <= cfg.milter.workers <= 256, "milter.workers", "an integer from 0 to 256"),
        (cfg.milter.timeout > 0, "milter.timeout", "an integer number of seconds > 0"),
        (cfg.milter.feature_timeout > 0, "milter.feature_timeout", "a number of seconds > 0"),
        (
            1 <= cfg.milter.max_instruction_headers <= 10000,
            "milter.max_instruction_headers",
            "an integer from 1 to 10000",
        ),
        (
            cfg.milter.message_size_limit is None or cfg.milter.message_size_limit >= 0,
            "milter.message_size_limit",
            "a number of bytes >= 0, or null",
        ),
        (cfg.features.max_html_depth >= 0, "features.max_html_depth", "an integer >= 0"),
        (cfg.features.max_html_bytes >= 0, "features.max_html_bytes", "an integer >= 0"),
        (
            cfg.milter.socket.startswith(("unix:", "local:", "inet:", "inet6:")),
            "milter.socket",
            "unix:/path or inet:port@host",
        ),
        (os.path.isabs(cfg.auth.socket), "auth.socket", "an absolute path"),
        (os.path.isabs(cfg.store.sqlite_path), "store.sqlite_path", "an absolute path"),
        (cfg.store.busy_timeout >= 0, "store.busy_timeout", "a number of seconds >= 0"),
        (cfg.store.retry_seconds >= 0, "store.retry_seconds", "a number of seconds >= 0"),
        (cfg.store.retention_days >= 0, "store.retention_days", "a number of days >= 0"),
        (
            cfg.tracker.base_url.startswith(("http://", "https://"))
            and not cfg.tracker.base_url.endswith("/"),
            "tracker.base_url",
            "an http:// or https:// URL without a trailing slash",
        ),
        (0 < cfg.tracker.listen_port < 65536, "tracker.listen_port", "a port from 1 to 65535"),
        (1 <= cfg.tracker.workers <= 64, "tracker.workers", "an integer from 1 to 64"),
        (cfg.tracker.link_lifetime_days >= 1, "tracker.link_lifetime_days", "an integer >= 1"),
        (cfg.tracker.key_retention_days >= 0, "tracker.key_retention_days", "an integer >= 0"),
        (cfg.tracker.event_flush_seconds > 0, "tracker.event_flush_seconds", "a number > 0"),
        (cfg.tracker.event_queue_max >= 1, "tracker.event_queue_max", "an integer >= 1"),
        (
            cfg.bounces.domain is None or _DOMAIN.match(cfg.bounces.domain) is not None,
            "bounces.domain",
            "a domain name such as bounces.example.com, or null",
        ),
        (
            _PREFIX.match(cfg.bounces.prefix) is not None,
            "bounces.prefix",
            "1 to 16 letters, digits, '-' or '_'",
        ),
        (
            cfg.bounces.address_lifetime_days >= 1,
            "bounces.address_lifetime_days",
            "an integer >= 1",
        ),
        (
            cfg.bounces.soft_bounce_limit >= 0,
            "bounces.soft_bounce_limit",
            "an integer >= 0",
        ),
        (
            cfg.bounces.feedback_address is None
            or _FEEDBACK.match(cfg.bounces.feedback_address) is not None,
            "bounces.feedback_address",
            "an address such as fbl@bounces.example.com, or null",
        ),
        (
            _command_words(cfg.bounces.sendmail) is not None,
            "bounces.sendmail",
            "a command such as /usr/sbin/sendmail (shell-style words, not empty)",
        ),
        (
            cfg.deliveries.source in ("auto", "journal") or os.path.isabs(cfg.deliveries.source),
            "deliveries.source",
            "auto, journal, or the absolute path of a log file such as /var/log/mail.log",
        ),
        (
            0 < cfg.webhooks.connect_timeout <= cfg.webhooks.request_timeout <= 60,
            "webhooks.connect_timeout",
            "seconds above 0, at most webhooks.request_timeout (which is at most 60)",
        ),
        (cfg.webhooks.retry_hours >= 24, "webhooks.retry_hours", "a number of hours >= 24"),
        (
            0 < cfg.webhooks.retry_first_seconds <= cfg.webhooks.retry_max_seconds,
            "webhooks.retry_first_seconds",
            "seconds above 0, at most webhooks.retry_max_seconds",
        ),
        (1 <= cfg.webhooks.max_in_flight <= 64, "webhooks.max_in_flight", "an integer 1 to 64"),
        (0 < cfg.webhooks.poll_seconds <= 60, "webhooks.poll_seconds", "seconds above 0, <= 60"),
    ]
    for ok, key, expected in checks:
        if not ok:
            raise ConfigError(f"{where}: {key}: expected {expected}")


def parse(data: Any, where: str) -> Config:
    """Build a Config from already-parsed YAML data (None means all defaults)."""
    cfg = _build(Config, {} if data is None else data, "", where)
    cfg = dataclasses.replace(cfg, source=where)
    _validate(cfg, where)
    return typing.cast(Config, cfg)


def load(path: str | os.PathLike[str] | None = None) -> Config:
    """Read the config file: the given path, else $SMTPETER_CONFIG, else the default path.

    A missing default file means all defaults; a missing file that was asked for by
    name is an error.
    """
    explicit = path is not None or ENV_VAR in os.environ
    p = Path(path if path is not None else os.environ.get(ENV_VAR, DEFAULT_PATH))
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"{p}: no such file") from None
        return dataclasses.replace(Config(), source=None)
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    return parse(data, str(p))


def to_yaml(cfg: Config) -> str:
    """Serialise a Config (used to write the local stack's config file)."""
    data = dataclasses.asdict(cfg)
    data.pop("source", None)
    data["tracker"]["trusted_proxies"] = list(data["tracker"]["trusted_proxies"])
    data["auth"]["throttle_exempt"] = list(data["auth"]["throttle_exempt"])
    for section in ("auth", "milter"):
        data[section]["socket_mode"] = f"{data[section]['socket_mode']:04o}"
    return yaml.safe_dump(data, sort_keys=False)
