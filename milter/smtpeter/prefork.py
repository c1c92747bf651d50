"""Pre-forked worker processes sharing one listening socket, as the milter and the
tracker both run: the GIL holds one Python process to about one core.

The supervisor starts ``workers`` children, replaces one that dies (pausing a second
when it died at once, so a worker that cannot start does not spin), and on SIGTERM or
SIGINT passes the signal on and waits for every child to finish what it is doing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from types import FrameType

_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def supervise(
    workers: int, work: Callable[[], int], log: logging.Logger, *, stop_grace: int = 20
) -> int:
    """Run ``work()`` in ``workers`` forked children until told to stop; 0 when every
    child stopped cleanly on request, 1 otherwise.

    A child still running ``stop_grace`` seconds after the stop signal is killed, so
    stopping never hangs and never leaves orphans."""
    stopping = False
    stop_deadline = 0.0
    children: dict[int, float] = {}

    def spawn() -> None:
        # Stop signals are held back across the fork: the child must never run the
        # supervisor's handler (it would signal its siblings and then carry on), and
        # the supervisor must know the child before it handles a stop.
        held = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)
                    signal.signal(signal.SIGINT, signal.SIG_DFL)
                    signal.pthread_sigmask(signal.SIG_SETMASK, held)
                    code = work()
                finally:
                    logging.shutdown()
                    os._exit(code)
            children[pid] = time.monotonic()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping, stop_deadline
        name = signal.Signals(signum).name
        if not stopping:
            log.info("%s: stopping %d workers", name, len(children))
            stop_deadline = time.monotonic() + stop_grace
        else:
            log.info("%s again: stopping the workers at once", name)
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def kill_stragglers() -> None:
        for pid in children:
            log.warning("worker %d still running %d s after the stop: killing it", pid, stop_grace)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for _ in range(workers):
        spawn()
    status = 0
    while children:
        # Poll rather than block in wait(): the signal handlers then run within a
        # fraction of a second however the signal arrived, and stragglers are seen.
        try:
            pid, wstatus = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            if stopping and time.monotonic() > stop_deadline:
                kill_stragglers()
                stop_deadline = float("inf")
            time.sleep(0.1)
            continue
        started = children.pop(pid, None)
        if started is None:
            continue
        code = os.waitstatus_to_exitcode(wstatus)
        if stopping:
            if code != 0:
                status = 1
            continue
        log.error("worker %d exited with status %d; starting a new one", pid, code)
        if time.monotonic() - started < 1.0:
            time.sleep(1.0)
        spawn()
    return status
