"""``tfchips demo-data``: write the synthetic demo catalog and labels."""

from __future__ import annotations

import os

import click
import yaml

from tfchips import options
from tfchips.cli.main import summary
from tfchips.demo_data import generate
from tfchips.errors import OutputError
from tfchips.manifest import publish_text


@click.command("demo-data")
@options.legacy_out_argument
@options.out_option("Folder to write the catalog, labels and job.yaml to; their files are replaced.", required=False)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the generator; same seed, same pixels.")
def command(**values) -> None:
    """Write a small static STAC catalog of synthetic COG scenes and a GeoPackage of labels to --out."""
    out_dir = options.output_path(values, "an argument")
    seed = values["seed"]
    try:
        demo = generate(out_dir, seed=seed)
    except OSError as error:
        raise OutputError(error.errno, error.strerror or str(error), error.filename or out_dir) from None
    west, south, east, north = demo.bbox
    click.echo(f"catalog: {demo.catalog}")
    click.echo(
        f"labels:  {demo.labels} (attribute {demo.attribute!r}: "
        + ", ".join(f"{value} {name}" for value, name in sorted(demo.class_names.items()))
        + ")"
    )
    click.echo(f"bbox:    {west},{south},{east},{north}")
    samples = os.path.join(out_dir, "samples")
    config = os.path.join(out_dir, "job.yaml")
    publish_text(config, yaml.safe_dump(demo.config_options(), sort_keys=False))
    click.echo(f"config:  {config}")
    click.echo("next:")
    click.echo(f"  tfchips create-samples --config {config}")
    click.echo(f"  (or: {demo.command_line(samples)})")
    summary(f"catalog, labels and job.yaml in {os.path.abspath(out_dir)}")
