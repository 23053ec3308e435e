"""One job per output folder: a lock file, ``OUT/.tfchips.lock``, held while a job writes.

The kernel's ``flock`` on that file decides who holds it, so a lock dies with its
process, however it ends; the file's content (PID, host, process start, wall-clock
start, command) names the holder in the refusal a second job gets. A lock file
left by a process that is gone (SIGKILL, a lost machine) is stale and taken over.
Where ``flock`` is not available (some network filesystems), the recorded PID
decides: a live process on this host with the recorded start holds the folder.
URLs (``gs://...``) are not locked: write each job to its own prefix.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import threading
import time
from typing import Iterator

from tfchips import storage
from tfchips.errors import OutputError
from tfchips.processes import is_running, process_start
from tfchips.sources.base import redact_text

LOCK_NAME = ".tfchips.lock"
# A hostile or corrupt lock file is read no further than this (bytes).
_MAX_LOCK_BYTES = 4096
# A lock file replaced under us between open and flock is retried this many times.
_ATTEMPTS = 5
# Errors of filesystems without flock, where the recorded PID has to do.
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}

# Real paths of the folders this thread holds, so that nested holders (the CLI, then the
# library function it calls) share one lock; another thread's job is refused like a process's.
_threads = threading.local()


@contextlib.contextmanager
def output_lock(folder: str) -> Iterator[None]:
    """Hold the lock of the local output folder ``folder`` (created if need be) for the block.

    A folder that cannot be created or written is not locked: nothing can damage
    it, and the job's first write there fails with its own message.

    Args:
        folder: the job's output folder; a URL is not locked.

    Raises:
        OutputError: another live job holds ``folder`` (the message names its PID,
            host, start time and command), or the lock file cannot be written.
    """
    if storage.is_url(folder):
        yield
        return
    key = os.path.realpath(folder)
    held = _threads.__dict__.setdefault("held", set())
    created = not os.path.lexists(folder)
    descriptor = None if key in held else _acquire(folder)
    if descriptor is None:
        yield
        return
    held.add(key)
    try:
        yield
    finally:
        held.discard(key)
        # Unlink while still holding it: a job that opened the old file sees it replaced and retries.
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(folder, LOCK_NAME))
        os.close(descriptor)
        if created:
            # A job that failed before writing anything leaves no empty folder behind.
            with contextlib.suppress(OSError):
                os.rmdir(folder)


def _acquire(folder: str) -> int | None:
    """The open, locked lock file of ``folder``; None when the folder cannot be written at all."""
    path = os.path.join(folder, LOCK_NAME)
    for _ in range(_ATTEMPTS):
        try:
            os.makedirs(folder, exist_ok=True)
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError:
            return None  # nor can a job damage it: the job's own first write says why, in its words
        taken = False
        try:
            taken = _take(descriptor, path)
        except OutputError:
            raise
        except OSError as error:
            raise OutputError(f"{path}: cannot write the lock file ({error.strerror or error})") from None
        finally:
            if not taken:
                os.close(descriptor)
        if taken:
            return descriptor
    raise OutputError(f"{path}: the lock file keeps being replaced; is another job starting in {folder}?")


def _take(descriptor: int, path: str) -> bool:
    """Lock the open ``path``; False when the file was replaced meanwhile (try again)."""
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        flock = True
    except BlockingIOError:
        _refuse(path, _holder(descriptor))
    except OSError as error:
        if error.errno not in _NO_FLOCK:
            raise
        flock = False
    try:
        if os.fstat(descriptor).st_ino != os.stat(path).st_ino:
            return False
    except FileNotFoundError:
        return False  # the holder unlinked it on its way out
    holder = _holder(descriptor)
    if not flock and _alive(holder):
        _refuse(path, holder)
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, json.dumps(_this_process()).encode("utf-8"), 0)
    return True


def _refuse(path: str, holder: dict) -> None:
    folder = os.path.dirname(path)
    raise OutputError(
        f"{folder} is in use by another tfchips job ({_describe(holder)}); wait for it to end,"
        f" or write to another folder (lock file {path})"
    )


def _this_process() -> dict:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "process_start": process_start(os.getpid()),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": redact_text(" ".join(sys.argv))[:300],
    }


def _holder(descriptor: int) -> dict:
    """The recorded holder; an empty dict when the file is empty or not ours."""
    try:
        content = json.loads(os.pread(descriptor, _MAX_LOCK_BYTES, 0).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return {}
    return content if isinstance(content, dict) else {}


def _describe(holder: dict) -> str:
    if not holder:
        return "holder not recorded"
    fields = [f"pid {holder.get('pid')}", f"on {holder.get('host')}", f"since {holder.get('started')}"]
    if holder.get("command"):
        fields.append(f"running {holder['command']}")
    # The file is anybody's to write: keep the message one short line of printable characters.
    text = " ".join(" ".join(str(f).split()) for f in fields)[:400]
    return "".join(c if c.isprintable() else "?" for c in text)


def _alive(holder: dict) -> bool:
    """Whether the recorded holder is a live process on this host (the same one, not a PID reused)."""
    pid, start = holder.get("pid"), holder.get("process_start")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or holder.get("host") != socket.gethostname():
        return False
    if pid == os.getpid():
        return False  # a lock this process left behind and no longer holds
    return is_running(pid, start if isinstance(start, int) else None)
