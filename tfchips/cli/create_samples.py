"""``tfchips create-samples``: composite imagery and rasterized labels into a chip folder."""

from __future__ import annotations

import functools
import os
import sys

import click

from tfchips.cli import options
from tfchips.cli.config import config_option, save_effective_config
from tfchips.cli.main import summary
from tfchips.console import progress as progress_bar
from tfchips.job import job_from_values, recorded_options
from tfchips.lock import output_lock
from tfchips.samples import create_samples


def label_options(function):
    """Apply the ground-truth options; `LabelRequest.from_options` reads their values."""
    for decorator in reversed(
        [
            click.option("--labels", required=True, type=click.Path(dir_okay=False), help="OGR-readable ground truth."),
            click.option("--attribute", help="Integer attribute to burn (0-254); default: every feature burns 1."),
            click.option("--labels-layer", help="Layer of --labels, by name or 0-based index."),
            click.option("--all-touched", is_flag=True, help="Burn every pixel a feature touches."),
            click.option("--background", type=click.IntRange(0, 255), default=0, show_default=True,
                         help="Label of pixels no feature covers."),
            click.option("--extent", type=click.Path(dir_okay=False),
                         help="Vector file of the surveyed area; pixels outside it get --ignore-value."),
            click.option("--extent-layer", help="Layer of --extent, by name or 0-based index."),
            click.option("--ignore-value", type=click.IntRange(0, 255), default=255, show_default=True,
                         help="Label (and label nodata) outside --extent."),
            click.option("--classes", help="Class names, e.g. 0=background,1=building; NAME=VALUE pairs"
                         " (water=1,building=2) also map a text --attribute to values."),
            click.option("--label-without-imagery", is_flag=True,
                         help="Keep labels where the image has no valid pixel  [default: --ignore-value there]"),
        ]
    ):
        function = decorator(function)
    return function


@click.command("create-samples")
@config_option
@options.imagery_options
@options.trust_options
@label_options
@options.aoi
@options.bbox
@click.option("--tiles", "tiles_path", type=click.Path(dir_okay=False),
              help="Tile keys to build: a text file (one per line) or a vector file with a tile_key column.")
@options.resolution(required=False)  # not with --tiles, whose keys carry the grid
@options.tilesize(required=False)
@options.pad
@options.out_option("Chip folder to write (OUT/images, OUT/labels); a re-run resumes it.")
@click.option("--workers", type=click.IntRange(min=1), help="Worker processes  [default: the core count]")
@click.option("--min-valid", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Skip tiles whose valid-pixel fraction is lower.")
@click.option("--min-labelled", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Skip tiles whose labelled-pixel fraction (not background, not ignored) is lower.")
@click.option("--overwrite", is_flag=True, help="Replace what an earlier run left in --out: every tile is made again,"
              " whatever options made its chips.")
@click.option("--provenance", is_flag=True, help="Also write OUT/provenance/KEY.tif: per pixel, the scene taken"
              " (1-based, in the tile's scenes in the manifest) or, for median, how many scenes were valid.")
def command(**values) -> None:
    """Write image and label chips (OUT/images, OUT/labels) for every tile.

    Tiles come from --aoi/--bbox with --resolution and --tilesize, or from --tiles.
    Chips are tilesize + 2 * pad pixels square. A re-run skips finished tiles.
    """
    ctx = click.get_current_context()
    # Held until the command ends, and taken before config.yaml is written: a second job must not
    # touch the first one's folder.
    ctx.with_resource(output_lock(values["out"]))
    tiles, job = job_from_values(
        values, options_from_config(ctx, values), save_config=functools.partial(save_effective_config, command=command)
    )
    with progress_bar(len(tiles), "tile", "create-samples") as bar:
        counts = {"written": 0, "skipped": 0, "failed": 0}

        def progress(record) -> None:
            counts[record.status] += 1
            bar.set_postfix(counts, refresh=False)
            bar.update()

        result = create_samples(tiles, job, recorded_options(values), workers=values["workers"], on_record=progress)
    for record in result.records:
        if record.status == "failed":
            click.echo(f"failed: {record.key}: {record.reason}", err=True)
    summary(f"{result.line}; chips in {os.path.abspath(job.out)}")
    if result.count("failed"):
        sys.exit(1)


def options_from_config(ctx: click.Context, values: dict) -> frozenset[str]:
    """Names of the options whose values came from --config."""
    return frozenset(n for n in values if ctx.get_parameter_source(n) == click.core.ParameterSource.DEFAULT_MAP)
