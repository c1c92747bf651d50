"""The tracker process: open the listening socket once, then pre-fork workers.

Each worker is a uvicorn server (httptools parser, uvloop event loop) running
:class:`~smtpeter.tracker.app.TrackerApp` on the shared socket, with its own store
connection, key ring and event writer thread. The first SIGTERM or SIGINT stops the
workers gracefully: they stop accepting, finish the requests in flight, then write
every queued event before exiting. A second signal makes them exit at once (still
writing the queued events). A worker that dies is replaced.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable, Iterator
from types import FrameType

import uvicorn

from smtpeter.config import Config
from smtpeter.prefork import supervise
from smtpeter.store import StoreError, open_store
from smtpeter.tracker.app import ASGIApp, TrackerApp
from smtpeter.tracker.keys import KeyRing
from smtpeter.tracker.writer import EventWriter

log = logging.getLogger("smtpeter.tracker")

# Builds, in a worker process, the application and what to call when the worker exits.
AppFactory = Callable[[], tuple[ASGIApp, Callable[[], object]]]


def build_app(cfg: Config) -> TrackerApp:
    """The application over a fresh store connection (call it in the serving process:
    SQLite connections must not cross a fork). Raises StoreError."""
    store = open_store(cfg.store)
    t = cfg.tracker
    keyring = KeyRing.from_config(store, t)
    writer = EventWriter(
        store.record_events, flush_seconds=t.event_flush_seconds, queue_max=t.event_queue_max
    )
    return TrackerApp(keyring, writer, trusted_proxies=t.trusted_proxies, store=store)


def uvicorn_config(app: ASGIApp) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        # We write our own access log, and resolve X-Forwarded-For ourselves (only
        # from trusted_proxies): uvicorn must not rewrite the client address.
        access_log=False,
        proxy_headers=False,
        server_header=False,
        log_config=None,
        timeout_graceful_shutdown=10,
        backlog=2048,
    )


class Server(uvicorn.Server):
    """uvicorn's server without its own signal handling (the worker installs ours, and
    uvicorn would re-raise the signal after shutting down, killing the process)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def stop(self) -> None:
        """Graceful on the first call, immediate on the second."""
        if self.should_exit:
            self.force_exit = True
        self.should_exit = True


def listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=2048)
    sock.set_inheritable(True)
    return sock


def _tracker_app(cfg: Config) -> tuple[ASGIApp, Callable[[], object]]:
    app = build_app(cfg)
    return app, app.writer.close


def _worker(make_app: AppFactory, sock: socket.socket) -> int:
    """Serve in this (forked) process until told to stop."""
    try:
        app, on_exit = make_app()
    except StoreError as e:
        log.error("worker %d: %s", os.getpid(), e)
        return 1
    server = Server(uvicorn_config(app))

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        server.stop()

    signal.signal(signal.SIGTERM, on_signal)
    # The parent turns Ctrl-C into a SIGTERM for us; the terminal's own SIGINT to the
    # whole process group would otherwise count as a second signal.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        server.run(sockets=[sock])
    finally:
        # The lifespan shutdown has flushed the events already unless the exit was forced.
        on_exit()
    return 0


def run_tracker(cfg: Config) -> int:
    """Run the tracker in the foreground; returns an exit status."""
    t = cfg.tracker
    if not t.access_log:
        logging.getLogger("smtpeter.tracker.access").setLevel(logging.WARNING)
    try:
        sock = listen(t.listen_host, t.listen_port)
    except OSError as e:
        log.error("cannot listen on %s:%d: %s", t.listen_host, t.listen_port, e.strerror)
        return 1
    # Check the store and make the first signing key once, before forking: a worker
    # that cannot start would otherwise be respawned in a loop, and workers would race
    # to create the first key.
    try:
        store = open_store(cfg.store)
        KeyRing.from_config(store, t)
        store.close()
    except StoreError as e:
        log.error("%s", e)
        return 1
    log.info(
        "listening on http://%s:%d (%s) with %d workers",
        t.listen_host,
        t.listen_port,
        t.base_url,
        t.workers,
    )
    return run_workers(sock, t.workers, lambda: _tracker_app(cfg))


def run_workers(sock: socket.socket, workers: int, make_app: AppFactory) -> int:
    """Fork ``workers`` processes serving ``make_app()`` on ``sock`` and supervise them
    until SIGTERM or SIGINT; returns an exit status. (The benchmark serves its baseline
    with this too, so both run on the very same server.)"""
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    # A worker may take ~40 s to stop: uvicorn's graceful period, then flushing its
    # events to a slow store.
    status = supervise(workers, lambda: _worker(make_app, sock), log, stop_grace=45)
    sock.close()
    log.info("stopped")
    return status
