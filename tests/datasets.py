"""What tests compare between two outputs of tfchips: chip folders and TFRecord datasets."""

from __future__ import annotations

import hashlib
import json
import os


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
    """The chip folder's manifest.json with its rows (``tiles``, sorted by key), without the
    parameters that name the run."""
    from tfchips.manifest import manifest_rows

    with open(os.path.join(folder, "manifest.json"), encoding="utf-8") as stream:
        content = json.load(stream)
    for name in _RUN_PARAMETERS:
        content["parameters"].pop(name, None)
    content["tiles"] = sorted(manifest_rows(folder, content), key=lambda row: row["key"])
    content.pop("rows", None)
    return content


def _dataset_json(folder: str) -> dict:
    with open(os.path.join(folder, "dataset.json"), encoding="utf-8") as stream:
        return json.load(stream)


def shard_digests(folder: str) -> dict[str, str]:
    """sha256 of every shard dataset.json lists, by file name."""
    from tfchips.records.writer import shard_paths

    return {os.path.basename(path): _sha256(path) for path in shard_paths(folder)}


def assert_same_dataset(expected: str, actual: str) -> None:
    """Two TFRecord folders hold the same dataset: every shard byte for byte, and dataset.json."""
    assert shard_digests(actual) == shard_digests(expected)
    assert _dataset_json(actual) == _dataset_json(expected)
