"""``tfchips create-samples``: composite imagery and rasterized labels into a chip folder."""

from __future__ import annotations

import os
import sys

import click

from tfchips.aoi import read_tile_list
from tfchips.cli import options
from tfchips.cli.config import config_option, save_effective_config
from tfchips.console import progress as progress_bar
from tfchips.errors import OutputError
from tfchips import storage
from tfchips.fingerprint import check_fingerprint, job_fingerprint
from tfchips.grid import Tile, tiles_for_shape
from tfchips.imagery import ImageryRequest, check_bands
from tfchips.labels import LabelRequest, load_ground_truth
from tfchips.lock import output_lock
from tfchips.samples import SampleJob, create_samples
from tfchips.redaction import redact_json

# Latitudes (degrees) between which UTM is defined.
UTM_SOUTH, UTM_NORTH = -80.0, 84.0


def label_options(function):
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
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Chip folder to write.")
@click.option("--workers", type=click.IntRange(min=1), help="Worker processes [default: the core count].")
@click.option("--min-valid", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Skip tiles whose valid-pixel fraction is lower.")
@click.option("--min-labelled", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Skip tiles whose labelled-pixel fraction (not background, not ignored) is lower.")
@click.option("--overwrite", is_flag=True, help="Redo tiles whose chips already exist, whatever options made them.")
def command(**values) -> None:
    """Write image and label chips (OUT/images, OUT/labels) for every tile.

    Tiles come from --aoi/--bbox with --resolution and --tilesize, or from --tiles.
    Chips are tilesize + 2 * pad pixels square. A re-run skips finished tiles.
    """
    ctx = click.get_current_context()
    # Held until the command ends, and taken before config.yaml is written: a second job must not
    # touch the first one's folder.
    ctx.with_resource(output_lock(values["out"]))
    tiles, job = job_from_values(values, from_config=options_from_config(ctx, values))
    with progress_bar(len(tiles), "tile", "create-samples") as bar:
        counts = {"written": 0, "skipped": 0, "failed": 0}

        def progress(record) -> None:
            counts[record.status] += 1
            bar.set_postfix(counts, refresh=False)
            bar.update()

        summary = create_samples(tiles, job, recorded_options(values), workers=values["workers"], on_record=progress)
    for record in summary.records:
        if record.status == "failed":
            click.echo(f"failed: {record.key}: {record.reason}", err=True)
    click.echo(f"{summary.line}; chips in {os.path.abspath(job.out)}")
    if summary.count("failed"):
        sys.exit(1)


def job_from_values(
    values: dict, from_config: frozenset[str] = frozenset(), chips: bool = True
) -> tuple[list[Tile], SampleJob]:
    """Tiles and job from this command's option values; saves them as OUT/config.yaml.

    ``from_config`` names the options that came from ``--config`` rather than the
    command line. The labels are read and every catalog opened first, and unless
    --overwrite a folder of chips made with other options is refused, so that a
    job that cannot run stops before anything is written. The Beam pipeline calls
    this too, with ``chips`` False when its chips go to TFRecords, not to OUT.
    """
    tiles = _tiles(values, from_config)
    labels = LabelRequest.from_options(values)
    job = SampleJob(
        imagery=ImageryRequest.from_options(values),
        labels=labels,
        out=values["out"],
        min_valid=values["min_valid"],
        min_labelled=values["min_labelled"],
        overwrite=values["overwrite"],
        class_names=dict(labels.classes),
    )
    load_ground_truth(job.labels)
    boundary = options.trust_boundary(values)
    # Worker processes, started later, read the boundary from the environment.
    os.environ.update(boundary.environment())
    check_bands(job.imagery, boundary)
    if chips and not job.overwrite:
        check_fingerprint(job.out, job_fingerprint(job.imagery, job.labels), option_flag, "--overwrite")
    try:
        if not storage.is_url(job.out):
            os.makedirs(job.out, exist_ok=True)
        save_effective_config(job.out, recorded_options(values), command)
    except OSError as error:
        raise OutputError(f"{job.out}: cannot write the output folder ({error.strerror})") from None
    return tiles, job


def option_flag(name: str) -> str:
    """The flag of a job option named as `tfchips.fingerprint` names it: labels_layer -> --labels-layer."""
    return "--" + name.replace("_", "-")


def recorded_options(values: dict) -> dict:
    """Option values as config.yaml and the manifest keep them: credentials in URLs masked."""
    return {
        name: tuple(redact_json(value)) if isinstance(value, list) else redact_json(value)
        for name, value in values.items()
    }


def options_from_config(ctx: click.Context, values: dict) -> frozenset[str]:
    """Names of the options whose values came from --config."""
    return frozenset(n for n in values if ctx.get_parameter_source(n) == click.core.ParameterSource.DEFAULT_MAP)


def _tiles(values: dict, from_config: frozenset[str]) -> list[Tile]:
    if values["tiles_path"] is not None and "tiles_path" not in from_config:
        # --tiles on the command line replaces an area the config file gives.
        values = {**values, **{n: None for n in ("aoi_path", "bbox") if n in from_config}}
    area_given = values["aoi_path"] is not None or values["bbox"] is not None
    if values["tiles_path"] is not None:
        if area_given:
            raise click.UsageError("give --tiles or --aoi/--bbox, not both")
        return read_tile_list(values["tiles_path"])
    if values["resolution"] is None or values["tilesize"] is None:
        raise click.UsageError("--resolution and --tilesize are needed with --aoi/--bbox")
    area = options.area_of_interest(values["aoi_path"], values["bbox"])
    _, south, _, north = area.bounds
    if south < UTM_SOUTH or north > UTM_NORTH:
        # The grid goes on to the poles, but few catalogs do and tiles there are distorted.
        click.echo(
            f"warning: the area of interest reaches latitude {south if south < UTM_SOUTH else north:g},"
            f" outside the UTM band ({UTM_SOUTH:g} to {UTM_NORTH:g}); its tiles are distorted",
            err=True,
        )
    return tiles_for_shape(area, values["resolution"], values["tilesize"], values["pad"])
