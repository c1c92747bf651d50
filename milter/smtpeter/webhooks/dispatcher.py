"""The webhook dispatcher (`smtpeter webhooks dispatch`): the outbox to the endpoints.

One worker thread per endpoint, each with at most ``webhooks.max_in_flight``
requests at once, so a slow or dead endpoint holds up only itself; the tracker, the
milter and the other writers only ever add outbox rows (the store's trigger) and
never wait for a receiver. A worker claims its endpoint's due rows for a lease, POSTs
each (signed), and deletes it on a 2xx reply; anything else (a non-2xx reply, a
redirect, no reply within the timeouts, a refused target) sets the next attempt:
``retry_first_seconds`` doubling up to ``retry_max_seconds``, until ``retry_hours``
after the first attempt, when the row is marked failed and kept. A dispatcher killed
mid-request leaves its claimed rows to come due again when the lease ends: delivery
is at least once, and the event id lets the receiver drop a duplicate.
"""

from __future__ import annotations

import logging
import signal
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from smtpeter.config import Config, WebhooksConfig
from smtpeter.store import Store, StoreError
from smtpeter.store.webhooks import OutboxRow, Webhook
from smtpeter.webhooks import client, payload, signing
from smtpeter.webhooks.targets import Resolver, Target, TargetError, resolve, system_resolver

log = logging.getLogger("smtpeter.webhooks")

# A busy endpoint's host is resolved (and checked) again after this many seconds.
RESOLVE_SECONDS = 30.0


def retry_delay(failures: int, first: float, cap: float) -> float:
    """Seconds to wait after the ``failures``-th failed attempt (1, 2, ...): ``first``
    doubling each time, at most ``cap``."""
    return min(first * 2.0 ** min(max(failures - 1, 0), 60), cap)


def next_attempt(
    failures: int, first_attempt_at: float, now: float, cfg: WebhooksConfig
) -> float | None:
    """When to try again after the ``failures``-th failure, never past the end of the
    retry window (``retry_hours`` after the first attempt, which gets one last try);
    None once that has passed: the row is failed."""
    end = first_attempt_at + cfg.retry_hours * 3600
    if now >= end:
        return None
    return min(now + retry_delay(failures, cfg.retry_first_seconds, cfg.retry_max_seconds), end)


def lease_seconds(cfg: WebhooksConfig) -> float:
    """How long a claim lasts: the longest request, its outcome's write, and margin."""
    return 2 * cfg.request_timeout + 5


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def send(
    webhook: Webhook,
    body: bytes,
    event_id: int,
    cfg: WebhooksConfig,
    *,
    target: Target | None = None,
    resolver: Resolver = system_resolver,
    tls: ssl.SSLContext | None = None,
    now: float | None = None,
) -> client.Reply:
    """POST one signed body to the endpoint. TargetError if its URL is refused now (a
    DNS name that resolves to a private address), client.DeliveryError if no reply."""
    if target is None:
        target = resolve(webhook.url, allow_private=cfg.allow_private_targets, resolver=resolver)
    stamp = time.time() if now is None else now
    headers = {
        signing.HEADER: signing.sign(webhook.signing_secrets(stamp), body, int(stamp)),
        signing.EVENT_ID_HEADER: str(event_id),
    }
    return client.post(
        target,
        body,
        headers,
        connect_timeout=cfg.connect_timeout,
        request_timeout=cfg.request_timeout,
        tls=tls,
    )


def send_test(
    webhook: Webhook,
    cfg: WebhooksConfig,
    *,
    resolver: Resolver = system_resolver,
    tls: ssl.SSLContext | None = None,
) -> client.Reply:
    """`smtpeter webhooks test`: one signed test event (type "test", id 0), now."""
    body = payload.body(payload.trial_payload(webhook.login, _utc(time.time())))
    return send(webhook, body, 0, cfg, resolver=resolver, tls=tls)


class Worker:
    """The deliveries of one endpoint: a thread that claims its due rows and a pool of
    at most max_in_flight requests."""

    def __init__(
        self,
        store: Store,
        webhook: Webhook,
        cfg: WebhooksConfig,
        *,
        resolver: Resolver,
        clock: Callable[[], float],
        tls: ssl.SSLContext | None,
    ) -> None:
        self.store = store
        self.webhook = webhook  # replaced by the dispatcher when it changes (rotation)
        self.cfg = cfg
        self.resolver = resolver
        self.clock = clock
        self.tls = tls
        self.stopping = threading.Event()
        self._resolved: tuple[str, float, Target | str] | None = None
        self._busy = 0
        self._slots = threading.Condition()
        self._pool = ThreadPoolExecutor(
            cfg.max_in_flight, thread_name_prefix=f"webhook-{webhook.id}"
        )
        self.thread = threading.Thread(target=self._run, name=f"webhook-{webhook.id}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        with self._slots:
            self._slots.notify_all()

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _label(self) -> str:
        return f"webhook {self.webhook.id} ({self.webhook.login} {self.webhook.url})"

    def _run(self) -> None:
        lease = lease_seconds(self.cfg)
        while not self.stopping.is_set():
            with self._slots:
                while self._busy >= self.cfg.max_in_flight and not self.stopping.is_set():
                    self._slots.wait(self.cfg.poll_seconds)
                free = self.cfg.max_in_flight - self._busy
            if self.stopping.is_set():
                break
            try:
                rows = self.store.claim_webhook_rows(
                    self.webhook.id, now=self.clock(), lease=lease, limit=free
                )
            except StoreError as e:
                log.warning("%s: cannot read the outbox: %s", self._label(), e)
                self.stopping.wait(self.cfg.poll_seconds)
                continue
            if not rows:
                self.stopping.wait(self.cfg.poll_seconds)
                continue
            webhook = self.webhook
            target = self._target(webhook)
            with self._slots:
                self._busy += len(rows)
            for row in rows:
                self._pool.submit(self._deliver, webhook, target, row)

    def _target(self, webhook: Webhook) -> Target | str:
        """Where the endpoint is reached (or why it is refused), resolved at most every
        RESOLVE_SECONDS while the endpoint is busy. A cached answer is still the
        address that was checked: the connection goes to it."""
        now = time.monotonic()
        cached = self._resolved
        if cached is not None and cached[0] == webhook.url and now < cached[1]:
            return cached[2]
        target: Target | str
        try:
            target = resolve(
                webhook.url, allow_private=self.cfg.allow_private_targets, resolver=self.resolver
            )
        except TargetError as e:
            target = str(e)
        self._resolved = (webhook.url, now + RESOLVE_SECONDS, target)
        return target

    def _deliver(self, webhook: Webhook, target: Target | str, row: OutboxRow) -> None:
        started = time.monotonic()
        try:
            error = self._attempt(webhook, target, row)
            ms = (time.monotonic() - started) * 1000
            event = f"event {row.event.id} {row.event.type}"
            if error is None:
                self.store.webhook_delivered([row.id])
                log.info("%s: %s delivered in %.0f ms", self._label(), event, ms)
                return
            failures = row.attempts + 1
            retry_at = next_attempt(failures, row.first_attempt_at, self.clock(), self.cfg)
            self.store.webhook_attempt_failed(row.id, error, retry_at)
            if retry_at is None:
                log.error("%s: %s failed for good after %d attempts in %g hours: %s",
                          self._label(), event, failures, self.cfg.retry_hours, error)  # fmt: skip
            else:
                log.warning("%s: %s attempt %d failed: %s; next in %.0f s", self._label(),
                            event, failures, error, retry_at - self.clock())  # fmt: skip
        except StoreError as e:
            # The row stays claimed until its lease ends, then is due again.
            log.warning("%s: cannot record an outcome: %s", self._label(), e)
        except Exception:
            log.exception("%s: unexpected error delivering event %s", self._label(), row.event.id)
        finally:
            with self._slots:
                self._busy -= 1
                self._slots.notify_all()

    def _attempt(self, webhook: Webhook, target: Target | str, row: OutboxRow) -> str | None:
        """None when the endpoint took the event (2xx), else why not."""
        if isinstance(target, str):
            return target
        body = payload.body(payload.event_payload(row.event, row.queue_id))
        assert row.event.id is not None
        try:
            reply = send(webhook, body, row.event.id, self.cfg, target=target, tls=self.tls)
        except client.DeliveryError as e:
            return str(e)
        return None if reply.ok else reply.describe()


class Dispatcher:
    """Workers for every endpoint in the store, kept in step with it: an endpoint
    added gets a worker within a poll, a removed one's worker stops."""

    def __init__(
        self,
        store: Store,
        cfg: WebhooksConfig,
        *,
        resolver: Resolver = system_resolver,
        clock: Callable[[], float] = time.time,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.store = store
        self.cfg = cfg
        self.resolver = resolver
        self.clock = clock
        self.tls = tls
        self.stopping = threading.Event()
        self.workers: dict[int, Worker] = {}

    def refresh(self) -> None:
        hooks = {h.id: h for h in self.store.webhooks()}
        for hook_id in set(self.workers) - set(hooks):
            worker = self.workers.pop(hook_id)
            worker.stop()
            log.info("webhook %d removed: its worker stops", hook_id)
        for hook_id, hook in hooks.items():
            running = self.workers.get(hook_id)
            if running is not None:
                running.webhook = hook
                continue
            worker = Worker(
                self.store, hook, self.cfg, resolver=self.resolver, clock=self.clock,
                tls=self.tls,
            )  # fmt: skip
            self.workers[hook_id] = worker
            worker.start()
            log.info("webhook %d (%s %s): delivering", hook.id, hook.login, hook.url)

    def run(self) -> None:
        """Until stop(): keep the workers in step with the store's endpoints."""
        while not self.stopping.is_set():
            try:
                self.refresh()
            except StoreError as e:
                log.warning("webhooks: cannot read the endpoints: %s", e)
            self.stopping.wait(self.cfg.poll_seconds)
        for worker in self.workers.values():
            worker.stop()
        for worker in self.workers.values():
            # A request in flight ends within request_timeout.
            worker.join(self.cfg.request_timeout + 2)

    def stop(self) -> None:
        self.stopping.set()


def run(cfg: Config) -> int:
    """`smtpeter webhooks dispatch`: in the foreground until SIGTERM or SIGINT."""
    from smtpeter.store import open_store

    store = open_store(cfg.store)
    dispatcher = Dispatcher(store, cfg.webhooks)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: dispatcher.stop())
    log.info(
        "webhooks: dispatching (%s private targets, timeouts %g/%g s, retries for %g h)",
        "allowing" if cfg.webhooks.allow_private_targets else "refusing",
        cfg.webhooks.connect_timeout,
        cfg.webhooks.request_timeout,
        cfg.webhooks.retry_hours,
    )
    dispatcher.run()
    log.info("webhooks: stopped")
    return 0
