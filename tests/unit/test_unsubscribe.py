"""One-click unsubscribe (RFC 8058): the milter's List-Unsubscribe headers in-process
(pymilter's TestCtx, a real store), the tracker's /u/ route served for real (uvicorn on
a loopback port, spoken to with http.client), the mailto form through the bounce
processor, and the login flag through the CLI."""

from __future__ import annotations

import dataclasses
import http.client
import json
import logging
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path

import Milter
import pytest
import yaml

from smtpeter import config as configmod
from smtpeter import suppression, unsubscribe
from smtpeter.bounces.processor import EX_OK, process
from smtpeter.config import Config
from smtpeter.features import FeatureSet
from smtpeter.logins import Login
from smtpeter.relay.milter import RelayContext
from smtpeter.store import MessageRecord, Store, open_store
from smtpeter.tracker.app import is_one_click
from smtpeter.tracker.keys import KeyRing
from smtpeter.tracker.signing import Claim, Signer, SigningKey
from tests.unit.test_milter_mutants import LOGGER, log_lines
from tests.unit.test_milter_testctx import PostfixCtx, delivered_headers, feed, message
from tests.unit.test_milter_testctx import relay as relay
from tests.unit.test_tracker import Tracker, settled_events

DOMAIN = "bounces.example.com"
ONE_CLICK = "List-Unsubscribe=One-Click"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}

# -- the milter: the headers --------------------------------------------------------


@pytest.fixture
def unsub(relay: RelayContext) -> RelayContext:
    """The relay with a bounce domain (so the mailto is added too) and two logins: one
    with the unsubscribe flag, one without."""
    relay.config = dataclasses.replace(
        relay.config, bounces=dataclasses.replace(relay.config.bounces, domain=DOMAIN)
    )
    relay.store.create_login(Login("lists", "x", features=FeatureSet(unsubscribe=True)))
    return relay


def list_unsubscribe(ctx: PostfixCtx) -> tuple[str | None, str | None]:
    return ctx._msg["List-Unsubscribe"], ctx._msg["List-Unsubscribe-Post"]


def links(value: str) -> list[str]:
    return re.findall(r"<([^>]*)>", value)


def signer_of(relay: RelayContext) -> Signer:
    return KeyRing.from_config(relay.store, relay.config.tracker).signer()


def test_the_header_adds_list_unsubscribe_with_a_signed_link_and_a_mailto(
    unsub: RelayContext,
) -> None:
    """x-smtpeter-unsubscribe: true gives the message both RFC 8058 headers, the link
    naming its one recipient, and the instruction header is gone."""
    rc, ctx = feed(message("X-SMTPeter-Unsubscribe: true"), login="plain")
    assert rc == Milter.ACCEPT
    header, post = list_unsubscribe(ctx)
    assert post == "List-Unsubscribe=One-Click"
    assert header is not None
    url, mailto = links(header)
    base = unsub.config.tracker.base_url
    assert url.startswith(f"{base}/u/")
    [record] = unsub.store.messages(limit=1)
    assert record.uid is not None and "unsubscribe" in record.features
    claim = signer_of(unsub).verify(url.removeprefix(f"{base}/u/"))
    assert claim == Claim("u", record.uid, claim.issued_day if claim else 0, None, "b@example.org")
    m = re.fullmatch(rf"mailto:unsubscribe\+([a-z0-9.]+)@{re.escape(DOMAIN)}", mailto)
    assert m is not None, mailto
    assert len(f"unsubscribe+{m.group(1)}") <= 64, "fits a local part"
    lifetime = unsub.config.tracker.link_lifetime_days * 86400.0
    assert signer_of(unsub).verify_return_path(m.group(1), lifetime, purpose="u") == record.uid
    # The same token is no return path: a mailto cannot be passed off as a bounce.
    assert signer_of(unsub).verify_return_path(m.group(1), lifetime) is None
    assert not [h for h in delivered_headers(ctx) if h.startswith("x-smtpeter-")]


def test_the_login_flag_adds_the_headers_and_the_header_false_turns_them_off(
    unsub: RelayContext,
) -> None:
    """A login created with --unsubscribe gets the headers on every message, and
    x-smtpeter-unsubscribe: false leaves them out of one."""
    _, ctx = feed(message(), login="lists")
    header, post = list_unsubscribe(ctx)
    assert header is not None and post == ONE_CLICK
    _, ctx = feed(message("x-smtpeter-unsubscribe: false"), login="lists")
    assert list_unsubscribe(ctx) == (None, None)
    assert "x-smtpeter-unsubscribe" not in delivered_headers(ctx)


def test_no_headers_when_the_feature_is_off_or_the_mail_is_not_ours(unsub: RelayContext) -> None:
    """Without the flag or the header nothing is added, and unauthenticated mail
    never gets them even when it asks."""
    _, ctx = feed(message(), login="plain")
    assert list_unsubscribe(ctx) == (None, None)
    _, ctx = feed(message("x-smtpeter-unsubscribe: true"))
    assert list_unsubscribe(ctx) == (None, None)


def test_without_a_bounce_domain_only_the_link_is_added(relay: RelayContext) -> None:
    """With no bounces.domain the header carries the https link alone."""
    _, ctx = feed(message("x-smtpeter-unsubscribe: true"), login="plain")
    header, _ = list_unsubscribe(ctx)
    assert header is not None
    [url] = links(header)
    assert url.startswith(relay.config.tracker.base_url + "/u/")


def test_the_senders_own_list_unsubscribe_is_kept(
    unsub: RelayContext, caplog: pytest.LogCaptureFixture
) -> None:
    """A message that brings its own List-Unsubscribe keeps it as it is, gets no second
    one, and the log says so."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    own = "List-Unsubscribe: <https://sender.example/unsub?u=1>"
    _, ctx = feed(message(own), login="lists")
    assert ctx._msg.get_all("List-Unsubscribe") == ["<https://sender.example/unsub?u=1>"]
    assert ctx._msg["List-Unsubscribe-Post"] is None
    assert any("own List-Unsubscribe header, left as it is" in line for line in log_lines(caplog))
    [record] = unsub.store.messages(limit=1)
    assert "unsubscribe" not in record.features


def test_an_invalid_value_is_refused_naming_the_header(unsub: RelayContext) -> None:
    """x-smtpeter-unsubscribe: maybe is refused with 550 5.6.0 naming the header."""
    rc, ctx = feed(message("X-SMTPeter-Unsubscribe: maybe"), login="plain")
    assert rc == Milter.REJECT
    assert ctx._reply[:2] == ("550", "5.6.0")
    assert ctx._reply[2].startswith('X-SMTPeter-Unsubscribe: invalid value "maybe"')


def test_a_message_to_several_recipients_names_none_in_its_link(unsub: RelayContext) -> None:
    """One body goes to all recipients, so the link of a message to two names neither."""
    ctx = PostfixCtx()
    ctx._setsymval("{daemon_name}", "smtpeter")
    ctx._setsymval("{auth_authen}", "lists")
    assert ctx._connect(ip="192.0.2.1") == Milter.CONTINUE
    rc = ctx._feedFile(BytesIO(message()), "a@example.com", "b@example.org", "c@example.org")
    assert rc == Milter.ACCEPT
    header, _ = list_unsubscribe(ctx)
    assert header is not None
    base = unsub.config.tracker.base_url
    claim = signer_of(unsub).verify(links(header)[0].removeprefix(f"{base}/u/"))
    assert claim is not None and claim.kind == "u" and claim.recipient is None


def test_a_dkim_signed_message_gets_no_headers_unless_the_login_rewrites_signed_mail(
    unsub: RelayContext,
) -> None:
    """A sender's DKIM signature cannot cover headers added after it: they are skipped
    (and recorded as skipped), unless the login has --rewrite-signed."""
    signed = message("DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=s; h=from; b=x")
    _, ctx = feed(signed, login="lists")
    assert list_unsubscribe(ctx) == (None, None)
    [record] = unsub.store.messages(limit=1)
    assert "unsubscribe: the message is DKIM-signed" in record.skipped
    unsub.store.update_login("lists", rewrite_signed=True)
    _, ctx = feed(signed, login="lists")
    assert list_unsubscribe(ctx)[0] is not None


# -- the tracker: /u/ --------------------------------------------------------------------

SHOP = "shop"
UID = "k3xq7m2pw9r4t6ya"
ANN = "Ann@example.org"


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return configmod.parse(
        {
            "store": {"sqlite_path": str(tmp_path / "smtpeter.db"), "busy_timeout": 0.2},
            "tracker": {"event_flush_seconds": 0.05},
            "bounces": {"domain": DOMAIN, "sendmail": "/bin/false"},
        },
        "test",
    )


def sent_message(store: Store, uid: str, *recipients: str, login: str = SHOP) -> None:
    store.record_message(
        MessageRecord(
            queue_id="QID1", message_id=f"<{uid}@example.com>", login=login,
            envelope_sender="owner@example.com", recipients=tuple(f"<{r}>" for r in recipients),
            features=("unsubscribe",), size_before=1, size_after=1, uid=uid,
        )
    )  # fmt: skip


@pytest.fixture
def tracker(cfg: Config) -> Iterator[Tracker]:
    t = Tracker(cfg)
    t.store.create_login(Login(SHOP, "x"))
    sent_message(t.store, UID, ANN)
    yield t
    t.stop()


def unsubscribes(store: Store) -> list[tuple[str, str | None, str]]:
    return [
        (e.message_uid, e.recipient, e.detail["how"])
        for e in store.events()
        if e.type == "unsubscribe"
    ]


def post(tracker: Tracker, path: str, body: str, headers: dict[str, str] | None = None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", tracker.port, timeout=5)
    try:
        conn.request("POST", path, body=body.encode(), headers=headers or FORM)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_one_click_post_records_one_event_and_suppresses_the_recipient(tracker: Tracker) -> None:
    """The mailbox provider's RFC 8058 POST unsubscribes the recipient: one event
    (how=one-click), the address on the login's list; a second POST adds nothing."""
    token = tracker.signer().sign_unsubscribe(UID, ANN)
    reply_status = post(tracker, f"/u/{token}", ONE_CLICK)
    assert reply_status == 200
    assert unsubscribes(tracker.store) == [(UID, ANN, "one-click")]
    [event] = [e for e in tracker.store.events() if e.type == "unsubscribe"]
    assert event.login == SHOP and event.client_ip == "127.0.0.1"
    entry = tracker.store.suppression(SHOP, ANN)
    assert entry is not None
    assert (entry.address, entry.reason, entry.message_uid) == (
        "ann@example.org",
        "unsubscribe",
        UID,
    )
    # Unsubscribing twice (a second click, a retried POST) records nothing more.
    assert post(tracker, f"/u/{token}", ONE_CLICK) == 200
    assert unsubscribes(tracker.store) == [(UID, ANN, "one-click")]
    assert len(tracker.store.suppressions(login=SHOP)) == 1
    # The next message of that login to the address is refused, saying why.
    code, enhanced, text = suppression.refusal(entry)
    assert (code, enhanced) == ("550", "5.7.1")
    assert text.startswith(f"<ann@example.org>: suppressed for login {SHOP} after the recipient")


def test_get_shows_a_confirmation_page_and_records_nothing(tracker: Tracker) -> None:
    """A GET (a person, or a link scanner following every link) gets a page whose
    form POSTs back; it unsubscribes no one and records no event; HEAD neither."""
    token = tracker.signer().sign_unsubscribe(UID, ANN)
    reply = tracker.request(f"/u/{token}", headers={"User-Agent": "LinkScanner/1.0"})
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "text/html; charset=utf-8"
    assert reply.headers["Cache-Control"] == "no-store"
    page = reply.body.decode()
    assert "<form method=post>" in page and "Ann@example.org" in page
    assert tracker.request(f"/u/{token}", method="HEAD").status == 200
    assert settled_events(tracker) == []
    assert tracker.store.suppressions() == []


def test_the_confirmation_pages_form_unsubscribes(tracker: Tracker) -> None:
    """Submitting the page's form (any other POST body) unsubscribes, recorded as
    how=confirmation-page."""
    token = tracker.signer().sign_unsubscribe(UID, ANN)
    assert post(tracker, f"/u/{token}", "confirmed=yes") == 200
    assert unsubscribes(tracker.store) == [(UID, ANN, "confirmation-page")]
    assert tracker.store.suppression(SHOP, ANN) is not None


def tampered_paths(signer: Signer) -> list[str]:
    token = signer.sign_unsubscribe(UID, ANN)
    kid, payload, mac = token.split(".")
    forged = signer.sign_unsubscribe(UID, "someone-else@example.org").split(".")[1]
    return [
        f"/u/{kid}.{forged}.{mac}",  # another recipient under this token's MAC
        f"/u/{kid}.{payload}.{mac[::-1]}",
        f"/u/zzzzzzzz.{payload}.{mac}",
        f"/u/{signer.sign('c', UID, 'https://example.org/')}",  # a click token
        f"/u/{signer.sign('o', UID)}",
        "/u/garbage",
        "/u/",
    ]


def test_a_tampered_link_does_nothing(tracker: Tracker, caplog: pytest.LogCaptureFixture) -> None:
    """A tampered, foreign or garbage token gets the 404 page on GET and on POST,
    records nothing, suppresses no one, and leaves a log line."""
    caplog.set_level(logging.INFO, logger="smtpeter.tracker")
    for path in tampered_paths(tracker.signer()):
        reply = tracker.request(path)
        assert reply.status == 404, path
        assert b"<form" not in reply.body
        assert post(tracker, path, ONE_CLICK) == 404, path
    assert settled_events(tracker) == []
    assert tracker.store.suppressions() == []
    lines = [r.getMessage() for r in caplog.records if r.name == "smtpeter.tracker"]
    assert sum("tampered, unknown or expired link" in line for line in lines) >= 14


def test_a_message_to_several_records_the_message_only(tracker: Tracker) -> None:
    """An unsubscribe from a message sent to several (its link names no recipient) is
    recorded for the message, and suppresses no one."""
    sent_message(tracker.store, "multi", "a@example.org", "b@example.org")
    token = tracker.signer().sign_unsubscribe("multi", None)
    assert tracker.request(f"/u/{token}").status == 200
    assert post(tracker, f"/u/{token}", ONE_CLICK) == 200
    assert unsubscribes(tracker.store) == [("multi", None, "one-click")]
    assert tracker.store.suppressions() == []


def test_a_login_with_the_suppression_policy_off_gets_the_event_only(tracker: Tracker) -> None:
    """For a login whose suppression policy is off the unsubscribe is recorded (and
    goes to its webhooks) but nothing is suppressed."""
    tracker.store.update_login(SHOP, suppression="off")
    token = tracker.signer().sign_unsubscribe(UID, ANN)
    assert post(tracker, f"/u/{token}", ONE_CLICK) == 200
    assert unsubscribes(tracker.store) == [(UID, ANN, "one-click")]
    assert tracker.store.suppressions() == []


def test_an_oversized_post_is_refused_and_records_nothing(tracker: Tracker) -> None:
    """A POST body past the small limit gets 413 and unsubscribes no one."""
    token = tracker.signer().sign_unsubscribe(UID, ANN)
    assert post(tracker, f"/u/{token}", ONE_CLICK + "&x=" + "a" * 10000) == 413
    assert settled_events(tracker) == []
    assert tracker.store.suppressions() == []


def test_a_store_that_cannot_be_written_gets_503_and_the_retry_works(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the store fails the POST is answered 503 (the provider retries) and the
    retry unsubscribes."""
    from smtpeter.store import StoreError

    def broken(*args: object, **kwargs: object) -> None:
        raise StoreError("store test: locked")

    token = tracker.signer().sign_unsubscribe(UID, ANN)
    with monkeypatch.context() as m:
        m.setattr(tracker.store, "record_events", broken)
        assert post(tracker, f"/u/{token}", ONE_CLICK) == 503
    assert tracker.store.suppressions() == []
    assert post(tracker, f"/u/{token}", ONE_CLICK) == 200
    assert unsubscribes(tracker.store) == [(UID, ANN, "one-click")]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"List-Unsubscribe=One-Click", True),
        (b"List-Unsubscribe=One-Click\r\n", True),
        (b"a=1&List-Unsubscribe=One-Click", True),
        (
            b'--x\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
            b"One-Click\r\n--x--\r\n",
            True,
        ),
        (b"confirmed=yes", False),
        (b"", False),
        (b"List-Unsubscribe=Yes", False),
    ],
)
def test_one_click_bodies_are_told_from_the_pages_form(body: bytes, expected: bool) -> None:
    """RFC 8058's body, form-encoded or multipart, counts as one-click; anything else
    is the confirmation page's form."""
    assert is_one_click(body) is expected


# -- the mailto, through the bounce processor -------------------------------------------


def mailto_for(store: Store, cfg: Config, uid: str) -> str:
    signer = KeyRing.from_config(store, cfg.tracker).signer()
    return f"unsubscribe+{signer.sign_return_path(uid, purpose='u')}@{DOMAIN}"


MAIL = b"From: Ann <ann@example.org>\nTo: unsubscribe\nSubject: unsubscribe\n\nplease\n"


@pytest.fixture
def store(cfg: Config) -> Store:
    s = open_store(cfg.store)
    s.create_login(Login(SHOP, "x"))
    sent_message(s, UID, ANN)
    return s


def test_mail_to_the_mailto_unsubscribes_and_is_not_forwarded(cfg: Config, store: Store) -> None:
    """Mail to unsubscribe+TOKEN@bounce-domain records the unsubscribe (how=mailto)
    and suppresses the message's recipient; it is not forwarded (sendmail here would
    fail), and the same mail again adds nothing."""
    rcpt = mailto_for(store, cfg, UID)
    outcome = process(MAIL, rcpt, cfg, store=store)
    assert outcome.status == EX_OK, outcome.what
    assert "how=mailto recorded=yes suppressed=yes" in outcome.what
    assert unsubscribes(store) == [(UID, ANN, "mailto")]
    entry = store.suppression(SHOP, ANN)
    assert entry is not None and entry.reason == unsubscribe.REASON
    again = process(MAIL, rcpt.upper(), cfg, store=store)  # MTAs may change the case
    assert again.status == EX_OK and "recorded=no" in again.what
    assert unsubscribes(store) == [(UID, ANN, "mailto")]


def test_a_tampered_mailto_or_a_return_path_token_does_nothing(cfg: Config, store: Store) -> None:
    """A forged mailto token, or a bounce return path's token put in a mailto, is
    dropped: nothing recorded, nothing suppressed."""
    signer = KeyRing.from_config(store, cfg.tracker).signer()
    good = signer.sign_return_path(UID, purpose="u")
    for token in (good[:-1] + ("a" if good[-1] != "a" else "b"), signer.sign_return_path(UID)):
        outcome = process(MAIL, f"unsubscribe+{token}@{DOMAIN}", cfg, store=store)
        assert outcome.status == EX_OK
        assert outcome.what.startswith("dropped: tampered, unknown or expired unsubscribe")
    assert [e for e in store.events() if e.type == "unsubscribe"] == []
    assert store.suppressions() == []


def test_signing_an_unsubscribe_token_round_trips() -> None:
    """An unsubscribe token carries the message and its recipient (or none) and no URL."""
    s = Signer([SigningKey("k1", b"s" * 32, 0.0)], link_lifetime=86400.0, key_retention=0.0)
    claim = s.verify(s.sign_unsubscribe("uid", "a@example.org"))
    assert claim is not None
    assert (claim.kind, claim.message_uid, claim.url, claim.recipient) == (
        "u", "uid", None, "a@example.org"
    )  # fmt: skip
    none = s.verify(s.sign_unsubscribe("uid", None))
    assert none is not None and none.recipient is None


# -- the login flag, through the CLI ---------------------------------------------------------


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    path = tmp_path / "smtpeter.yaml"
    path.write_text(yaml.safe_dump({"store": {"sqlite_path": str(tmp_path / "cli.db")}}))
    return path


def cli(conf: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "smtpeter", "--config", str(conf), *args],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    return run


def test_the_login_flag_is_set_and_shown_by_the_cli(conf: Path) -> None:
    """smtpeter login create --unsubscribe and set --no-unsubscribe change the flag,
    and list and show print it."""
    run = cli(conf)
    created = run("login", "create", "news", "--unsubscribe", "--json")
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["features"]["unsubscribe"] is True
    listed = run("login", "list")
    assert re.search(r"^news\s+yes\s+unsubscribe$", listed.stdout, re.MULTILINE), listed.stdout
    assert "features: unsubscribe" in run("login", "show", "news").stdout
    changed = run("login", "set", "news", "--no-unsubscribe", "--json")
    assert json.loads(changed.stdout)["features"]["unsubscribe"] is False
    assert "features: none" in run("login", "show", "news").stdout
