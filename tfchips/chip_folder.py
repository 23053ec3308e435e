"""The chip-folder sink: a `tfchips.samples.Sample` to ``images/KEY.tif`` and ``labels/KEY.tif``.

The local job (`tfchips.samples.create_samples`) and the Beam chip-folder pipeline both
write through here: GeoTIFF pairs published under a temporary name then renamed, the
label last, so that a pair counts as done once its label exists; chips of a tile that
ends skipped or failed removed, so that the folder agrees with the manifest; an earlier
run's pairs read back to resume; the manifest and ESRI metadata at the end. Paths may be
local or any URL Beam's FileSystems writes. Reading chip folders is `tfchips.chips`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tfchips import storage
from tfchips.chips import IMAGES_DIR, LABELS_DIR, PROVENANCE_DIR, band_names, valid_pixels
from tfchips.errors import ChipError
from tfchips.esri import remove_esri_metadata, write_esri_metadata
from tfchips.fingerprint import check_fingerprint, job_fingerprint
from tfchips.grid import Tile, key_to_filename
from tfchips.manifest import (
    ChipRecord,
    ManifestSummary,
    build_manifest,
    chip_record,
    manifest_rows,
    summarize,
    write_manifest,
    write_rows,
)
from tfchips.provenance import provenance_path, read_provenance, write_provenance
from tfchips.tile_geotiff import SCENES_TAG, encode_geotiff, open_written_chip

if TYPE_CHECKING:
    from tfchips.samples import Sample, SampleJob

def chip_paths(out: str, key: str) -> tuple[str, str]:
    """(image, label) GeoTIFF paths of a tile key under ``out`` (a folder or URL)."""
    name = key_to_filename(key) + ".tif"
    return storage.join(out, IMAGES_DIR, name), storage.join(out, LABELS_DIR, name)


def chip_pair_exists(out: str, key: str) -> bool:
    """True when both chips of ``key`` are in place (each is published only once complete)."""
    return all(storage.exists(path) for path in chip_paths(out, key))


def remove_partial_files(out: str) -> int:
    """Delete temporary chips and metadata files left by a killed run; returns how many."""
    folders = (out, *(storage.join(out, name) for name in (IMAGES_DIR, LABELS_DIR, PROVENANCE_DIR)))
    return sum(storage.remove_partial_files(folder) for folder in folders)


def chip_geotiffs(
    tile: Tile,
    image: np.ndarray,
    image_nodata: int | float | None,
    band_names: tuple[str, ...],
    label: np.ndarray,
    label_nodata: int | None,
    scenes: tuple[str, ...],
    scale_offset: tuple[tuple[float, float], ...] = (),
) -> tuple[bytes, bytes]:
    """The (image, label) GeoTIFF bytes of a chip pair: image (bands, rows, cols), label (rows, cols).

    ``scale_offset`` (one pair per band) goes into the image for values stored unscaled;
    ``scenes`` into its `SCENES_TAG`.
    """
    image_bytes = encode_geotiff(image, tile, image_nodata, band_names, {SCENES_TAG: ",".join(scenes)}, scale_offset)
    return image_bytes, encode_geotiff(label[np.newaxis], tile, label_nodata, ("label",))


def write_chip_pair(out: str, tile: Tile, *pair, **options) -> None:
    """Publish images/KEY.tif then labels/KEY.tif of `chip_geotiffs` (same arguments after ``tile``);
    the pair counts as done once the label exists."""
    image_path, label_path = chip_paths(out, tile.key)
    image_bytes, label_bytes = chip_geotiffs(tile, *pair, **options)
    storage.publish(image_path, image_bytes)
    storage.publish(label_path, label_bytes)


@dataclass(frozen=True)
class WrittenPair:
    """A chip pair read back: image (bands, rows, cols), valid and label (rows, cols)."""

    image: np.ndarray
    valid: np.ndarray
    label: np.ndarray
    label_nodata: int | None
    band_names: tuple[str, ...]
    scenes: tuple[str, ...]


def read_written_pair(out: str, key: str) -> WrittenPair:
    """Read back a pair written by `write_chip_pair` (to resume a job).

    Raises `ChipError` naming the file when a chip cannot be decoded or is not on
    the grid of ``key`` (size, transform or CRS differ).
    """
    image_path, label_path = chip_paths(out, key)
    tile = Tile.from_key(key)
    with open_written_chip(image_path, tile) as dataset:
        image = dataset.read()
        nodata = dataset.nodata
        names = band_names(dataset.descriptions)
        scenes = tuple(s for s in dataset.tags().get(SCENES_TAG, "").split(",") if s)
    with open_written_chip(label_path, tile) as dataset:
        label = dataset.read(1)
        label_nodata = None if dataset.nodata is None else int(dataset.nodata)
    return WrittenPair(image, valid_pixels(image, nodata), label, label_nodata, names, scenes)


def sample_geotiffs(sample: Sample) -> tuple[bytes, bytes]:
    """The (image, label) GeoTIFF bytes of a written ``sample``, as the chip folder holds them.

    The one encoding of a sample's chips: the Beam pipeline's ``bytes`` records carry
    these same bytes, so they equal what ``to-tfrecords`` makes of the chip folder.
    """
    return chip_geotiffs(sample.tile, *_pair_arguments(sample))


def _pair_arguments(sample: Sample) -> tuple:
    return (
        sample.image, sample.image_nodata, sample.band_names, sample.label, sample.label_nodata,
        sample.record.scenes, sample.stored_scale_offset,
    )


def write_sample(out: str, sample: Sample) -> tuple[ChipRecord, tuple[str, ...]]:
    """Publish the chip pair of a written ``sample`` in ``out``; for a skipped or failed one,
    remove any pair an earlier run left. Returns the sample's record and band names.

    Raises:
        OutputError: ``out`` cannot be written (a full disk stops the job, not one tile).
    """
    if sample.record.status == "written":
        if sample.provenance is not None:
            # Before the pair: a pair in place (the label last) means all of the tile's files are.
            write_provenance(out, sample.tile, sample.provenance)
        write_chip_pair(out, sample.tile, *_pair_arguments(sample))
    else:
        remove_chips(out, sample.tile.key)
    return sample.record, sample.band_names


def remove_chips(out: str, key: str) -> None:
    """Remove the pair of ``key`` from ``out``, if any."""
    # The label goes first: an image without its label reads as unfinished, never as done.
    for path in (*reversed(chip_paths(out, key)), provenance_path(out, key)):
        if storage.exists(path):
            storage.remove(path)


def resumed_record(tile: Tile, job: SampleJob) -> tuple[ChipRecord, tuple[str, ...]] | None:
    """The record and band names of a pair an earlier run wrote in ``job.out``, recomputed
    from the chips; None to make the tile again. A pair now below the job's thresholds is
    removed and its tile ``skipped``."""
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
    skipped = job.below_thresholds(record)
    if skipped is not None:
        remove_chips(job.out, tile.key)  # the folder agrees with the manifest
    return skipped or record, pair.band_names


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


def write_job_metadata(
    records: list[ChipRecord],
    band_names: tuple[str, ...],
    job: SampleJob,
    parameters: dict,
    unfinished: int | None = None,
) -> dict:
    """Write the rows, manifest and ESRI metadata of a job of ``records`` in ``job.out`` and return
    the manifest; ``unfinished`` tiles mark it incomplete (and leave ESRI metadata out)."""
    write_rows(job.out, records)
    return finish_job(summarize(records), band_names, job, parameters, unfinished)


def finish_job(
    summary: ManifestSummary,
    band_names: tuple[str, ...],
    job: SampleJob,
    parameters: dict,
    unfinished: int | None = None,
) -> dict:
    """Write the manifest of ``summary`` and the ESRI metadata in ``job.out``, whose rows files
    are written (`write_rows`, or Beam's shards), and return the manifest.

    ESRI's ``map.txt`` lists every written chip: the rows are read back for it, one at a time,
    keeping each written chip's name and class counts.
    """
    fingerprint = job_fingerprint(job.imagery, job.labels)
    manifest = build_manifest(
        summary, parameters, band_names, job.class_names, job.labels.nodata, fingerprint, unfinished
    )
    write_manifest(job.out, manifest)
    if summary.counts["written"] and unfinished is None:
        rows = manifest_rows(job.out, manifest)
        first = Tile.from_key(next(r["key"] for r in manifest_rows(job.out, manifest) if r["status"] == "written"))
        write_esri_metadata(job.out, manifest, rows, first.size, first.resolution, first.crs)
    else:
        remove_esri_metadata(job.out)
    return manifest
