"""Option definitions shared by several commands."""

from __future__ import annotations

import click

from tfchips.aoi import bbox_geometry, read_aoi


def _parse_bbox(ctx: click.Context, param: click.Parameter, value: str | None):
    if value is None:
        return None
    try:
        numbers = tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not four numbers W,S,E,N") from None
    if len(numbers) != 4:
        raise click.BadParameter(f"{value!r} is not four numbers W,S,E,N")
    return numbers


aoi = click.option(
    "--aoi",
    "aoi_path",
    type=click.Path(dir_okay=False),
    help="OGR-readable vector file; the union of its features (any CRS) is tiled.",
)
bbox = click.option(
    "--bbox", callback=_parse_bbox, metavar="W,S,E,N", help="Area of interest in WGS84 degrees."
)
resolution = click.option(
    "--resolution", type=click.FloatRange(min=0, min_open=True), required=True, help="Metres per pixel."
)
tilesize = click.option(
    "--tilesize", type=click.IntRange(min=1), required=True, help="Tile width in pixels, without padding."
)
pad = click.option(
    "--pad",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Overlap pixels on every side; chips are tilesize + 2 * pad pixels square.",
)


def area_of_interest(aoi_path: str | None, bbox: tuple | None):
    """The WGS84 geometry chosen by exactly one of --aoi and --bbox."""
    if (aoi_path is None) == (bbox is None):
        raise click.UsageError("give exactly one of --aoi FILE and --bbox W,S,E,N")
    return read_aoi(aoi_path) if aoi_path is not None else bbox_geometry(bbox)
