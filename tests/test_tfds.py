"""TensorFlow Datasets reads tfchips' TFRecord folders as they are written, to the tensors `make_dataset` gives."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from test_parse import records, write_chips

from tfchips.parse import make_dataset
from tfchips.records import read_dataset_info
from tfchips.records.tfds_metadata import DATASET_INFO_JSON, FEATURES_JSON, tfds_unreadable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tfds = pytest.importorskip("tensorflow_datasets", reason="TFDS is in the test extra")

SPLITS = {"train": 0.5, "val": 0.25, "test": 0.25}


def _by_name(elements):
    return {element["name"].numpy(): element for element in elements}


@pytest.mark.parametrize(
    "encoding,dtype,bands",
    [("array", "uint16", 4), ("array", "int16", 13), ("array", "float32", 2), ("png", "uint16", 4), ("png", "uint8", 3)],
)
def test_tfds_reads_every_split_to_make_datasets_tensors(tmp_path, encoding, dtype, bands):
    names = tuple(f"b{i}" for i in range(bands))
    chips = write_chips(tmp_path / "chips", dtype=dtype, bands=names, sizes=(24,) * 8)
    out = records(chips, tmp_path / "records", encoding, splits=SPLITS)
    builder = tfds.builder_from_directory(os.fspath(out))
    info = read_dataset_info(out)
    assert {name: split.num_examples for name, split in builder.info.splits.items()} == {
        split.name: split.records for split in info.splits
    }
    for split in info.splits:
        ours = _by_name(make_dataset(out, split.name, image_dtype=None, label_dtype=None, with_metadata=True))
        theirs = _by_name(builder.as_dataset(split=split.name))
        assert ours.keys() == theirs.keys() and len(ours) == split.records
        for name, element in ours.items():
            tfds_element = theirs[name]
            for side in ("image", "label"):
                pixels = tfds_element[side]["data"]
                assert pixels.dtype == element[side].dtype and pixels.shape == element[side].shape
                np.testing.assert_array_equal(pixels.numpy(), element[side].numpy())
            np.testing.assert_array_equal(tfds_element["transform"].numpy(), element["transform"].numpy())
            assert tfds_element["crs"].numpy() == element["crs"].numpy()
            assert tfds_element["key"].numpy() == element["key"].numpy()


def test_datasets_tfds_cannot_read_get_no_tfds_files_and_stale_ones_go(tmp_path):
    chips = write_chips(tmp_path / "chips", dtype="uint16", bands=("a", "b", "c"), sizes=(24,) * 4)
    out = records(chips, tmp_path / "records", "array")
    assert os.path.isfile(out / FEATURES_JSON) and os.path.isfile(out / DATASET_INFO_JSON)
    features = json.loads((out / FEATURES_JSON).read_text())
    assert features["featuresDict"]["features"]["image"]["featuresDict"]["features"]["data"]["tensor"]["dtype"] == "uint16"
    # Rewritten as 13-band PNGs (four PNGs per image), which TFDS's Image feature cannot read.
    wide = write_chips(tmp_path / "wide", dtype="uint16", bands=tuple(f"b{i}" for i in range(13)), sizes=(24,) * 4)
    records(wide, out, "png", overwrite=True)
    assert "not 13" in tfds_unreadable(read_dataset_info(out))
    assert not os.path.exists(out / FEATURES_JSON) and not os.path.exists(out / DATASET_INFO_JSON)
    gzip = records(chips, tmp_path / "gzip", "array", compression="gzip")
    assert "uncompressed" in tfds_unreadable(read_dataset_info(gzip))
    assert not os.path.exists(gzip / FEATURES_JSON)
    wide_ints = write_chips(tmp_path / "uint32", dtype="uint32", bands=("a",), sizes=(24,) * 2)
    uint32 = records(wide_ints, tmp_path / "uint32-records", "array")
    assert "no uint32" in tfds_unreadable(read_dataset_info(uint32))
    assert not os.path.exists(uint32 / DATASET_INFO_JSON)


def test_png_of_varying_chip_sizes_reads_in_tfds(tmp_path):
    chips = write_chips(tmp_path / "chips", dtype="uint8", bands=("r", "g", "b"), sizes=(16, 24, 16, 32))
    out = records(chips, tmp_path / "records", "png", splits={"train": 1.0})
    assert read_dataset_info(out).image.shape[:2] == (None, None)
    ours = _by_name(make_dataset(out, "train", image_dtype=None, label_dtype=None, with_metadata=True))
    theirs = _by_name(tfds.builder_from_directory(os.fspath(out)).as_dataset(split="train"))
    assert ours.keys() == theirs.keys()
    for name, element in ours.items():
        np.testing.assert_array_equal(theirs[name]["image"]["data"].numpy(), element["image"].numpy())
    array = records(chips, tmp_path / "array", "array", splits={"train": 1.0})
    assert "varying rows and columns" in tfds_unreadable(read_dataset_info(array))
