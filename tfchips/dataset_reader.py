"""Chip folders and TFRecord datasets opened and decoded, for inspect, preview and report.

`open_dataset` recognises a path: a chip folder (``images/`` and ``labels/``), a
TFRecord folder (``dataset.json`` and its shards), or shard files (a path or a
glob pattern, checked against the ``dataset.json`` beside them). `load_pair` and
`decode_record` decode one chip pair or record; `sample_chips` decodes a seeded
random few for previews. Pixels are (rows, cols, bands) arrays throughout;
nothing here writes files.
"""

from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from tfchips import storage
from tfchips.chips import (
    IMAGES_DIR,
    LABELS_DIR,
    MANIFEST_NAME,
    ChipFolder,
    ChipPair,
    find_chip_pairs,
    open_chip,
    read_manifest,
)
from tfchips.errors import ChipError, RecordError, TfchipsError
from tfchips.figures import format_number
from tfchips.manifest import manifest_rows
from tfchips.records.dataset_info import COMPRESSIONS, DATASET_JSON, DatasetInfo, read_dataset_info, shard_compression
from tfchips.records.raster_spec import raster_json
from tfchips.records.schema import decode_example
from tfchips.records.tfds_metadata import METADATA_FILES


@dataclass(frozen=True, slots=True)
class Problem:
    """Something that failed verification, and the file it concerns."""

    path: str
    message: str


@dataclass(frozen=True, slots=True)
class RasterLayout:
    """How one side (image or label) of a chip is stored: an entry of the schema.

    ``encoding`` is the record encoding (``bytes``, ``png``, ``array``), None for chip
    files; ``format`` the GDAL driver of a chip file (``GTiff``) or the record's format
    (``tiff``, ``png``, ``raw``); ``shape`` is (rows, cols, bands).
    """

    encoding: str | None
    format: str | None
    shape: tuple[int, int, int]
    dtype: str
    band_names: tuple[str, ...]
    nodata: float | None

    def describe(self) -> str:
        """``64 x 64 x 4 uint16 GTiff, bands blue, green, red, nir, nodata 0``."""
        rows, cols, bands = self.shape
        stored = " ".join(part for part in (self.encoding, self.format) if part)
        nodata = "none" if self.nodata is None else format_number(self.nodata)
        return f"{rows} x {cols} x {bands} {self.dtype} {stored}, bands {', '.join(self.band_names)}, nodata {nodata}"

    def as_json(self) -> dict:
        return raster_json(self.encoding, self.format, self.shape, self.dtype, self.band_names, self.nodata)


@dataclass(frozen=True, slots=True)
class DecodedChip:
    """A chip pair (from a folder or a record) with its pixels: image (rows, cols, bands), label (rows, cols)."""

    name: str
    key: str | None
    split: str | None
    image: np.ndarray
    label: np.ndarray
    image_layout: RasterLayout
    label_layout: RasterLayout


# A front end's progress display: ``on_progress(step, unit, done, total)`` after each chip or
# record a step (``"inspect"``, ``"preview"``) has read; ``total`` is None where it is unknown.
OnProgress = Callable[[str, str, int, "int | None"], None]


def no_progress(step: str, unit: str, done: int, total: int | None) -> None:
    """The `OnProgress` of library calls: nothing is shown."""


@dataclass(frozen=True, slots=True)
class ShardRef:
    """A shard to read, and what dataset.json says about it (None where it says nothing)."""

    path: str
    split: str
    compression: str
    records: int | None
    sha256: str | None


@dataclass(frozen=True)
class ChipSource:
    """A chip folder: its pairs, unpaired files and what its manifest declares."""

    path: str
    folder: ChipFolder
    class_names: dict[str, str] | None
    manifest_keys: frozenset[str] | None

    kind = "chips"


@dataclass(frozen=True)
class RecordSource:
    """TFRecord shards and the dataset.json that describes them (None if there is none)."""

    path: str
    shards: tuple[ShardRef, ...]
    dataset: DatasetInfo | None
    unlisted: tuple[str, ...]

    kind = "records"

    @property
    def class_names(self) -> dict[str, str] | None:
        names = self.dataset.class_names if self.dataset is not None else None
        return None if names is None else dict(names)

    @property
    def listed_records(self) -> int | None:
        """The records dataset.json lists for these shards; None unless it lists every one."""
        counts = [shard.records for shard in self.shards]
        return None if None in counts else sum(counts)


def problem_of(error: Exception, *paths: str) -> Problem:
    """A problem about the first of ``paths`` (or the first the message begins with), without repeating it."""
    message = str(error)
    for path in paths:
        if message.startswith(path):
            return Problem(path, message[len(path):].lstrip(": "))
    return Problem(paths[0], message)


# ---------------------------------------------------------------------------
# Opening a path
# ---------------------------------------------------------------------------


def open_dataset(path: str | os.PathLike) -> ChipSource | RecordSource:
    """The chip folder, TFRecord folder or shard files (path or glob pattern) at ``path``.

    Raises `ChipError` when ``path`` is none of these.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        if os.path.isdir(os.path.join(path, IMAGES_DIR)) or os.path.isdir(os.path.join(path, LABELS_DIR)):
            return _chip_source(path)
        if os.path.isfile(os.path.join(path, DATASET_JSON)):
            return _record_folder(path)
        raise ChipError(
            f"{path}: neither a chip folder ({IMAGES_DIR}/ and {LABELS_DIR}/) nor a TFRecord folder ({DATASET_JSON})"
        )
    matches = sorted(glob.glob(path)) if glob.has_magic(path) else [path] if os.path.isfile(path) else []
    matches = [m for m in matches if os.path.basename(m) not in METADATA_FILES]
    if not matches:
        raise ChipError(f"{path}: no such chip folder, TFRecord folder or shard file")
    return _record_files(path, matches)


def _chip_source(path: str) -> ChipSource:
    folder = find_chip_pairs(path)
    manifest_path = os.path.join(path, MANIFEST_NAME)
    keys = None
    if os.path.isfile(manifest_path):
        try:
            with open(manifest_path, encoding="utf-8") as stream:
                manifest = json.load(stream)
            # Manifests list rows inline ("tiles") or beside them ("rows"); others list no tiles.
            if isinstance(manifest.get("tiles"), list) or "rows" in manifest:
                tiles = list(manifest_rows(path, manifest))
                keys = frozenset(t["key"] for t in tiles if isinstance(t, dict) and t.get("status") == "written")
        except (OSError, ValueError, AttributeError) as error:
            raise ChipError(f"{manifest_path}: not a valid chip manifest ({error})") from None
    return ChipSource(path, folder, read_manifest(path).class_names, keys)


def _listed_shards(folder: str, dataset: DatasetInfo) -> list[ShardRef]:
    shards = [(split.name, shard) for split in dataset.splits for shard in split.shards]
    return [
        ShardRef(path, split, dataset.compression, shard.records, shard.sha256)
        for path, (split, shard) in zip(dataset.shard_paths(folder), shards)
    ]


def _unlisted_shard(path: str) -> ShardRef:
    """A shard dataset.json does not list: split from its name, compression from its suffix."""
    name = os.path.basename(path)
    compression = shard_compression(name) or "none"
    return ShardRef(path, name.split("-")[0] if "-of-" in name else "data", compression, None, None)


def _record_folder(path: str) -> RecordSource:
    dataset = read_dataset_info(path)
    listed = _listed_shards(path, dataset)
    known = {os.path.basename(s.path) for s in listed}
    unlisted = sorted(os.path.join(path, n) for n in os.listdir(path) if shard_compression(n) and n not in known)
    return RecordSource(path, tuple(listed), dataset, tuple(unlisted))


def _record_files(pattern: str, matches: list[str]) -> RecordSource:
    folders = {os.path.dirname(os.path.abspath(m)) for m in matches}
    if len(folders) != 1:
        raise RecordError(f"{pattern}: shards from {len(folders)} folders; inspect one dataset at a time")
    folder = folders.pop()
    dataset = read_dataset_info(folder) if os.path.isfile(os.path.join(folder, DATASET_JSON)) else None
    listed = {os.path.basename(s.path): s for s in _listed_shards(folder, dataset)} if dataset else {}
    shards = [listed.get(os.path.basename(m)) or _unlisted_shard(m) for m in matches]
    unlisted = tuple(m for m in matches if os.path.basename(m) not in listed) if dataset else ()
    return RecordSource(pattern, tuple(shards), dataset, unlisted)


# ---------------------------------------------------------------------------
# Decoding chips and records
# ---------------------------------------------------------------------------


def _load_side(path: str) -> tuple[np.ndarray, RasterLayout]:
    with open_chip(path) as (header, read_pixels):
        pixels = read_pixels()
    reference = header.georeference
    return pixels, RasterLayout(None, header.format, header.shape, header.dtype, reference.band_names, reference.nodata)


def _decoded(name, key, split, image, image_layout, label, label_layout, where: str) -> DecodedChip:
    if label.shape[2] != 1:
        raise ChipError(f"{where}: label has {label.shape[2]} bands, not 1")
    if label.shape[:2] != image.shape[:2]:
        raise ChipError(
            f"{where}: label is {label.shape[0]} x {label.shape[1]} pixels, its image {image.shape[0]} x {image.shape[1]}"
        )
    return DecodedChip(name, key, split, image, label[:, :, 0], image_layout, label_layout)


def load_pair(pair: ChipPair) -> DecodedChip:
    """Decode a chip pair of a folder (GDAL); `ChipError` names a corrupt or mismatched file."""
    image, image_layout = _load_side(pair.image_path)
    label, label_layout = _load_side(pair.label_path)
    return _decoded(pair.name, pair.key, None, image, image_layout, label, label_layout, pair.label_path)


def decode_record(serialized: bytes, split: str, dataset: DatasetInfo | None, where: str) -> DecodedChip:
    """Decode one serialized record (`tfchips.records.schema.decode_example`); errors name ``where``."""
    try:
        example = decode_example(serialized, dataset)
    except TfchipsError as error:
        raise RecordError(f"{where}: {error}") from None
    nodata = (None, None) if dataset is None else (dataset.image.nodata, dataset.label.nodata)
    image_layout = RasterLayout(
        example.image_encoding, example.image_format, example.image.shape, example.image.dtype.name,
        example.image_band_names, nodata[0],
    )
    label_layout = RasterLayout(
        example.label_encoding, example.label_format, example.label.shape, example.label.dtype.name,
        example.label_band_names, nodata[1],
    )
    return _decoded(example.name, example.key, split, example.image, image_layout, example.label, label_layout, where)


def read_shard(shard: ShardRef) -> Iterator[bytes]:
    """The serialized records of a shard; `RecordError` where the file is missing or corrupt."""
    import tensorflow as tf

    if not os.path.isfile(shard.path):
        raise RecordError(f"{shard.path}: shard missing")
    records = iter(tf.data.TFRecordDataset(shard.path, compression_type=COMPRESSIONS[shard.compression][0]))
    count = 0
    while True:
        try:
            record = next(records)
        except StopIteration:
            return
        except tf.errors.OpError as error:
            # TensorFlow wraps the reason ("corrupted record at 12") in op names.
            reason = re.sub(r"\{\{.*?\}\}\s*|\s*\[Op:.*", "", error.message.splitlines()[0], flags=re.DOTALL)
            raise RecordError(f"{shard.path}: corrupt shard after {count} good records ({reason})") from None
        count += 1
        yield record.numpy()


def shard_sha256(path: str) -> str | None:
    return storage.sha256(path) if os.path.isfile(path) else None


# ---------------------------------------------------------------------------
# Sampling chips for previews
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ChipSample:
    """Chips chosen for a preview, sorted by split and name; ``total`` is how many there were to choose from."""

    chips: tuple[DecodedChip, ...]
    total: int
    problems: tuple[Problem, ...]
    seed: int = 0


def sample_chips(
    source: ChipSource | RecordSource, n: int, seed: int = 0, on_progress: OnProgress = no_progress
) -> ChipSample:
    """Up to ``n`` chips chosen at random (seeded), and the problems met on the way.

    Chip folders decode pairs in a seeded random order until ``n`` decode; TFRecords
    keep a seeded reservoir of ``n`` records while reading every shard, then decode them.
    ``on_progress`` hears of each record read (step ``"preview"``).
    """
    rng = np.random.default_rng(seed)
    chips: list[DecodedChip] = []
    problems: list[Problem] = []
    if isinstance(source, ChipSource):
        pairs = source.folder.pairs
        total = len(pairs)
        for index in rng.permutation(total):
            if len(chips) == n:
                break
            try:
                chips.append(load_pair(pairs[index]))
            except ChipError as error:
                problems.append(problem_of(error, pairs[index].image_path, pairs[index].label_path))
    else:
        reservoir: list[tuple[ShardRef, int, bytes]] = []
        total = 0
        on_progress("preview", "record", total, source.listed_records)  # before TensorFlow is imported
        for shard in source.shards:
            try:
                for index, serialized in enumerate(read_shard(shard)):
                    total += 1
                    on_progress("preview", "record", total, source.listed_records)
                    if len(reservoir) < n:
                        reservoir.append((shard, index, serialized))
                    elif (slot := int(rng.integers(total))) < n:
                        reservoir[slot] = (shard, index, serialized)
            except RecordError as error:
                problems.append(problem_of(error, shard.path))
        for shard, index, serialized in reservoir:
            try:
                chips.append(decode_record(serialized, shard.split, source.dataset, f"{shard.path} record {index}"))
            except TfchipsError as error:
                problems.append(problem_of(error, shard.path))
    chips.sort(key=lambda c: (c.split or "", c.name))
    return ChipSample(tuple(chips), total, tuple(problems), seed)
