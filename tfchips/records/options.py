"""Options of the chips-to-records job: `WriterOptions`.

``tfchips to-tfrecords`` and ``beam_pipelines.chips_to_tfrecords`` take the same
click options (`tfchips.options.record_options`); `tfchips.job.writer_options` turns
their values into `WriterOptions`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from tfchips.errors import ConfigError
from tfchips.records.dataset_info import COMPRESSIONS
from tfchips.records.encoder import RecordOptions
from tfchips.records.plan import DEFAULT_SPLIT, check_splits, parse_split_by


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
