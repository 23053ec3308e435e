"""Click option definitions shared by the ``tfchips`` commands and the Beam pipelines.

The commands (`tfchips.cli`) and the pipelines (`beam_pipelines`) take the same options
from here, so that a flag means the same thing to both; `tfchips.job` turns their values
into a job. `command_flags` names a command's flags for errors (`tfchips.console.error_line`).
"""

from __future__ import annotations

import click

from tfchips.config_file import config_option


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


def out_option(help: str, file: bool = False, required: bool = True):
    """``--out``/``-o``, where every command writes: a folder, or a ``file``."""
    return click.option(
        "--out", "-o", required=required, type=click.Path(dir_okay=not file, file_okay=file), help=help
    )


class _HiddenArgument(click.Argument):
    """A positional argument kept working but left out of the usage line, as deprecated spellings are."""

    def get_usage_pieces(self, ctx: click.Context) -> list[str]:
        return []


def legacy_out_argument(function):
    """The output as a positional argument, as earlier releases took it; `output_path` reads it."""
    return click.argument(
        "legacy_out", cls=_HiddenArgument, required=False, metavar="[OUT]", type=click.Path(file_okay=False)
    )(function)


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


_CREATE_SAMPLES = [
    config_option,
    imagery_options,
    trust_options,
    label_options,
    aoi,
    bbox,
    click.option("--tiles", "tiles_path", type=click.Path(dir_okay=False),
                 help="Tile keys to build: a text file (one per line) or a vector file with a tile_key column."),
    resolution(required=False),  # not with --tiles, whose keys carry the grid
    tilesize(required=False),
    pad,
    out_option("Chip folder to write (OUT/images, OUT/labels); a re-run resumes it."),
    click.option("--workers", type=click.IntRange(min=1), help="Worker processes  [default: the core count]"),
    click.option("--min-valid", type=click.FloatRange(0, 1), default=0.0, show_default=True,
                 help="Skip tiles whose valid-pixel fraction is lower."),
    click.option("--min-labelled", type=click.FloatRange(0, 1), default=0.0, show_default=True,
                 help="Skip tiles whose labelled-pixel fraction (not background, not ignored) is lower."),
    click.option("--overwrite", is_flag=True, help="Replace what an earlier run left in --out: every tile is made"
                 " again, whatever options made its chips."),
    click.option("--provenance", is_flag=True, help="Also write OUT/provenance/KEY.tif: per pixel, the scene taken"
                 " (1-based, in the tile's scenes in the manifest) or, for median, how many scenes were valid."),
]


def create_samples_options(function):
    """Apply every option of ``tfchips create-samples`` (and of the Beam pipeline that takes them)."""
    for decorator in reversed(_CREATE_SAMPLES):
        function = decorator(function)
    return function


def options_from_config(ctx: click.Context, values: dict) -> frozenset[str]:
    """Names of the options whose values came from --config."""
    return frozenset(n for n in values if ctx.get_parameter_source(n) == click.core.ParameterSource.DEFAULT_MAP)


def command_flags(command: click.Command | None) -> dict[str, str]:
    """Python parameter name -> how ``command`` spells it (``--max-cloud``, ``CHIPS``)."""
    flags: dict[str, str] = {}
    for parameter in command.params if command is not None else ():
        if isinstance(parameter, click.Option):
            flags[parameter.name] = max(parameter.opts, key=len)
        elif isinstance(parameter, click.Argument):
            flags[parameter.name] = parameter.human_readable_name
    return flags


def _record_option_list() -> dict:
    from tfchips.records.codecs import DECODERS, ENCODINGS
    from tfchips.records.schema import SCHEMAS
    from tfchips.records.writer import COMPRESSIONS

    return {
        "encoding": click.option(
            "--encoding",
            type=click.Choice(ENCODINGS),
            default="bytes",
            show_default=True,
            help="Image payload: the chip file as stored, lossless PNG, or raw pixels.",
        ),
        "label_encoding": click.option(
            "--label-encoding", type=click.Choice(ENCODINGS), default=None, help="Label payload  [default: --encoding]"
        ),
        "decoder": click.option(
            "--decoder",
            type=click.Choice(DECODERS),
            default="auto",
            show_default=True,
            help=(
                "Pixel decoder: TensorFlow (PNG/JPEG/BMP) or GDAL (any raster; libtiff directly for lossless GeoTIFFs); "
                "auto: TensorFlow where it is exact."
            ),
        ),
        "schema": click.option(
            "--schema",
            type=click.Choice(SCHEMAS),
            default="tfchips",
            show_default=True,
            help="Feature keys: tfchips, or those of the scripts tfchips replaces.",
        ),
        "shards": click.option(
            "--shards", type=click.IntRange(min=1), default=None, help="Shards per split; give this or --shard-size (one is needed)."
        ),
        "shard_size_mb": click.option(
            "--shard-size",
            "shard_size_mb",
            type=click.FloatRange(min=0, min_open=True),
            default=None,
            metavar="MB",
            help="Aim at this many MB (uncompressed) per shard; give this or --shards (one is needed).",
        ),
        "compression": click.option(
            "--compression",
            type=click.Choice(list(COMPRESSIONS)),
            default="none",
            show_default=True,
            help="Compression of the shard files (gzip and zlib: smaller, slower to read); dataset.json records it.",
        ),
        "workers": click.option(
            "--workers",
            type=click.IntRange(min=1),
            default=None,
            help="Parallel decoders/encoders; never changes the output  [default: the number of CPUs]",
        ),
        "processes": click.option(
            "--processes",
            is_flag=True,
            help="GDAL decoding in worker processes rather than threads: for many cores.",
        ),
        "split_text": click.option(
            "--split",
            "split_text",
            default=None,
            metavar="NAME=FRACTION,...",
            help="Splits by tile, e.g. train=0.8,val=0.1,test=0.1  [default: one split named 'data']",
        ),
        "split_by": click.option(
            "--split-by",
            default="tile",
            show_default=True,
            metavar="tile|block:K",
            help="block:K keeps each K x K block of neighbouring tiles in one split.",
        ),
        "seed": click.option("--seed", type=int, default=0, show_default=True, help="Seed of the split and shuffle."),
        "statistics": click.option(
            "--statistics/--no-statistics",
            default=True,
            show_default=True,
            help="Band statistics and class counts in dataset.json: the chip manifest's, else computed from"
            " about 1 chip in 64 (at least 16).",
        ),
        "exact_statistics": click.option(
            "--exact-statistics",
            is_flag=True,
            help="Compute the statistics from every chip rather than a sample (decodes every chip).",
        ),
        "skip_bad": click.option("--skip-bad", is_flag=True, help="Leave unpaired and corrupt chips out, listed in dataset.json."),
    }


def record_options(function, names: tuple[str, ...] | None = None):
    """Apply the record options of ``tfchips to-tfrecords`` (``--encoding``, ``--shards``, ``--split``, ...),
    or those whose parameter ``names`` are given; `tfchips.job.writer_options` reads their values."""
    chosen = _record_option_list()
    for name in reversed(list(chosen) if names is None else list(names)):
        function = chosen[name](function)
    return function


def tfrecords_arguments(function):
    """The whole ``to-tfrecords`` command line: CHIPS, ``--out`` (or the deprecated positional OUT),
    `record_options` and ``--overwrite``; ``beam_pipelines.chips_to_tfrecords`` takes the same."""
    function = click.option(
        "--overwrite", is_flag=True, help="Replace what an earlier run left in --out: its shards and dataset.json."
    )(function)
    function = record_options(function)
    function = out_option("Folder of the shards and dataset.json.", required=False)(function)
    function = legacy_out_argument(function)
    return click.argument("chips", type=click.Path(file_okay=False))(function)
