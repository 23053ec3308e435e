"""TFRecord shards to a `tf.data.Dataset` in one call.

`make_dataset` reads the shards `tfchips to-tfrecords` writes, with the shapes, dtypes,
encodings and band statistics their dataset.json records; `parse_example` is its
per-record parser, for pipelines of your own. `write_prediction`
(`tfchips.prediction`) writes a predicted array on the grid of its record.

Pixels are decoded in the TensorFlow graph by each side's `RasterSpec.decode_tensor`
(`tfchips.records.graph_decoder`), one parallel call per core, for every encoding but one:
``array`` with `tf.io.decode_raw`, ``png`` with `tf.io.decode_png`, ``bytes`` of PNG and
8-bit JPEG chips with `tf.io.decode_png` / `tf.io.decode_jpeg`. ``bytes`` of GeoTIFF
(and of BMP, 12-bit JPEG, and the colour-mapped or 1/2/4-bit PNGs TensorFlow would
expand) are decoded inside `tf.numpy_function`, by libtiff (which releases Python's GIL,
so it runs in parallel) or by GDAL for what libtiff would read otherwise; such a pipeline
cannot be saved in a SavedModel or run where Python is not. For input pipelines that
must, write the chips with ``--encoding array`` or ``png``.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from tfchips.errors import ConfigError, RecordError
from tfchips.prediction import write_prediction
from tfchips.processes import usable_cores
from tfchips.records.dataset_info import COMPRESSIONS, DATASET_JSON, DatasetInfo, read_dataset_info, shard_compression
from tfchips.records.schema import LEGACY_SIDES, SCHEMA_VERSION, feature_spec, record_spec
from tfchips.records.tfds_metadata import METADATA_FILES

METADATA_KEYS = ("name", "key", "crs", "transform")
DEFAULT_SHUFFLE_BUFFER = 256  # records; 256 chips of 256 x 256 x 4 uint16 hold 128 MB
__all__ = ["DEFAULT_SHUFFLE_BUFFER", "find_shards", "make_dataset", "parse_example", "write_prediction"]


# ---------------------------------------------------------------------------
# Parsing one record
# ---------------------------------------------------------------------------


def parse_example(serialized: tf.Tensor, schema: DatasetInfo | Mapping) -> dict[str, tf.Tensor]:
    """One serialized record (a scalar string tensor) to its pixels and georeference, in-graph.

    ``schema`` is the shards' `DatasetInfo` (`read_dataset_info`) or dataset.json content.
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
    sides = {"image": info.image, "label": info.label}
    keys = [*METADATA_KEYS] + [f"{name}/{field}" for name in sides for field in ("data", "shape", "format")]
    features = tf.io.parse_single_example(serialized, {key: spec[key] for key in keys})
    parsed = {
        name: side.decode_tensor(
            features[f"{name}/data"], tf.cast(features[f"{name}/shape"], tf.int32), features[f"{name}/format"]
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
        side = info.image if name == "image" else info.label
        bands = features["image/channels"] if name == "image" else tf.constant(side.shape[2], tf.int64)
        shape = tf.cast(tf.stack([features[f"{prefix}/height"], features[f"{prefix}/width"], bands]), tf.int32)
        data = features[data_key]
        if isinstance(data, tf.SparseTensor):
            data = tf.sparse.to_dense(data)
        if data.dtype == tf.float32:  # float payload: the pixels as float32, whatever their dtype
            pixels = tf.cast(tf.reshape(data, shape if None in side.shape else list(side.shape)), tf.as_dtype(side.dtype))
            parsed[name] = tf.ensure_shape(pixels, side.shape)
        else:
            parsed[name] = side.decode_tensor(tf.reshape(data, [1]), shape)
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
            spec = record_spec(features, side, f"{path}: ")
            specs[side] = {
                **spec.as_json(),
                "format": None if spec.encoding == "bytes" else spec.format,
                "shape": [None, None, spec.shape[2]],
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
) -> tuple[list[str], DatasetInfo | None]:
    """The shard paths to read, and the `DatasetInfo` of the dataset.json that describes them (None if absent).

    ``pattern_or_dir`` is a folder written by ``tfchips to-tfrecords``, a glob pattern
    (``records/train-*``) or a list of shard paths; a dataset.json is looked for in
    the folder that holds the shards. ``split`` keeps the shards of one split.
    """
    if isinstance(pattern_or_dir, (str, os.PathLike)):
        where = os.fspath(pattern_or_dir)
        if os.path.isdir(where):
            if os.path.isfile(os.path.join(where, DATASET_JSON)):
                info = read_dataset_info(where)
                paths = info.shard_paths(where, split)
                if not paths:
                    raise RecordError(f"{where}: split {split!r} has no records" if split else f"{where}: no records")
                return paths, info
            paths = sorted(os.path.join(where, n) for n in os.listdir(where) if shard_compression(n))
        else:
            paths = sorted(p for p in glob.glob(where) if os.path.isfile(p) and os.path.basename(p) not in METADATA_FILES)
    else:
        where = ", ".join(map(os.fspath, pattern_or_dir))
        paths = [os.fspath(p) for p in pattern_or_dir]
    paths = _split_files(paths, split, where)
    if not paths:
        raise RecordError(f"{where}: no TFRecord shards found")
    folders = {os.path.dirname(os.path.abspath(p)) for p in paths}
    folder = folders.pop() if len(folders) == 1 else None
    if folder is not None and os.path.isfile(os.path.join(folder, DATASET_JSON)):
        return paths, read_dataset_info(folder)
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
    description: DatasetInfo | Mapping | None = None,
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
    kinds = [COMPRESSIONS[compression or shard_compression(p) or "none"][0] for p in paths]
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
        cycle_length=min(len(paths), max(2, usable_cores())),
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
    # Decoding is CPU-bound: one call per core. AUTOTUNE at times settles on fewer (png records
    # of benchmarks/bench_parse.py: 1.5 of 2 cores and 249 images/s, against 1.9 and 324-349).
    dataset = records.map(element, num_parallel_calls=usable_cores(), deterministic=deterministic)
    if batch_size is not None:
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return dataset.prefetch(tf.data.AUTOTUNE)

