"""Entry point of the ``tfchips`` command."""

from __future__ import annotations

import contextlib
import importlib
import sys
from typing import Iterator

import click

from tfchips import __version__
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
        with one_line_errors():
            return super().invoke(ctx)


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """Bad input is the user's to fix: print one line, exit non-zero, no traceback.

    Used by the ``tfchips`` command and by the Beam pipelines' entry points.
    Credentials in the message (a URL given to an option, say) are masked.
    """
    try:
        yield
    except TfchipsError as error:
        click.echo(f"Error: {redact_text(str(error))}", err=True)
        sys.exit(1)
    except click.ClickException as error:
        error.message = redact_text(error.message)
        error.show()
        sys.exit(error.exit_code)


@click.group(cls=_Commands)
@click.version_option(__version__, prog_name="tfchips")
def cli() -> None:
    """Satellite imagery and vector ground truth to TensorFlow training data."""


if __name__ == "__main__":
    cli()
