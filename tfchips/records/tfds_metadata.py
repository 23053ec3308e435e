"""TensorFlow Datasets' description of a TFRecord folder: ``dataset_info.json`` and ``features.json``.

Written beside dataset.json, they let ``tfds.builder_from_directory(out)`` read the
shards as they are, without a builder of tfchips' own::

    builder = tfds.builder_from_directory("records")
    for element in builder.as_dataset(split="train"):
        element["image"]["data"], element["label"]["data"], element["name"], element["transform"]

TFDS nests the record's ``image/data`` key as ``element["image"]["data"]``: the
pixels `tfchips.parse_example` gives, (rows, cols, bands) in the recorded dtype.
Not every dataset fits TFDS's feature classes; `tfds_unreadable` says why one
does not, and then no TFDS files are written (stale ones are removed):

- ``array`` maps to ``tfds.features.Tensor(encoding="bytes")``, which needs every
  chip's rows and columns (TFDS keeps varying shapes under keys of its own) and
  decodes no ``uint32``;
- ``png`` maps to ``tfds.features.Image``, which decodes one PNG of 1, 3 or 4
  bands of ``uint8`` or ``uint16``: not the several PNGs of more than 4 bands,
  2-band PNGs, or the ``int8``/``int16`` pixels tfchips stores bit for bit;
- ``bytes`` chips (GeoTIFF needs GDAL), the ``legacy`` schema (no dtype in the
  record) and compressed shards (TFDS reads plain TFRecord files) are left out.

These limits are why tfchips' `RasterSpec`, not TFDS's classes, defines the records.
"""

from __future__ import annotations

import json
import os

from tfchips import storage
from tfchips.records.dataset_info import DATASET_JSON, DatasetInfo
from tfchips.records.raster_spec import RasterSpec
from tfchips.records.schema import SCHEMA_VERSION

DATASET_INFO_JSON = "dataset_info.json"
FEATURES_JSON = "features.json"
# Every file of a TFRecord folder that is not a shard (a glob such as ``records/*`` leaves them out).
METADATA_FILES = (DATASET_JSON, DATASET_INFO_JSON, FEATURES_JSON)
TFDS_NAME = "tfchips"
# TFDS expands {SHARD_X_OF_Y} to 00000-of-00016: the writer's shard names (`shard_file_name`).
FILEPATH_TEMPLATE = "{SPLIT}-{SHARD_X_OF_Y}.tfrecord"
_TFDS_PNG_CHANNELS = (1, 3, 4)  # tf.image.decode_image takes no 2
_TFDS_PNG_DTYPES = ("uint8", "uint16")
_FEATURES = "tensorflow_datasets.core.features."


def _class(name: str, kind: str, content: dict) -> dict:
    return {"pythonClassName": _FEATURES + name, kind: content}


def _dimensions(shape) -> dict:
    return {"dimensions": ["-1" if n is None else str(n) for n in shape]}


def _side_unreadable(side: str, spec: RasterSpec) -> str | None:
    if spec.encoding == "bytes":
        return f"{side}: bytes chips are decoded by tfchips (GDAL or format sniffing), not by a TFDS feature"
    if spec.encoding == "array" and spec.dtype == "uint32":
        return f"{side}: TFDS's Tensor decodes no uint32 (tf.io.decode_raw has none)"
    if spec.encoding == "array" and None in spec.shape:
        return f"{side}: arrays of varying rows and columns ({list(spec.shape)}) need TFDS's own shape key"
    if spec.encoding == "png":
        if spec.dtype not in _TFDS_PNG_DTYPES:
            return f"{side}: TFDS images are uint8 or uint16, not {spec.dtype} stored in PNG bit for bit"
        if len(spec.parts) > 1 or spec.shape[2] not in _TFDS_PNG_CHANNELS:
            return f"{side}: TFDS images are one PNG of 1, 3 or 4 bands, not {spec.shape[2]}"
    return None


def _shard_names_unreadable(info: DatasetInfo) -> str | None:
    for split in info.splits:
        count = len(split.shards)
        for index, shard in enumerate(split.shards):
            expected = f"{split.name}-{index:05d}-of-{count:05d}.tfrecord"
            if shard.file != expected:
                return f"shard {shard.file!r} is not named {expected!r}, as TFDS's file template expects"
    return None


def tfds_unreadable(info: DatasetInfo) -> str | None:
    """Why TFDS's feature classes cannot read the dataset ``info`` describes; None when they can."""
    if info.schema != "tfchips":
        return f"the {info.schema} schema does not record dtypes and shapes in the record"
    if info.compression != "none":
        return f"TFDS reads uncompressed TFRecord files, not {info.compression}"
    for side, spec in (("image", info.image), ("label", info.label)):
        reason = _side_unreadable(side, spec)
        if reason:
            return reason
    return _shard_names_unreadable(info)


def _pixels_feature(spec: RasterSpec) -> dict:
    if spec.encoding == "array":
        return _class(
            "tensor_feature.Tensor", "tensor", {"shape": _dimensions(spec.shape), "dtype": spec.dtype, "encoding": "bytes"}
        )
    return _class(
        "image_feature.Image", "image", {"shape": _dimensions(spec.shape), "dtype": spec.dtype, "encodingFormat": "png"}
    )


def tfds_features(info: DatasetInfo) -> dict:
    """``features.json``: the record's pixels and georeference as TFDS feature classes (see the module docstring)."""
    text = _class("text_feature.Text", "text", {})
    transform = {"shape": _dimensions([6]), "dtype": "float64", "encoding": "bytes"}
    features = {
        side: _class("features_dict.FeaturesDict", "featuresDict", {"features": {"data": _pixels_feature(spec)}})
        for side, spec in (("image", info.image), ("label", info.label))
    }
    features.update(name=text, key=text, crs=text, transform=_class("tensor_feature.Tensor", "tensor", transform))
    return _class("features_dict.FeaturesDict", "featuresDict", {"features": features})


def tfds_dataset_info(info: DatasetInfo) -> dict:
    """``dataset_info.json``: TFDS's ``DatasetInfo`` proto, in its JSON form, for the splits of ``info``."""
    return {
        "name": TFDS_NAME,
        "version": f"{SCHEMA_VERSION}.0.0",
        "description": f"tfchips records (written by tfchips {info.tfchips_version}); dataset.json describes them",
        "fileFormat": "tfrecord",
        "splits": [
            {
                "name": split.name,
                "shardLengths": [str(shard.records) for shard in split.shards],
                "filepathTemplate": FILEPATH_TEMPLATE,
            }
            for split in info.splits
        ],
    }


def write_tfds_metadata(out: str | os.PathLike, info: DatasetInfo) -> tuple[str, ...]:
    """Write ``features.json`` and ``dataset_info.json`` into ``out`` where TFDS can read the dataset.

    Each file is written to a temporary name, then renamed. Where `tfds_unreadable`
    gives a reason, nothing is written and TFDS files of an earlier dataset in
    ``out`` are removed, so that they never describe other shards. Returns the
    paths written.
    """
    out = os.fspath(out)
    paths = (storage.join(out, FEATURES_JSON), storage.join(out, DATASET_INFO_JSON))
    if tfds_unreadable(info) is not None:
        for path in paths:
            if storage.exists(path):
                storage.remove(path)
        return ()
    for path, content in zip(paths, (tfds_features(info), tfds_dataset_info(info))):
        storage.publish(path, (json.dumps(content, indent=2) + "\n").encode("utf-8"))
    return paths
