"""``tfchips to-tfrecords``: a chip folder to sharded TFRecords and dataset.json."""

from __future__ import annotations

import os

import click

from tfchips.cli import options
from tfchips.cli.main import summary, usage_checked
from tfchips.job import writer_options
from tfchips.lock import output_lock
from tfchips.records.codecs import DECODERS, ENCODINGS
from tfchips.records.schema import SCHEMAS
from tfchips.records.writer import COMPRESSIONS, DATASET_JSON, write_tfrecords


@click.command("to-tfrecords")
@click.argument("chips", type=click.Path(file_okay=False))
@options.legacy_out_argument
@options.out_option("Folder of the shards and dataset.json.", required=False)
@click.option(
    "--encoding",
    type=click.Choice(ENCODINGS),
    default="bytes",
    show_default=True,
    help="Image payload: the chip file as stored, lossless PNG, or raw pixels.",
)
@click.option(
    "--label-encoding", type=click.Choice(ENCODINGS), default=None, help="Label payload  [default: --encoding]"
)
@click.option(
    "--decoder",
    type=click.Choice(DECODERS),
    default="auto",
    show_default=True,
    help=(
        "Pixel decoder: TensorFlow (PNG/JPEG/BMP) or GDAL (any raster; libtiff directly for lossless GeoTIFFs); "
        "auto: TensorFlow where it is exact."
    ),
)
@click.option(
    "--schema",
    type=click.Choice(SCHEMAS),
    default="tfchips",
    show_default=True,
    help="Feature keys: tfchips, or those of the scripts tfchips replaces.",
)
@click.option(
    "--shards", type=click.IntRange(min=1), default=None, help="Shards per split; give this or --shard-size (one is needed)."
)
@click.option(
    "--shard-size",
    "shard_size_mb",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="MB",
    help="Aim at this many MB (uncompressed) per shard; give this or --shards (one is needed).",
)
@click.option(
    "--compression",
    type=click.Choice(list(COMPRESSIONS)),
    default="none",
    show_default=True,
    help="Compression of the shard files (gzip and zlib: smaller, slower to read); dataset.json records it.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Parallel decoders/encoders; never changes the output  [default: the number of CPUs]",
)
@click.option(
    "--processes",
    is_flag=True,
    help="GDAL decoding in worker processes rather than threads: for many cores.",
)
@click.option(
    "--split",
    "split_text",
    default=None,
    metavar="NAME=FRACTION,...",
    help="Splits by tile, e.g. train=0.8,val=0.1,test=0.1  [default: one split named 'data']",
)
@click.option(
    "--split-by",
    default="tile",
    show_default=True,
    metavar="tile|block:K",
    help="block:K keeps each K x K block of neighbouring tiles in one split.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the split and shuffle.")
@click.option(
    "--statistics/--no-statistics",
    default=True,
    show_default=True,
    help="Band statistics and class counts in dataset.json (computed when the chip manifest has none).",
)
@click.option("--skip-bad", is_flag=True, help="Leave unpaired and corrupt chips out, listed in dataset.json.")
@click.option(
    "--overwrite", is_flag=True, help="Replace what an earlier run left in --out: its shards and dataset.json."
)
def command(**values) -> None:
    """Translate the chip folder CHIPS (images/ + labels/) into TFRecord shards in --out.

    CHIPS may be an ESRI export in the Classified Tiles metadata format; other formats are refused.
    """
    out = options.output_path(values, "a second argument")
    writer = usage_checked(writer_options, values)
    with output_lock(out):
        description = write_tfrecords(values["chips"], out, writer)
    splits = description["splits"]
    for split, info in splits.items():
        click.echo(f"{split}: {info['records']} records in {len(info['shards'])} shards")
    for bad in description["skipped"]:
        click.echo(f"skipped {bad['name']}: {bad['reason']}", err=True)
    records = sum(info["records"] for info in splits.values())
    shards = sum(len(info["shards"]) for info in splits.values())
    summary(
        f"{records} records in {shards} shards, {len(description['skipped'])} chips skipped;"
        f" wrote {os.path.join(out, DATASET_JSON)}"
    )
