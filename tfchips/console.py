"""What a person sees on the terminal: one-line errors, no TensorFlow chatter, progress bars only on a terminal.

Library errors name Python parameters in backticks (`` `max_cloud` ``, `` `overwrite=True` ``);
a command line shows them as its own flags (`error_line`), so each front end speaks its language.

TensorFlow prints absl and CUDA lines from C++ while it is imported (``cudart_stub``,
``All log messages before absl::InitializeLog()``), whatever ``TF_CPP_MIN_LOG_LEVEL`` says,
and more on its first operation. `quiet_tensorflow` silences both for a command run;
``--verbose`` (or ``TFCHIPS_VERBOSE=1``) keeps them.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import re
import sys
import tempfile
import time
from typing import Any, Callable, Iterator, Mapping

from tfchips.errors import TfchipsError
from tfchips.redaction import redact_text

VERBOSE_VARIABLE = "TFCHIPS_VERBOSE"


def verbose() -> bool:
    """Whether the user asked for the libraries' own log lines."""
    return os.environ.get(VERBOSE_VARIABLE, "").strip().lower() in ("1", "true", "yes")


def quiet_tensorflow() -> None:
    """Keep TensorFlow's and absl's log lines off stderr in this process, unless `verbose`.

    Call before TensorFlow is imported; its import stays lazy (a command that needs no
    TensorFlow never pays for it). Python warnings and errors of tfchips itself still show.
    """
    if verbose():
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    if "tensorflow" in sys.modules:
        return
    if not any(isinstance(finder, _QuietImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport())


@contextlib.contextmanager
def silenced_stderr() -> Iterator[None]:
    """Point file descriptor 2 at a scratch file; what was written comes back if the block fails.

    C++ libraries write to the descriptor, not to ``sys.stderr``, so only this silences them.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as scratch:
        os.dup2(scratch.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            scratch.seek(0)
            sys.stderr.write(scratch.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


class _QuietImport(importlib.abc.MetaPathFinder):
    """Runs the first ``import tensorflow`` with stderr silenced, then steps aside."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        with silenced_stderr():
            self._loader.exec_module(module)
        logging.getLogger("tensorflow").setLevel(logging.ERROR)

    def __getattr__(self, name: str) -> Any:
        # Resource readers and the like go to the real loader.
        return getattr(self._loader, name)


def progress(total: int | None, unit: str, desc: str, enabled: bool = True) -> Any:
    """A tqdm progress bar that draws only when stderr is a terminal (never into piped logs).

    Args:
        total: units the step will take; None where that is unknown (a count and a rate are drawn).
        unit: what one unit is (``"tile"``, ``"record"``).
        desc: the step, shown before the bar.
        enabled: False for no bar at all, whatever stderr is.
    """
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=desc, disable=not (enabled and sys.stderr.isatty()), leave=False)


@contextlib.contextmanager
def progress_bars() -> Iterator[Callable[[str, str, int, "int | None"], None]]:
    """An ``on_progress(step, unit, done, total)`` for library calls (`tfchips.dataset_reader.OnProgress`).

    Each step gets its own `progress` bar, which closes when the next step starts or the
    block ends.
    """
    bars: dict[str, Any] = {}

    def on_progress(step: str, unit: str, done: int, total: int | None) -> None:
        if step not in bars:
            for bar in bars.values():
                bar.close()
            bars[step] = progress(total, unit, step)
        bars[step].update(done - bars[step].n)

    try:
        yield on_progress
    finally:
        for bar in bars.values():
            bar.close()


_PARAMETER = re.compile(r"`([A-Za-z_]\w*)(=[^`]*)?`")


def error_line(error: BaseException, flags: Mapping[str, str] | None = None) -> str:
    """The message of ``error`` for a command line: parameters as its ``flags``, secrets masked.

    Args:
        error: a library error, whose message names parameters in backticks.
        flags: parameter name -> the flag that sets it (``{"max_cloud": "--max-cloud"}``);
            names without a flag keep their backticks.
    """
    flags = flags or {}

    def as_flag(match: re.Match) -> str:
        flag = flags.get(match.group(1))
        value = match.group(2)
        if flag is None:
            return match.group(0)
        return flag if value in (None, "=True") else f"{flag} {value[1:].strip(chr(39) + chr(34))}"

    return redact_text(_PARAMETER.sub(as_flag, str(error)))


@contextlib.contextmanager
def one_line_errors(flags: Mapping[str, str] | None = None) -> Iterator[None]:
    """Bad input is the user's to fix: one line ``Error: ...`` on stderr, exit status 1, no traceback.

    For entry points other than the ``tfchips`` command (the Beam pipelines), with ``flags``
    naming their options.
    """
    try:
        yield
    except TfchipsError as error:
        print(f"Error: {error_line(error, flags)}", file=sys.stderr, flush=True)
        sys.exit(1)


def summary_line(program: str, text: str, started: float) -> None:
    """The last line of every command and pipeline, on stderr: ``tfchips to-tfrecords: TEXT (3.1 s)``.

    Args:
        program: who speaks (``tfchips create-samples``, ``beam_pipelines.chips_to_tfrecords``).
        text: counts and where the output went.
        started: `time.monotonic` when the run began.
    """
    print(f"{program}: {text} ({time.monotonic() - started:.1f} s)", file=sys.stderr, flush=True)
