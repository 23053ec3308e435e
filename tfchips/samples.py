"""The sample core: one tile in, one in-memory `Sample` out; and the local create-samples job.

`make_sample` is the whole work for one tile (imagery, labels, checks) and writes
nothing; sinks write its result: the chip folder (`tfchips.chip_folder`) or TFRecords
(`tfchips.sample_records`). `create_samples`, the local job, locks the folder, checks
that an earlier run there used the same pixel options (`start_job`), runs
`sample_to_folder` over many tiles in worker processes that end with the job, each
through a span of neighbouring tiles (`tfchips.work_spans`), and writes the manifest
and ESRI metadata at the end.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from tfchips import storage
from tfchips.chip_folder import resumed_record, start_job, write_job_metadata, write_sample
from tfchips.chips import MANIFEST_NAME
from tfchips.errors import ConfigError, OutputError, TfchipsError, WorkerError
from tfchips.grid import Tile
from tfchips.imagery import ImageryRequest, check_bands, imagery_for_tile
from tfchips.labels import LabelRequest, load_ground_truth
from tfchips.lock import output_lock
from tfchips.manifest import ChipRecord, chip_record, labelled_fraction
from tfchips.processes import usable_cores
from tfchips.provenance import ChipProvenance, chip_provenance
from tfchips.sources.base import redact_text
from tfchips.work_spans import WorkersDied, map_in_spans, span_workers


@dataclass(frozen=True)
class SampleJob:
    """Everything one tile needs; plain values so that worker processes can receive it.

    ``min_valid`` and ``min_labelled`` are fractions (0-1) of the chip's pixels
    below which a tile is skipped rather than written. ``class_names`` (value -> name)
    default to the ``classes`` of ``labels``. ``provenance`` also makes, per chip, where
    each pixel came from (`tfchips.provenance`).
    """

    imagery: ImageryRequest
    labels: LabelRequest
    out: str
    min_valid: float = 0.0
    min_labelled: float = 0.0
    overwrite: bool = False
    class_names: dict[int, str] = field(default_factory=dict)
    provenance: bool = False

    def __post_init__(self) -> None:
        if not self.class_names:
            object.__setattr__(self, "class_names", dict(self.labels.classes))
        for name in ("min_valid", "min_labelled"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} is a fraction of the chip's pixels, 0 to 1; got {value!r}")

    def below_thresholds(self, record: ChipRecord) -> ChipRecord | None:
        """A ``skipped`` record when ``record`` falls short of ``min_valid`` or ``min_labelled``."""
        if record.valid_fraction < self.min_valid:
            reason = f"valid fraction {record.valid_fraction:.3f} < min-valid {self.min_valid}"
        elif record.labelled_fraction < self.min_labelled:
            reason = f"labelled fraction {record.labelled_fraction:.3f} < min-labelled {self.min_labelled}"
        else:
            return None
        return ChipRecord(
            record.key, "skipped", reason=reason, valid_fraction=record.valid_fraction,
            labelled_fraction=record.labelled_fraction,
        )


@dataclass(frozen=True)
class Sample:
    """The outcome for one tile, in memory: a plain, picklable value that sinks write.

    ``record`` is its manifest row (status ``written``, ``skipped`` or ``failed``, and why).
    A written sample holds ``image`` (bands, rows, cols) on the tile's grid, ``valid`` and
    ``label`` (rows, cols), and the nodata values of image and label; the others hold None.
    ``record.scale_offset`` is what STAC declared per band, ``record.scaled`` whether
    ``image`` has it applied. ``provenance`` is where each pixel came from, when the job
    asks for it.
    """

    tile: Tile
    record: ChipRecord
    band_names: tuple[str, ...]
    image: np.ndarray | None = None
    valid: np.ndarray | None = None
    label: np.ndarray | None = None
    image_nodata: int | float | None = None
    label_nodata: int | None = None
    provenance: ChipProvenance | None = None

    @property
    def stored_scale_offset(self) -> tuple[tuple[float, float], ...]:
        """The (scale, offset) per band the chip carries: STAC's, for values stored unscaled; else none."""
        return () if self.record.scaled else self.record.scale_offset


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


def make_sample(tile: Tile, job: SampleJob) -> Sample:
    """The `Sample` of one tile: labelled, composited and checked; nothing is written.

    A tile no scene covers, whose scenes the filters all remove, with no valid pixel
    or below the job's thresholds is ``skipped`` with that reason; any error comes
    back as a ``failed`` sample with its (redacted) reason: one bad tile never stops a job.
    """
    try:
        return _made(tile, job)
    except Exception as error:  # noqa: BLE001 - any error fails this tile only, with its reason
        return _failed(tile, error)


def _failed(tile: Tile, error: Exception) -> Sample:
    reason = str(error) if isinstance(error, TfchipsError) else f"{type(error).__name__}: {error}"
    return Sample(tile, ChipRecord(tile.key, "failed", reason=redact_text(reason)), ())


def _made(tile: Tile, job: SampleJob) -> Sample:
    truth = load_ground_truth(job.labels)
    label = truth.rasterize(tile)
    # Labels are local and cheap: settle --min-labelled before any scene is read.
    labelled = labelled_fraction(label, job.labels.background, truth.nodata)
    if labelled < job.min_labelled:
        reason = f"labelled fraction {labelled:.3f} < min-labelled {job.min_labelled}"
        record = ChipRecord(tile.key, "skipped", reason=reason, labelled_fraction=labelled)
        return Sample(tile, record, job.imagery.band_names)
    imagery = imagery_for_tile(tile, job.imagery)
    if imagery.valid_fraction == 0.0:
        record = ChipRecord(tile.key, "skipped", reason=imagery.reason, valid_fraction=0.0)
        return Sample(tile, record, imagery.band_names)
    if not job.labels.label_without_imagery:
        label = np.where(imagery.valid, label, np.uint8(job.labels.ignore_value))
    record = chip_record(
        tile.key, imagery.data, imagery.valid, label, imagery.scenes, job.labels.background, truth.nodata
    )
    skipped = job.below_thresholds(record)
    if skipped is not None:
        return Sample(tile, skipped, imagery.band_names)
    declared = imagery.scale_offset if any(pair != (1.0, 0.0) for pair in imagery.scale_offset) else ()
    provenance = chip_provenance(imagery) if job.provenance else None
    record = dataclasses.replace(
        record, scale_offset=declared, scaled=imagery.scaled, provenance=provenance and provenance.as_json(tile.key)
    )
    return Sample(
        tile, record, imagery.band_names, imagery.data, imagery.valid, label, imagery.nodata, truth.nodata, provenance
    )


def sample_to_folder(tile: Tile, job: SampleJob) -> tuple[ChipRecord, tuple[str, ...]]:
    """The record and band names of one tile of a chip-folder job, its chips written to ``job.out``.

    Chips an earlier run wrote are kept when they still fit the job (read back, same
    bands, above the thresholds, unless ``job.overwrite``); otherwise `make_sample`
    makes the tile and `tfchips.chip_folder.write_sample` writes it (or, for a tile that
    ends skipped or failed, removes an earlier run's chips). The unit of work of the
    local job and of the Beam chip-folder pipeline.

    Raises:
        OutputError: ``job.out`` cannot be written: it stops the job, not just this tile.
    """
    try:
        resumed = None if job.overwrite else resumed_record(tile, job)
    except OutputError:
        raise
    except Exception as error:  # noqa: BLE001 - any error fails this tile only, with its reason
        return write_sample(job.out, _failed(tile, error))
    return resumed or write_sample(job.out, make_sample(tile, job))


def create_samples(
    tiles: Iterable[Tile],
    job: SampleJob,
    parameters: dict,
    workers: int | None = None,
    on_record: Callable[[ChipRecord], None] | None = None,
) -> JobSummary:
    """Write the chip folder ``job.out`` for ``tiles`` using ``workers`` processes.

    ``parameters`` (the effective job options) go into the manifest; ``on_record``
    is called in this process as each tile finishes (progress bars). The folder is
    locked for the job (`tfchips.lock.output_lock`).

    Raises:
        OutputError: another job holds ``job.out``, or it cannot be written.
        ConfigError: ``job.out`` holds chips made with other pixel options (see
            `start_job`).
        WorkerError: a worker process died; the manifest then lists the tiles
            that finished, and the same call again resumes.
    """
    tiles = list(dict.fromkeys(tiles))
    # A band no item has would fail every tile: say so once, before anything is written.
    check_bands(job.imagery)
    with output_lock(job.out):
        start_job(job, parameters, len(tiles))
        records: dict[int, ChipRecord] = {}
        band_names: tuple[str, ...] = ()

        def collect(index: int, record: ChipRecord, names: tuple[str, ...]) -> None:
            nonlocal band_names
            band_names = band_names or names
            records[index] = record
            if on_record is not None:
                on_record(record)

        def finish(unfinished: int | None = None) -> JobSummary:
            summary = JobSummary(tuple(records[i] for i in sorted(records)), band_names)
            write_job_metadata(list(summary.records), band_names, job, parameters, unfinished)
            return summary

        workers = workers or usable_cores()
        try:
            if workers == 1 or len(tiles) <= 1:
                for index, tile in enumerate(tiles):
                    collect(index, *sample_to_folder(tile, job))
            else:
                _sample_in_pool(tiles, job, workers, collect)
        except WorkerError:
            finish(unfinished=len(tiles) - len(records))
            raise
        summary = finish()
    return summary


def _sample_in_pool(tiles: list[Tile], job: SampleJob, workers: int, collect: Callable) -> None:
    """`sample_to_folder` over ``tiles`` in ``workers`` processes, each through a span of
    neighbouring tiles (`tfchips.work_spans`), ``collect(index, record, band_names)`` as each ends."""
    # Grid rows, whatever order a tiles file gave: the spans are then bands of neighbours.
    order = sorted(range(len(tiles)), key=lambda i: (tiles[i].zone, tiles[i].resolution, tiles[i].tj, tiles[i].ti))
    try:
        with span_workers(workers) as pools:
            for position, (record, names) in map_in_spans(sample_to_folder, [tiles[i] for i in order], pools, job):
                collect(order[position], record, names)
    except WorkersDied as died:
        keys = sorted(tiles[order[position]].key for position in died.in_progress)
        raise WorkerError(
            f"a worker process died (killed, perhaps by the out-of-memory killer) with tile(s)"
            f" {', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''} in progress; the tiles that"
            f" finished are in {storage.join(job.out, MANIFEST_NAME)}: run the same job again to resume"
        ) from None
