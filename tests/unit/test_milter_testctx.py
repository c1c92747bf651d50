"""The milter in-process, through pymilter's testctx.TestCtx (the fast tier; the real thing
is tests/e2e). A real SQLite store, the real feature pipeline."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import sqlite3
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import Milter
import pytest
from Milter import testctx

from smtpeter import config as configmod
from smtpeter.config import FeaturesConfig
from smtpeter.features import FeatureSet
from smtpeter.logins import Login
from smtpeter.relay.milter import RelayContext, RelayMilter
from smtpeter.relay.pipeline import Pipeline
from smtpeter.tracker.keys import KeyRing
from tests import mimedata

STYLED = "<html><head><style>p { color: #ff0000; }</style></head><body><p>styled</p></body></html>"


def message(*extra_headers: str, html: str = STYLED) -> bytes:
    head = "".join(h + "\r\n" for h in extra_headers)
    return (
        "From: a@example.com\r\nTo: b@example.org\r\nSubject: t\r\n"
        "Message-ID: <t1@example.com>\r\n" + head + "MIME-Version: 1.0\r\n"
        "Content-Type: text/html; charset=utf-8\r\n\r\n" + html + "\r\n"
    ).encode()


# testctx.TestCtx offers every protocol bit, the no-reply ones included; its _feedFile then
# stops at the first NOREPLY. Offer what an MTA without no-reply support offers.
_NO_REPLY_BITS = sum(getattr(Milter, n) for n in dir(Milter) if n.startswith("P_NR_"))


@pytest.fixture
def relay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RelayContext]:
    monkeypatch.setattr(
        testctx.TestCtx, "default_opts", [Milter.CURR_ACTS, 0x1FFFFF & ~_NO_REPLY_BITS, 0, 0]
    )
    cfg = configmod.parse({"store": {"sqlite_path": str(tmp_path / "s.db")}}, "test")
    ctx = RelayContext.create(cfg)
    ctx.store.create_login(Login("plain", "x"))
    ctx.store.create_login(Login("inliner", "x", features=FeatureSet(inlinecss=True)))
    ctx.store.create_login(Login("off", "x", enabled=False))
    monkeypatch.setattr(RelayMilter, "context", ctx, raising=False)
    monkeypatch.setattr(Milter, "factory", RelayMilter)
    yield ctx
    ctx.features_thread.shutdown()


class PostfixCtx(testctx.TestCtx):  # type: ignore[misc]
    """TestCtx with Postfix's chgheader: the index is 1-based per header name (any
    letter case), an empty value deletes that one copy, and later copies shift down.
    TestCtx's own deletes every copy whatever the index, which would hide a wrong
    index or a missed copy."""

    def chgheader(self, field: str, idx: int, value: str) -> None:
        headers = self._msg._headers
        copies = [i for i, (name, _) in enumerate(headers) if name.lower() == field.lower()]
        if not 1 <= idx <= len(copies):
            return  # Postfix ignores an index past the last copy
        if value == "":
            del headers[copies[idx - 1]]
        else:
            headers[copies[idx - 1]] = (headers[copies[idx - 1]][0], value)
        self._headerschanged = True


def feed(
    raw: bytes, login: str | None = None, daemon: str | None = "smtpeter"
) -> tuple[int, testctx.TestCtx]:
    """Feed one message; ``daemon`` is the listener's {daemon_name} (smtpeter's own
    listeners say "smtpeter"; None: a Postfix that does not send the macro)."""
    ctx = PostfixCtx()
    ctx._setsymval("i", "4F3A21B0C9")
    if daemon is not None:
        ctx._setsymval("{daemon_name}", daemon)
    if login is not None:
        ctx._setsymval("{auth_authen}", login)
    assert ctx._connect(ip="192.0.2.1") == Milter.CONTINUE
    rc = ctx._feedFile(BytesIO(raw), "a@example.com", "b@example.org")
    return rc, ctx


def delivered_headers(ctx: testctx.TestCtx) -> list[str]:
    return [name.lower() for name in ctx._msg]


def test_unauthenticated_mail_is_stripped_but_gets_no_feature(relay: RelayContext) -> None:
    rc, ctx = feed(message("X-SMTPeter-InlineCSS: true", "x-smtpeter-whatever: 1"))
    assert rc == Milter.ACCEPT
    assert not [h for h in delivered_headers(ctx) if h.startswith("x-smtpeter-")]
    assert not ctx._bodyreplaced


def test_unauthenticated_mail_with_a_malformed_value_is_not_refused(relay: RelayContext) -> None:
    rc, ctx = feed(message("x-smtpeter-inlinecss: perhaps"))
    assert rc == Milter.ACCEPT
    assert "x-smtpeter-inlinecss" not in delivered_headers(ctx)


def test_login_feature_rewrites_the_body(relay: RelayContext) -> None:
    rc, ctx = feed(message(), login="inliner")
    assert rc == Milter.ACCEPT
    assert ctx._bodyreplaced
    assert b'style=3D"color: #ff0000' in ctx._body.getvalue()  # quoted-printable


def test_header_turns_feature_on_for_a_login_without_it(relay: RelayContext) -> None:
    rc, ctx = feed(message("X-SMTPeter-InlineCSS: TRUE"), login="plain")
    assert rc == Milter.ACCEPT and ctx._bodyreplaced
    assert "x-smtpeter-inlinecss" not in delivered_headers(ctx)


def test_header_turns_feature_off(relay: RelayContext) -> None:
    rc, ctx = feed(message("x-smtpeter-inlinecss: false"), login="inliner")
    assert rc == Milter.ACCEPT and not ctx._bodyreplaced


def test_malformed_value_is_rejected_naming_header_and_value(relay: RelayContext) -> None:
    rc, ctx = feed(message("X-SMTPeter-TrackOpens: sometimes"), login="plain")
    assert rc == Milter.REJECT
    assert ctx._reply is not None
    code, xcode, text = ctx._reply
    assert (code, xcode) == ("550", "5.6.0")
    assert "X-SMTPeter-TrackOpens" in text and '"sometimes"' in text


@pytest.mark.parametrize("login", [None, "plain"])
def test_every_copy_of_every_instruction_header_goes_and_nothing_else(
    relay: RelayContext, login: str | None
) -> None:
    raw = message(
        "X-SMTPeter-Tags: one", "Keep-Me: 1", "x-smtpeter-tags: two",
        "X-SMTPETER-TAGS: three", "Keep-Me: 2", "x-smtpeter-images: a",
        "X-Smtpeter-Images: b", "Keep-Me: 3",
    )  # fmt: skip
    rc, ctx = feed(raw, login=login)
    assert rc == Milter.ACCEPT
    kept = [(n, v) for n, v in ctx._msg.items() if n.lower() not in ("from", "to")]
    assert kept == [
        ("Subject", "t"), ("Message-ID", "<t1@example.com>"), ("Keep-Me", "1"),
        ("Keep-Me", "2"), ("Keep-Me", "3"), ("MIME-Version", "1.0"),
        ("Content-Type", "text/html; charset=utf-8"),
    ]  # fmt: skip


def test_conflicting_repeated_headers_are_rejected(relay: RelayContext) -> None:
    rc, ctx = feed(
        message("x-smtpeter-inlinecss: true", "x-smtpeter-inlinecss: false"), login="plain"
    )
    assert rc == Milter.REJECT
    assert "conflicting" in ctx._reply[2]


def test_login_disabled_after_auth_is_rejected(relay: RelayContext) -> None:
    rc, ctx = feed(message(), login="off")
    assert rc == Milter.REJECT
    assert ctx._reply[:2] == ("550", "5.7.1")


@pytest.mark.parametrize("login", ["alice@hosted.example", "off", "inliner"])
def test_a_user_authenticated_by_the_servers_own_sasl_is_only_stripped(
    relay: RelayContext, login: str
) -> None:
    """Add-on mode: a mailbox user of the MX, authenticated by its own SASL on its own
    submission service, is never refused by us and never gets a feature, even when
    the name is also (or is like) one of our logins, disabled or not."""
    raw = message("X-SMTPeter-InlineCSS: true", "x-smtpeter-trackopens: perhaps")
    rc, ctx = feed(raw, login=login, daemon="ORIGINATING")
    assert rc == Milter.ACCEPT
    assert not [h for h in delivered_headers(ctx) if h.startswith("x-smtpeter-")]
    assert not ctx._bodyreplaced
    assert relay.store.messages(queue_id="4F3A21B0C9") == []


def test_an_unknown_login_on_our_listener_is_refused(relay: RelayContext) -> None:
    # On smtpeter's listeners only our auth daemon authenticates: an unknown name
    # is a login deleted since AUTH.
    rc, ctx = feed(message(), login="alice@hosted.example")
    assert rc == Milter.REJECT and ctx._reply[:2] == ("550", "5.7.1")


def test_without_the_daemon_name_macro_every_login_is_an_api_login(relay: RelayContext) -> None:
    # A Postfix set up before listeners were told apart sends no {daemon_name}.
    rc, ctx = feed(message(), login="inliner", daemon=None)
    assert rc == Milter.ACCEPT and ctx._bodyreplaced


def test_the_servers_own_mail_is_not_recorded(relay: RelayContext) -> None:
    rc, _ = feed(message("x-smtpeter-inlinecss: true"), daemon="mx.example.com")
    assert rc == Milter.ACCEPT
    assert relay.store.messages(queue_id="4F3A21B0C9") == []


def test_message_is_recorded(relay: RelayContext) -> None:
    feed(message("x-smtpeter-inlinecss: true"), login="plain")
    [record] = relay.store.messages(queue_id="4F3A21B0C9")
    assert record.login == "plain"
    assert record.features == ("inlinecss",)
    assert record.message_id == "<t1@example.com>"
    assert record.recipients == ("<b@example.org>",)


def test_store_fault_is_a_temporary_failure(relay: RelayContext) -> None:
    # Break the real database under the running milter.
    with sqlite3.connect(relay.store.path) as conn:
        conn.execute("DROP TABLE logins")
    rc, ctx = feed(message(), login="plain")
    assert rc == Milter.TEMPFAIL
    assert ctx._reply[:2] == ("451", "4.3.0")


def test_feature_timeout_is_a_temporary_failure(relay: RelayContext) -> None:
    # premailer takes ~60 ms over the newsletter: far over a 1 ms limit.
    relay.config = dataclasses.replace(relay.config, features=FeaturesConfig(inliner="premailer"))
    relay.pipeline = Pipeline(relay.config, None)
    relay.config = dataclasses.replace(
        relay.config,
        milter=dataclasses.replace(relay.config.milter, feature_timeout=0.001),
    )
    big = mimedata.newsletter_html()
    rc, ctx = feed(message(html=big), login="inliner")
    assert rc == Milter.TEMPFAIL
    assert ctx._reply[:2] == ("451", "4.3.0")


def test_untouched_parts_survive_in_process(relay: RelayContext) -> None:
    original = mimedata.mixed_related()
    rc, ctx = feed(original.raw, login="inliner")
    assert rc == Milter.ACCEPT and ctx._bodyreplaced
    assert mimedata.b64(mimedata.pdf_bytes()) in ctx._body.getvalue().replace(b"\n", b"\r\n")


LINKS = (
    "<html><body><p><a href='https://shop.example.com/a?x=1&amp;y=2'>Shop</a>"
    ' <a href="mailto:hi@example.com">mail</a>'
    ' <a href="https://www.example.org/">https://www.example.org/</a></p></body></html>'
)


def _decoded_html(ctx: testctx.TestCtx) -> str:
    # TestCtx keeps header edits in _msg and the replaced body in _body.
    head = ctx._msg.as_bytes().split(b"\n\n", 1)[0]
    body = ctx._body.getvalue().split(b"\n\n", 1)[1]
    msg = email.message_from_bytes(head + b"\n\n" + body, policy=email.policy.default)
    part = msg.get_body(preferencelist=("html",))
    assert part is not None
    content = part.get_content()
    assert isinstance(content, str)
    return content


def test_trackclicks_and_trackopens_by_header(relay: RelayContext) -> None:
    rc, ctx = feed(
        message("x-smtpeter-trackclicks: true", "X-SMTPeter-TrackOpens: true", html=LINKS),
        login="plain",
    )
    assert rc == Milter.ACCEPT and ctx._bodyreplaced
    html = _decoded_html(ctx)
    base = relay.config.tracker.base_url
    assert html.count(f'href="{base}/c/') == 2  # both web links, not the mailto:
    assert 'href="mailto:hi@example.com"' in html
    assert html.count(f'<img src="{base}/o/') == 1
    [record] = relay.store.messages(queue_id="4F3A21B0C9")
    assert record.features == ("trackclicks", "trackopens")
    # The links carry this message's uid, signed.
    token = html.split(f'href="{base}/c/')[1].split('"')[0]
    signer = KeyRing.from_config(relay.store, relay.config.tracker).signer()
    claim = signer.verify(token)
    assert claim is not None and claim.message_uid == record.uid
    assert claim.url == "https://shop.example.com/a?x=1&y=2"


def test_preventscam_leaves_links_that_show_their_url(relay: RelayContext) -> None:
    rc, ctx = feed(
        message("x-smtpeter-trackclicks: true", "x-smtpeter-preventscam: true", html=LINKS),
        login="plain",
    )
    assert rc == Milter.ACCEPT
    html = _decoded_html(ctx)
    assert 'href="https://www.example.org/"' in html
    assert html.count("/c/") == 1
    assert "x-smtpeter-preventscam" not in delivered_headers(ctx)


def test_tracking_login_turned_off_by_header(relay: RelayContext) -> None:
    relay.store.update_login("plain", features={"trackclicks": True, "trackopens": True})
    rc, ctx = feed(
        message("x-smtpeter-trackclicks: false", "x-smtpeter-trackopens: false", html=LINKS),
        login="plain",
    )
    assert rc == Milter.ACCEPT and not ctx._bodyreplaced


def _with_bounce_domain(relay: RelayContext) -> None:
    relay.config = dataclasses.replace(
        relay.config,
        bounces=dataclasses.replace(relay.config.bounces, domain="bounces.example.net"),
    )


def test_trackbounces_sets_a_signed_return_path(relay: RelayContext) -> None:
    _with_bounce_domain(relay)
    rc, ctx = feed(message("X-SMTPeter-TrackBounces: true"), login="plain")
    assert rc == Milter.ACCEPT
    sender = ctx._sender
    assert sender.startswith("<b+") and sender.endswith("@bounces.example.net>")
    token = sender[3 : sender.index("@")]
    assert len(token) + 2 <= 64, "fits an address's local part"
    [record] = relay.store.messages(queue_id="4F3A21B0C9")
    assert record.envelope_sender == "<a@example.com>"  # the original is kept
    assert "trackbounces" in record.features
    signer = KeyRing.from_config(relay.store, relay.config.tracker).signer()
    assert signer.verify_return_path(token.upper(), 86400) == record.uid
    tampered = token[:-1] + ("a" if token[-1] != "a" else "b")
    assert signer.verify_return_path(tampered, 86400) is None


def test_trackbounces_keeps_the_null_sender(relay: RelayContext) -> None:
    _with_bounce_domain(relay)
    ctx = PostfixCtx()
    ctx._setsymval("{auth_authen}", "plain")
    ctx._connect(ip="192.0.2.1")
    rc = ctx._feedFile(BytesIO(message("x-smtpeter-trackbounces: true")), "", "b@example.org")
    assert rc == Milter.ACCEPT
    assert ctx._sender == "<>"


def test_trackbounces_without_a_bounce_domain_keeps_the_sender(relay: RelayContext) -> None:
    rc, ctx = feed(message("x-smtpeter-trackbounces: true"), login="plain")
    assert rc == Milter.ACCEPT
    assert ctx._sender == "<a@example.com>"


def _alternative(text: str, html: str) -> bytes:
    return (
        "From: a@example.com\r\nTo: b@example.org\r\nSubject: t\r\n"
        "X-SMTPeter-TrackClicks: true\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + text + "\r\n"
        "--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + html + "\r\n--b--\r\n"
    ).encode()


@pytest.mark.parametrize("track_plain_text", [False, True])
def test_plain_text_links_only_when_configured(relay: RelayContext, track_plain_text: bool) -> None:
    relay.config = dataclasses.replace(
        relay.config,
        features=dataclasses.replace(relay.config.features, track_plain_text=track_plain_text),
    )
    relay.pipeline = Pipeline(relay.config, KeyRing.from_config(relay.store, relay.config.tracker))
    text = "Read it online: https://news.example.com/web/42 today."
    rc, ctx = feed(_alternative(text, LINKS), login="plain")
    assert rc == Milter.ACCEPT and ctx._bodyreplaced
    body = ctx._body.getvalue().split(b"\n\n", 1)[1]
    plain = body.split(b"--b")[1]
    if track_plain_text:
        assert b"https://news.example.com/web/42" not in plain
        assert relay.config.tracker.base_url.encode() + b"/c/" in plain
    else:
        assert text.encode() in plain  # byte for byte
