"""TFRecord shards to a `tf.data.Dataset` in one call, and predictions back to GeoTIFF.

`make_dataset` reads the shards `tfchips to-tfrecords` writes, with the shapes, dtypes,
encodings and band statistics their dataset.json records; `parse_example` is its
per-record parser, for pipelines of your own; `write_prediction` writes a predicted
array on the grid (CRS, transform) of the record it was predicted from.

Pixels are decoded in the TensorFlow graph, in parallel, for every encoding but one:
``array`` with `tf.io.decode_raw`, ``png`` with `tf.io.decode_png`, ``bytes`` of PNG and
8-bit JPEG chips with `tf.io.decode_png` / `tf.io.decode_jpeg`. ``bytes`` of GeoTIFF
(and of BMP, 12-bit JPEG, and the colour-mapped or 1/2/4-bit PNGs TensorFlow would
expand) need GDAL: rasterio decodes them inside `tf.numpy_function`, which holds
Python's GIL (so it does not run in parallel) and cannot be saved in a SavedModel or
run where Python is not. For fast input pipelines write such chips with
``--encoding array`` or ``png``.
"""

from __future__ import annotations

import functools
import glob
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from affine import Affine

from tfchips.errors import ChipError, ConfigError, RecordError
from tfchips.records.codecs import decode_payload, png_storage_dtype
from tfchips.records.dataset_info import COMPRESSIONS, DATASET_JSON, DatasetInfo
from tfchips.records.schema import LEGACY_SIDES, SCHEMA_VERSION, ChipExample, RasterSpec, feature_spec
from tfchips.records.writer import read_dataset_json
from tfchips.storage import publish

METADATA_KEYS = ("name", "key", "crs", "transform")
DEFAULT_SHUFFLE_BUFFER = 256  # records; 256 chips of 256 x 256 x 4 uint16 hold 128 MB
_SHARD_SUFFIXES = tuple(suffix for _, suffix in COMPRESSIONS.values())
_PNG_PALETTE = 3  # PNG colour type of colour-mapped images


@dataclass(frozen=True, slots=True)
class _Side:
    """What parsing one side (image or label) needs to know before it sees a record."""

    encoding: str
    format: str | None
    shape: tuple[int | None, int | None, int]
    dtype: tf.DType
    parts: tuple[int, ...]

    @classmethod
    def of(cls, spec: RasterSpec) -> _Side:
        return cls(spec.encoding, spec.format, spec.shape, tf.as_dtype(spec.dtype), spec.parts)

    @property
    def static(self) -> bool:
        return None not in self.shape


# ---------------------------------------------------------------------------
# Parsing one record
# ---------------------------------------------------------------------------


def _gdal_decode(data: bytes, shape: np.ndarray, dtype: str) -> np.ndarray:
    return decode_payload("bytes", (data,), tuple(int(n) for n in shape), dtype).astype(dtype, copy=False)


def _sniff_format(data: tf.Tensor) -> tf.Tensor:
    """``png``, ``jpeg`` or ``other`` from a file's magic number (legacy records do not say)."""
    head = tf.strings.substr(data, 0, 4)
    jpeg_or_other = tf.where(tf.equal(tf.strings.substr(head, 0, 2), b"\xff\xd8"), "jpeg", "other")
    return tf.where(tf.equal(head, b"\x89PNG"), "png", jpeg_or_other)


def _decode_file(data: tf.Tensor, fmt: tf.Tensor | None, shape: tf.Tensor, side: _Side) -> tf.Tensor:
    """Pixels of a chip file stored as ``bytes``: TensorFlow for PNG and 8-bit JPEG, GDAL for the rest.

    PNGs TensorFlow would read differently from GDAL (it expands colour-mapped ones
    to RGB, scales 1/2/4-bit ones to 0-255, adds an alpha band for transparency
    chunks), found from the PNG header or the decoded band count, go to GDAL too.
    JPEG is lossy: TensorFlow's decoder may differ from GDAL's by a few levels.
    """
    gdal = functools.partial(
        tf.numpy_function, functools.partial(_gdal_decode, dtype=side.dtype.name), [data, shape], side.dtype, False
    )

    def checked(decode: Callable[[], tf.Tensor], usable: tf.Tensor | None = None) -> Callable[[], tf.Tensor]:
        """``decode``, falling back to GDAL when ``usable`` is false or the band count is not the recorded one."""

        def via_tf() -> tf.Tensor:
            pixels = decode()
            return tf.cond(tf.equal(tf.shape(pixels)[2], shape[2]), lambda: pixels, gdal)

        return via_tf if usable is None else lambda: tf.cond(usable, via_tf, gdal)

    branches = {"png": gdal, "jpeg": gdal, "other": gdal}
    if side.dtype in (tf.uint8, tf.uint16):
        header = tf.io.decode_raw(tf.strings.substr(data, 24, 2), tf.uint8)  # IHDR bit depth, colour type
        usable = tf.logical_and(header[0] >= 8, tf.not_equal(header[1], _PNG_PALETTE))
        branches["png"] = checked(lambda: tf.io.decode_png(data, channels=0, dtype=side.dtype), usable)
    if side.dtype == tf.uint8:
        branches["jpeg"] = checked(lambda: tf.io.decode_jpeg(data, channels=0))
    if side.format is not None:
        return branches.get(side.format, gdal)()
    fmt = _sniff_format(data) if fmt is None else fmt
    index = tf.where(tf.equal(fmt, "png"), 0, tf.where(tf.equal(fmt, "jpeg"), 1, 2))
    return tf.switch_case(index, [branches["png"], branches["jpeg"], branches["other"]])


def _decode(data: tf.Tensor, shape: tf.Tensor, fmt: tf.Tensor | None, side: _Side) -> tf.Tensor:
    """(rows, cols, bands) pixels of one side of a record, in the recorded dtype.

    ``data`` holds the record's data elements, ``shape`` its (rows, cols, bands).
    """
    target = list(side.shape) if side.static else shape
    if side.encoding == "array":
        pixels = tf.reshape(tf.io.decode_raw(data[0], side.dtype, little_endian=True), target)
    elif side.encoding == "png":
        storage = tf.as_dtype(png_storage_dtype(side.dtype.name, DATASET_JSON))
        # decode_png takes channels 0 (as stored), 1, 3 or 4; two-band PNGs are read as stored.
        planes = [
            tf.ensure_shape(tf.io.decode_png(data[i], channels=0 if c == 2 else c, dtype=storage), [None, None, c])
            for i, c in enumerate(side.parts)
        ]
        pixels = planes[0] if len(planes) == 1 else tf.concat(planes, axis=2)
        pixels = pixels if storage == side.dtype else tf.bitcast(pixels, side.dtype)
    else:  # bytes: `DatasetInfo` admits the three encodings only
        pixels = _decode_file(data[0], fmt, shape, side)
    return tf.ensure_shape(pixels, side.shape)


def parse_example(serialized: tf.Tensor, schema: DatasetInfo | Mapping) -> dict[str, tf.Tensor]:
    """One serialized record (a scalar string tensor) to its pixels and georeference, in-graph.

    ``schema`` is the shards' `DatasetInfo` or dataset.json content (`read_dataset_json`).
    Returns ``image`` and ``label``, (rows, cols, bands) in their recorded dtypes,
    with static shapes where dataset.json gives them; ``name``, ``key`` and ``crs``
    (strings: chip name, DLTile key or "", ``EPSG:<code>`` / WKT or ""); ``transform``,
    six float64 in GDAL order (x origin, pixel width, row rotation, y origin, column
    rotation, pixel height; CRS units). Legacy records carry no georeference: their
    ``crs`` is "" and ``transform`` NaN. Use it in ``dataset.map``.
    """
    info = DatasetInfo.of(schema)
    if info.schema == "legacy":
        return _parse_legacy(serialized, info)
    spec = feature_spec(info)
    sides = {"image": _Side.of(info.image), "label": _Side.of(info.label)}
    keys = [*METADATA_KEYS] + [f"{name}/{field}" for name in sides for field in ("data", "shape", "format")]
    features = tf.io.parse_single_example(serialized, {key: spec[key] for key in keys})
    parsed = {
        name: _decode(
            features[f"{name}/data"], tf.cast(features[f"{name}/shape"], tf.int32), features[f"{name}/format"], side
        )
        for name, side in sides.items()
    }
    transform = tf.reshape(tf.io.decode_raw(features["transform"], tf.float64, little_endian=True), [6])
    return {**parsed, "name": features["name"], "key": features["key"], "crs": features["crs"], "transform": transform}


def _parse_legacy(serialized: tf.Tensor, info: DatasetInfo) -> dict[str, tf.Tensor]:
    """`parse_example` for the ``legacy`` schema (see `tfchips.records.schema`)."""
    features = tf.io.parse_single_example(serialized, feature_spec(info))
    parsed = {}
    for name, (data_key, prefix) in LEGACY_SIDES.items():
        side = _Side.of(info.image if name == "image" else info.label)
        bands = features["image/channels"] if name == "image" else tf.constant(side.shape[2], tf.int64)
        shape = tf.cast(tf.stack([features[f"{prefix}/height"], features[f"{prefix}/width"], bands]), tf.int32)
        data = features[data_key]
        if isinstance(data, tf.SparseTensor):
            data = tf.sparse.to_dense(data)
        if data.dtype == tf.float32:  # float payload: the pixels as float32, whatever their dtype
            pixels = tf.cast(tf.reshape(data, list(side.shape) if side.static else shape), side.dtype)
            parsed[name] = tf.ensure_shape(pixels, side.shape)
        else:
            parsed[name] = _decode(tf.reshape(data, [1]), shape, None, side)
    identifier = features["identifier"]
    # The identifier is the tile key (":" form) when the chip has one, else the chip name.
    is_key = tf.strings.regex_full_match(identifier, ".*:.*")
    return {
        **parsed,
        "name": tf.strings.regex_replace(identifier, ":", "#"),
        "key": tf.where(is_key, identifier, ""),
        "crs": tf.constant(""),
        "transform": tf.fill([6], tf.constant(np.nan, tf.float64)),
    }


# ---------------------------------------------------------------------------
# Finding shards and their description
# ---------------------------------------------------------------------------


def _is_shard(path: str) -> bool:
    return path.endswith(_SHARD_SUFFIXES)


def _compression_of(path: str) -> str:
    """TFRecordDataset compression type of a shard, from its suffix."""
    return next((kind for kind, suffix in COMPRESSIONS.values() if kind and path.endswith(suffix)), "")


def _split_files(paths: list[str], split: str | None, where: str) -> list[str]:
    if split is None:
        return paths
    chosen = [p for p in paths if os.path.basename(p).startswith(f"{split}-")]
    if not chosen:
        raise RecordError(f"{where}: no shards of split {split!r}")
    return chosen


def _first_record(paths: list[str], kinds: list[str]) -> tuple[str, bytes]:
    for path, kind in zip(paths, kinds):
        try:
            record = next(iter(tf.data.TFRecordDataset(path, kind)), None)
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
            raise RecordError(f"{path}: not a readable TFRecord file ({error.message})") from None
        if record is not None:
            return path, record.numpy()
    raise RecordError(f"{paths[0]}: no records in the shards, and no {DATASET_JSON} says what they hold")


def _describe_record(paths: list[str], kinds: list[str]) -> DatasetInfo:
    """A dataset description from the first record of the shards, for shards without dataset.json.

    Encodings, dtypes and band counts come from the record; rows and columns stay
    unknown (None), since nothing says the other chips share them.
    """
    path, record = _first_record(paths, kinds)
    features = tf.train.Example.FromString(record).features.feature
    if "identifier" in features:
        raise RecordError(
            f"{path}: legacy records do not say their dtype; they need the {DATASET_JSON} written with them"
        )
    specs = {}
    try:
        for side in ("image", "label"):
            encoding = features[f"{side}/encoding"].bytes_list.value[0].decode()
            specs[side] = {
                "encoding": encoding,
                "format": None if encoding == "bytes" else features[f"{side}/format"].bytes_list.value[0].decode(),
                "shape": [None, None, int(features[f"{side}/shape"].int64_list.value[2])],
                "dtype": features[f"{side}/dtype"].bytes_list.value[0].decode(),
                "band_names": [v.decode("utf-8") for v in features[f"{side}/band_names"].bytes_list.value],
            }
    except (IndexError, KeyError, UnicodeDecodeError) as error:
        raise RecordError(f"{path}: not a tfchips record (missing feature {error})") from None
    # Checked as a dataset.json would be: the record is as untrusted as one.
    description = {"schema": "tfchips", "schema_version": SCHEMA_VERSION, **specs, "splits": {}}
    return DatasetInfo.from_mapping(description, f"{path} record 0")


def _record_count(paths: list[str], info: DatasetInfo) -> int | None:
    """Records in ``paths`` according to dataset.json, or None where it does not list them all."""
    counts = {os.path.basename(s.file): s.records for split in info.splits for s in split.shards}
    names = [os.path.basename(p) for p in paths]
    return sum(counts[n] for n in names) if all(n in counts for n in names) else None


def find_shards(
    pattern_or_dir: str | os.PathLike | Sequence[str], split: str | None = None
) -> tuple[list[str], dict | None]:
    """The shard paths to read, and the dataset.json content that describes them (None if absent).

    ``pattern_or_dir`` is a folder written by ``tfchips to-tfrecords``, a glob pattern
    (``records/train-*``) or a list of shard paths; a dataset.json is looked for in
    the folder that holds the shards. ``split`` keeps the shards of one split.
    """
    if isinstance(pattern_or_dir, (str, os.PathLike)):
        where = os.fspath(pattern_or_dir)
        if os.path.isdir(where):
            if os.path.isfile(os.path.join(where, DATASET_JSON)):
                description = read_dataset_json(where)
                paths = DatasetInfo.of(description, os.path.join(where, DATASET_JSON)).shard_paths(where, split)
                if not paths:
                    raise RecordError(f"{where}: split {split!r} has no records" if split else f"{where}: no records")
                return paths, description
            paths = sorted(os.path.join(where, n) for n in os.listdir(where) if _is_shard(n))
        else:
            paths = sorted(p for p in glob.glob(where) if os.path.isfile(p) and os.path.basename(p) != DATASET_JSON)
    else:
        where = ", ".join(map(os.fspath, pattern_or_dir))
        paths = [os.fspath(p) for p in pattern_or_dir]
    paths = _split_files(paths, split, where)
    if not paths:
        raise RecordError(f"{where}: no TFRecord shards found")
    folders = {os.path.dirname(os.path.abspath(p)) for p in paths}
    folder = folders.pop() if len(folders) == 1 else None
    if folder is not None and os.path.isfile(os.path.join(folder, DATASET_JSON)):
        return paths, read_dataset_json(folder)
    return paths, None


# ---------------------------------------------------------------------------
# The dataset
# ---------------------------------------------------------------------------


def _band_indices(bands: Sequence[str | int] | None, names: Sequence[str]) -> list[int] | None:
    """Positions of the selected bands; None when every band is kept in order."""
    if bands is None:
        return None
    indices = []
    for band in bands:
        if isinstance(band, str):
            if band not in names:
                raise ConfigError(f"no band {band!r}; the images have {', '.join(names)}")
            indices.append(list(names).index(band))
        elif not -len(names) <= band < len(names):
            raise ConfigError(f"band index {band} out of range; the images have {len(names)} bands")
        else:
            indices.append(band % len(names))
    return None if indices == list(range(len(names))) else indices


def _band_statistics(info: DatasetInfo, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per-band (mean, std) from dataset.json, in the images' band order; std 0 counts as 1."""
    stats = info.statistics or {}
    by_name = {b.get("name"): b for b in stats.get("bands") or ()}
    means, stds = [], []
    for name in names:
        band = by_name.get(name)
        if band is None or band.get("mean") is None or band.get("std") is None:
            raise RecordError(
                f"{DATASET_JSON} has no mean and std of band {name!r}: write the records with `statistics=True`, "
                "or pass normalize=None or a function"
            )
        means.append(band["mean"])
        stds.append(band["std"] or 1.0)
    return np.asarray(means), np.asarray(stds)


def _normalizer(normalize, info: DatasetInfo, names: list[str], dtype: tf.DType) -> Callable | None:
    if normalize is None:
        return None
    if not dtype.is_floating:
        raise ConfigError(f"normalize needs a floating image dtype, not {dtype.name}")
    if callable(normalize):
        return normalize
    if normalize != "stats":
        raise ConfigError(f"unknown normalize {normalize!r}: expected None, 'stats' or a function")
    mean, std = _band_statistics(info, names)
    mean, scale = tf.constant(mean, dtype), tf.constant(1.0 / std, dtype)
    return lambda image: (image - mean) * scale


def make_dataset(
    pattern_or_dir: str | os.PathLike | Sequence[str],
    split: str | None = None,
    batch_size: int | None = None,
    shuffle: bool | int = False,
    repeat: bool | int = False,
    bands: Sequence[str | int] | None = None,
    normalize: None | str | Callable[[tf.Tensor], tf.Tensor] = None,
    with_metadata: bool = False,
    image_dtype: tf.DType | str | None = tf.float32,
    label_dtype: tf.DType | str | None = tf.int32,
    *,
    seed: int | None = None,
    drop_remainder: bool = False,
    compression: str | None = None,
    description: Mapping | None = None,
) -> tf.data.Dataset:
    """TFRecord shards to a batched, prefetched `tf.data.Dataset` of ``(image, label)``.

    ``pattern_or_dir``: a ``tfchips to-tfrecords`` folder, a glob pattern or a list of
    shards (see `find_shards`); ``split`` keeps one split (``train``, ``val``...).
    Shapes, dtypes and encodings come from dataset.json (or ``description``);
    without one they come from the first record, rows and columns left unknown.
    ``compression`` (``none``, ``gzip``, ``zlib``) overrides dataset.json and the
    file suffixes. Shards are read in parallel, interleaved; the order is fixed
    unless ``shuffle``: True (a buffer of `DEFAULT_SHUFFLE_BUFFER` records, shard
    order shuffled too) or a buffer size, reshuffled each epoch; ``seed`` makes the
    order repeatable.
    ``repeat``: True repeats forever, an integer that many times.

    ``bands`` picks image bands by name or index, in the order given. ``normalize``:
    None; ``"stats"``, (x - mean) / std per band from dataset.json's statistics; or a
    function of one (rows, cols, bands) image. Images are cast to ``image_dtype``
    and labels to ``label_dtype`` before that (None keeps the recorded dtype).

    Elements are ``(image, label)``, (rows, cols, bands) each, with a leading batch
    axis when ``batch_size`` is given; with ``with_metadata`` they are dicts that add
    ``name``, ``key``, ``crs`` and ``transform`` (see `parse_example`). The length
    (``len(dataset)``, Keras' steps per epoch) is known when dataset.json lists
    the shards read; a shard holding another number of records then fails the epoch.
    """
    paths, found = find_shards(pattern_or_dir, split)
    described = description if description is not None else found
    if compression is not None and compression not in COMPRESSIONS:
        raise ConfigError(f"unknown compression {compression!r}; expected one of {', '.join(COMPRESSIONS)}")
    where = DATASET_JSON if description is None else "description"
    info = None if described is None else DatasetInfo.of(described, where)
    if compression is None and info is not None:
        compression = info.compression
    kinds = [COMPRESSIONS[compression][0] if compression else _compression_of(p) for p in paths]
    if info is None:
        info = _describe_record(paths, kinds)
    elif batch_size is not None and None in info.image.shape[:2]:
        raise RecordError(
            f"{paths[0]}: chips differ in size ({DATASET_JSON} shape {list(info.image.shape)}), so they cannot be "
            "batched; pass batch_size=None, or batch them yourself after resizing"
        )
    names = list(info.image.band_names)
    indices = _band_indices(bands, names)
    selected = names if indices is None else [names[i] for i in indices]
    image_dtype = None if image_dtype is None else tf.as_dtype(image_dtype)
    label_dtype = None if label_dtype is None else tf.as_dtype(label_dtype)
    scale = _normalizer(normalize, info, selected, image_dtype or tf.as_dtype(info.image.dtype))

    def element(serialized: tf.Tensor):
        parsed = parse_example(serialized, info)
        image, label = parsed["image"], parsed["label"]
        if indices is not None:
            image = tf.gather(image, indices, axis=2)
        if image_dtype is not None:
            image = tf.cast(image, image_dtype)
        if scale is not None:
            image = scale(image)
        if label_dtype is not None:
            label = tf.cast(label, label_dtype)
        if with_metadata:
            return {**parsed, "image": image, "label": label}
        return image, label

    # Without a seed, shuffled records may leave the parallel stages in any order (faster).
    deterministic = not shuffle or seed is not None
    files = tf.data.Dataset.from_tensor_slices((paths, kinds))
    if shuffle:
        files = files.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    records = files.interleave(
        lambda path, kind: tf.data.TFRecordDataset(path, kind),
        cycle_length=min(len(paths), max(2, os.cpu_count() or 1)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )
    count = _record_count(paths, info)
    if count is not None:  # Keras and `len()` see the epoch's length; a shard that disagrees fails loudly
        records = records.apply(tf.data.experimental.assert_cardinality(count))
    if shuffle:
        buffer = DEFAULT_SHUFFLE_BUFFER if shuffle is True else int(shuffle)
        records = records.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        records = records.repeat(None if repeat is True else int(repeat))
    dataset = records.map(element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    if batch_size is not None:
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return dataset.prefetch(tf.data.AUTOTUNE)


# ---------------------------------------------------------------------------
# Predictions back to GeoTIFF
# ---------------------------------------------------------------------------


def _text(value) -> str:
    value = value.numpy() if isinstance(value, tf.Tensor) else value
    value = value.item() if isinstance(value, np.ndarray) else value
    return value.decode("utf-8") if isinstance(value, bytes) else str(value or "")


def _georeference(metadata: Mapping | ChipExample) -> tuple[str, Affine]:
    """(CRS, transform) of a record's metadata: a `make_dataset` / `parse_example` dict or a `ChipExample`."""
    if isinstance(metadata, ChipExample):
        crs, transform = metadata.crs or "", metadata.transform
    else:
        crs = _text(metadata["crs"])
        transform = metadata["transform"]
        if not isinstance(transform, Affine):
            values = np.asarray(transform, dtype=np.float64).ravel()
            if values.size != 6:
                raise RecordError(f"transform must be six GDAL-order numbers, got {values.size}")
            transform = None if np.isnan(values).any() else Affine.from_gdal(*values)
    if not crs or transform is None:
        raise RecordError("the record carries no CRS or transform (legacy schema?); cannot georeference a prediction")
    return crs, transform


def _smallest_dtype(array: np.ndarray, nodata: float | None) -> np.dtype:
    """The smallest of uint8, uint16, int16, int32, int64 that holds an integer array and a whole ``nodata``.

    Floats are unchanged.
    """
    if array.dtype.kind not in "biu" or array.size == 0:
        return array.dtype
    values = [int(array.min()), int(array.max())] + ([] if nodata is None else [int(nodata)])
    low, high = min(values), max(values)
    fits = (np.dtype(t) for t in ("uint8", "uint16", "int16", "int32", "int64"))
    return next((t for t in fits if np.iinfo(t).min <= low and high <= np.iinfo(t).max), array.dtype)


def write_prediction(
    path: str | os.PathLike,
    prediction,
    metadata: Mapping | ChipExample,
    nodata: float | None = None,
    band_names: Sequence[str] | None = None,
) -> str:
    """Write ``prediction`` as an LZW GeoTIFF on the grid of the record ``metadata`` describes.

    ``prediction``: (rows, cols) or (rows, cols, bands) array or tensor, e.g. the
    argmax of a model's output for one chip. ``metadata``: one element of
    ``make_dataset(..., with_metadata=True)`` (unbatched, or one row of a batch), a
    `parse_example` result, or a `ChipExample`; its CRS and transform place the
    pixels, so the file overlays the source chip exactly. When ``metadata`` holds
    the ``image``, rows and columns must match it. Integer classes are written in
    the smallest dtype that holds them and ``nodata`` (uint8 for up to 256 classes
    without nodata or with a nodata of 0 to 255). Bands are
    described by ``band_names`` (default ``prediction``, or ``prediction_<i>``).
    The file is written to a temporary name, then renamed. Returns ``path``.
    """
    from rasterio.io import MemoryFile

    path = os.fspath(path)
    array = np.asarray(prediction.numpy() if isinstance(prediction, tf.Tensor) else prediction)
    if array.ndim == 2:
        array = array[:, :, np.newaxis]
    if array.ndim != 3:
        raise ChipError(f"{path}: a prediction is (rows, cols) or (rows, cols, bands), got shape {array.shape}")
    reference = metadata.image if isinstance(metadata, ChipExample) else metadata.get("image")
    if reference is not None and tuple(reference.shape[:2]) != array.shape[:2]:
        rows, cols = reference.shape[:2]
        raise ChipError(f"{path}: prediction is {array.shape[0]} x {array.shape[1]} pixels, its chip {rows} x {cols}")
    crs, transform = _georeference(metadata)
    if nodata is not None and array.dtype.kind in "biu" and not (math.isfinite(nodata) and float(nodata).is_integer()):
        raise ChipError(f"{path}: nodata {nodata} is not a whole number, which integer predictions cannot hold")
    array = array.astype(_smallest_dtype(array, nodata), copy=False)
    bands = array.shape[2]
    if band_names is None:
        band_names = ["prediction"] if bands == 1 else [f"prediction_{i}" for i in range(1, bands + 1)]
    if len(band_names) != bands:
        raise ChipError(f"{path}: {len(band_names)} band names for {bands} bands")
    profile = dict(
        driver="GTiff", width=array.shape[1], height=array.shape[0], count=bands, dtype=array.dtype,
        crs=crs, transform=transform, nodata=nodata, compress="lzw",
    )
    with MemoryFile() as memory:
        with memory.open(**profile) as dataset:
            dataset.write(array.transpose(2, 0, 1))
            dataset.descriptions = tuple(band_names)
        publish(path, memory.read())
    return path
