"""The create-samples job: tiles in, chip pairs and a manifest out.

`make_sample` is the whole work for one tile (imagery, labels, checks, chips);
`create_samples` locks the folder, checks that an earlier run there used the same
pixel options (`start_job`), runs `make_sample` over many tiles in worker processes
that end with the job (`tfchips.workers`), resumes what the earlier run finished,
and writes the manifest and ESRI metadata at the end.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import os
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from tfchips import storage
from tfchips.chips import (
    MANIFEST_NAME,
    chip_pair_exists,
    chip_paths,
    read_written_pair,
    remove_partial_files,
    write_chip_pair,
)
from tfchips.errors import ChipError, ConfigError, OutputError, TfchipsError, WorkerError
from tfchips.fingerprint import check_fingerprint, job_fingerprint
from tfchips.grid import Tile, key_to_filename
from tfchips.imagery import ImageryRequest, check_bands, imagery_for_tile
from tfchips.labels import LabelRequest, load_ground_truth
from tfchips.esri import remove_esri_metadata, write_esri_metadata
from tfchips.lock import output_lock
from tfchips.manifest import ChipRecord, build_manifest, chip_record, labelled_fraction, write_manifest
from tfchips.provenance import chip_provenance, provenance_path, read_provenance, write_provenance
from tfchips.sources.base import redact_text
from tfchips.workers import process_pool

# Tiles queued per worker process.
_IN_FLIGHT_PER_WORKER = 2


@dataclass(frozen=True)
class SampleJob:
    """Everything one tile needs; plain values so that worker processes can receive it.

    ``min_valid`` and ``min_labelled`` are fractions (0-1) of the chip's pixels
    below which a tile is skipped rather than written. ``class_names`` (value -> name)
    default to the ``classes`` of ``labels``. ``provenance`` also writes, per chip, where
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
    """The outcome for one tile, and its band names.

    Chips an earlier run wrote are kept when they still fit the job (read back,
    same bands, above the thresholds); otherwise the tile is labelled, composited
    and written. A tile that ends ``skipped`` or ``failed`` loses any chips of an
    earlier run, so the folder always agrees with the manifest. A tile no scene
    covers, whose scenes the filters all remove, or with no valid pixel is
    ``skipped`` with that reason; read errors come back as a ``failed`` record: one
    bad tile never stops a job.
    """
    try:
        resumed = None if job.overwrite else _resumed(tile, job)
        record, band_names = resumed or _made(tile, job)
    except OutputError:
        raise  # a full disk or an unwritable folder stops the job, not just this tile
    except Exception as error:  # noqa: BLE001 - any error fails this tile only, with its reason
        reason = str(error) if isinstance(error, TfchipsError) else f"{type(error).__name__}: {error}"
        record, band_names = ChipRecord(tile.key, "failed", reason=redact_text(reason)), ()
    if record.status != "written":
        _remove_chips(job.out, tile.key)
    return record, band_names


def _resumed(tile: Tile, job: SampleJob) -> tuple[ChipRecord, tuple[str, ...]] | None:
    """The record of a pair an earlier run wrote, recomputed from the chips; None to make it again."""
    if not chip_pair_exists(job.out, tile.key):
        return None
    try:
        pair = read_written_pair(job.out, tile.key)
    except ChipError:
        return None  # corrupt, truncated or off its tile's grid
    if pair.band_names != job.imagery.band_names:
        return None  # made with other bands
    provenance = None
    if job.provenance:
        try:
            provenance = read_provenance(job.out, tile.key).as_json(tile.key)
        except ChipError:
            return None  # made without provenance, or its raster is damaged
    record = chip_record(
        tile.key, pair.image, pair.valid, pair.label, pair.scenes, job.labels.background, pair.label_nodata, resumed=True
    )
    record = dataclasses.replace(record, provenance=provenance)
    return _below_thresholds(record, job) or record, pair.band_names


def _made(tile: Tile, job: SampleJob) -> tuple[ChipRecord, tuple[str, ...]]:
    truth = load_ground_truth(job.labels)
    label = truth.rasterize(tile)
    # Labels are local and cheap: settle --min-labelled before any scene is read.
    labelled = labelled_fraction(label, job.labels.background, truth.nodata)
    if labelled < job.min_labelled:
        reason = f"labelled fraction {labelled:.3f} < min-labelled {job.min_labelled}"
        return ChipRecord(tile.key, "skipped", reason=reason, labelled_fraction=labelled), job.imagery.band_names
    imagery = imagery_for_tile(tile, job.imagery)
    if imagery.valid_fraction == 0.0:
        record = ChipRecord(tile.key, "skipped", reason=imagery.reason, valid_fraction=0.0)
        return record, imagery.band_names
    if not job.labels.label_without_imagery:
        label = np.where(imagery.valid, label, np.uint8(job.labels.ignore_value))
    record = chip_record(
        tile.key, imagery.data, imagery.valid, label, imagery.scenes, job.labels.background, truth.nodata
    )
    skipped = _below_thresholds(record, job)
    if skipped is not None:
        return skipped, imagery.band_names
    declared = imagery.scale_offset if any(pair != (1.0, 0.0) for pair in imagery.scale_offset) else ()
    provenance = chip_provenance(imagery) if job.provenance else None
    if provenance is not None:
        # Before the pair: a pair in place (the label last) means all of the tile's files are.
        write_provenance(job.out, tile, provenance)
    write_chip_pair(
        job.out, tile, imagery.data, imagery.nodata, imagery.band_names, label, truth.nodata, imagery.scenes,
        scale_offset=() if imagery.scaled else declared,
    )
    provenance = provenance and provenance.as_json(tile.key)
    record = dataclasses.replace(record, scale_offset=declared, scaled=imagery.scaled, provenance=provenance)
    return record, imagery.band_names


def _below_thresholds(record: ChipRecord, job: SampleJob) -> ChipRecord | None:
    """A ``skipped`` record when ``record`` falls short of --min-valid or --min-labelled."""
    if record.valid_fraction < job.min_valid:
        reason = f"valid fraction {record.valid_fraction:.3f} < min-valid {job.min_valid}"
    elif record.labelled_fraction < job.min_labelled:
        reason = f"labelled fraction {record.labelled_fraction:.3f} < min-labelled {job.min_labelled}"
    else:
        return None
    return ChipRecord(
        record.key, "skipped", reason=reason, valid_fraction=record.valid_fraction, labelled_fraction=record.labelled_fraction
    )


def _remove_chips(out: str, key: str) -> None:
    # The label goes first: an image without its label reads as unfinished, never as done.
    for path in (*reversed(chip_paths(out, key)), provenance_path(out, key)):
        if storage.exists(path):
            storage.remove(path)


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
            write_job_metadata(summary, job, parameters, unfinished)
            return summary

        workers = workers or os.cpu_count() or 1
        try:
            if workers == 1 or len(tiles) <= 1:
                for index, tile in enumerate(tiles):
                    collect(index, *make_sample(tile, job))
            else:
                _sample_in_pool(tiles, job, workers, collect)
        except WorkerError:
            finish(unfinished=len(tiles) - len(records))
            raise
        summary = finish()
    return summary


def start_job(job: SampleJob, parameters: dict, tiles: int) -> None:
    """Make ``job.out`` (locked, and created if local) ready for a job of ``tiles`` tiles, or refuse it.

    Unless ``job.overwrite``, a folder whose manifest records other pixel options
    (`tfchips.fingerprint`) is refused before anything in it changes. Temporary
    files of a killed run are removed. Unless the manifest already records this
    job's options (a resume, which keeps it until the job ends), a manifest marked
    incomplete records them before any chip is written, so that a job killed from
    here on leaves a folder the next job can check.
    """
    fingerprint = job_fingerprint(job.imagery, job.labels)
    recorded = not job.overwrite and check_fingerprint(job.out, fingerprint)
    remove_partial_files(job.out)
    if not recorded:
        started = build_manifest(
            [], parameters, job.imagery.band_names, job.class_names, job.labels.nodata, fingerprint, unfinished=tiles
        )
        write_manifest(job.out, started)


def _sample_in_pool(tiles: list[Tile], job: SampleJob, workers: int, collect: Callable) -> None:
    """`make_sample` over ``tiles`` in ``workers`` processes, ``collect(index, record, band_names)`` as each ends."""
    queued = iter(enumerate(tiles))
    with process_pool(workers) as pool:
        running: dict[concurrent.futures.Future, tuple[int, Tile]] = {}

        def submit(count: int) -> None:
            for index, tile in itertools.islice(queued, count):
                running[pool.submit(make_sample, tile, job)] = index, tile

        try:
            # A few tiles in flight per worker: the queue stays full without holding every tile's task.
            submit(_IN_FLIGHT_PER_WORKER * workers)
            while running:
                done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
                broken = False
                for future in done:
                    if isinstance(future.exception(), BrokenProcessPool):
                        broken = True
                    else:
                        index, _ = running.pop(future)
                        collect(index, *future.result())
                if broken:
                    keys = sorted(tile.key for _, tile in running.values())
                    raise WorkerError(
                        f"a worker process died (killed, perhaps by the out-of-memory killer) with tile(s)"
                        f" {', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''} in progress; the tiles that"
                        f" finished are in {storage.join(job.out, MANIFEST_NAME)}: run the same job again to resume"
                    )
                submit(len(done))
        except BaseException:
            # Without this the pool would finish every queued tile before the error surfaces.
            pool.shutdown(cancel_futures=True)
            raise


def write_job_metadata(summary: JobSummary, job: SampleJob, parameters: dict, unfinished: int | None = None) -> None:
    """The manifest and ESRI metadata of a job, in ``job.out``; ``unfinished`` tiles mark it incomplete."""
    fingerprint = job_fingerprint(job.imagery, job.labels)
    records, labels = list(summary.records), job.labels
    manifest = build_manifest(
        records, parameters, summary.band_names, job.class_names, labels.nodata, fingerprint, unfinished
    )
    write_manifest(job.out, manifest)
    written = sorted(r.key for r in summary.records if r.status == "written")
    if written and unfinished is None:
        first = Tile.from_key(written[0])
        names = [key_to_filename(key) + ".tif" for key in written]
        write_esri_metadata(job.out, manifest, first.size, first.resolution, first.crs, names)
    else:
        remove_esri_metadata(job.out)
