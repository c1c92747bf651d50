"""Hostile and unusual input through the milter in-process (pymilter's TestCtx with
Postfix's chgheader semantics; the real thing is tests/e2e/test_hostile.py): what a
library cannot handle is skipped and recorded, never a crash or a tempfail; limits
give a clear 5xx on the API's listeners and never refuse the server's own mail."""

from __future__ import annotations

import Milter
import pytest

from smtpeter.features import FeatureSet
from smtpeter.logins import Login
from smtpeter.relay.milter import RelayContext
from tests.unit.test_milter_testctx import STYLED, delivered_headers, feed, message
from tests.unit.test_milter_testctx import relay as relay

DEEP = "<html><head><style>div { color: #ff0000; }</style></head><body>"
DEEP += "<div>" * 12000 + "x" + "</div>" * 12000 + '<a href="https://example.org/">l</a>'
DEEP += "</body></html>"


@pytest.fixture
def logins(relay: RelayContext) -> RelayContext:
    everything = FeatureSet(inlinecss=True, trackclicks=True, trackopens=True)
    relay.store.create_login(Login("all", "x", features=everything))
    relay.store.create_login(Login("signer", "x", features=everything, rewrite_signed=True))
    return relay


def record(relay: RelayContext) -> tuple[tuple[str, ...], tuple[str, ...]]:
    [m] = relay.store.messages(queue_id="4F3A21B0C9")
    return m.features, m.skipped


def test_a_document_too_deep_for_the_inliner_goes_out_uninlined_but_tracked(
    logins: RelayContext,
) -> None:
    rc, ctx = feed(message(html=DEEP), login="all")
    assert rc == Milter.ACCEPT
    body = ctx._body.getvalue()
    assert b'style=3D"color' not in body  # not inlined
    assert b"/c/" in body and b"/o/" in body  # the other features still applied
    features, skipped = record(logins)
    assert features == ("trackclicks", "trackopens")
    assert skipped == ("inlinecss: elements nested 12000 deep (features.max_html_depth 1000)",)


@pytest.mark.parametrize("login", ["all", "inliner"])
def test_dkim_signed_mail_is_not_rewritten(logins: RelayContext, login: str) -> None:
    raw = message("DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=s1; b=abc")
    rc, ctx = feed(raw, login=login)
    assert rc == Milter.ACCEPT and not ctx._bodyreplaced
    features, skipped = record(logins)
    assert features == ()
    assert skipped and all(s.endswith(": the message is DKIM-signed") for s in skipped)
    assert "inlinecss: the message is DKIM-signed" in skipped


def test_a_login_may_opt_in_to_rewriting_signed_mail(logins: RelayContext) -> None:
    raw = message("DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=s1; b=abc")
    rc, ctx = feed(raw, login="signer")
    assert rc == Milter.ACCEPT and ctx._bodyreplaced
    assert record(logins) == (("inlinecss", "trackclicks", "trackopens"), ())


def test_a_rewrite_past_the_size_limit_is_not_applied(logins: RelayContext) -> None:
    links = "".join(f'<a href="https://example.org/{i}">{i}</a> ' for i in range(400))
    html = f"<html><head><style>a {{ color: red; }}</style></head><body>{links}</body></html>"
    raw = message(html=html)
    logins.size_limit = len(raw) + 9000  # room for the original, not the rewrite
    rc, ctx = feed(raw, login="all")
    assert rc == Milter.ACCEPT and not ctx._bodyreplaced
    features, skipped = record(logins)
    assert features == ()
    assert len(skipped) == 3 and all("over message_size_limit" in s for s in skipped)
    # With room, the same message is rewritten.
    logins.size_limit = 0
    rc, ctx = feed(raw, login="all")
    assert ctx._bodyreplaced


@pytest.mark.parametrize("name", ["x-smtpeter-trackclick", "X-SMTPeter-InlineCS", "x-smtpeter-"])
def test_an_unknown_instruction_is_refused_naming_it(logins: RelayContext, name: str) -> None:
    rc, ctx = feed(message(f"{name}: false"), login="all")
    assert rc == Milter.REJECT
    code, xcode, text = ctx._reply
    assert (code, xcode) == ("550", "5.6.0")
    assert text.startswith(f"{name}: unknown instruction") and "x-smtpeter-trackclicks" in text


def test_documented_names_are_known(logins: RelayContext) -> None:
    raw = message(
        "x-smtpeter-tags: spring", "X-SMTPeter-Images: false", "x-smtpeter-preventscam: true"
    )
    rc, ctx = feed(raw, login="plain")
    assert rc == Milter.ACCEPT
    assert not [h for h in delivered_headers(ctx) if h.startswith("x-smtpeter-")]


def test_unknown_names_on_the_servers_own_mail_are_only_removed(logins: RelayContext) -> None:
    rc, ctx = feed(message("x-smtpeter-trackclick: false"), login="alice", daemon="ORIGINATING")
    assert rc == Milter.ACCEPT
    assert "x-smtpeter-trackclick" not in delivered_headers(ctx)


def test_a_flood_of_instruction_headers_is_refused_on_the_api(logins: RelayContext) -> None:
    flood = [f"x-smtpeter-images: {i}" for i in range(101)]  # no limit of its own
    rc, ctx = feed(message(*flood), login="all")
    assert rc == Milter.REJECT
    assert ctx._reply[:3] == ("550", "5.6.0", "Too many x-smtpeter-* headers (101; at most 100)")
    rc, ctx = feed(message(*flood[:100]), login="all")  # the limit itself is fine
    assert rc == Milter.ACCEPT
    assert not [h for h in delivered_headers(ctx) if h.startswith("x-smtpeter-")]


@pytest.mark.parametrize(("login", "daemon"), [(None, "smtpeter"), ("alice", "ORIGINATING")])
def test_a_flood_on_the_servers_own_mail_is_passed_on_as_it_is(
    logins: RelayContext, login: str | None, daemon: str
) -> None:
    flood = [f"x-smtpeter-n{i}: v" for i in range(5000)]
    rc, ctx = feed(message(*flood, html=STYLED), login=login, daemon=daemon)
    assert rc == Milter.ACCEPT
    assert len([h for h in delivered_headers(ctx) if h.startswith("x-smtpeter-")]) == 5000
    assert not ctx._bodyreplaced
