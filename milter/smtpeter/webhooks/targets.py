"""Where a webhook URL may lead: never an SSRF tool.

Only http and https; no user:password in the URL. The host is resolved here and
every address is checked: private (RFC 1918, fc00::/7), loopback, link-local (the
cloud metadata address 169.254.169.254 among them), shared (100.64.0.0/10), multicast,
unspecified and other non-global addresses are refused unless
``webhooks.allow_private_targets`` is on; an IPv4 address written as IPv6
(``::ffff:127.0.0.1``) is judged as the IPv4 address it is. The client then connects
to the very address checked here (client.py), so a DNS answer that changes between
the check and the connection (DNS rebinding) cannot reach a refused address.
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]


class TargetError(Exception):
    """A URL that is not a permitted webhook target; the message says why."""


@dataclass(frozen=True)
class URL:
    """A webhook URL taken apart: what the request needs."""

    scheme: str
    host: str
    port: int
    #: Path and query, as sent in the request line.
    target: str


@dataclass(frozen=True)
class Target:
    """A URL and the address it is to be reached at (checked)."""

    url: URL
    address: str


def parse_url(url: str) -> URL:
    """Take a URL apart; TargetError names what is wrong with it."""
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise TargetError(f"URL {url!r}: contains white space or control characters")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise TargetError(f"URL {url!r}: {e}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise TargetError(
            f"URL {url!r}: scheme {scheme or '(none)'!r} refused: only http and https"
        )
    if parts.username is not None or parts.password is not None:
        raise TargetError(f"URL {url!r}: no user or password in the URL")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise TargetError(f"URL {url!r}: no host")
    if parts.fragment:
        raise TargetError(f"URL {url!r}: no #fragment")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return URL(scheme, host, port or (443 if scheme == "https" else 80), target)


def _kind(ip: IPAddress) -> str | None:
    """Why an address is not public (None: it is)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return _kind(ip.ipv4_mapped)
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_private:
        return "private"
    if not ip.is_global:
        return "non-public"
    return None


def refusal(address: str, allow_private: bool) -> str | None:
    """Why ``address`` may not be a target (None: it may). With ``allow_private``,
    only what can never be one (unspecified, multicast) is refused."""
    ip = ipaddress.ip_address(address)
    kind = _kind(ip)
    if kind is None or (allow_private and kind not in ("unspecified", "multicast")):
        return None
    return f"{kind} address {address}"


def system_resolver(host: str, port: int) -> list[str]:
    """The host's addresses, as the system resolver gives them (TCP, both families)."""
    infos: list[tuple[Any, ...]] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    out: list[str] = []
    for info in infos:
        address = str(info[4][0]).split("%", 1)[0]
        if address not in out:
            out.append(address)
    return out


def resolve(url: str | URL, *, allow_private: bool, resolver: Resolver = system_resolver) -> Target:
    """The address to reach ``url`` at: its host's first permitted address.
    TargetError if the URL is refused, the name does not resolve, or every address
    it resolves to is refused (the message names one and why)."""
    parsed = parse_url(url) if isinstance(url, str) else url
    literal = True
    try:
        addresses = [str(ipaddress.ip_address(parsed.host))]
    except ValueError:
        literal = False
        try:
            addresses = resolver(parsed.host, parsed.port)
        except (OSError, UnicodeError) as e:
            raise TargetError(f"host {parsed.host}: cannot resolve: {e}") from None
    if not addresses:
        raise TargetError(f"host {parsed.host}: cannot resolve: no address")
    refused: list[str] = []
    for address in addresses:
        why = refusal(address, allow_private)
        if why is None:
            return Target(parsed, address)
        refused.append(why)
    named = "" if literal else f"host {parsed.host} resolves to "
    raise TargetError(
        f"{named}{refused[0]}: refused (a private, loopback or link-local target needs "
        "webhooks.allow_private_targets: true)"
    )
