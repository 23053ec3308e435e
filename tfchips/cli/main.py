"""Entry point of the ``tfchips`` command."""

from __future__ import annotations

import importlib
import sys

import click

from tfchips import __version__
from tfchips.errors import TfchipsError

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
        try:
            return super().invoke(ctx)
        except TfchipsError as error:
            # Bad input is the user's to fix: one line, no traceback.
            click.echo(f"Error: {error}", err=True)
            sys.exit(1)


@click.group(cls=_Commands)
@click.version_option(__version__, prog_name="tfchips")
def cli() -> None:
    """Satellite imagery and vector ground truth to TensorFlow training data."""


if __name__ == "__main__":
    cli()
