"""``tfchips to-tfrecords``: a chip folder to sharded TFRecords and dataset.json."""

from __future__ import annotations

import os

import click

from tfchips import options
from tfchips.cli.main import summary, usage_checked
from tfchips.job import writer_options
from tfchips.lock import output_lock
from tfchips.records.writer import DATASET_JSON, write_tfrecords


@click.command("to-tfrecords")
@options.tfrecords_arguments
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
