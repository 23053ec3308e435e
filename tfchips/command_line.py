"""Command-line conventions shared by the ``tfchips`` commands and the Beam entry points.

Every program writes to ``--out`` (``-o``), still takes the output as a deprecated
positional argument, and spells parameters in its error lines as its flags
(`command_flags`). Only click is needed: `beam_pipelines` take these from here,
not from `tfchips.cli`.
"""

from __future__ import annotations

import click


def out_option(help: str, file: bool = False, required: bool = True):
    """``--out``/``-o``, where every command writes: a folder, or a ``file``."""
    return click.option(
        "--out", "-o", required=required, type=click.Path(dir_okay=not file, file_okay=file), help=help
    )


def legacy_out_argument(function):
    """The output as a positional argument, as earlier releases took it; `output_path` reads it."""
    return click.argument("legacy_out", required=False, metavar="[OUT]", type=click.Path(file_okay=False))(function)


def output_path(values: dict, position: str) -> str:
    """The output of ``--out``, or of the deprecated positional OUT (``position``: "a second argument")."""
    legacy = values.pop("legacy_out")
    if legacy is not None:
        if values["out"] is not None:
            raise click.UsageError(f"give --out {values['out']} only (OUT as {position} is deprecated)")
        click.echo(f"tfchips: OUT as {position} is deprecated; use --out {legacy}", err=True)
        values["out"] = legacy
    if values["out"] is None:
        raise click.UsageError("Missing option '--out' / '-o'.")
    return values["out"]


def command_flags(command: click.Command | None) -> dict[str, str]:
    """Python parameter name -> how ``command`` spells it (``--max-cloud``, ``CHIPS``)."""
    flags: dict[str, str] = {}
    for parameter in command.params if command is not None else ():
        if isinstance(parameter, click.Option):
            flags[parameter.name] = max(parameter.opts, key=len)
        elif isinstance(parameter, click.Argument):
            flags[parameter.name] = parameter.human_readable_name
    return flags
