"""Chip folders to TFRecords and back: every kind, encoding and decoder; determinism; bad chips."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from test_chips_reader import SIZE, TRANSFORM, make_chip_folder, write_raster

from tfchips.chips import ChipPair, find_chip_pairs, read_chip
from tfchips.errors import ChipError, ConfigError, RecordError
from tfchips.records import (
    RecordOptions,
    WriterOptions,
    decode_example,
    feature_spec,
    ordered_map,
    read_dataset_json,
    shard_paths,
    worker_pool,
    write_tfrecords,
)
from tfchips.records.codecs import encode_pixels
from tfchips.records.encoder import encode_chip_pair
from tfchips.records.plan import plan_shards
from tfchips.records.schema import build_legacy_record
from tfchips.statistics import chip_statistics, statistics_json

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = pytest.importorskip("tensorflow")

JPEG_TOLERANCE = 8  # TensorFlow's and GDAL's JPEG decoders may round differently


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """One small chip folder per kind, and what was written into it."""
    root = tmp_path_factory.mktemp("chips")
    return {
        kind: (str(root / kind), make_chip_folder(root / kind, kind)) for kind in ("png", "jpeg", "uint16", "float32")
    }


def read_back(out: str) -> dict:
    """name -> ChipExample of every record of every shard, checking each shard's hash and count."""
    description = read_dataset_json(out)
    compression = {"none": "", "gzip": "GZIP", "zlib": "ZLIB"}[description["compression"]]
    examples = {}
    for split in description["splits"].values():
        for shard in split["shards"]:
            path = os.path.join(out, shard["file"])
            assert hashlib.sha256(open(path, "rb").read()).hexdigest() == shard["sha256"]
            records = [r.numpy() for r in tf.data.TFRecordDataset(path, compression_type=compression)]
            assert len(records) == shard["records"]
            for record in records:
                example = decode_example(record, description)
                examples[example.name] = example
    return examples


def expected_image(folder: str, name: str, written: np.ndarray, kind: str) -> np.ndarray:
    if kind != "jpeg":
        return written
    return read_chip(os.path.join(folder, "images", name + ".jpg"))[0].transpose(1, 2, 0)  # GDAL's decoding


CASES = [
    (kind, encoding, decoder)
    for kind in ("png", "jpeg", "uint16", "float32")
    for encoding in ("bytes", "png", "array")
    for decoder in ("auto", "tf", "gdal")
    # TensorFlow decodes no TIFF, and float32 does not fit PNG: see test_options_that_do_not_suit_the_chips
    if not (kind == "float32" and encoding == "png") and not (kind in ("uint16", "float32") and decoder == "tf")
]


@pytest.mark.parametrize("kind, encoding, decoder", CASES)
def test_every_record_reads_back_to_the_chip(tmp_path, folders, kind, encoding, decoder):
    folder, written = folders[kind]
    out = str(tmp_path / "out")
    description = write_tfrecords(folder, out, WriterOptions(RecordOptions(encoding, decoder=decoder), shards=2))

    examples = read_back(out)
    assert sorted(examples) == sorted(written)
    for name, (image, label) in written.items():
        example = examples[name]
        reference = expected_image(folder, name, image, kind)
        if kind == "jpeg" and decoder == "tf" and encoding != "bytes":  # auto leaves lossy JPEG to GDAL
            assert np.abs(example.image.astype(int) - reference).max() <= JPEG_TOLERANCE
        else:
            assert example.image.dtype == reference.dtype
            np.testing.assert_array_equal(example.image, reference)
        np.testing.assert_array_equal(example.label, label)
        assert example.crs == "EPSG:32613"
        column = int(name.split("#")[4]) if "#" in name else int(name)
        assert example.transform == TRANSFORM * TRANSFORM.translation(SIZE * column, 0)
        assert example.key == (name.replace("#", ":") if "#" in name else None)
        assert example.image_band_names == tuple(f"b{b:02d}" for b in range(1, image.shape[2] + 1))
    assert description["image"]["shape"] == [SIZE, SIZE, written[name][0].shape[2]]
    assert description["image"]["dtype"] == written[name][0].dtype.name
    assert description["splits"]["data"]["records"] == len(written)


def test_mixed_encodings_and_in_graph_parsing(tmp_path, folders):
    folder, written = folders["float32"]
    out = str(tmp_path / "out")
    options = RecordOptions("array", label_encoding="png")
    description = write_tfrecords(folder, out, WriterOptions(options, shards=1, compression="gzip"))
    assert (description["image"]["encoding"], description["label"]["encoding"]) == ("array", "png")
    assert description["image"]["parts"] == [13] and description["features"]["image/band_names"]["shape"] == [13]

    dataset = tf.data.TFRecordDataset(shard_paths(out), compression_type="GZIP").batch(8)
    parsed = next(iter(dataset.map(lambda records: tf.io.parse_example(records, feature_spec(description)))))
    names = [n.decode().replace("#", ":") for n in parsed["key"].numpy()]
    for row, key in enumerate(names):
        image = tf.reshape(tf.io.decode_raw(parsed["image/data"][row, 0], tf.float32), parsed["image/shape"][row])
        label = tf.io.decode_png(parsed["label/data"][row, 0])
        name = key.replace(":", "#")
        np.testing.assert_array_equal(image.numpy(), written[name][0])
        np.testing.assert_array_equal(label.numpy(), written[name][1])
        transform = tf.io.decode_raw(parsed["transform"][row], tf.float64).numpy()
        assert tuple(transform) == (TRANSFORM * TRANSFORM.translation(SIZE * int(name.split("#")[4]), 0)).to_gdal()


@pytest.mark.parametrize(
    "encoding, kind, processes", [("bytes", "uint16", False), ("array", "uint16", True), ("png", "png", False)]
)
def test_shards_are_byte_identical_whatever_the_workers(tmp_path, encoding, kind, processes):
    folder = str(tmp_path / "chips")
    make_chip_folder(folder, kind, count=12)
    runs = []
    for workers in (1, 2, 3):
        out = str(tmp_path / f"out{workers}")
        options = WriterOptions(
            RecordOptions(encoding),
            shards=3,
            workers=workers,
            processes=processes,
            splits={"train": 0.75, "val": 0.25},
            compression="gzip",
            seed=5,
        )
        write_tfrecords(folder, out, options)
        runs.append({name: open(os.path.join(out, name), "rb").read() for name in sorted(os.listdir(out))})
    assert runs[0] == runs[1] == runs[2]
    # Chips fall into shards by a hash of their names: a shard left without chips is not written,
    # and a split's shards are numbered -of- their own count.
    described = json.loads(runs[0]["dataset.json"])
    shards = [s["file"] for split in ("train", "val") for s in described["splits"][split]["shards"]]
    assert sorted(runs[0]) == ["dataset.json", *sorted(shards)]
    for split in ("train", "val"):
        listed = described["splits"][split]["shards"]
        assert 1 <= len(listed) <= 3 and all(s["records"] > 0 for s in listed)
        assert [s["file"] for s in listed] == [
            f"{split}-{i:05d}-of-{len(listed):05d}.tfrecord.gz" for i in range(len(listed))
        ]


def test_splits_by_block_keep_neighbours_apart_and_counts_add_up(tmp_path):
    folder = str(tmp_path / "chips")
    make_chip_folder(folder, "uint16", count=20)
    out = str(tmp_path / "out")
    options = WriterOptions(RecordOptions("bytes"), shards=2, splits={"train": 0.5, "val": 0.5}, split_by="block:4")
    description = write_tfrecords(folder, out, options)
    examples = {split: {n for n in read_back_split(out, split)} for split in ("train", "val")}
    assert examples["train"] and examples["val"] and not examples["train"] & examples["val"]
    assert sum(s["records"] for s in description["splits"].values()) == 20

    def block(name: str) -> tuple[int, int]:
        ti, tj = (int(n) for n in name.split("#")[4:])
        return ti // 4, tj // 4

    blocks = {split: {block(n) for n in names} for split, names in examples.items()}
    assert not blocks["train"] & blocks["val"]  # no 4 x 4 block of tiles straddles two splits


def read_back_split(out: str, split: str) -> list[str]:
    return [decode_example(r.numpy()).name for r in tf.data.TFRecordDataset(shard_paths(out, split))]


def test_unpaired_chips_fail_the_run_by_name_or_are_skipped(tmp_path):
    folder = str(tmp_path / "chips")
    make_chip_folder(folder, "uint16", count=4)
    os.remove(os.path.join(folder, "labels", "16#0#10.0#13#1#-1.tif"))
    out = str(tmp_path / "out")
    with pytest.raises(ChipError, match=r"1 unpaired chips: images/16#0#10.0#13#1#-1\.tif"):
        write_tfrecords(folder, out, WriterOptions(shards=1))
    assert not os.path.exists(out) or os.listdir(out) == []

    description = write_tfrecords(folder, out, WriterOptions(shards=1, skip_bad=True))
    assert description["splits"]["data"]["records"] == 3
    assert [s["name"] for s in description["skipped"]] == ["images/16#0#10.0#13#1#-1.tif"]


@pytest.mark.parametrize("encoding", ["bytes", "array"])
@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_chips_fail_before_any_shard_is_published(tmp_path, encoding, damage):
    folder = str(tmp_path / "chips")
    make_chip_folder(folder, "uint16", count=4)
    path = os.path.join(folder, "images", "16#0#10.0#13#2#-2.tif")
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) - 100] if damage == "truncate" else b"garbage" * 10)
    out = str(tmp_path / "out")
    with pytest.raises(ChipError, match=r"16#0#10\.0#13#2#-2\.tif"):
        write_tfrecords(folder, out, WriterOptions(RecordOptions(encoding), shards=2))
    assert os.listdir(out) == []  # no shard, no temporary file, no dataset.json

    description = write_tfrecords(folder, out, WriterOptions(RecordOptions(encoding), shards=2, skip_bad=True))
    assert [s["name"] for s in description["skipped"]] == ["16#0#10.0#13#2#-2"]
    assert "16#0#10.0#13#2#-2.tif" in description["skipped"][0]["reason"]
    assert sorted(read_back(out)) == ["16#0#10.0#13#0#0", "16#0#10.0#13#1#-1", "16#0#10.0#13#3#-3"]


def test_a_label_that_does_not_match_its_image_is_bad(tmp_path):
    folder = str(tmp_path / "chips")
    make_chip_folder(folder, "uint16", count=2)
    label = os.path.join(folder, "labels", "16#0#10.0#13#1#-1.tif")
    write_raster(label, np.zeros((1, 8, 8), "uint8"))
    with pytest.raises(ChipError, match=r"labels/16#0#10\.0#13#1#-1\.tif: label is 8 x 8 pixels"):
        write_tfrecords(folder, str(tmp_path / "out"), WriterOptions(shards=1))


def test_options_that_do_not_suit_the_chips_stop_the_job(tmp_path, folders):
    with pytest.raises(RecordError, match="use `encoding='array'`"):
        write_tfrecords(folders["float32"][0], str(tmp_path / "a"), WriterOptions(RecordOptions("png"), shards=1))
    with pytest.raises(RecordError, match="`decoder='tf'` cannot decode GTiff"):
        write_tfrecords(folders["uint16"][0], str(tmp_path / "b"), WriterOptions(RecordOptions("array", decoder="tf")))
    with pytest.raises(RecordError, match="`decoder='tf'` cannot decode GTiff"):  # statistics need the pixels
        write_tfrecords(folders["uint16"][0], str(tmp_path / "e"), WriterOptions(RecordOptions("bytes", decoder="tf")))
    bytes_only = WriterOptions(RecordOptions("bytes", decoder="tf"), statistics=False)
    assert write_tfrecords(folders["uint16"][0], str(tmp_path / "f"), bytes_only)["splits"]["data"]["records"] == 3
    with pytest.raises(RecordError, match="legacy schema cannot pair encoded bytes labels with float32 array images"):
        write_tfrecords(
            folders["float32"][0],
            str(tmp_path / "c"),
            WriterOptions(RecordOptions("array", label_encoding="bytes", schema="legacy")),
        )
    five_bands = encode_pixels(np.zeros((4, 4, 5), "uint8"), "png", "chip.tif")
    with pytest.raises(RecordError, match="legacy schema holds one PNG, not 5 bands"):
        build_legacy_record("chip", None, five_bands, five_bands)


def test_statistics_computed_from_manifest_or_left_out(tmp_path, folders):
    folder, written = folders["uint16"]
    description = write_tfrecords(folder, str(tmp_path / "a"), WriterOptions(shards=1))
    assert description["statistics_source"] == "computed"
    images = np.stack([image for image, _ in written.values()]).astype(np.float64)
    for band, stats in enumerate(description["statistics"]["bands"]):
        values = images[..., band]
        assert stats["name"] == f"b{band + 1:02d}" and stats["count"] == values.size
        assert (stats["min"], stats["max"]) == (values.min(), values.max())
        assert stats["mean"] == pytest.approx(values.mean(), rel=1e-12)
        assert stats["std"] == pytest.approx(values.std(), rel=1e-9)
    labels = np.concatenate([label.ravel() for _, label in written.values()])
    expected = {str(v): int((labels == v).sum()) for v in np.unique(labels) if v != 255}
    assert description["statistics"]["class_counts"] == expected

    copy = str(tmp_path / "chips")
    shutil.copytree(folder, copy)
    manifest = {"statistics": {"bands": [], "class_counts": {"1": 2}}, "class_names": {"1": "tree"}}
    open(os.path.join(copy, "manifest.json"), "w").write(json.dumps(manifest))
    description = write_tfrecords(copy, str(tmp_path / "b"), WriterOptions(shards=1))
    assert description["statistics"] == manifest["statistics"] and description["statistics_source"] == "manifest"
    assert description["class_names"] == {"1": "tree"}
    description = write_tfrecords(folder, str(tmp_path / "c"), WriterOptions(shards=1, statistics=False))
    assert description["statistics"] is None and description["statistics_source"] is None


def test_legacy_schema_keys_and_values(tmp_path, folders):
    folder, written = folders["uint16"]
    out = str(tmp_path / "out")
    description = write_tfrecords(folder, out, WriterOptions(RecordOptions("array", schema="legacy"), shards=1))
    assert description["legacy_payload"] == "float"
    records = [r.numpy() for r in tf.data.TFRecordDataset(shard_paths(out))]
    features = tf.train.Example.FromString(records[0]).features.feature
    assert sorted(features) == [
        "identifier",
        "image/channels",
        "image/height",
        "image/image_data",
        "image/width",
        "target/height",
        "target/target_data",
        "target/width",
    ]
    parsed = tf.io.parse_example(records, feature_spec(description))
    for row, identifier in enumerate(parsed["identifier"].numpy()):
        image, label = written[identifier.decode().replace(":", "#")]
        np.testing.assert_array_equal(parsed["image/image_data"][row].numpy().reshape(image.shape), image)
        np.testing.assert_array_equal(parsed["target/target_data"][row].numpy().reshape(label.shape), label)
        assert parsed["image/channels"][row] == 4 and parsed["target/width"][row] == SIZE

    for name, example in read_back(str(tmp_path / "out")).items():  # float32 payloads, back in the recorded dtype
        assert example.image.dtype == np.uint16 and example.label.dtype == np.uint8
        np.testing.assert_array_equal(example.image, written[name][0])

    png_folder, png_written = folders["png"]
    out = str(tmp_path / "png")
    description = write_tfrecords(png_folder, out, WriterOptions(RecordOptions("bytes", schema="legacy"), shards=1))
    assert description["legacy_payload"] == "bytes"
    for name, example in read_back(out).items():
        assert example.key is None and example.crs is None
        np.testing.assert_array_equal(example.image, png_written[name][0])


def test_shard_size_and_overwrite(tmp_path):
    folder = str(tmp_path / "chips")
    make_chip_folder(folder, "float32", count=8)
    out = str(tmp_path / "out")
    record_bytes = 13 * SIZE * SIZE * 4
    description = write_tfrecords(
        folder, out, WriterOptions(RecordOptions("array"), shard_size_mb=2.5 * record_bytes / 1e6)
    )
    assert len(description["splits"]["data"]["shards"]) == 4
    with pytest.raises(ConfigError, match="`overwrite=True`"):
        write_tfrecords(folder, out, WriterOptions(shards=1))
    write_tfrecords(folder, out, WriterOptions(shards=1, overwrite=True))
    assert sorted(os.listdir(out)) == ["data-00000-of-00001.tfrecord", "dataset.json"]

    # A run killed after renaming its shards, before dataset.json: the next run replaces them.
    expected = open(os.path.join(out, "dataset.json"), "rb").read()
    os.remove(os.path.join(out, "dataset.json"))
    open(os.path.join(out, "data-00000-of-00003.tfrecord"), "wb").write(b"left by a killed run")
    open(os.path.join(out, ".partial-data-00001-of-00003.tfrecord"), "wb").write(b"left by a killed run")
    write_tfrecords(folder, out, WriterOptions(shards=1))
    assert sorted(os.listdir(out)) == ["data-00000-of-00001.tfrecord", "dataset.json"]
    assert open(os.path.join(out, "dataset.json"), "rb").read() == expected


def test_cli(tmp_path, folders):
    from tfchips.cli.to_tfrecords import command

    folder, written = folders["png"]
    out = str(tmp_path / "out")
    runner = CliRunner()
    result = runner.invoke(
        command,
        [
            folder,
            out,
            "--encoding",
            "array",
            "--label-encoding",
            "png",
            "--shards",
            "2",
            "--workers",
            "1",
            "--split",
            "train=0.67,val=0.33",
            "--seed",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    plan = plan_shards(sorted(written), 2, {"train": 0.67, "val": 0.33}, seed=1)
    for split, shards in plan.shards.items():
        assert f"{split}: {len(plan.split_names(split))} records in {len(shards)} shards" in result.output
    assert sorted(read_back(out)) == sorted(written)

    result = runner.invoke(command, [folder, out, "--shards", "1"])
    assert isinstance(result.exception, ConfigError) and "`overwrite=True`" in str(result.exception)
    from tfchips.cli.main import cli

    result = runner.invoke(cli, ["to-tfrecords", folder, "--out", out, "--shards", "1", "--shard-size", "5"])
    # Options that do not go together are a usage error, as click's own are: exit 2.
    assert result.exit_code == 2 and "Error: give exactly one of --shards and --shard-size" in result.output
    assert result.output.startswith("Usage: ")


@pytest.mark.parametrize("processes", [False, True])
def test_ordered_map_keeps_order_and_runs_only_a_few_batches_ahead(processes):
    pulled = []

    def items():
        for i in range(200):
            pulled.append(i)
            yield i

    with worker_pool(2, processes) as executor:
        results = ordered_map(abs, items(), executor, in_flight=3)
        first = [next(results) for _ in range(5)]
        assert len(pulled) <= 5 + 4 * 8  # the batch being read and three more in flight, 8 items each
        assert first + list(results) == list(range(200))


def smooth_jpeg_pair(folder) -> ChipPair:
    """A JPEG chip that TensorFlow and GDAL decode to different values, and its label."""
    rows, cols = np.mgrid[0:64, 0:64]
    image = np.stack([(cols * 4) % 256, (rows * 4) % 256, ((cols + rows) * 2) % 256]).astype(np.uint8)
    write_raster(os.path.join(folder, "images", "a.jpg"), image, "JPEG")
    write_raster(os.path.join(folder, "labels", "a.png"), np.zeros((1, 64, 64), "uint8"), "PNG")
    return ChipPair("a", None, os.path.join(folder, "images", "a.jpg"), os.path.join(folder, "labels", "a.png"))


def test_auto_decodes_jpeg_like_gdal_so_processes_do_not_change_records(tmp_path):
    pair = smooth_jpeg_pair(tmp_path)
    gdal = read_chip(pair.image_path)[0].transpose(1, 2, 0)
    assert not np.array_equal(tf.io.decode_jpeg(open(pair.image_path, "rb").read()).numpy(), gdal)
    records = {d: encode_chip_pair(pair, RecordOptions("array", decoder=d)).record for d in ("auto", "gdal", "tf")}
    assert records["auto"] == records["gdal"] != records["tf"]  # --processes turns auto into gdal
    np.testing.assert_array_equal(decode_example(records["auto"]).image, gdal)


def test_a_32_bit_bmp_decodes_under_auto(tmp_path):
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (8, 8, 4), dtype=np.uint8)
    os.makedirs(tmp_path / "images")
    Image.fromarray(pixels, "RGBA").save(tmp_path / "images" / "a.bmp")  # GDAL reads 3 bands, TensorFlow 4
    write_raster(str(tmp_path / "labels" / "a.tif"), np.zeros((1, 8, 8), "uint8"))
    pair = ChipPair("a", None, str(tmp_path / "images" / "a.bmp"), str(tmp_path / "labels" / "a.tif"))
    example = decode_example(encode_chip_pair(pair, RecordOptions("array", decoder="auto")).record)
    np.testing.assert_array_equal(example.image, read_chip(pair.image_path)[0].transpose(1, 2, 0))


def test_a_chip_unlike_most_is_the_one_skipped_whatever_the_order(tmp_path):
    folder = str(tmp_path / "chips")
    make_chip_folder(folder, "uint16", count=5)
    odd = "16#0#10.0#13#3#-3"
    path = os.path.join(folder, "images", odd + ".tif")
    pixels, _ = read_chip(path)
    write_raster(path, pixels.astype("float32"), transform=TRANSFORM * TRANSFORM.translation(SIZE * 3, 0))
    names = [f"16#0#10.0#13#{i}#{-i}" for i in range(5)]
    first = next(seed for seed in range(50) if plan_shards(names, 1, seed=seed).shards["data"][0][0] == odd)
    for seed in (first, first + 1):
        options = WriterOptions(shards=1, skip_bad=True, seed=seed, workers=2)
        description = write_tfrecords(folder, str(tmp_path / f"out{seed}"), options)
        assert [bad["name"] for bad in description["skipped"]] == [odd]
        assert "image has float32 bands" in description["skipped"][0]["reason"]
        assert description["image"]["dtype"] == "uint16" and description["splits"]["data"]["records"] == 4


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # inf - inf, on purpose
def test_band_statistics_with_infinities_stay_valid_json():
    image = np.array([[[1.0], [np.inf]], [[2.0], [3.0]]], dtype="float32")
    statistics = chip_statistics(image, None, np.zeros((2, 2, 1), "uint8"), None)
    band = json.loads(json.dumps(statistics_json(statistics, ("b",)), allow_nan=False))["bands"][0]
    assert (band["mean"], band["std"], band["min"], band["max"], band["count"]) == (None, None, 1.0, None, 4)


def test_a_non_geotiff_chip_is_opened_once_for_its_header_and_pixels(tmp_path, monkeypatch):
    import rasterio

    make_chip_folder(tmp_path, "png", count=1)
    pair = find_chip_pairs(tmp_path).pairs[0]
    opened = []
    real_open = rasterio.open
    monkeypatch.setattr(rasterio, "open", lambda path, *a, **k: opened.append(path) or real_open(path, *a, **k))
    encode_chip_pair(pair, RecordOptions("array", decoder="gdal"))
    assert sorted(opened) == sorted([pair.image_path, pair.label_path])
