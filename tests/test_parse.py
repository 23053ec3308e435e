import glob
import json
import os
import shutil

import numpy as np
import pytest
import rasterio
import tensorflow as tf
from affine import Affine

from tfchips.chip_folder import write_chip_pair
from tfchips.errors import ChipError, ConfigError, RecordError
from tfchips.grid import Tile
from tfchips.parse import find_shards, make_dataset, parse_example, write_prediction
from tfchips.records import (
    RecordOptions,
    WriterOptions,
    decode_example,
    read_dataset_info,
    read_dataset_json,
    write_tfrecords,
)

BANDS = ("blue", "green", "red", "nir")
SPLITS = {"train": 0.5, "val": 0.5}


def write_chips(folder, dtype="uint16", bands=BANDS, sizes=(32,) * 6, seed=0, label_nodata=255):
    """Chip pairs as create-samples writes them: random pixels, some labels ``label_nodata``."""
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    for i, size in enumerate(sizes):
        tile = Tile.from_key(f"{size}:0:10.0:13:{i}:{4000 + i}")
        shape = (len(bands), *tile.shape)
        if info is None:
            image = rng.normal(0, 1000, shape).astype(dtype)
        else:
            image = rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)
        label = rng.integers(0, 4, tile.shape).astype(np.uint8)
        if label_nodata is not None:
            label[:3, :5] = label_nodata
        write_chip_pair(str(folder), tile, image, None, bands, label, label_nodata, ())
    return folder


def chip(path):
    """(pixels (rows, cols, bands), dataset) of a chip file."""
    with rasterio.open(path) as dataset:
        return dataset.read().transpose(1, 2, 0), dataset.crs.to_string(), dataset.transform


def records(chips, out, encoding="array", **options):
    # Seed 11 puts 3 of write_chips' 6 chips in each split, in shards of 2 and 1 (splits are drawn per chip).
    options = {"shards": 2, "workers": 1, "splits": SPLITS, "seed": 11, **options}
    write_tfrecords(chips, out, WriterOptions(records=RecordOptions(encoding), **options))
    return out


def elements(dataset):
    return [{k: v.numpy() for k, v in element.items()} for element in dataset]


def assert_matches_chips(chips, parsed):
    """Every parsed element equals its chip pair, pixels and georeferencing."""
    for element in parsed:
        name = element["name"].decode()
        image, crs, transform = chip(os.path.join(chips, "images", name + ".tif"))
        label, label_crs, _ = chip(os.path.join(chips, "labels", name + ".tif"))
        assert element["image"].dtype == image.dtype and element["label"].dtype == label.dtype
        np.testing.assert_array_equal(element["image"], image)
        np.testing.assert_array_equal(element["label"], label)
        assert element["crs"].decode() == crs == label_crs
        assert Affine.from_gdal(*element["transform"]) == transform
        assert element["key"].decode() == name.replace("#", ":")


@pytest.fixture(scope="module")
def chips(tmp_path_factory):
    return write_chips(tmp_path_factory.mktemp("chips"))


@pytest.fixture(scope="module")
def array_records(chips, tmp_path_factory):
    return records(chips, tmp_path_factory.mktemp("array"))


@pytest.mark.parametrize("encoding, compression", [("array", "none"), ("png", "gzip"), ("bytes", "zlib")])
def test_every_encoding_parses_to_the_chip_pixels_and_georeference(chips, tmp_path, encoding, compression):
    out = records(chips, tmp_path / "records", encoding, compression=compression)
    dataset = make_dataset(out, with_metadata=True, image_dtype=None, label_dtype=None)
    parsed = elements(dataset)
    assert sorted(e["name"].decode() for e in parsed) == sorted(
        os.path.splitext(n)[0] for n in os.listdir(chips / "images")
    )
    assert_matches_chips(chips, parsed)
    assert dataset.element_spec["image"].shape == (32, 32, 4)
    assert dataset.element_spec["label"].shape == (32, 32, 1)


def test_signed_png_and_more_than_four_bands(tmp_path):
    six = ("b1", "b2", "b3", "b4", "b5", "b6")
    chips = write_chips(tmp_path / "chips", "int16", six, sizes=(32, 32))
    out = records(chips, tmp_path / "records", "png", splits={"data": 1.0})
    assert read_dataset_json(out)["image"]["parts"] == [4, 2]
    parsed = elements(make_dataset(out, with_metadata=True, image_dtype=None, label_dtype=None))
    assert len(parsed) == 2 and parsed[0]["image"].min() < 0
    assert_matches_chips(chips, parsed)


def test_float_arrays_keep_every_bit(tmp_path):
    chips = write_chips(tmp_path / "chips", "float32", sizes=(32, 32))
    out = records(chips, tmp_path / "records", "array", splits={"data": 1.0})
    assert_matches_chips(chips, elements(make_dataset(out, with_metadata=True, image_dtype=None, label_dtype=None)))


IMAGE_FORMATS = {"png": "PNG", "jpg": "JPEG", "tif": "GTiff"}


def write_file_chips(folder):
    """RGB uint8 images, one PNG, one JPEG and one GeoTIFF, with colour-mapped PNG labels (as ESRI exports)."""
    rng = np.random.default_rng(1)
    for sub in ("images", "labels"):
        os.makedirs(folder / sub, exist_ok=True)
    for i, suffix in enumerate(IMAGE_FORMATS):
        profile = dict(width=24, height=16, dtype="uint8")
        smooth = np.kron(rng.integers(0, 256, (3, 4, 6)), np.ones((4, 4))).astype(np.uint8)
        with rasterio.open(folder / "images" / f"{i:09d}.{suffix}", "w", driver=IMAGE_FORMATS[suffix], count=3,
                           **profile) as dataset:
            dataset.write(smooth)
        profile["driver"] = "PNG"
        with rasterio.open(folder / "labels" / f"{i:09d}.png", "w", count=1, **profile) as dataset:
            dataset.write(rng.integers(0, 3, (1, 16, 24), dtype=np.uint8))
            dataset.write_colormap(1, {0: (0, 0, 0, 255), 1: (255, 0, 0, 255), 2: (0, 0, 255, 255)})
    return folder


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_bytes_of_mixed_formats_decode_like_gdal_even_colour_mapped(tmp_path):
    chips = write_file_chips(tmp_path / "chips")
    out = records(chips, tmp_path / "records", "bytes", splits={"data": 1.0})
    assert read_dataset_json(out)["image"]["format"] is None  # mixed: chosen per record, in-graph
    parsed = elements(make_dataset(out, with_metadata=True, image_dtype=None, label_dtype=None))
    assert len(parsed) == 3
    for element in parsed:
        name = element["name"].decode()
        image_path = glob.glob(str(chips / "images" / f"{name}.*"))[0]
        with rasterio.open(image_path) as image, rasterio.open(chips / "labels" / f"{name}.png") as label:
            if image_path.endswith(".jpg"):
                # Lossy: TensorFlow's libjpeg-turbo and GDAL's libjpeg round differently; TensorFlow's wins.
                with open(image_path, "rb") as stream:
                    expected = tf.io.decode_jpeg(stream.read()).numpy()
            else:
                expected = image.read().transpose(1, 2, 0)
            np.testing.assert_array_equal(element["image"], expected)
            # TensorFlow would expand the colour table to RGB; the parser leaves these to GDAL.
            np.testing.assert_array_equal(element["label"], label.read().transpose(1, 2, 0))
        assert element["key"] == b"" and element["crs"] == b""


def test_parse_example_in_a_pipeline_of_ones_own_equals_the_eager_decoder(array_records):
    description = read_dataset_json(array_records)
    paths, _ = find_shards(array_records, "train")
    raw = [r.numpy() for r in tf.data.TFRecordDataset(paths)]
    parsed = elements(tf.data.TFRecordDataset(paths).map(lambda s: parse_example(s, description)))
    assert len(parsed) == len(raw) == description["splits"]["train"]["records"]
    for serialized, element in zip(raw, parsed):
        eager = decode_example(serialized)
        np.testing.assert_array_equal(element["image"], eager.image)
        np.testing.assert_array_equal(element["label"], eager.label)
        assert element["name"].decode() == eager.name and Affine.from_gdal(*element["transform"]) == eager.transform


def test_splits_defaults_batches_and_length(chips, array_records):
    description = read_dataset_json(array_records)
    train = make_dataset(array_records, "train", batch_size=2)
    image_spec, label_spec = train.element_spec
    assert (image_spec.shape.as_list(), image_spec.dtype) == ([None, 32, 32, 4], tf.float32)
    assert (label_spec.shape.as_list(), label_spec.dtype) == ([None, 32, 32, 1], tf.int32)
    counts = {split: description["splits"][split]["records"] for split in ("train", "val")}
    assert len(train) == -(-counts["train"] // 2)
    assert sum(int(image.shape[0]) for image, _ in train) == counts["train"]
    assert len(make_dataset(array_records, "val", repeat=3)) == 3 * counts["val"]
    everything = make_dataset(array_records)
    assert len(everything) == sum(counts.values()) == 6
    with pytest.raises(RecordError, match="no split 'test'"):
        make_dataset(array_records, "test")


def test_shuffle_is_seeded_and_keeps_every_record(array_records):
    def names(seed):
        return [e["name"] for e in elements(make_dataset(array_records, shuffle=True, seed=seed, with_metadata=True))]

    fixed = [e["name"] for e in elements(make_dataset(array_records, with_metadata=True))]
    assert sorted(names(1)) == sorted(fixed) and len(set(fixed)) == 6
    assert names(1) == names(1)
    assert len({tuple(names(seed)) for seed in range(4)}) > 1


def test_band_selection_and_stored_statistics_normalisation(array_records):
    description = read_dataset_json(array_records)
    stats = {b["name"]: b for b in description["statistics"]["bands"]}
    raw = elements(make_dataset(array_records, "val", with_metadata=True, image_dtype=None))
    picked = elements(make_dataset(array_records, "val", bands=["nir", 0], normalize="stats", with_metadata=True))
    assert picked[0]["image"].dtype == np.float32 and picked[0]["image"].shape == (32, 32, 2)
    for original, element in zip(raw, picked):
        for column, band in enumerate(("nir", "blue")):
            expected = (original["image"][..., BANDS.index(band)] - stats[band]["mean"]) / stats[band]["std"]
            np.testing.assert_allclose(element["image"][..., column], expected, rtol=1e-5, atol=1e-5)
    halved = elements(make_dataset(array_records, "val", normalize=lambda x: x / 2, with_metadata=True))
    np.testing.assert_array_equal(halved[0]["image"], raw[0]["image"].astype(np.float32) / 2)


def test_bad_options_are_refused_with_a_clear_error(array_records, tmp_path):
    with pytest.raises(ConfigError, match="no band 'swir'"):
        make_dataset(array_records, bands=["swir"])
    with pytest.raises(ConfigError, match="band index 4 out of range"):
        make_dataset(array_records, bands=[4])
    with pytest.raises(ConfigError, match="floating image dtype"):
        make_dataset(array_records, normalize="stats", image_dtype="int32")
    with pytest.raises(ConfigError, match="unknown normalize 'minmax'"):
        make_dataset(array_records, normalize="minmax")
    with pytest.raises(RecordError, match="no TFRecord shards found"):
        make_dataset(str(tmp_path / "*.tfrecord"))
    description = read_dataset_json(array_records)
    description["statistics"] = None
    with pytest.raises(RecordError, match="no mean and std of band 'blue'"):
        make_dataset(array_records, normalize="stats", description=description)


def test_patterns_lists_and_folders_without_dataset_json(chips, array_records, tmp_path):
    pattern = make_dataset(os.path.join(array_records, "*"), "val", with_metadata=True, image_dtype=None)
    listed = make_dataset(sorted(glob.glob(os.path.join(array_records, "val-*"))), with_metadata=True, image_dtype=None)
    assert len(pattern) == len(listed) == read_dataset_json(array_records)["splits"]["val"]["records"]
    bare = tmp_path / "bare"
    bare.mkdir()
    for path in glob.glob(os.path.join(array_records, "*.tfrecord")):
        shutil.copy(path, bare)
    dataset = make_dataset(bare, "train", with_metadata=True, image_dtype=None, label_dtype=None)
    # Without dataset.json nothing says the chips share a size: only the band count is static.
    assert dataset.element_spec["image"].shape.as_list() == [None, None, 4]
    parsed = elements(dataset)
    assert len(parsed) == 3
    assert_matches_chips(chips, parsed)
    assert len(list(make_dataset(bare, batch_size=3))) == 2


def test_chips_of_different_sizes_parse_one_by_one(tmp_path):
    chips = write_chips(tmp_path / "chips", sizes=(32, 48))
    out = records(chips, tmp_path / "records", "png", splits={"data": 1.0}, shards=1)
    assert read_dataset_json(out)["image"]["shape"] == [None, None, 4]
    parsed = elements(make_dataset(out, with_metadata=True, image_dtype=None, label_dtype=None))
    assert sorted(e["image"].shape for e in parsed) == [(32, 32, 4), (48, 48, 4)]
    assert_matches_chips(chips, parsed)
    with pytest.raises(RecordError, match="chips differ in size"):
        make_dataset(out, batch_size=2)


@pytest.mark.parametrize("encoding, payload", [("array", "float"), ("png", "bytes")])
def test_legacy_records_parse_with_their_dataset_json(chips, tmp_path, encoding, payload):
    out = tmp_path / "legacy"
    write_tfrecords(
        chips, out, WriterOptions(records=RecordOptions(encoding, schema="legacy"), shards=1, workers=1)
    )
    assert read_dataset_json(out)["legacy_payload"] == payload  # uint16 arrays go as float32
    parsed = elements(make_dataset(out, with_metadata=True, image_dtype=None, label_dtype=None))
    assert len(parsed) == 6
    for element in parsed:
        name = element["name"].decode()
        np.testing.assert_array_equal(element["image"], chip(chips / "images" / f"{name}.tif")[0])
        np.testing.assert_array_equal(element["label"], chip(chips / "labels" / f"{name}.tif")[0])
        assert element["key"].decode() == name.replace("#", ":") and element["crs"] == b""
        assert np.isnan(element["transform"]).all()
    with pytest.raises(RecordError, match="no CRS or transform"):
        write_prediction(tmp_path / "p.tif", parsed[0]["label"], parsed[0])


def test_predictions_written_back_overlay_their_chips(chips, array_records, tmp_path):
    batch = next(iter(make_dataset(array_records, "val", batch_size=8, with_metadata=True)))
    for i, name in enumerate(batch["name"].numpy()):
        name = name.decode()
        prediction = (batch["label"][i, :, :, 0] + 1) % 4  # int32 classes, as a model's argmax
        metadata = {key: batch[key][i] for key in ("crs", "transform", "image")}
        path = write_prediction(tmp_path / f"{name}.tif", prediction, metadata)
        with rasterio.open(path) as written, rasterio.open(chips / "labels" / f"{name}.tif") as source:
            assert (written.crs, written.transform, written.shape) == (source.crs, source.transform, source.shape)
            assert written.dtypes == ("uint8",) and written.descriptions == ("prediction",)
            np.testing.assert_array_equal(written.read(1), (source.read(1).astype(np.int32) + 1) % 4)
    assert not [n for n in os.listdir(tmp_path) if not n.endswith(".tif")]  # no temporary file left


def test_write_prediction_from_a_chip_example_and_shape_checks(array_records, chips, tmp_path):
    paths, _ = find_shards(array_records, "train")
    example = decode_example(next(iter(tf.data.TFRecordDataset(paths[:1]))).numpy())
    scores = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32)
    path = write_prediction(tmp_path / "scores.tif", scores, example, band_names=("a", "b", "c"))
    with rasterio.open(path) as written:
        assert written.count == 3 and written.dtypes[0] == "float32" and written.descriptions == ("a", "b", "c")
        assert written.transform == example.transform and written.crs.to_string() == example.crs
        np.testing.assert_array_equal(written.read().transpose(1, 2, 0), scores)
    with pytest.raises(ChipError, match="prediction is 16 x 32 pixels, its chip 32 x 32"):
        write_prediction(tmp_path / "bad.tif", np.zeros((16, 32), np.uint8), example)
    with pytest.raises(ChipError, match="got shape"):
        write_prediction(tmp_path / "bad.tif", np.zeros((2, 16, 32, 1), np.uint8), example)
    with pytest.raises(ChipError, match="2 band names for 3 bands"):
        write_prediction(tmp_path / "bad.tif", scores, example, band_names=("a", "b"))
    assert not os.path.exists(tmp_path / "bad.tif")


def test_dataset_json_compression_wins_over_file_names(chips, tmp_path):
    out = records(chips, tmp_path / "records", "array", compression="gzip", splits={"data": 1.0})
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    for path in glob.glob(os.path.join(out, "*.gz")):
        shutil.copy(path, renamed / os.path.basename(path)[: -len(".gz")])
    with pytest.raises(RecordError, match="not a readable TFRecord file"):
        make_dataset(renamed)
    assert len(list(make_dataset(renamed, compression="gzip"))) == 6
    description = json.loads((out / "dataset.json").read_text())
    assert len(list(make_dataset(renamed, description=description))) == 6


def test_an_empty_split_is_a_clear_error(chips, tmp_path):
    out = records(chips, tmp_path / "records", splits={"train": 0.95, "val": 0.05})  # 6 chips: none for val
    with pytest.raises(RecordError, match="split 'val' has no records"):
        make_dataset(str(out), "val")


def test_write_prediction_picks_a_dtype_that_holds_nodata(array_records, tmp_path):
    paths, _ = find_shards(array_records, "train")
    example = decode_example(next(iter(tf.data.TFRecordDataset(paths[:1]))).numpy())
    classes = np.arange(32 * 32, dtype=np.int64).reshape(32, 32) % 4
    path = write_prediction(tmp_path / "classes.tif", classes, example, nodata=-1)
    with rasterio.open(path) as written:
        assert written.dtypes == ("int16",) and written.nodata == -1
        np.testing.assert_array_equal(written.read(1), classes)
    with pytest.raises(ChipError, match=r"bad\.tif: nodata 0\.5 is not a whole number"):
        write_prediction(tmp_path / "bad.tif", classes, example, nodata=0.5)


def test_find_shards_reads_dataset_json_once(array_records, monkeypatch):
    import tfchips.parse

    reads = []

    def counted(out):
        reads.append(out)
        return read_dataset_info(out)

    monkeypatch.setattr(tfchips.parse, "read_dataset_info", counted)
    paths, info = find_shards(array_records, "val")
    assert len(paths) == 2 and info.split_named("val").records == 3 and len(reads) == 1
    # A glob over the whole folder picks the shards, not dataset.json or TFDS's metadata files.
    paths, info = find_shards(os.path.join(array_records, "*"))
    assert sorted(map(os.path.basename, paths)) == sorted(os.path.basename(p) for p in info.shard_paths(array_records))
