"""Options of the chips-to-records job: `WriterOptions`, and the click options that set them.

``tfchips to-tfrecords`` and ``beam_pipelines.chips_to_tfrecords`` take the same
options from `tfrecords_options`; `tfchips.job.writer_options` turns their values
into `WriterOptions`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import click

from tfchips.command_line import legacy_out_argument, out_option
from tfchips.errors import ConfigError
from tfchips.records.codecs import DECODERS, ENCODINGS
from tfchips.records.dataset_info import COMPRESSIONS
from tfchips.records.encoder import RecordOptions
from tfchips.records.plan import DEFAULT_SPLIT, check_splits, parse_split_by
from tfchips.records.schema import SCHEMAS


@dataclass(frozen=True)
class WriterOptions:
    """Options of `tfchips.records.writer.write_tfrecords` (see ``tfchips to-tfrecords --help``).

    ``shards`` is a count per split; ``shard_size_mb`` instead aims at that many MB
    (10**6 bytes, uncompressed) per shard. ``statistics`` puts band statistics and
    class counts in dataset.json: from the chip manifest when it has them,
    otherwise computed from a deterministic sample of the chips
    (`tfchips.records.plan.statistics_rate`), or from every chip with
    ``exact_statistics``. ``workers`` are threads, or with ``processes`` (GDAL
    decoding only) processes, which scale further on many cores at the cost of
    copying every record between processes.
    """

    records: RecordOptions = field(default_factory=RecordOptions)
    shards: int | None = None
    shard_size_mb: float | None = None
    compression: str = "none"
    workers: int = 1
    processes: bool = False
    splits: Mapping[str, float] = field(default_factory=lambda: {DEFAULT_SPLIT: 1.0})
    split_by: str = "tile"
    seed: int = 0
    statistics: bool = True
    exact_statistics: bool = False
    skip_bad: bool = False
    overwrite: bool = False
    progress: bool = False

    def __post_init__(self) -> None:
        if self.compression not in COMPRESSIONS:
            raise ConfigError(f"unknown compression {self.compression!r}; expected one of {', '.join(COMPRESSIONS)}")
        if self.shards is not None and self.shard_size_mb is not None:
            raise ConfigError("give `shards` or `shard_size_mb`, not both")
        if self.workers < 1:
            raise ConfigError(f"workers must be at least 1, got {self.workers}")
        check_splits(self.splits)
        parse_split_by(self.split_by)


_OPTIONS = [
    click.option(
        "--encoding",
        type=click.Choice(ENCODINGS),
        default="bytes",
        show_default=True,
        help="Image payload: the chip file as stored, lossless PNG, or raw pixels.",
    ),
    click.option(
        "--label-encoding", type=click.Choice(ENCODINGS), default=None, help="Label payload  [default: --encoding]"
    ),
    click.option(
        "--decoder",
        type=click.Choice(DECODERS),
        default="auto",
        show_default=True,
        help=(
            "Pixel decoder: TensorFlow (PNG/JPEG/BMP) or GDAL (any raster; libtiff directly for lossless GeoTIFFs); "
            "auto: TensorFlow where it is exact."
        ),
    ),
    click.option(
        "--schema",
        type=click.Choice(SCHEMAS),
        default="tfchips",
        show_default=True,
        help="Feature keys: tfchips, or those of the scripts tfchips replaces.",
    ),
    click.option(
        "--shards",
        type=click.IntRange(min=1),
        default=None,
        help="Shards per split; give this or --shard-size (one is needed).",
    ),
    click.option(
        "--shard-size",
        "shard_size_mb",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        metavar="MB",
        help="Aim at this many MB (uncompressed) per shard; give this or --shards (one is needed).",
    ),
    click.option(
        "--compression",
        type=click.Choice(list(COMPRESSIONS)),
        default="none",
        show_default=True,
        help="Compression of the shard files (gzip and zlib: smaller, slower to read); dataset.json records it.",
    ),
    click.option(
        "--workers",
        type=click.IntRange(min=1),
        default=None,
        help="Parallel decoders/encoders; never changes the output  [default: the number of CPUs]",
    ),
    click.option(
        "--processes",
        is_flag=True,
        help="GDAL decoding in worker processes rather than threads: for many cores.",
    ),
    click.option(
        "--split",
        "split_text",
        default=None,
        metavar="NAME=FRACTION,...",
        help="Splits by tile, e.g. train=0.8,val=0.1,test=0.1  [default: one split named 'data']",
    ),
    click.option(
        "--split-by",
        default="tile",
        show_default=True,
        metavar="tile|block:K",
        help="block:K keeps each K x K block of neighbouring tiles in one split.",
    ),
    click.option("--seed", type=int, default=0, show_default=True, help="Seed of the split and shuffle."),
    click.option(
        "--statistics/--no-statistics",
        default=True,
        show_default=True,
        help="Band statistics and class counts in dataset.json: the chip manifest's, else computed from"
        " about 1 chip in 64 (at least 16).",
    ),
    click.option(
        "--exact-statistics",
        is_flag=True,
        help="Compute the statistics from every chip rather than a sample (decodes every chip).",
    ),
    click.option("--skip-bad", is_flag=True, help="Leave unpaired and corrupt chips out, listed in dataset.json."),
    click.option(
        "--overwrite", is_flag=True, help="Replace what an earlier run left in --out: its shards and dataset.json."
    ),
]

# The options of `tfrecords_options`, by parameter name: a pipeline that writes records takes some of them.
RECORD_OPTION_NAMES = (
    "encoding", "label_encoding", "decoder", "schema", "shards", "shard_size_mb", "compression", "workers",
    "processes", "split_text", "split_by", "seed", "statistics", "exact_statistics", "skip_bad", "overwrite",
)


def tfrecords_options(function):
    """Apply every option of ``to-tfrecords`` after CHIPS and OUT (`tfchips.job.writer_options` reads them)."""
    for option in reversed(_OPTIONS):
        function = option(function)
    return function


def tfrecords_arguments(function):
    """CHIPS, the deprecated positional OUT, ``--out`` and `tfrecords_options`: the whole to-tfrecords command line."""
    function = tfrecords_options(function)
    function = out_option("Folder of the shards and dataset.json.", required=False)(function)
    function = legacy_out_argument(function)
    return click.argument("chips", type=click.Path(file_okay=False))(function)
