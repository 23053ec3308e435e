"""``tfchips create-samples``: composite imagery and rasterized labels into a chip folder."""

from __future__ import annotations

import functools
import os
import sys

import click

from tfchips import options
from tfchips.config_file import save_effective_config
from tfchips.cli.main import summary
from tfchips.console import progress as progress_bar
from tfchips.job import job_from_values, recorded_options
from tfchips.lock import output_lock
from tfchips.samples import create_samples


@click.command("create-samples")
@options.create_samples_options
def command(**values) -> None:
    """Write image and label chips (OUT/images, OUT/labels) for every tile.

    Tiles come from --aoi/--bbox with --resolution and --tilesize, or from --tiles.
    Chips are tilesize + 2 * pad pixels square. A re-run skips finished tiles.
    """
    ctx = click.get_current_context()
    # Held until the command ends, and taken before config.yaml is written: a second job must not
    # touch the first one's folder.
    ctx.with_resource(output_lock(values["out"]))
    source, blocks, job = job_from_values(
        values, options.options_from_config(ctx, values), save_config=functools.partial(save_effective_config, command=command)
    )
    tiles = source.tiles(blocks)
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
