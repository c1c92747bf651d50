"""Hostile input on the real stack: a poison document, a rewrite past Postfix's size
limit, floods and misspellings of instruction headers, DKIM-signed mail. Each gets a
clear answer; nothing crashes a milter worker, nothing is recorded that is not queued."""

from __future__ import annotations

import base64
import os
import shutil
import smtplib
import subprocess
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from smtpeter import logins
from smtpeter.features import FeatureSet
from smtpeter.local.stack import LocalStack, Ports
from smtpeter.logins import Login
from smtpeter.store import Store, open_store
from tests.e2e.conftest import MakeLogin
from tests.e2e.smtp import find_delivered, parse, send, simple

pytestmark = pytest.mark.e2e

POISON = (
    "<html><head><style>div { color: #ff0000; } p { margin: 0 }</style></head><body>"
    + "<div>" * 12000
    + '<p>deep <a href="https://example.org/deep">link</a></p>'
    + "</div>" * 12000
    + "</body></html>"
)


def workers(stack: LocalStack) -> set[int]:
    """The milter's worker processes (children of its supervisor)."""
    supervisor = stack.pid("milter")
    assert supervisor is not None
    out = subprocess.run(["pgrep", "-P", str(supervisor)], capture_output=True, text=True)
    return {int(p) for p in out.stdout.split()}


def record(store: Store, mark: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    [m] = [m for m in store.messages(limit=200) if m.message_id == f"<{mark}@test.example>"]
    return m.features, m.skipped


def test_a_poison_document_is_delivered_uninlined_and_crashes_nothing(
    stack: LocalStack, make_login: MakeLogin, store: Store
) -> None:
    """12,000 nested elements with a <style> block made css-inline die with SIGSEGV:
    every retry killed a worker again, and the sessions on it."""
    user, password = make_login(inlinecss=True, trackclicks=True)
    before = workers(stack)
    with ThreadPoolExecutor(max_workers=4) as pool:
        poison = pool.submit(send, stack, user, password, simple("poison", html=POISON))
        normal = [pool.submit(send, stack, user, password, simple(f"n{i}")) for i in range(6)]
        mark = poison.result()
        for f in normal:
            find_delivered(stack, f.result())
    data = find_delivered(stack, mark)
    html = parse(data).get_body(preferencelist=("html",))
    assert html is not None
    content = str(html.get_content())
    assert 'style="color' not in content and "/c/" in content  # tracked, not inlined
    features, skipped = record(store, mark)
    assert features == ("trackclicks",)
    assert skipped == ("inlinecss: elements nested 12001 deep (features.max_html_depth 1000)",)
    assert workers(stack) == before, "a milter worker died"


@pytest.fixture(scope="module")
def small_stack() -> Iterator[LocalStack]:
    """A stack whose Postfix takes at most 300 KB a message, and a milter told so."""
    root = Path(tempfile.mkdtemp(prefix="smtpeter-e2e-size-"))
    root.chmod(0o755)
    stack = LocalStack(
        root=root,
        ports=Ports.free(),
        settings={"milter": {"workers": 1, "message_size_limit": 300000}},
        extra_main="message_size_limit = 300000",
        listeners=("587",),
    )
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        if not os.environ.get("SMTPETER_KEEP_STACK"):
            shutil.rmtree(root, ignore_errors=True)


def test_a_rewrite_past_the_size_limit_goes_out_untouched(small_stack: LocalStack) -> None:
    """A 200 KB message of links grows past 300 KB when tracked: Postfix would refuse
    it for good (552 5.3.4) though the sender stayed under the limit."""
    store = open_store(small_stack.config().store)
    password = logins.generate_password()
    features = FeatureSet(trackclicks=True, trackopens=True)
    store.create_login(Login("big", logins.hash_password(password), features=features))
    links = "".join(f'<a href="https://example.org/{i}">{i}</a>\n' for i in range(5000))
    raw = simple("big", html=f"<html><body>{links}</body></html>")
    assert 150000 < len(raw) < 300000
    mark = send(small_stack, "big", password, raw)
    data = find_delivered(small_stack, mark)
    assert b"https://example.org/4999" in data and b"/c/" not in data
    features_applied, skipped = record(store, mark)
    assert features_applied == ()
    assert [s.split(":")[0] for s in skipped] == ["trackclicks", "trackopens"]
    assert all("over message_size_limit 300000" in s for s in skipped)


def test_a_flood_of_instruction_headers_gets_a_clear_refusal(
    stack: LocalStack, make_login: MakeLogin
) -> None:
    user, password = make_login()
    flood = "".join(f"x-smtpeter-tags: {i}\r\n" for i in range(20000)).encode()
    raw = simple("flood").replace(b"Subject:", flood + b"Subject:", 1)
    with pytest.raises(smtplib.SMTPDataError) as err:
        send(stack, user, password, raw)
    assert err.value.smtp_code == 550
    assert b"Too many x-smtpeter-* headers (20000; at most 100)" in err.value.smtp_error


def test_a_misspelt_instruction_is_refused_naming_it(
    stack: LocalStack, make_login: MakeLogin
) -> None:
    user, password = make_login(trackclicks=True)
    with pytest.raises(smtplib.SMTPDataError) as err:
        send(stack, user, password, simple("typo", X_SMTPeter_TrackClick="false"))
    assert err.value.smtp_code == 550
    reply = err.value.smtp_error
    assert isinstance(reply, bytes)
    assert reply.startswith(b"5.6.0 X-SMTPeter-TrackClick: unknown instruction")


def test_dkim_signed_mail_keeps_its_signature(
    stack: LocalStack, make_login: MakeLogin, store: Store
) -> None:
    import dkim

    key = subprocess.run(["openssl", "genrsa", "2048"], capture_output=True, check=True).stdout
    public = subprocess.run(
        ["openssl", "rsa", "-pubout", "-outform", "DER"], input=key, capture_output=True,
        check=True,
    ).stdout  # fmt: skip
    record_txt = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
    user, password = make_login(inlinecss=True, trackclicks=True)
    page = '<html><head><style>p{color:red}</style></head><body><p><a href="https://e.org/">x</a></p></body></html>'
    raw = simple("signed", html=page)
    signature = dkim.sign(raw, b"s1", b"sender.example", key, include_headers=[b"From", b"Subject"])
    mark = send(stack, user, password, signature + raw)
    data = find_delivered(stack, mark)
    signed = data.split(b"\n", 2)[2].replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    assert dkim.verify(signed, dnsfunc=lambda _name, timeout=5: record_txt)
    features, skipped = record(store, mark)
    assert features == () and len(skipped) == 2
