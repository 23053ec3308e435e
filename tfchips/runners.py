"""What a Beam entry point does before its runner starts: quiet logs, the gcp extra checked.

The Beam entry points show the library's summary, not Beam's log lines.

Beam and absl log dozens of INFO and WARNING lines per run (worker start-up, state channels,
unparseable arguments, missing GCP clients), some while ``apache_beam`` is imported, so
`quiet_beam` runs before that import. Errors still show; ``--verbose`` (or ``TFCHIPS_VERBOSE=1``)
keeps everything.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys

from tfchips.console import VERBOSE_VARIABLE, one_line_errors, verbose
from tfchips.errors import ConfigError

# Loggers whose records below ERROR are noise to a person running a pipeline.
NOISY_LOGGERS = ("apache_beam", "absl")
_VERBOSE_FLAG = "--verbose"
# Beam's option for the log level of its worker processes (multi_processing, Dataflow).
_WORKER_LOG_LEVEL = "--default_sdk_harness_log_level"


class _LibraryNoise(logging.Filter):
    """Drops records below ERROR that Beam or absl log through the root logger (``logging.warning``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        inside = any(f"{os.sep}{name}{os.sep}" in record.pathname for name in NOISY_LOGGERS)
        return record.levelno >= logging.ERROR or not inside


def quiet_beam(argv: list[str] | None = None) -> None:
    """Keep Beam's and absl's records below ERROR off stderr unless ``--verbose`` is in ``argv`` or `verbose`."""
    if _VERBOSE_FLAG in (sys.argv[1:] if argv is None else argv) or verbose():
        return
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    root = logging.getLogger()
    if not any(isinstance(f, _LibraryNoise) for f in root.filters):
        root.addFilter(_LibraryNoise())


def pipeline_arguments(argv: list[str]) -> list[str]:
    """``argv`` without ``--verbose``; unless it was there, Beam's worker processes log only errors too."""
    if _VERBOSE_FLAG in argv:
        os.environ[VERBOSE_VARIABLE] = "1"
        return [a for a in argv if a != _VERBOSE_FLAG]
    if verbose() or any(a.startswith(_WORKER_LOG_LEVEL) for a in argv):
        return list(argv)
    return [*argv, f"{_WORKER_LOG_LEVEL}=ERROR"]


def check_runner(
    beam_args: list[str], outputs: tuple[str | None, ...] = (), worker_inputs: dict[str, str | None] | None = None
) -> None:
    """Refuse, before any network use, a Dataflow run or ``gs://`` output without the ``gcp`` extra,
    and a Dataflow run whose workers would have to read a local file.

    Args:
        beam_args: the pipeline's Beam arguments (``--runner``, ...).
        outputs: where the pipeline writes (folders or URLs).
        worker_inputs: parameter name -> path or URL of what the workers read (labels,
            catalog, tiles file); on Dataflow each must be a URL.

    Raises:
        ConfigError: naming the extra to install, or the local input.
    """
    runner = next((a.split("=", 1)[1] for a in beam_args if a.startswith("--runner=")), None)
    if runner is None and "--runner" in beam_args[:-1]:
        runner = beam_args[beam_args.index("--runner") + 1]
    dataflow = runner is not None and runner.lower() in ("dataflow", "dataflowrunner")
    gcs = [o for o in outputs if o is not None and o.startswith("gs://")]
    if (dataflow or gcs) and not _gcp_installed():
        needs = "the Dataflow runner" if dataflow else gcs[0]
        raise ConfigError(f"{needs} needs the gcp extra, which is not installed: pip install 'tfchips[gcp]'")
    for name, path in (worker_inputs or {}).items() if dataflow else ():
        if path is not None and not _remote(path):
            where = "give the area as `aoi_path` or `bbox`" if name == "tiles_path" else "give a gs:// URL"
            raise ConfigError(f"`{name}` {path} is a local file, which Dataflow's workers cannot read: {where}")


def _remote(path: str) -> bool:
    return "://" in path or path.startswith(("/vsi", "earthone:"))


def configure_filesystems(beam_args: list[str]) -> None:
    """Give Beam's filesystems (S3 endpoint and keys, GCS project, ...) the pipeline's options now,
    so that output URLs can be checked and cleaned before the pipeline is built."""
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    FileSystems.set_options(PipelineOptions(beam_args))


def _gcp_installed() -> bool:
    try:
        # The Google Cloud Storage client is what the gcp extra adds and Dataflow and gs:// both need.
        return importlib.util.find_spec("google.cloud.storage") is not None
    except ModuleNotFoundError:
        return False


def run_entry_point(main, flags: dict[str, str]) -> None:
    """Run ``main()`` as a command: a library error or a bad option is one line on stderr, no traceback."""
    import click

    with one_line_errors(flags):
        try:
            main()
        except click.ClickException as error:
            error.show()
            sys.exit(error.exit_code)
