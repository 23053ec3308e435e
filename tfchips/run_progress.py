"""Progress bars for local Beam runs, whose work happens in other processes.

The workers of a DirectRunner run (in memory or ``multi_processing``) and of a portable
run with ``--environment_type=LOOPBACK`` share this machine with the launching process.
Each worker appends one byte per finished element to a file (`ProgressFile.tick`); the
launching process draws a `tfchips.console.progress` bar from the file's size
(`progress_file`, then `drawn`). Elsewhere (Dataflow, Flink on a cluster) no file is made and
`tick` does nothing. One byte per element bounds the file: a million tiles, 1 MB.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
from dataclasses import dataclass
from typing import Iterator

from tfchips.console import progress

# How often the bar reads the file, in seconds.
_POLL_SECONDS = 0.25


@dataclass(frozen=True)
class ProgressFile:
    """Where the workers of a local run count finished elements; ``path`` None counts nothing."""

    path: str | None = None

    def tick(self) -> None:
        """Count one finished element (an append of one byte, atomic for concurrent writers)."""
        if self.path is None:
            return
        with contextlib.suppress(OSError):  # the run ended and took the file: nothing to count
            descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            try:
                os.write(descriptor, b".")
            finally:
                os.close(descriptor)


    def counted(self, element):
        """``element``, counted: a pipeline step that passes elements on and `tick`s for each."""
        self.tick()
        return element


def is_local_run(beam_args: list[str]) -> bool:
    """True when the workers of a pipeline run with ``beam_args`` run on this machine."""
    runner = next((a.split("=", 1)[1] for a in beam_args if a.startswith("--runner=")), "DirectRunner")
    if runner.lower() in ("direct", "directrunner"):
        return True
    return runner.lower() in ("portable", "portablerunner") and "--environment_type=LOOPBACK" in beam_args


@contextlib.contextmanager
def progress_file(local: bool) -> Iterator[ProgressFile]:
    """A `ProgressFile` for the workers of a run, removed when the block ends.

    None is made (`tick` counts nothing) unless ``local`` (`is_local_run`) and stderr is a
    terminal, where a bar can be drawn.
    """
    if not (local and sys.stderr.isatty()):
        yield ProgressFile()
        return
    descriptor, path = tempfile.mkstemp(prefix="tfchips-progress-")
    os.close(descriptor)
    try:
        yield ProgressFile(path)
    finally:
        os.remove(path)


@contextlib.contextmanager
def drawn(counter: ProgressFile, total: int | None, unit: str, desc: str) -> Iterator[None]:
    """A bar of ``total`` ``unit`` drawn from what the workers count in ``counter`` while the block runs."""
    if counter.path is None:
        yield
        return
    path, bar, stop = counter.path, progress(total, unit, desc), threading.Event()

    def redraw() -> None:
        bar.update(os.path.getsize(path) - bar.n)

    def watch() -> None:
        while not stop.wait(_POLL_SECONDS):
            redraw()

    watcher = threading.Thread(target=watch, name="tfchips-progress", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()
        redraw()
        bar.close()
