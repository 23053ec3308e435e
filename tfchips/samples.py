"""The create-samples job: tiles in, chip pairs and a manifest out.

`make_sample` is the whole work for one tile (imagery, labels, checks, chips);
`create_samples` runs it over many tiles in worker processes, resumes what an
earlier run finished, and writes the manifest and ESRI metadata once at the end.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
from dataclasses import dataclass, field
from typing import Callable, Iterable

from tfchips.chips import chip_pair_exists, read_written_pair, remove_partial_files, write_chip_pair
from tfchips.errors import ChipError, ConfigError, OutputError, TfchipsError
from tfchips.grid import Tile, key_to_filename
from tfchips.imagery import ImageryRequest, imagery_for_tile
from tfchips.labels import LabelRequest, load_ground_truth
from tfchips.manifest import ChipRecord, build_manifest, chip_record, write_esri_metadata, write_manifest
from tfchips.sources.base import redact_text


@dataclass(frozen=True)
class SampleJob:
    """Everything one tile needs; plain values so that worker processes can receive it.

    ``min_valid`` and ``min_labelled`` are fractions (0-1) of the chip's pixels
    below which a tile is skipped rather than written.
    """

    imagery: ImageryRequest
    labels: LabelRequest
    out: str
    min_valid: float = 0.0
    min_labelled: float = 0.0
    overwrite: bool = False
    class_names: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("min_valid", "min_labelled"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} is a fraction of the chip's pixels, 0 to 1; got {value!r}")


@dataclass(frozen=True)
class JobSummary:
    records: tuple[ChipRecord, ...]
    band_names: tuple[str, ...]

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.records)

    @property
    def line(self) -> str:
        resumed = sum(r.resumed for r in self.records)
        return (
            f"{self.count('written')} written ({resumed} from an earlier run), "
            f"{self.count('skipped')} skipped, {self.count('failed')} failed"
        )


def make_sample(tile: Tile, job: SampleJob) -> tuple[ChipRecord, tuple[str, ...]]:
    """Composite, label and write one tile; returns its record and the band names.

    Read errors and empty tiles come back as a ``failed`` record, so that one bad
    tile never stops a job of thousands.
    """
    try:
        return _make_sample(tile, job)
    except OutputError:
        raise  # a full disk or an unwritable folder stops the job, not just this tile
    except Exception as error:  # noqa: BLE001 - any error fails this tile only, with its reason
        reason = str(error) if isinstance(error, TfchipsError) else f"{type(error).__name__}: {error}"
        return ChipRecord(tile.key, "failed", reason=redact_text(reason)), ()


def _make_sample(tile: Tile, job: SampleJob) -> tuple[ChipRecord, tuple[str, ...]]:
    imagery = imagery_for_tile(tile, job.imagery)
    if imagery.valid_fraction == 0.0:
        return ChipRecord(tile.key, "failed", reason="no valid pixel in any scene", scenes=imagery.scenes), imagery.band_names
    if imagery.valid_fraction < job.min_valid:
        reason = f"valid fraction {imagery.valid_fraction:.3f} < min-valid {job.min_valid}"
        return ChipRecord(tile.key, "skipped", reason=reason, valid_fraction=imagery.valid_fraction), imagery.band_names
    truth = load_ground_truth(job.labels)
    label = truth.rasterize(tile)
    record = chip_record(
        tile.key, imagery.data, imagery.valid, label, imagery.scenes, job.labels.background, truth.nodata
    )
    if record.labelled_fraction < job.min_labelled:
        reason = f"labelled fraction {record.labelled_fraction:.3f} < min-labelled {job.min_labelled}"
        return ChipRecord(tile.key, "skipped", reason=reason, valid_fraction=imagery.valid_fraction), imagery.band_names
    write_chip_pair(
        job.out, tile, imagery.data, imagery.nodata, imagery.band_names, label, truth.nodata, imagery.scenes
    )
    return record, imagery.band_names


def resumed_sample(tile: Tile, job: SampleJob) -> tuple[ChipRecord, tuple[str, ...]]:
    """Record and band names of a pair an earlier run wrote, recomputed from the chips themselves.

    A pair that cannot be read back (corrupt, truncated, off its tile's grid) is made again.
    """
    try:
        pair = read_written_pair(job.out, tile.key)
    except ChipError:
        return make_sample(tile, job)
    record = chip_record(
        tile.key, pair.image, pair.valid, pair.label, pair.scenes, job.labels.background, pair.label_nodata, resumed=True
    )
    return record, pair.band_names


def create_samples(
    tiles: Iterable[Tile],
    job: SampleJob,
    parameters: dict,
    workers: int | None = None,
    on_record: Callable[[ChipRecord], None] | None = None,
) -> JobSummary:
    """Write the chip folder ``job.out`` for ``tiles`` using ``workers`` processes.

    ``parameters`` (the effective job options) go into the manifest; ``on_record``
    is called in this process as each tile finishes (progress bars).
    """
    tiles = list(dict.fromkeys(tiles))
    os.makedirs(job.out, exist_ok=True)
    remove_partial_files(job.out)
    records: list[ChipRecord] = []
    band_names: tuple[str, ...] = ()

    def collect(record: ChipRecord, names: tuple[str, ...] = ()) -> None:
        nonlocal band_names
        band_names = band_names or names
        records.append(record)
        if on_record is not None:
            on_record(record)

    pending = []
    for tile in tiles:
        if not job.overwrite and chip_pair_exists(job.out, tile.key):
            collect(*resumed_sample(tile, job))
        else:
            pending.append(tile)
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(pending) <= 1:
        for tile in pending:
            collect(*make_sample(tile, job))
    else:
        # forkserver: workers start clean even when the caller has TensorFlow's threads running.
        context = multiprocessing.get_context("forkserver")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            try:
                for record, names in pool.map(make_sample, pending, [job] * len(pending), chunksize=1):
                    collect(record, names)
            except BaseException:
                # Without this the pool would finish every queued tile before the error surfaces.
                pool.shutdown(cancel_futures=True)
                raise
    summary = JobSummary(tuple(records), band_names)
    write_job_metadata(summary, job, parameters)
    return summary


def write_job_metadata(summary: JobSummary, job: SampleJob, parameters: dict) -> None:
    """The manifest and ESRI metadata of a finished job, in ``job.out``."""
    label_nodata = job.labels.ignore_value if job.labels.extent else None
    manifest = build_manifest(list(summary.records), parameters, summary.band_names, job.class_names, label_nodata)
    write_manifest(job.out, manifest)
    written = [r.key for r in summary.records if r.status == "written"]
    if written:
        first = Tile.from_key(written[0])
        names = [key_to_filename(key) + ".tif" for key in written]
        write_esri_metadata(job.out, manifest, first.size, first.resolution, first.crs, names)

