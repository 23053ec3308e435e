"""What a chip folder or a TFRecord dataset holds, and whether it is intact.

`open_dataset` recognises a path: a chip folder (``images/`` and ``labels/``), a
TFRecord folder (``dataset.json`` and its shards), or shard files (a path or a
glob pattern, checked against the ``dataset.json`` beside them). `inspect_dataset`
decodes every chip or record once and gathers counts, the storage schema, band
statistics, class pixel counts, valid-pixel fractions and an integrity check;
`sample_chips` decodes a seeded random few for previews. Pixels are (rows, cols,
bands) arrays throughout; nothing here writes files.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import json
import math
import os
import re
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from tfchips import storage
from tfchips.chips import (
    IMAGES_DIR,
    LABELS_DIR,
    MANIFEST_NAME,
    NOT_UTF8,
    ChipFolder,
    ChipPair,
    chip_key,
    find_chip_pairs,
    open_chip,
    read_manifest,
    valid_pixels,
)
from tfchips.errors import ChipError, RecordError, TfchipsError
from tfchips.records.schema import nodata_from_json, nodata_to_json
from tfchips.records.writer import COMPRESSIONS, DATASET_JSON, read_dataset_json
from tfchips.statistics import (
    ChipStatistics,
    chip_statistics,
    statistics_json,
    valid_values,
)

# Pixel values kept per band, a uniform random sample, for histograms and percentiles.
SAMPLE_SIZE = 100_000
HISTOGRAM_BINS = 50
VALID_FRACTION_BINS = 10
PERCENTILES = (2.0, 50.0, 98.0)


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
        return {
            "encoding": self.encoding,
            "format": self.format,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "band_names": list(self.band_names),
            "nodata": nodata_to_json(self.nodata),
        }


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
    dataset: dict | None
    unlisted: tuple[str, ...]

    kind = "records"

    @property
    def class_names(self) -> dict[str, str] | None:
        return (self.dataset or {}).get("class_names")


@dataclass(frozen=True, slots=True)
class Histogram:
    """Counts of values in ``len(edges) - 1`` bins; the last bin includes its upper edge."""

    edges: tuple[float, ...]
    counts: tuple[int, ...]

    def as_json(self) -> dict:
        return {"edges": list(self.edges), "counts": list(self.counts)}


@dataclass(frozen=True, slots=True)
class BandSummary:
    """Statistics of one band over valid pixels (not nodata, not NaN), in the band's units.

    ``percentiles`` (2nd, 50th, 98th) and ``histogram`` come from a uniform random
    sample of ``sample_size`` valid pixels; the others are exact.
    """

    name: str
    count: int
    mean: float | None
    std: float | None
    minimum: float | None
    maximum: float | None
    percentiles: tuple[float, ...]
    histogram: Histogram
    sample_size: int

    def as_json(self) -> dict:
        return {
            "name": self.name,
            "count": self.count,
            "mean": self.mean,
            "std": self.std,
            "min": self.minimum,
            "max": self.maximum,
            "percentiles": {f"p{p:g}": v for p, v in zip(PERCENTILES, self.percentiles)},
            "histogram": self.histogram.as_json(),
            "sample_size": self.sample_size,
        }


@dataclass(frozen=True, slots=True)
class ClassSummary:
    """Label pixels of one class value; ``frequency`` is their share of all non-ignored pixels."""

    value: str
    name: str | None
    pixels: int
    frequency: float


@dataclass(frozen=True, slots=True)
class FractionSummary:
    """Distribution over chips of the fraction of pixels valid in every band."""

    minimum: float | None
    mean: float | None
    median: float | None
    maximum: float | None
    histogram: Histogram


@dataclass(frozen=True, slots=True)
class ChipEntry:
    """One decoded chip: its name, tile key, split (records only) and valid-pixel fraction."""

    name: str
    key: str | None
    split: str | None
    valid_fraction: float


@dataclass(frozen=True, slots=True)
class ShardCheck:
    """A shard as read against dataset.json: record counts and SHA-256, found and expected.

    ``records`` counts the records read before any corruption; ``error`` says why
    reading stopped early, or that the file is missing.
    """

    file: str
    split: str
    records: int
    expected_records: int | None
    sha256: str | None
    expected_sha256: str | None
    error: str | None

    @property
    def ok(self) -> bool:
        return (
            self.error is None
            and self.expected_records == self.records
            and self.expected_sha256 is not None
            and self.expected_sha256 == self.sha256
        )


@dataclass(frozen=True)
class Inspection:
    """Everything `inspect_dataset` found; ``verified`` when there is no problem."""

    path: str
    kind: str
    counts: dict[str, int]
    splits: dict[str, int]
    schema: dict[str, tuple[tuple[RasterLayout, int], ...]]
    bands: tuple[BandSummary, ...]
    classes: tuple[ClassSummary, ...]
    ignored_pixels: int
    valid_fraction: FractionSummary
    chips: tuple[ChipEntry, ...]
    shards: tuple[ShardCheck, ...]
    problems: tuple[Problem, ...]
    class_names: dict[str, str] | None

    @property
    def verified(self) -> bool:
        return not self.problems

    def as_json(self) -> dict:
        """The ``tfchips inspect --json`` document."""
        return {
            "path": self.path,
            "kind": self.kind,
            "verified": self.verified,
            "counts": dict(self.counts),
            "splits": dict(self.splits),
            "schema": {
                side: [{**layout.as_json(), "count": count} for layout, count in layouts]
                for side, layouts in self.schema.items()
            },
            "bands": [band.as_json() for band in self.bands],
            "classes": [dataclasses.asdict(c) for c in self.classes],
            "ignored_pixels": self.ignored_pixels,
            "valid_fraction": {
                "min": self.valid_fraction.minimum,
                "mean": self.valid_fraction.mean,
                "median": self.valid_fraction.median,
                "max": self.valid_fraction.maximum,
                "histogram": self.valid_fraction.histogram.as_json(),
            },
            "shards": [{**dataclasses.asdict(s), "ok": s.ok} for s in self.shards],
            "chips": [dataclasses.asdict(c) for c in self.chips],
            "problems": [dataclasses.asdict(p) for p in self.problems],
            "class_names": self.class_names,
        }


def format_number(value: float | None) -> str:
    """A figure for people: thousands separated, one decimal from 100 on, else four significant digits."""
    if value is None:
        return "-"
    if math.isnan(value):
        return "nan"
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{value:,.0f}"
    return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.4g}"


def _problem(error: Exception, *paths: str) -> Problem:
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
    matches = [m for m in matches if os.path.basename(m) != DATASET_JSON]
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
                tiles = json.load(stream).get("tiles")
        except (OSError, ValueError, AttributeError) as error:
            raise ChipError(f"{manifest_path}: not a valid chip manifest ({error})") from None
        if isinstance(tiles, list):
            keys = frozenset(t["key"] for t in tiles if isinstance(t, dict) and t.get("status") == "written")
    return ChipSource(path, folder, read_manifest(path).class_names, keys)


def _listed_shards(folder: str, dataset: dict) -> list[ShardRef]:
    compression = dataset.get("compression", "none")
    return [
        ShardRef(os.path.join(folder, shard["file"]), split, compression, shard["records"], shard["sha256"])
        for split, info in dataset["splits"].items()
        for shard in info["shards"]
    ]


def _is_shard(name: str) -> bool:
    return any(name.endswith(suffix) for _, suffix in COMPRESSIONS.values())


def _unlisted_shard(path: str) -> ShardRef:
    """A shard dataset.json does not list: split from its name, compression from its suffix."""
    name = os.path.basename(path)
    compression = next((c for c, (_, suffix) in COMPRESSIONS.items() if suffix != ".tfrecord" and name.endswith(suffix)), "none")
    return ShardRef(path, name.split("-")[0] if "-of-" in name else "data", compression, None, None)


def _record_folder(path: str) -> RecordSource:
    dataset = read_dataset_json(path)
    listed = _listed_shards(path, dataset)
    known = {os.path.basename(s.path) for s in listed}
    unlisted = sorted(os.path.join(path, n) for n in os.listdir(path) if _is_shard(n) and n not in known)
    return RecordSource(path, tuple(listed), dataset, tuple(unlisted))


def _record_files(pattern: str, matches: list[str]) -> RecordSource:
    folders = {os.path.dirname(os.path.abspath(m)) for m in matches}
    if len(folders) != 1:
        raise RecordError(f"{pattern}: shards from {len(folders)} folders; inspect one dataset at a time")
    folder = folders.pop()
    dataset = read_dataset_json(folder) if os.path.isfile(os.path.join(folder, DATASET_JSON)) else None
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


def _nodata(spec: dict | None) -> float | None:
    return nodata_from_json((spec or {}).get("nodata"))


def decode_record(serialized: bytes, split: str, dataset: dict | None, where: str) -> DecodedChip:
    """Decode one serialized record (see `tfchips.records.schema`); errors name ``where``."""
    import tensorflow as tf
    from google.protobuf.message import DecodeError
    from rasterio.errors import RasterioError

    from tfchips.records.schema import decode_example

    try:
        example = decode_example(serialized, dataset)
        features = tf.train.Example.FromString(serialized).features.feature
    except TfchipsError as error:
        raise RecordError(f"{where}: {error}") from None
    except DecodeError as error:
        raise RecordError(f"{where}: not a tf.train.Example ({error})") from None
    except (ValueError, RasterioError, tf.errors.OpError) as error:  # payload that does not decode to its shape
        raise RecordError(f"{where}: record pixels cannot be decoded ({str(error).splitlines()[0]})") from None
    layouts = []
    for side, pixels, names in (
        ("image", example.image, example.image_band_names),
        ("label", example.label, example.label_band_names),
    ):
        spec = (dataset or {}).get(side) or {}
        if f"{side}/encoding" in features:
            encoding = features[f"{side}/encoding"].bytes_list.value[0].decode()
            form = features[f"{side}/format"].bytes_list.value[0].decode()
        else:
            encoding, form = spec.get("encoding"), spec.get("format")
        layouts.append(RasterLayout(encoding, form, tuple(pixels.shape), pixels.dtype.name, names, _nodata(spec)))
    return _decoded(example.name, example.key, split, example.image, layouts[0], example.label, layouts[1], where)


def _read_shard(shard: ShardRef) -> Iterator[bytes]:
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


def _sha256(path: str) -> str | None:
    return storage.sha256(path) if os.path.isfile(path) else None


# ---------------------------------------------------------------------------
# Figures of one chip, merged over a dataset
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChipFigures:
    """What one chip contributes to an `Inspection`.

    ``samples`` holds per band (keys, values): every valid value with a random key
    in [0, 1) seeded by the chip name, so that keeping the smallest keys over a
    dataset is a uniform sample whatever the order chips come in.
    """

    entry: ChipEntry
    layouts: tuple[RasterLayout, RasterLayout]
    statistics: ChipStatistics
    ignored_pixels: int
    samples: tuple[tuple[np.ndarray, np.ndarray], ...]


def chip_figures(chip: DecodedChip, sample_size: int = SAMPLE_SIZE) -> ChipFigures:
    """Statistics, valid fraction and pixel samples of one chip."""
    image_nodata, label_nodata = chip.image_layout.nodata, chip.label_layout.nodata
    statistics = chip_statistics(chip.image, image_nodata, chip.label[:, :, np.newaxis], label_nodata)
    rng = np.random.default_rng(zlib.crc32(chip.name.encode("utf-8")))
    samples = []
    for band in range(chip.image.shape[2]):
        values = valid_values(chip.image[:, :, band].ravel(), image_nodata)
        samples.append(_smallest(rng.random(values.size), values.astype(np.float64), sample_size))
    counted = sum(count for _, count in statistics.class_counts)
    entry = ChipEntry(chip.name, chip.key, chip.split, float(valid_pixels(np.moveaxis(chip.image, -1, 0), image_nodata).mean()))
    return ChipFigures(entry, (chip.image_layout, chip.label_layout), statistics, chip.label.size - counted, tuple(samples))


def _smallest(keys: np.ndarray, values: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    if keys.size <= size:
        return keys, values
    kept = np.argpartition(keys, size)[:size]
    return keys[kept], values[kept]


class _Sample:
    """The ``size`` values of smallest key seen so far; compacts when twice as many are held."""

    def __init__(self, size: int):
        self.size = size
        self.keys: list[np.ndarray] = []
        self.values: list[np.ndarray] = []
        self.held = 0

    def add(self, keys: np.ndarray, values: np.ndarray) -> None:
        self.keys.append(keys)
        self.values.append(values)
        self.held += keys.size
        if self.held > 2 * self.size:
            self._compact()

    def _compact(self) -> None:
        keys, values = _smallest(np.concatenate(self.keys or [np.empty(0)]), np.concatenate(self.values or [np.empty(0)]), self.size)
        self.keys, self.values, self.held = [keys], [values], keys.size

    def result(self) -> np.ndarray:
        self._compact()
        return self.values[0]


def _histogram(values: np.ndarray, low: float, high: float, bins: int) -> Histogram:
    if values.size == 0:
        return Histogram((), ())
    if low == high:
        return Histogram((low, high), (int(values.size),))
    counts, edges = np.histogram(values, bins=bins, range=(low, high))
    return Histogram(tuple(float(e) for e in edges), tuple(int(c) for c in counts))


def _band_summaries(statistics: ChipStatistics | None, band_names: tuple[str, ...], samples: list[_Sample]) -> tuple[BandSummary, ...]:
    if statistics is None:
        return ()
    summaries = []
    for band, sample in zip(statistics_json(statistics, band_names)["bands"], samples):
        values = sample.result()
        percentiles = tuple(float(v) for v in np.percentile(values, PERCENTILES)) if values.size else ()
        low, high = (band["min"], band["max"]) if band["count"] else (0.0, 0.0)
        summaries.append(
            BandSummary(
                band["name"], band["count"], band["mean"], band["std"], band["min"], band["max"],
                percentiles, _histogram(values, low, high, HISTOGRAM_BINS), int(values.size),
            )
        )
    return tuple(summaries)


def _class_summaries(statistics: ChipStatistics | None, class_names: dict[str, str] | None) -> tuple[ClassSummary, ...]:
    counts = dict(statistics.class_counts) if statistics else {}
    names = class_names or {}
    for value in names:
        counts.setdefault(value, 0)
    total = sum(counts.values())

    def order(value: str) -> tuple[float, str]:
        try:
            return (float(value), value)
        except ValueError:
            return (math.inf, value)

    return tuple(
        ClassSummary(value, names.get(value), counts[value], counts[value] / total if total else 0.0)
        for value in sorted(counts, key=order)
    )


def _fraction_summary(fractions: list[float]) -> FractionSummary:
    edges = tuple(i / VALID_FRACTION_BINS for i in range(VALID_FRACTION_BINS + 1))
    if not fractions:
        return FractionSummary(None, None, None, None, Histogram(edges, (0,) * VALID_FRACTION_BINS))
    values = np.asarray(fractions)
    counts, _ = np.histogram(values, bins=np.asarray(edges))
    return FractionSummary(
        float(values.min()), float(values.mean()), float(np.median(values)), float(values.max()),
        Histogram(edges, tuple(int(c) for c in counts)),
    )


def _layout_problems(path: str, kind: str, layouts: dict[str, collections.Counter]) -> list[Problem]:
    """Chips whose dtype or bands differ from the most common ones cannot share one dataset."""
    problems = []
    for side, counter in layouts.items():
        kinds = {(layout.dtype, layout.band_names) for layout in counter}
        if len(kinds) > 1:
            described = "; ".join(f"{dtype} {list(names)}" for dtype, names in sorted(kinds))
            problems.append(Problem(path, f"{kind} {side}s differ in dtype or bands: {described}"))
    return problems


def summarize(
    source: ChipSource | RecordSource,
    figures: Iterable[ChipFigures | Problem],
    counts: dict[str, int],
    shards: Sequence[ShardCheck] = (),
    problems: Iterable[Problem] = (),
    sample_size: int = SAMPLE_SIZE,
) -> Inspection:
    """Merge per-chip figures (in any order) and problems into an `Inspection`.

    ``shards`` is read once ``figures`` is exhausted, so a reader may fill it as it goes.
    """
    problems = list(problems)
    layouts = {"image": collections.Counter(), "label": collections.Counter()}
    statistics: ChipStatistics | None = None
    band_names: tuple[str, ...] = ()
    samples: list[_Sample] = []
    entries: list[ChipEntry] = []
    ignored = 0
    for item in figures:
        if isinstance(item, Problem):
            problems.append(item)
            continue
        layouts["image"][item.layouts[0]] += 1
        layouts["label"][item.layouts[1]] += 1
        entries.append(item.entry)
        ignored += item.ignored_pixels
        if statistics is None:
            statistics, band_names = item.statistics, item.layouts[0].band_names
            samples = [_Sample(sample_size) for _ in band_names]
        elif item.layouts[0].band_names != band_names:
            continue  # reported by _layout_problems; its bands cannot be merged with the others
        else:
            statistics = statistics.merge(item.statistics)
        for sample, (keys, values) in zip(samples, item.samples):
            sample.add(keys, values)
    problems.extend(_layout_problems(source.path, source.kind[:-1], layouts))
    splits: dict[str, int] = collections.Counter(e.split for e in entries if e.split is not None)
    for check in shards:
        splits.setdefault(check.split, 0)
    return Inspection(
        path=source.path,
        kind=source.kind,
        counts={**counts, "decoded": len(entries)},
        splits=dict(splits),
        schema={side: tuple(counter.most_common()) for side, counter in layouts.items()},
        bands=_band_summaries(statistics, band_names, samples),
        classes=_class_summaries(statistics, source.class_names),
        ignored_pixels=ignored,
        valid_fraction=_fraction_summary([e.valid_fraction for e in entries]),
        chips=tuple(sorted(entries, key=lambda e: (e.split or "", e.name))),
        shards=tuple(shards),
        problems=tuple(problems),
        class_names=source.class_names,
    )


# ---------------------------------------------------------------------------
# Inspecting
# ---------------------------------------------------------------------------


def _folder_problems(source: ChipSource) -> list[Problem]:
    problems = []
    for path in source.folder.unpaired:
        side = os.path.basename(os.path.dirname(path))
        other = LABELS_DIR if side == IMAGES_DIR else IMAGES_DIR
        problems.append(Problem(path, f"unpaired: no chip of the same name in {other}/"))
    problems += [Problem(path, NOT_UTF8) for path in source.folder.undecodable]
    if source.manifest_keys is not None:
        manifest = os.path.join(source.path, MANIFEST_NAME)
        stems = {os.path.splitext(os.path.basename(p))[0] for p in source.folder.unpaired}
        present = {p.key for p in source.folder.pairs} | {chip_key(stem) for stem in stems}
        for key in sorted(source.manifest_keys - present):
            problems.append(Problem(manifest, f"tile {key} is written according to the manifest, but its chips are missing"))
        for pair in source.folder.pairs:
            if pair.key not in source.manifest_keys:
                problems.append(Problem(pair.image_path, f"chip pair {pair.name} is not in {MANIFEST_NAME}"))
    return problems


def _folder_figures(source: ChipSource, sample_size: int) -> Iterator[ChipFigures | Problem]:
    for pair in source.folder.pairs:
        try:
            yield chip_figures(load_pair(pair), sample_size)
        except ChipError as error:
            yield _problem(error, pair.image_path, pair.label_path)


def _shard_figures(source: RecordSource, checks: list[ShardCheck], sample_size: int) -> Iterator[ChipFigures | Problem]:
    """Figures of every record; appends each shard's `ShardCheck` to ``checks`` once it is read."""
    for shard in source.shards:
        count, error = 0, None
        try:
            for serialized in _read_shard(shard):
                where = f"{shard.path} record {count}"
                count += 1
                try:
                    yield chip_figures(decode_record(serialized, shard.split, source.dataset, where), sample_size)
                except TfchipsError as decode_error:
                    yield _problem(decode_error, shard.path)
        except RecordError as read_error:
            error = str(read_error)
        checks.append(
            ShardCheck(os.path.basename(shard.path), shard.split, count, shard.records, _sha256(shard.path), shard.sha256, error)
        )


def _shard_problems(source: RecordSource, checks: Sequence[ShardCheck]) -> list[Problem]:
    problems = []
    if source.dataset is None:
        problems.append(Problem(source.path, f"no {DATASET_JSON} beside the shards: record counts and SHA-256 not verified"))
    for path in source.unlisted:
        problems.append(Problem(path, f"shard not listed in {DATASET_JSON}"))
    for shard, check in zip(source.shards, checks):  # one check per shard, in order
        path = shard.path
        if check.error is not None:
            problems.append(_problem(check.error, path))
        if check.expected_records is not None and check.records != check.expected_records:
            problems.append(Problem(path, f"{check.records} records read, {DATASET_JSON} says {check.expected_records}"))
        if check.expected_sha256 is not None and check.sha256 is not None and check.sha256 != check.expected_sha256:
            problems.append(Problem(path, f"SHA-256 {check.sha256} differs from {DATASET_JSON}'s {check.expected_sha256}"))
    if source.dataset is not None and os.path.isdir(source.path):  # the whole dataset, not a pattern
        for split, info in source.dataset["splits"].items():
            listed = sum(s["records"] for s in info["shards"])
            if info["records"] != listed:
                problems.append(
                    Problem(os.path.join(source.path, DATASET_JSON), f"split {split}: {info['records']} records, its shards list {listed}")
                )
    return problems


def inspect_dataset(path: str | os.PathLike, sample_size: int = SAMPLE_SIZE) -> Inspection:
    """Decode every chip or record under ``path`` (see `open_dataset`) and gather its figures.

    Bad files do not stop the inspection: each becomes a `Problem` naming it
    (unpaired or corrupt chips, chips the manifest does not list or misses, missing
    or corrupt shards, shards whose record count or SHA-256 differs from dataset.json).
    """
    source = open_dataset(path)
    if isinstance(source, ChipSource):
        counts = {"chips": len(source.folder.pairs), "unpaired": len(source.folder.unpaired)}
        return summarize(source, _folder_figures(source, sample_size), counts, problems=_folder_problems(source), sample_size=sample_size)
    checks: list[ShardCheck] = []
    inspection = summarize(source, _shard_figures(source, checks, sample_size), {}, checks, sample_size=sample_size)
    return dataclasses.replace(
        inspection,
        counts={"records": sum(c.records for c in checks), "shards": len(checks), **inspection.counts},
        problems=tuple(_shard_problems(source, checks)) + inspection.problems,
    )


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


def sample_chips(source: ChipSource | RecordSource, n: int, seed: int = 0) -> ChipSample:
    """Up to ``n`` chips chosen at random (seeded), and the problems met on the way.

    Chip folders decode pairs in a seeded random order until ``n`` decode; TFRecords
    keep a seeded reservoir of ``n`` records while reading every shard, then decode them.
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
                problems.append(_problem(error, pairs[index].image_path, pairs[index].label_path))
    else:
        reservoir: list[tuple[ShardRef, int, bytes]] = []
        total = 0
        for shard in source.shards:
            try:
                for index, serialized in enumerate(_read_shard(shard)):
                    total += 1
                    if len(reservoir) < n:
                        reservoir.append((shard, index, serialized))
                    elif (slot := int(rng.integers(total))) < n:
                        reservoir[slot] = (shard, index, serialized)
            except RecordError as error:
                problems.append(_problem(error, shard.path))
        for shard, index, serialized in reservoir:
            try:
                chips.append(decode_record(serialized, shard.split, source.dataset, f"{shard.path} record {index}"))
            except TfchipsError as error:
                problems.append(_problem(error, shard.path))
    chips.sort(key=lambda c: (c.split or "", c.name))
    return ChipSample(tuple(chips), total, tuple(problems), seed)
