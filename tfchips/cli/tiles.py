"""``tfchips tiles``: list the DLTiles covering an area of interest."""

from __future__ import annotations

import json

import click

from tfchips import options
from tfchips.cli.main import summary
from tfchips.grid import tiles_for_shape, tiles_to_geojson
from tfchips.job import area_of_interest


@click.command("tiles")
@options.aoi
@options.bbox
@options.resolution()
@options.tilesize()
@options.pad
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["keys", "geojson"]),
    default="keys",
    show_default=True,
    help="Keys one per line, or a GeoJSON FeatureCollection of WGS84 tile polygons.",
)
def command(aoi_path, bbox, resolution, tilesize, pad, output_format) -> None:
    """Print the DLTiles covering --aoi FILE or --bbox W,S,E,N."""
    tiles = tiles_for_shape(area_of_interest(aoi_path, bbox), resolution, tilesize, pad)
    if output_format == "keys":
        click.echo("\n".join(tile.key for tile in tiles))
    else:
        click.echo(json.dumps(tiles_to_geojson(tiles)))
    summary(f"{len(tiles)} tiles of {tilesize} + 2 x {pad} pixels at {resolution:g} m on stdout")
