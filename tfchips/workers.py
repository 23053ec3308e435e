"""Worker processes that end with their job.

A job killed with SIGKILL (or by the out-of-memory killer) runs no clean-up, and
its pool's workers, blocked on a queue they hold both ends of, would live on with
their memory. Each worker therefore asks Linux for a signal when its parent dies
(``prctl(PR_SET_PDEATHSIG)``) and watches the job's process in a thread, which
also covers a job that died before the worker started and the fork server in
between (a forkserver worker's parent is the server, not the job).
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import multiprocessing
import os
import signal
import sys
import threading

from tfchips.processes import is_running, process_start

# From <linux/prctl.h>.
_PR_SET_PDEATHSIG = 1
# Seconds between two looks at the job's process.
WATCH_INTERVAL = 0.5


def process_pool(workers: int) -> concurrent.futures.ProcessPoolExecutor:
    """A pool of ``workers`` processes that end when this process dies, however it dies."""
    # forkserver: workers start clean even when the caller has TensorFlow's threads running.
    return concurrent.futures.ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("forkserver"),
        initializer=end_with_job,
        initargs=(os.getpid(), process_start(os.getpid())),
    )


def end_with_job(job: int, job_start: int | None) -> None:
    """Worker initializer: SIGKILL this process when its parent dies, or when process ``job`` ends.

    Args:
        job: PID of the job's main process.
        job_start: its `process_start`, so a reused PID is told apart.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    threading.Thread(target=_watch, args=(job, job_start), name="tfchips-job-watch", daemon=True).start()


def _watch(job: int, job_start: int | None) -> None:
    stop = threading.Event()
    while is_running(job, job_start):
        stop.wait(WATCH_INTERVAL)
    os.kill(os.getpid(), signal.SIGKILL)  # no clean-up to run: chips are published whole or not at all
