"""Worker processes that end with their job.

A job killed with SIGKILL (or by the out-of-memory killer) runs no clean-up, and
its pool's workers, blocked on a queue they hold both ends of, would live on with
their memory. Each pool worker therefore asks Linux for a signal when its parent
dies (``prctl(PR_SET_PDEATHSIG)``) and watches the job's process in a thread, which
also covers a job that died before the worker started and the fork server in
between (a forkserver worker's parent is the server, not the job). Beam's local
workers (DirectRunner ``multi_processing``), started through a shell, only watch.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import multiprocessing
import os
import signal
import socket
import sys
import threading
from dataclasses import dataclass

from tfchips.processes import is_running, process_start

# From <linux/prctl.h>.
_PR_SET_PDEATHSIG = 1
# Seconds between two looks at the job's process.
WATCH_INTERVAL = 0.5

# Jobs this process already watches (a Beam worker sets up many DoFn instances).
_watched: set = set()


@dataclass(frozen=True)
class JobProcess:
    """The process a worker works for: its host, PID namespace, PID and `process_start`."""

    host: str
    namespace: str | None
    pid: int
    start: int | None

    @classmethod
    def current(cls) -> JobProcess:
        return cls(socket.gethostname(), _pid_namespace(), os.getpid(), process_start(os.getpid()))


def process_pool(workers: int) -> concurrent.futures.ProcessPoolExecutor:
    """A pool of ``workers`` processes that end when this process dies, however it dies."""
    # forkserver: workers start clean even when the caller has TensorFlow's threads running.
    return concurrent.futures.ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("forkserver"),
        initializer=end_with_parent,
        initargs=(JobProcess.current(),),
    )


def end_with_parent(job: JobProcess) -> None:
    """Pool worker initializer: SIGKILL this process when its parent dies, or when ``job`` ends."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    watch_job(job)


def watch_job(job: JobProcess) -> None:
    """SIGKILL this process once ``job`` has ended (checked every `WATCH_INTERVAL` seconds).

    Does nothing in ``job`` itself, or where ``job``'s PID means nothing: on
    another host or in another PID namespace (Dataflow and container workers).
    """
    here = JobProcess.current()
    if job.pid == here.pid or (job.host, job.namespace) != (here.host, here.namespace) or job in _watched:
        return
    _watched.add(job)
    threading.Thread(target=_watch, args=(job,), name="tfchips-job-watch", daemon=True).start()


def _watch(job: JobProcess) -> None:
    stop = threading.Event()
    while is_running(job.pid, job.start):
        stop.wait(WATCH_INTERVAL)
    os.kill(os.getpid(), signal.SIGKILL)  # no clean-up to run: chips are published whole or not at all


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
