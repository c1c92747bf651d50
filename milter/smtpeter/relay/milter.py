"""The milter: one RelayMilter per SMTP connection from Postfix.

Per message: read the login from ``{auth_authen}`` and the listener from
``{daemon_name}`` at MAIL, collect headers and body, reject a malformed
``x-smtpeter-*`` feature header at end of headers, and at end of message resolve
the features (the login's, overridden by the headers), run the HTML pipeline on
the feature thread, remove every ``x-smtpeter-*`` header, splice the rewritten
body in, record the message, and log one summary line.

Only sessions on smtpeter's own listeners (``{daemon_name}`` = smtpeter) are API
submissions: their login is one of ours and gets its features, and anything
unexpected becomes a temporary failure (451 4.3.0): the client retries and nothing
is lost or half-processed, because Postfix discards our edits with it. Every other
session (an MX's inbound mail, its mailbox users authenticated by their own SASL,
local submission) only has its ``x-smtpeter-*`` headers removed: no feature, no
store lookup, no record, and never a refusal from us.
"""

from __future__ import annotations

import base64
import concurrent.futures
import logging
import secrets
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

import Milter

from smtpeter import suppression, unsubscribe
from smtpeter.config import Config
from smtpeter.features import FeatureSet
from smtpeter.logins import Login
from smtpeter.logsafe import escape
from smtpeter.postfix.render import API_DAEMON_NAME
from smtpeter.relay.headers import (
    HeaderError,
    check_names,
    is_instruction,
    parse_metadata,
    parse_overrides,
    parse_tags,
    printable,
)
from smtpeter.relay.mime import Rewrite
from smtpeter.relay.pipeline import CONTENT_FEATURES, Options, Pipeline
from smtpeter.store import MessageRecord, Store, StoreError, Suppression, open_store
from smtpeter.tracker.keys import KeyRing

log = logging.getLogger("smtpeter.milter")
# Room left under message_size_limit for what Postfix adds (Received:, envelope).
SIZE_MARGIN = 8192
# Postfix's own default message_size_limit.
POSTFIX_DEFAULT_SIZE_LIMIT = 10240000


def postfix_size_limit() -> int:
    """The system Postfix's message_size_limit, or Postfix's default if postconf
    cannot say."""
    try:
        result = subprocess.run(
            ["postconf", "-h", "message_size_limit"], capture_output=True, text=True, timeout=10
        )
        return int(result.stdout.strip())
    except (OSError, ValueError, subprocess.SubprocessError):
        log.warning(
            "cannot read Postfix's message_size_limit (postconf); assuming %d bytes: set "
            "milter.message_size_limit",
            POSTFIX_DEFAULT_SIZE_LIMIT,
        )
        return POSTFIX_DEFAULT_SIZE_LIMIT


@dataclass
class RelayContext:
    """Everything a worker process shares between its connections."""

    config: Config
    store: Store
    pipeline: Pipeline
    # One thread does all HTML work (lxml is not safe on libmilter's threads).
    features_thread: concurrent.futures.ThreadPoolExecutor
    # Postfix's message_size_limit (0: none): no rewrite may take a message past it.
    size_limit: int = POSTFIX_DEFAULT_SIZE_LIMIT

    @classmethod
    def create(cls, config: Config) -> RelayContext:
        store = open_store(config.store)
        return cls(
            config=config,
            store=store,
            pipeline=Pipeline(config, KeyRing.from_config(store, config.tracker)),
            features_thread=concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="features"
            ),
            size_limit=(
                config.milter.message_size_limit
                if config.milter.message_size_limit is not None
                else postfix_size_limit()
            ),
        )


def _as_str(value: str | bytes) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return value


class RelayMilter(Milter.Base):  # type: ignore[misc]
    context: RelayContext  # set by the worker before libmilter starts

    def __init__(self) -> None:
        self.ctx = type(self).context
        self._reset()

    def _reset(self) -> None:
        self.login: str | None = None
        # True on smtpeter's own listeners: the login is ours, features apply, and
        # a fault of ours is a tempfail. False: strip the headers, never refuse.
        self.api = False
        self.sender = ""
        self.recipients: list[str] = []
        self.headers: list[tuple[str, str]] = []
        self.headers_size = 0
        self.body_chunks: list[bytes] = []
        self.body_size = 0
        # Resolved at end of headers: the features for this message, and whether
        # any of them needs the body (if none does, it is counted, not kept).
        self.features: FeatureSet | None = None
        self.preventscam = False
        self.keep_body = False
        # An exception in a no-reply callback cannot be answered there (Postfix does
        # not wait for a reply); it is kept and turned into a tempfail at end of message.
        self.failure: BaseException | None = None
        self.queue_id = ""
        # Features asked for but not applied, each "feature: reason" (logged, recorded).
        self.skipped: list[str] = []
        # The features asked for (header overrides included), for the log line.
        self.asked: FeatureSet | None = None
        # False when a flood of instruction headers on the server's own mail is left
        # as it is (see milter.max_instruction_headers).
        self.strip = True
        # The login's record, read once a message: at the first RCPT (its
        # suppression policy) or, if that read failed, at end of headers.
        self.record: Login | None = None
        self.record_read = False
        # x-smtpeter-tags and x-smtpeter-metadata, stored with the message.
        self.tags: tuple[str, ...] = ()
        self.metadata: dict[str, str] = {}

    def _log(self) -> _Adapter:
        who = self.login if self.api else f"({self.login})" if self.login else None
        return _Adapter(log, f"{self.queue_id or 'NOQUEUE'}: login={who or '-'}")

    # -- observe-only callbacks -------------------------------------------------

    # No connect or helo callback: leaving them out lets Postfix skip those stages.

    @Milter.noreply  # type: ignore[untyped-decorator]
    def envfrom(self, mailfrom: str, *params: str) -> int:
        self._reset()
        self.login = self.getsymval("{auth_authen}") or None
        # Without the macro (a Postfix set up before listeners were told apart)
        # every session is taken for an API session, as it was then.
        daemon = self.getsymval("{daemon_name}")
        self.api = self.login is not None and daemon in (None, API_DAEMON_NAME)
        self.sender = mailfrom
        self.queue_id = self.getsymval("i") or ""
        return Milter.CONTINUE  # type: ignore[no-any-return]

    def envrcpt(self, rcpt: str, *params: str) -> int:
        """Refuse a recipient on the login's suppression list (policy ``refuse``); the
        message's other recipients go on. The only callback before end of headers that
        answers, so that the refusal is per recipient."""
        if self.api and self.login is not None:
            entry = self._suppressed(rcpt)
            if entry is not None:
                code, enhanced, text = suppression.refusal(entry)
                self._log().info("refused %s: %s", escape(rcpt), text)
                self.setreply(code, enhanced, text)
                return Milter.REJECT  # type: ignore[no-any-return]
        self.recipients.append(rcpt)
        return Milter.CONTINUE  # type: ignore[no-any-return]

    def _suppressed(self, rcpt: str) -> Suppression | None:
        """The suppression list's entry for this recipient and login, if the login's
        policy refuses it. A store that cannot be read refuses nothing (logged): the
        list must never turn into temporary failures."""
        try:
            login = self._record()
            if login is None or login.suppression != "refuse":
                return None
            return self.ctx.store.suppression(login.name, rcpt)
        except StoreError as e:
            self._log().warning("suppression list not read, %s accepted: %s", escape(rcpt), e)
            return None

    @Milter.noreply  # type: ignore[untyped-decorator]
    @Milter.decode("bytes")  # type: ignore[untyped-decorator]
    def header(self, name: str, value: bytes | str) -> int:
        try:
            self.headers.append((name, _as_str(value)))
            self.headers_size += len(name) + len(value) + 4  # "Name: value\r\n"
        except Exception as e:  # noqa: BLE001 (see self.failure)
            self.failure = self.failure or e
        return Milter.CONTINUE  # type: ignore[no-any-return]

    def eoh(self) -> int:
        """Resolve the features once the headers are in; refuse a bad instruction
        header or a login disabled since AUTH before the body is sent."""
        self.queue_id = self.queue_id or self.getsymval("i") or ""
        count = sum(1 for name, _ in self.headers if is_instruction(name))
        limit = self.ctx.config.milter.max_instruction_headers
        if count > limit:
            if self.api:
                self._log().info("rejected: %d x-smtpeter-* headers (at most %d)", count, limit)
                self.setreply(
                    "550", "5.6.0", f"Too many x-smtpeter-* headers ({count}; at most {limit})"
                )
                return Milter.REJECT  # type: ignore[no-any-return]
            # Deleting tens of thousands of headers makes Postfix's cleanup fail, and the
            # server's own mail is never refused by us: leave them.
            self.strip = False
        try:
            self.features = self._resolve()
        except HeaderError as e:
            self._log().info("rejected: %s", escape(str(e)))
            self.setreply("550", "5.6.0", f"{e.name}: {printable(str(e).split(': ', 1)[1], 120)}")
            return Milter.REJECT  # type: ignore[no-any-return]
        except StoreError as e:
            self._log().error("temporary failure: %s", e)
            self.setreply("451", "4.3.0", "Temporary failure looking up the login, try again later")
            return Milter.TEMPFAIL  # type: ignore[no-any-return]
        if self.features is None:
            self._log().warning("rejected: login is disabled or was deleted after AUTH")
            self.setreply("550", "5.7.1", "This SMTP login is disabled")
            return Milter.REJECT  # type: ignore[no-any-return]
        self.keep_body = bool(self.ctx.pipeline.steps(self.features))
        return Milter.CONTINUE  # type: ignore[no-any-return]

    @Milter.noreply  # type: ignore[untyped-decorator]
    def body(self, chunk: bytes) -> int:
        self.body_size += len(chunk)
        if self.keep_body:
            self.body_chunks.append(chunk)
        return Milter.CONTINUE  # type: ignore[no-any-return]

    def abort(self) -> int:
        self._reset()
        return Milter.CONTINUE  # type: ignore[no-any-return]

    def close(self) -> int:
        return Milter.CONTINUE  # type: ignore[no-any-return]

    # -- end of message: every edit happens here ---------------------------------

    def eom(self) -> int:
        started = time.monotonic()
        self.queue_id = self.getsymval("i") or self.queue_id
        try:
            return self._eom(started)
        except StoreError as e:
            self._log().error("temporary failure: %s", e)
        except concurrent.futures.TimeoutError:
            self._log().error(
                "temporary failure: features took longer than %.0f s",
                self.ctx.config.milter.feature_timeout,
            )
        except Exception:  # noqa: BLE001 (any fault here must tempfail, never lose mail)
            if not self.api:
                # Not an API submission: the server's own mail never fails because
                # of us; what was stripped so far stays stripped.
                self._log().exception("unexpected error, message passed on as it is")
                return Milter.ACCEPT  # type: ignore[no-any-return]
            self._log().exception("temporary failure: unexpected error")
        self.setreply("451", "4.3.0", "Temporary failure processing the message, try again later")
        return Milter.TEMPFAIL  # type: ignore[no-any-return]

    def _record(self) -> Login | None:
        """The authenticated login's record (None if it was deleted), read from the
        store once a message; a read that failed is tried again at the next call."""
        if not self.record_read:
            self.record = self.ctx.store.get_login(self.login or "")
            self.record_read = True
        return self.record

    def _resolve(self) -> FeatureSet | None:
        """The features for this message, or None when the login may not send."""
        if not self.api or self.login is None:
            # Unauthenticated mail, and mail of users smtpeter did not authenticate,
            # can never turn a feature on.
            return FeatureSet()
        login = self._record()
        if login is None or not login.enabled:
            return None
        check_names(self.headers)
        self.tags = parse_tags(self.headers)
        self.metadata = parse_metadata(self.headers)
        overrides = parse_overrides(self.headers)
        self.preventscam = overrides.pop("preventscam", False)
        features = self.asked = login.features.with_overrides(overrides)
        signed = any(name.lower() == "dkim-signature" for name, _ in self.headers)
        content = [f for f in CONTENT_FEATURES if getattr(features, f)]
        if signed and content and not login.rewrite_signed:
            # Rewriting the body would break the sender's signature; the envelope
            # (trackbounces) is not signed.
            self.skipped += [f"{f}: the message is DKIM-signed" for f in content]
            features = replace(features, **dict.fromkeys(content, False))
        if signed and features.unsubscribe and not login.rewrite_signed:
            # The sender's signature cannot cover a List-Unsubscribe we add (mailbox
            # providers want it covered), and one that oversigns it would break.
            self.skipped.append("unsubscribe: the message is DKIM-signed")
            features = replace(features, unsubscribe=False)
        return features

    def _eom(self, started: float) -> int:
        if self.failure is not None:
            raise self.failure
        features = self.features
        if features is None:
            raise RuntimeError("end of message without end of headers")

        body = b"".join(self.body_chunks)
        # Lowercase base32: it also travels in return paths, whose case MTAs may change.
        uid = base64.b32encode(secrets.token_bytes(10)).decode("ascii").lower()
        rewrite: Rewrite | None = None
        if self.keep_body:
            future = self.ctx.features_thread.submit(
                self.ctx.pipeline.rewrite,
                self.headers,
                body,
                features,
                Options(message_uid=uid, preventscam=self.preventscam),
            )
            outcome = future.result(timeout=self.ctx.config.milter.feature_timeout)
            rewrite = outcome.rewrite
            self.skipped += outcome.skipped

        # Remove every instruction header. Postfix shifts later indices after a
        # delete, so each name's copies go from the highest index down.
        removed_bytes = 0
        counts: Counter[str] = Counter()
        names: dict[str, str] = {}
        for name, value in self.headers:
            if is_instruction(name):
                counts[name.lower()] += 1
                names.setdefault(name.lower(), name)
                removed_bytes += len(name) + len(value.encode("utf-8", "surrogateescape")) + 4
        if not self.strip:
            self._log().warning(
                "%d x-smtpeter-* headers left in place (more than milter.max_instruction_headers)",
                sum(counts.values()),
            )
            counts.clear()
            removed_bytes = 0
        for lname, count in counts.items():
            for index in range(count, 0, -1):
                self.chgheader(names[lname], index, "")

        size_before = self.headers_size + self.body_size
        size_after = size_before - removed_bytes
        applied: list[str] = []
        if rewrite is not None and rewrite.body is not None:
            grown = size_after + len(rewrite.body) - len(body)
            limit = self.ctx.size_limit
            if limit and grown > size_before and grown + SIZE_MARGIN > limit:
                # Postfix's cleanup would refuse the rewritten message for good (552
                # 5.3.4) although the sender stayed under the limit: send it as it was.
                self.skipped += [
                    f"{step}: the rewritten message would be {grown} bytes, over "
                    f"message_size_limit {limit}"
                    for step in self.ctx.pipeline.steps(features)
                ]
                rewrite = None
        if rewrite is not None and rewrite.body is not None:
            present = {name.lower() for name, _ in self.headers}
            for name, value in rewrite.header_changes.items():
                if name.lower() in present:
                    self.chgheader(name, 1, value)
                else:
                    self.addheader(name, value)
            self.replacebody(rewrite.body)
            size_after += len(rewrite.body) - len(body)
            skipped = {reason.split(":", 1)[0] for reason in self.skipped}
            applied = [s for s in self.ctx.pipeline.steps(features) if s not in skipped]

        if features.unsubscribe and self._list_unsubscribe(uid):
            applied.append("unsubscribe")

        return_path = self._return_path(features, uid)
        if return_path is not None:
            applied.append("trackbounces")

        message_id = next((v.strip() for n, v in self.headers if n.lower() == "message-id"), None)
        # Only the API's messages are ours to record: an MX's own mail stays out of
        # the store (and does not depend on it).
        if self.api:
            self.ctx.store.record_message(
                MessageRecord(
                    uid=uid,
                    queue_id=self.queue_id or "NOQUEUE",
                    message_id=message_id,
                    login=self.login,
                    envelope_sender=self.sender,
                    recipients=tuple(self.recipients),
                    features=tuple(applied),
                    size_before=size_before,
                    size_after=size_after,
                    skipped=tuple(self.skipped),
                    tags=self.tags,
                    metadata=self.metadata,
                )
            )
        self._log().info(
            "accepted: from=%s nrcpt=%d features=%s applied=%s stripped=%d size=%d->%d ms=%.1f",
            escape(self.sender),
            len(self.recipients),
            ",".join((self.asked or features).enabled()) or "none",
            ",".join(applied) or "none",
            sum(counts.values()),
            size_before,
            size_after,
            (time.monotonic() - started) * 1000,
        )
        for reason in self.skipped:
            self._log().warning("skipped %s", escape(reason))
        if return_path is not None:
            # Last: pymilter's TestCtx closes the session on chgfrom.
            self.chgfrom(return_path)
        return Milter.ACCEPT  # type: ignore[no-any-return]

    def _list_unsubscribe(self, uid: str) -> bool:
        """Add List-Unsubscribe (the signed tracker URL, and a mailto on the bounce
        domain if there is one) and List-Unsubscribe-Post (RFC 8058); False, with a log
        line, when the sender's message has a List-Unsubscribe of its own (kept)."""
        present = {name.lower() for name, _ in self.headers}
        if "list-unsubscribe" in present:
            self._log().info(
                "unsubscribe: the message has its own List-Unsubscribe header, left as it is"
            )
            return False
        signer = self.ctx.pipeline.signer()
        # One body goes to every recipient: a header can name only a message's one.
        recipient = (
            self.recipients[0].strip().strip("<>").strip() if len(self.recipients) == 1 else None
        )
        base = self.ctx.config.tracker.base_url
        links = [f"<{base}/u/{signer.sign_unsubscribe(uid, recipient)}>"]
        domain = self.ctx.config.bounces.domain
        if domain is not None:
            token = signer.sign_return_path(uid, purpose="u")
            links.append(f"<mailto:{unsubscribe.MAILTO_PREFIX}+{token}@{domain}>")
        self.addheader("List-Unsubscribe", ", ".join(links))
        if "list-unsubscribe-post" not in present:
            self.addheader("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
        return True

    def _return_path(self, features: FeatureSet, uid: str) -> str | None:
        """The signed VERP return path for trackbounces, or None to keep the sender."""
        bounces = self.ctx.config.bounces
        if not features.trackbounces or self.sender in ("<>", ""):
            # A message with the null sender is itself a bounce or auto-reply: it must
            # never get a return path that could bounce back (mail loops).
            return None
        if bounces.domain is None:
            self._log().warning("trackbounces asked for, but bounces.domain is not set")
            return None
        token = self.ctx.pipeline.signer().sign_return_path(uid)
        return f"<{bounces.prefix}+{token}@{bounces.domain}>"


class _Adapter(logging.LoggerAdapter[logging.Logger]):
    """Prefixes each line with the queue id and login, as Postfix's own logs do."""

    def __init__(self, logger: logging.Logger, prefix: str) -> None:
        super().__init__(logger, {})
        self.prefix = prefix

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"{self.prefix} {msg}", kwargs
