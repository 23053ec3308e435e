"""What tests compare between two outputs of tfchips: chip folders and TFRecord datasets."""

from __future__ import annotations

import collections
import hashlib
import json
import os

import numpy as np
import pytest

# Until the `shards` branch lands, Beam's sink chooses which shard holds a record and in what
# order, and dataset.json differs in the fields `_AGREED_FIELDS`' comment names. After that merge
# the lead sets this to True: shards then compare byte for byte and dataset.json whole.
BYTE_IDENTICAL_SHARDS = False

# dataset.json fields every pipeline writes as `tfchips to-tfrecords` does today. The rest,
# until `BYTE_IDENTICAL_SHARDS`: ``statistics`` (Beam merges moments in its own order: equal up
# to rounding, compared so), ``splits`` (their record counts compared; shard files' digests differ
# as Beam's sink places records), and the tiles-to-records pipeline's ``statistics_source`` and
# missing ``class_frequencies``.
_AGREED_FIELDS = ("schema", "image", "label", "features", "class_names", "compression")

# Manifest parameters that name the run, not the job: where it wrote and how many local workers.
_RUN_PARAMETERS = ("out", "workers")


def _files(folder: str, sub: str) -> dict[str, str]:
    path = os.path.join(folder, sub)
    return {f"{sub}/{name}": _sha256(os.path.join(path, name)) for name in sorted(os.listdir(path))}


def _sha256(path: str) -> str:
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def assert_same_chips(expected: str, actual: str) -> None:
    """The chip files (GeoTIFF pairs and ESRI's label views) of two chip folders are byte-identical."""
    for sub in ("images", "labels"):
        got, want = _files(actual, sub), _files(expected, sub)
        assert sorted(got) == sorted(want)
        assert got == want


def manifest(folder: str) -> dict:
    """The chip folder's manifest.json, without the parameters that name the run."""
    with open(os.path.join(folder, "manifest.json"), encoding="utf-8") as stream:
        content = json.load(stream)
    for name in _RUN_PARAMETERS:
        content["parameters"].pop(name, None)
    return content


def _dataset_json(folder: str) -> dict:
    with open(os.path.join(folder, "dataset.json"), encoding="utf-8") as stream:
        return json.load(stream)


def _canonical(example) -> tuple:
    """A decoded record as a hashable value: pixels with their dtype and shape, and where they lie."""
    image, label = np.ascontiguousarray(example.image), np.ascontiguousarray(example.label)
    return (example.key, image.dtype.str, image.shape, image.tobytes(), label.dtype.str, label.shape,
            label.tobytes(), example.crs, tuple(example.transform or ()))


def records_per_split(folder: str) -> dict[str, collections.Counter]:
    """Every split's decoded records, as a multiset of `_canonical` values."""
    import tensorflow as tf

    from tfchips.records import decode_example
    from tfchips.records.writer import shard_paths

    description = _dataset_json(folder)
    found = {}
    for split in description["splits"]:
        records = collections.Counter()
        for path in shard_paths(folder, split):
            compression = "GZIP" if description.get("compression") == "gzip" else ""
            for serialized in tf.data.TFRecordDataset(path, compression_type=compression):
                records[_canonical(decode_example(serialized.numpy(), description))] += 1
        found[split] = records
    return found


def shard_digests(folder: str) -> dict[str, str]:
    """sha256 of every shard dataset.json lists, by file name."""
    from tfchips.records.writer import shard_paths

    return {os.path.basename(path): _sha256(path) for path in shard_paths(folder)}


def assert_same_dataset(expected: str, actual: str) -> None:
    """Two TFRecord folders hold the same dataset: records per split and dataset.json.

    Today: each split's decoded records as multisets, its record count, and `_AGREED_FIELDS`;
    statistics equal up to rounding. With `BYTE_IDENTICAL_SHARDS`: shards byte for byte and
    dataset.json whole.
    """
    want, got = _dataset_json(expected), _dataset_json(actual)
    if BYTE_IDENTICAL_SHARDS:
        assert shard_digests(actual) == shard_digests(expected)
        assert got == want
        return
    assert records_per_split(actual) == records_per_split(expected)
    assert list(got["splits"]) == list(want["splits"])
    for split, info in want["splits"].items():
        assert got["splits"][split]["records"] == info["records"]
    for field in _AGREED_FIELDS:
        assert got.get(field) == want.get(field), field
    bands = [b["name"] for b in got["statistics"]["bands"]]
    assert bands == [b["name"] for b in want["statistics"]["bands"]]
    for band, wanted in zip(got["statistics"]["bands"], want["statistics"]["bands"]):
        for name, value in wanted.items():
            if isinstance(value, float):
                assert band[name] == pytest.approx(value, rel=1e-9), (band["name"], name)
