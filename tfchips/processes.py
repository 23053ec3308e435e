"""Processes on this host: whether one still runs, told apart from a later one given its PID;
how many cores this one may run on."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers narrow), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def process_start(pid: int) -> int | None:
    """Start time of the running process ``pid`` in clock ticks since boot (Linux).

    None where that is unknown (no /proc), or when the process is gone or a zombie.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as stream:
            stat = stream.read()
    except OSError:
        return None
    # Field 2, the command name, may hold spaces and parentheses: count from its closing one.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return None if fields[0] == b"Z" else int(fields[19])


def is_running(pid: int, start: int | None) -> bool:
    """Whether process ``pid``, started at ``start`` (`process_start`; None: unknown), still runs."""
    if start is not None:
        return process_start(pid) == start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's
    return True
