"""``tfchips to-tfrecords``: a chip folder to sharded TFRecords and dataset.json."""

from __future__ import annotations

import os

import click

from tfchips.lock import output_lock
from tfchips.records.codecs import DECODERS, ENCODINGS
from tfchips.records.encoder import RecordOptions
from tfchips.records.plan import parse_splits
from tfchips.records.schema import SCHEMAS
from tfchips.records.writer import COMPRESSIONS, DATASET_JSON, WriterOptions, write_tfrecords


@click.command("to-tfrecords")
@click.argument("chips", type=click.Path(file_okay=False))
@click.argument("out", type=click.Path(file_okay=False))
@click.option(
    "--encoding",
    type=click.Choice(ENCODINGS),
    default="bytes",
    show_default=True,
    help="Image payload: the chip file as stored, lossless PNG, or raw pixels.",
)
@click.option(
    "--label-encoding", type=click.Choice(ENCODINGS), default=None, help="Label payload; defaults to --encoding."
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
@click.option("--shards", type=click.IntRange(min=1), default=None, help="Shards per split.")
@click.option(
    "--shard-size",
    "shard_size_mb",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="MB",
    help="Aim at this many MB (uncompressed) per shard instead.",
)
@click.option("--compression", type=click.Choice(list(COMPRESSIONS)), default="none", show_default=True)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Parallel decoders/encoders; defaults to the number of CPUs. Never changes the output.",
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
    help="Splits by tile, e.g. train=0.8,val=0.1,test=0.1; default: one split named 'data'.",
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
@click.option("--overwrite", is_flag=True, help="Replace TFRecords already in OUT.")
def command(**values) -> None:
    """Translate the chip folder CHIPS (images/ + labels/) into TFRecord shards in OUT.

    CHIPS may be an ESRI export in the Classified Tiles metadata format; other formats are refused.
    """
    with output_lock(values["out"]):
        description = write_tfrecords(values["chips"], values["out"], writer_options(values))
    for split, info in description["splits"].items():
        click.echo(f"{split}: {info['records']} records in {len(info['shards'])} shards")
    for bad in description["skipped"]:
        click.echo(f"skipped {bad['name']}: {bad['reason']}", err=True)
    click.echo(f"wrote {os.path.join(values['out'], DATASET_JSON)}")


def writer_options(values: dict) -> WriterOptions:
    """`WriterOptions` from this command's option values (the Beam pipeline parses the same)."""
    if (values["shards"] is None) == (values["shard_size_mb"] is None):
        raise click.UsageError("give exactly one of --shards N and --shard-size MB")
    return WriterOptions(
        records=RecordOptions(values["encoding"], values["label_encoding"], values["decoder"], values["schema"]),
        shards=values["shards"],
        shard_size_mb=values["shard_size_mb"],
        compression=values["compression"],
        workers=values["workers"] or os.cpu_count() or 1,
        processes=values["processes"],
        splits=parse_splits(values["split_text"]),
        split_by=values["split_by"],
        seed=values["seed"],
        statistics=values["statistics"],
        skip_bad=values["skip_bad"],
        overwrite=values["overwrite"],
        progress=True,
    )
