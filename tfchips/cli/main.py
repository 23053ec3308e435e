"""Entry point of the ``tfchips`` command."""

from __future__ import annotations

import importlib
import os
import sys
import time

import click

from tfchips import __version__
from tfchips.command_line import command_flags
from tfchips.console import VERBOSE_VARIABLE, error_line, quiet_tensorflow, summary_line
from tfchips.errors import TfchipsError
from tfchips.redaction import redact_text

# Command name -> module under tfchips.cli that defines a click command of that name.
COMMANDS = {
    "create-samples": "create_samples",
    "demo-data": "demo_data",
    "inspect": "inspect",
    "preview": "preview",
    "report": "report",
    "tiles": "tiles",
    "to-tfrecords": "to_tfrecords",
}


class _Commands(click.Group):
    """Imports a command's module only when it runs, so `--help` stays fast."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        return getattr(importlib.import_module(f"tfchips.cli.{COMMANDS[name]}"), "command")

    def invoke(self, ctx: click.Context):
        """Bad input is the user's to fix: one line naming this command's flags, exit 1, no traceback."""
        try:
            return super().invoke(ctx)
        except TfchipsError as error:
            command = self.get_command(ctx, ctx.invoked_subcommand) if ctx.invoked_subcommand else None
            click.echo(f"Error: {error_line(error, command_flags(command))}", err=True)
            sys.exit(1)
        except click.ClickException as error:
            error.message = redact_text(error.message)
            error.show()
            sys.exit(error.exit_code)


_STARTED = "tfchips.started"


def summary(text: str) -> None:
    """End the running command with its one-line summary on stderr (`tfchips.console.summary_line`)."""
    ctx = click.get_current_context()
    # Commands invoked on their own (tests) have no group to have started the clock.
    started = ctx.meta.get(_STARTED, _IMPORTED)
    summary_line(f"tfchips {ctx.info_name}", text, started)


_IMPORTED = time.monotonic()


@click.group(cls=_Commands)
@click.version_option(__version__, prog_name="tfchips")
@click.option(
    "--verbose", is_flag=True, help=f"Show the log lines of TensorFlow, absl and GDAL too (or set {VERBOSE_VARIABLE}=1)."
)
def cli(verbose: bool) -> None:
    """Satellite imagery and vector ground truth to TensorFlow training data.

    Inputs are arguments, the output is --out (-o), and --overwrite replaces what an
    earlier run left in the output. Every command ends with one summary line on stderr.
    """
    click.get_current_context().meta[_STARTED] = time.monotonic()
    if verbose:
        os.environ[VERBOSE_VARIABLE] = "1"
    quiet_tensorflow()


if __name__ == "__main__":
    cli()
