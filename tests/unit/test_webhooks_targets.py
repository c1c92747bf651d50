"""Webhook URLs are never an SSRF tool: only http(s), and no private, loopback or
link-local address, written as such or reached by a DNS name, unless allowed."""

from __future__ import annotations

import pytest

from smtpeter.webhooks.targets import Resolver, TargetError, parse_url, resolve


def _dns(table: dict[str, list[str]]) -> Resolver:
    def resolver(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError(f"[Errno -2] Name or service not known: {host}")
        return table[host]

    return resolver


NO_DNS = _dns({})


@pytest.mark.parametrize(
    "url,why",
    [
        ("ftp://example.com/hook", "scheme 'ftp' refused: only http and https"),
        ("file:///etc/passwd", "scheme 'file' refused"),
        ("gopher://127.0.0.1:6379/_INFO", "scheme 'gopher' refused"),
        ("example.com/hook", r"scheme '\(none\)' refused"),
        ("https://user:pw@example.com/", "no user or password"),
        ("https:///hook", "no host"),
        ("https://example.com/a b", "white space or control"),
        ("https://example.com:99999/", "Port out of range"),
        ("https://example.com/#frag", "no #fragment"),
    ],
)
def test_a_url_that_is_not_plain_http_or_https_is_refused_saying_why(url: str, why: str) -> None:
    """`webhooks add` refuses URLs of other schemes or with credentials, naming the fault."""
    with pytest.raises(TargetError, match=why):
        parse_url(url)


@pytest.mark.parametrize(
    "url,kind",
    [
        ("http://127.0.0.1/", "loopback"),
        ("http://127.8.9.10:8080/", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://10.1.2.3/", "private"),
        ("http://172.16.0.1/", "private"),
        ("http://192.168.1.1/", "private"),
        ("http://[fd00::1]/", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://[::ffff:10.0.0.1]/", "private"),
        ("http://[::ffff:169.254.169.254]/", "link-local"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://[::]/", "unspecified"),
        ("http://100.64.0.1/", "non-public"),
        ("http://224.0.0.1/", "multicast"),
    ],
)
def test_private_loopback_and_link_local_addresses_are_refused(url: str, kind: str) -> None:
    """An endpoint on an internal address (metadata service, localhost, LAN) is refused."""
    with pytest.raises(TargetError, match=f"{kind} address .*allow_private_targets"):
        resolve(url, allow_private=False, resolver=NO_DNS)


def test_a_dns_name_resolving_to_a_private_address_is_refused() -> None:
    """A public-looking name that points inside (rebinding, internal DNS) is refused."""
    resolver = _dns({"evil.example": ["127.0.0.1"], "lan.example": ["10.0.0.5", "fe80::2"]})
    with pytest.raises(TargetError, match=r"host evil.example resolves to loopback address"):
        resolve("https://evil.example/hook", allow_private=False, resolver=resolver)
    with pytest.raises(TargetError, match=r"resolves to private address 10.0.0.5"):
        resolve("https://lan.example/hook", allow_private=False, resolver=resolver)


def test_a_public_name_is_reached_at_its_first_public_address() -> None:
    """The address checked is the one connected to; private answers are skipped."""
    resolver = _dns({"hooks.example": ["10.0.0.7", "93.184.216.34", "8.8.8.8"]})
    target = resolve("https://hooks.example:8443/in?x=1", allow_private=False, resolver=resolver)
    assert target.address == "93.184.216.34"
    assert (target.url.scheme, target.url.host, target.url.port) == ("https", "hooks.example", 8443)
    assert target.url.target == "/in?x=1"
    assert resolve("http://[2606:4700::1]/", allow_private=False, resolver=NO_DNS).address == (
        "2606:4700::1"
    )


def test_a_name_that_does_not_resolve_is_refused_saying_so() -> None:
    """A typo in the host gives an error naming the host."""
    with pytest.raises(TargetError, match=r"host nowhere.invalid: cannot resolve"):
        resolve("https://nowhere.invalid/", allow_private=False, resolver=NO_DNS)


def test_allow_private_targets_lets_internal_endpoints_through() -> None:
    """With webhooks.allow_private_targets, loopback and LAN receivers are allowed."""
    resolver = _dns({"intranet": ["10.0.0.5"]})
    assert resolve("http://127.0.0.1:9000/", allow_private=True, resolver=NO_DNS).address == (
        "127.0.0.1"
    )
    assert resolve("http://intranet/h", allow_private=True, resolver=resolver).address == "10.0.0.5"
    assert resolve("http://[::1]/", allow_private=True, resolver=NO_DNS).address == "::1"
    # ...but never the unspecified address (which is this machine) or multicast.
    for url in ("http://0.0.0.0/", "http://224.0.0.1/"):
        with pytest.raises(TargetError):
            resolve(url, allow_private=True, resolver=NO_DNS)


def test_default_ports_and_paths() -> None:
    """A URL without port or path goes to 80/443 and /."""
    assert parse_url("http://example.com").port == 80
    https = parse_url("HTTPS://Example.com.")
    assert (https.scheme, https.host, https.port, https.target) == (
        "https", "example.com", 443, "/"
    )  # fmt: skip
