"""``python -m tfchips``: the same as the ``tfchips`` command."""

from tfchips.cli.main import cli

if __name__ == "__main__":
    cli(prog_name="tfchips")
