"""The pre-fork supervisor of the milter and the tracker, in a real process."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

SCRIPT = """
import logging, os, signal, sys, time
from smtpeter.prefork import supervise

def stubborn() -> int:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # as a stuck libmilter worker
    os.write(1, f"{os.getpid()}\\n".encode())  # one write: the two children interleave
    while True:
        time.sleep(1)

def polite() -> int:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    os.write(1, f"{os.getpid()}\\n".encode())  # one write: the two children interleave
    signal.sigwait({signal.SIGTERM})  # then finish cleanly, as libmilter does
    return 0

logging.basicConfig(level=logging.INFO)
work = stubborn if sys.argv[1] == "stubborn" else polite
sys.exit(supervise(2, work, logging.getLogger("test"), stop_grace=1))
"""


def run(kind: str) -> tuple[int, float, list[int], str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, kind],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        children = [int(proc.stdout.readline()), int(proc.stdout.readline())]
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        assert proc.stderr is not None
        return code, time.monotonic() - started, children, proc.stderr.read()
    finally:
        # Whatever failed above, leave no process behind.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_workers_that_stop_on_request() -> None:
    code, took, children, _ = run("polite")
    assert code == 0 and took < 5
    assert not any(_alive(pid) for pid in children)


def test_a_worker_ignoring_sigterm_is_killed_after_the_grace() -> None:
    code, took, children, log = run("stubborn")
    assert code == 1  # not a clean stop
    assert 0.9 < took < 10
    assert "still running 1 s after the stop: killing it" in log
    assert not any(_alive(pid) for pid in children), "no orphan left behind"
