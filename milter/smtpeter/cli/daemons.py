"""The long-running processes: auth daemon, milter, local sink. Each runs in the
foreground (systemd, or the local stack, supervises it) and logs to stderr."""

from __future__ import annotations

import asyncio
import logging
import signal

from smtpeter import logins
from smtpeter.auth.credentials import Credentials
from smtpeter.auth.server import AuthServer
from smtpeter.config import Config
from smtpeter.store import open_store

log = logging.getLogger("smtpeter")


def run_authd(cfg: Config) -> int:
    store = open_store(cfg.store)

    def lookup(name: str) -> Credentials | None:
        login = store.get_login(name)
        if login is None:
            return None
        return Credentials(login.name, login.password_hash, login.enabled)

    server = AuthServer(
        lookup,
        logins.verify_password,
        logins.dummy_hash(),
        failure_delay=cfg.auth.failure_delay,
        cache_ttl=cfg.auth.cache_ttl,
        cache_max_entries=cfg.auth.cache_max_entries,
        request_timeout=cfg.auth.request_timeout,
        hash_workers=cfg.auth.hash_workers,
    )

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(server.stop()))
        # A reload (SIGHUP) drops cached credentials, e.g. after editing the store by hand.
        loop.add_signal_handler(signal.SIGHUP, server.cache.clear)
        await server.serve_unix(cfg.auth.socket, cfg.auth.socket_mode, cfg.auth.socket_group)

    asyncio.run(main())
    return 0


def run_milter(cfg: Config) -> int:
    from smtpeter.relay.workers import run

    return run(cfg)


def run_tracker(cfg: Config) -> int:
    from smtpeter.tracker.server import run_tracker

    return run_tracker(cfg)


def run_sink(host: str, port: int, maildir: str, reject: str | None) -> int:
    from smtpeter.local.sink import serve

    asyncio.run(serve(host, port, maildir, reject))
    return 0
