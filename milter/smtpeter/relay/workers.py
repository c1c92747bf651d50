"""The milter process: open the socket once, then pre-fork workers that share it.

The GIL holds one Python milter process to about one core (REFERENCE.md), so the
supervisor forks ``milter.workers`` processes (default: one per core) that all
accept on the same listening socket. A worker that dies is replaced; SIGTERM or
SIGINT stops them all gracefully (libmilter finishes the sessions in flight).
"""

from __future__ import annotations

import contextlib
import grp
import importlib
import logging
import os
from typing import Any

import Milter

from smtpeter.config import Config
from smtpeter.prefork import supervise
from smtpeter.relay.milter import RelayContext, RelayMilter

# pymilter's C module is called "milter", the name of our source folder too; loading it
# by name keeps type checkers from confusing the two.
milter: Any = importlib.import_module("milter")

log = logging.getLogger("smtpeter.milter")

NAME = "smtpeter"


def _register(config: Config) -> None:
    """Register RelayMilter's callbacks with libmilter (once, before forking)."""
    Milter.factory = RelayMilter
    milter.set_flags(Milter.CHGHDRS | Milter.ADDHDRS | Milter.CHGBODY | Milter.CHGFROM)
    milter.set_connect_callback(Milter.connect_callback)
    milter.set_helo_callback(lambda ctx, host: ctx.getpriv().hello(host))
    milter.set_envfrom_callback(lambda ctx, *a: ctx.getpriv().envfrom_bytes(*a))
    milter.set_envrcpt_callback(lambda ctx, *a: ctx.getpriv().envrcpt_bytes(*a))
    milter.set_header_callback(lambda ctx, f, v: ctx.getpriv().header_bytes(f, v))
    milter.set_eoh_callback(lambda ctx: ctx.getpriv().eoh())
    milter.set_body_callback(lambda ctx, chunk: ctx.getpriv().body(chunk))
    milter.set_eom_callback(lambda ctx: ctx.getpriv().eom())
    milter.set_abort_callback(lambda ctx: ctx.getpriv().abort())
    milter.set_close_callback(Milter.close_callback)
    milter.setconn(config.milter.socket)
    milter.settimeout(config.milter.timeout)
    milter.register(
        NAME,
        data=lambda ctx: ctx.getpriv().data(),
        unknown=lambda ctx, cmd: ctx.getpriv().unknown(cmd),
        negotiate=Milter.negotiate_callback,
    )


def _unix_path(socket: str) -> str | None:
    for prefix in ("unix:", "local:"):
        if socket.startswith(prefix):
            return socket[len(prefix) :]
    return None


def open_socket(config: Config) -> None:
    path = _unix_path(config.milter.socket)
    if path is not None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    milter.opensocket(True)  # True: remove a stale socket file first
    if path is not None:
        os.chmod(path, config.milter.socket_mode)
        if config.milter.socket_group:
            try:
                os.chown(path, -1, grp.getgrnam(config.milter.socket_group).gr_gid)
            except KeyError:
                log.warning(
                    "group %r does not exist; socket left in group %d",
                    config.milter.socket_group,
                    os.getgid(),
                )


def _worker(config: Config) -> int:
    """Run libmilter's loop in this (forked) process until told to stop."""
    RelayMilter.context = RelayContext.create(config)
    try:
        milter.main()
    except milter.error as e:
        log.error("worker %d: libmilter stopped: %s", os.getpid(), e)
        return 1
    return 0


def run(config: Config) -> int:
    """Open the socket, fork the workers and supervise them; returns an exit status."""
    workers = config.milter.workers or os.cpu_count() or 1
    _register(config)
    try:
        open_socket(config)
    except milter.error as e:
        log.error("cannot listen on %s: %s", config.milter.socket, e)
        return 1
    # Check the store and the features once up front: a worker that cannot start
    # would otherwise be respawned in a loop.
    RelayContext.create(config).store.close()
    log.info("listening on %s with %d workers", config.milter.socket, workers)

    status = supervise(workers, lambda: _worker(config), log)
    path = _unix_path(config.milter.socket)
    if path is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    log.info("stopped")
    return status
