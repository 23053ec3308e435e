"""Option definitions shared by several commands."""

from __future__ import annotations

import click

from tfchips.command_line import legacy_out_argument, out_option, output_path

__all__ = ["aoi", "bbox", "imagery_options", "legacy_out_argument", "out_option", "output_path", "pad", "resolution",
           "tilesize", "trust_options"]


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


def resolution(required: bool = True):
    return click.option(
        "--resolution", type=click.FloatRange(min=0, min_open=True), required=required, help="Metres per pixel."
    )


def tilesize(required: bool = True):
    return click.option(
        "--tilesize", type=click.IntRange(min=1), required=required, help="Tile width in pixels, without padding."
    )


pad = click.option(
    "--pad",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Overlap pixels on every side; chips are tilesize + 2 * pad pixels square.",
)


def _imagery_option_list() -> list:
    from tfchips.composite import METHODS
    from tfchips.sources.base import RESAMPLING

    return [
        click.option(
            "--catalog",
            help="Imagery source: a STAC catalog.json or collection.json (path or URL), a STAC API URL,"
            " or earthone:PRODUCT_ID.",
        ),
        click.option("--collection", help="Collection id to search (STAC API) or keep (static catalog)."),
        click.option("--bands", metavar="NAMES", help="Comma-separated asset keys or eo:bands common names."),
        click.option("--start", metavar="DATE", help="First acquisition date (YYYY-MM-DD or ISO 8601, UTC)."),
        click.option("--end", metavar="DATE", help="Last acquisition date, inclusive (YYYY-MM-DD or ISO 8601, UTC)."),
        click.option("--max-cloud", type=float, metavar="PERCENT", help="Skip scenes with more cloud cover."),
        click.option("--mask-asset", metavar="NAME", help="Class raster whose --mask-values mask pixels, e.g. scl."),
        click.option(
            "--mask-values",
            metavar="CLASSES",
            help="Comma-separated classes to mask: numbers, Sentinel-2 SCL names or s2-clouds, e.g. 3,8,9,10.",
        ),
        click.option(
            "--mask-bits",
            metavar="ASSET=BITS",
            help="Mask pixels whose ASSET has any of these bits set: numbers, Landsat QA_PIXEL names or"
            " landsat-clouds, e.g. qa_pixel=1,3,4.",
        ),
        click.option("--cloud-prob-asset", metavar="NAME", help="Cloud-probability raster used to mask pixels."),
        click.option(
            "--cloud-prob-threshold",
            type=float,
            metavar="VALUE",
            help="Mask pixels whose cloud probability exceeds VALUE.",
        ),
        click.option(
            "--method",
            type=click.Choice(METHODS),
            help="Per-pixel composite  [default: closest]",
        ),
        click.option(
            "--reference-date",
            metavar="DATE",
            help="Date that closest aims at  [default: middle of --start..--end]",
        ),
        click.option(
            "--resampling", type=click.Choice(RESAMPLING), help="Resampling of image bands  [default: nearest]"
        ),
        click.option("--nodata", metavar="NUMBER", help="Output nodata value  [default: the scenes', else 0]"),
        click.option(
            "--dtype", help="Output dtype, e.g. uint16 or float32  [default: the scenes', float32 when scaled]"
        ),
        click.option(
            "--stored-values",
            is_flag=True,
            default=None,
            help="Keep stored values; raster:bands scale and offset go into the chips  [default: applied]",
        ),
        click.option(
            "--merge",
            multiple=True,
            metavar="'NAME=VALUE ...'",
            help="Another product whose scenes join the candidates, e.g. 'collection=landsat-c2-l2"
            " bands=blue,green,red,nir08'; unset settings come from the main product. Repeatable.",
        ),
        click.option(
            "--stack",
            multiple=True,
            metavar="'NAME=VALUE ...'",
            help="A product composited on its own and appended as bands, e.g. 'catalog=dem/catalog.json"
            " bands=elevation resampling=bilinear'. Repeatable.",
        ),
    ]


def imagery_options(function):
    """Apply every imagery option; the values they give go to `ImageryRequest.from_options`."""
    for option in reversed(_imagery_option_list()):
        function = option(function)
    return function


catalog_trust = [
    click.option(
        "--allow-local-assets",
        is_flag=True,
        default=None,
        help="Let catalogs fetched over the network name local files and GDAL /vsi paths"
        " (devices and standard input never)  [default: TFCHIPS_CATALOG_ALLOW_LOCAL, else off]",
    ),
    click.option(
        "--allowed-hosts",
        metavar="HOSTS",
        help="Comma-separated hosts (subdomains included) that catalogs may name URLs on, besides the"
        " --catalog host  [default: TFCHIPS_CATALOG_ALLOWED_HOSTS, else any]",
    ),
]


def trust_options(function):
    """Apply --allow-local-assets and --allowed-hosts; `tfchips.job.trust_boundary` reads their values."""
    for option in reversed(catalog_trust):
        function = option(function)
    return function
