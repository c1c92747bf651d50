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


def supervise(
    workers: int, work: Callable[[], int], log: logging.Logger, *, stop_grace: int = 20
) -> int:
    """Run ``work()`` in ``workers`` forked children until told to stop; 0 when every
    child stopped cleanly on request, 1 otherwise.

    A child still running ``stop_grace`` seconds after the stop signal is killed, so
    stopping never hangs and never leaves orphans (libmilter has been seen to ignore
    a SIGTERM that arrives while it starts up)."""
    stopping = False
    children: dict[int, float] = {}

    def spawn() -> None:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGALRM, signal.SIG_DFL)
                code = work()
            finally:
                logging.shutdown()
                os._exit(code)
        children[pid] = time.monotonic()

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        name = signal.Signals(signum).name
        if not stopping:
            log.info("%s: stopping %d workers", name, len(children))
            signal.alarm(stop_grace)
        else:
            log.info("%s again: stopping the workers at once", name)
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def kill_stragglers(_signum: int, _frame: FrameType | None) -> None:
        for pid in children:
            log.warning("worker %d still running %d s after the stop: killing it", pid, stop_grace)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGALRM, kill_stragglers)
    for _ in range(workers):
        spawn()
    status = 0
    while children:
        try:
            pid, wstatus = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
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
