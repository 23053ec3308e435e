"""``tfchips preview``: a contact sheet of chips beside their labels, as a PNG."""

from __future__ import annotations

import click

from tfchips import options
from tfchips.cli.main import summary


def _parse_bands(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    if len(names) not in (1, 3):
        raise click.BadParameter(f"{value!r}: give one band (grey) or three (red,green,blue order)")
    return names


def preview_options(function):
    """--n, --bands, --seed and --size, shared by `preview` and `report`."""
    for option in reversed((
        click.option("--n", "n", type=click.IntRange(min=1), default=16, show_default=True,
                     help="Chips (or records) on the sheet."),
        click.option("--bands", callback=_parse_bands, metavar="NAMES",
                     help="One band (grey) or three (RGB), e.g. red,green,blue  [default: red,green,blue when the"
                     " chips have them, else the first three bands, else the first]"),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random choice of chips."),
        click.option("--size", "panel", type=click.IntRange(min=16), default=128, show_default=True,
                     help="At most this many pixels per chip side on the sheet; smaller chips are enlarged by a whole"
                     " factor."),
    )):
        function = option(function)
    return function


@click.command("preview")
@click.argument("path")
@options.out_option("PNG file to write; a file there is replaced.", file=True)
@preview_options
@click.option("--stretch", type=click.Choice(["sheet", "chip"]), default="sheet", show_default=True,
              help="Map each band's 2nd-98th percentiles to black-white over the valid pixels of all the chips"
              " on the sheet (the same ground, the same colour) or of each chip on its own.")
def command(path: str, out: str, n: int, bands: tuple[str, ...] | None, seed: int, panel: int, stretch: str) -> None:
    """Draw N chips of the chip folder, TFRecord folder or shards (glob pattern) at PATH.

    Each chip is shown stretched (2nd-98th percentile per band, over the whole sheet
    or per chip) beside the same image with its label drawn over it in fixed class
    colours (background and ignore left clear), its tile key beneath.
    """
    from tfchips.console import progress_bars
    from tfchips.preview import preview_dataset, write_preview

    with progress_bars() as on_progress:
        sheet = preview_dataset(path, n, bands, seed, panel, stretch, on_progress=on_progress)
    write_preview(sheet, out)
    for problem in sheet.problems:
        click.echo(f"skipped {problem.path}: {problem.message}", err=True)
    width, height = sheet.image.size
    summary(f"wrote {out}: {len(sheet.panels)} of {sheet.total} chips, {width} x {height} pixels")
