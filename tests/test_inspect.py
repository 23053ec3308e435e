import json
import os
import shutil

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from tfchips.cli import main
from tfchips.demo_data import generate
from tfchips.errors import ChipError
from tfchips.inspect import inspect_dataset, open_dataset
from tfchips.records import WriterOptions, write_tfrecords
from tfchips.manifest import manifest_rows

SPLITS = {"train": 0.75, "val": 0.25}


def run(*args):
    """Run the tfchips command line in-process, with inspect, preview and report registered."""
    commands = {**main.COMMANDS, "inspect": "inspect", "preview": "preview", "report": "report"}
    original = dict(main.COMMANDS)
    main.COMMANDS.update(commands)
    try:
        return CliRunner().invoke(main.cli, [str(a) for a in args])
    finally:
        main.COMMANDS.clear()
        main.COMMANDS.update(original)


def make_demo_chips(root):
    """The demo chip folder (16 chips of 64 x 64 px, 4 uint16 bands), as `make demo` builds it."""
    demo = generate(root / "data", seed=0)
    args = ["create-samples", "--out", root / "chips", "--workers", "1"]
    for name, value in demo.job_options().items():
        if name != "out":
            args += [f"--{name.replace('_', '-')}", value]
    result = run(*args)
    assert result.exit_code == 0, result.output
    return root / "chips"


def make_records(chips, out):
    write_tfrecords(chips, out, WriterOptions(shards=2, splits=SPLITS, workers=1))
    return out


@pytest.fixture(scope="module")
def demo_chips(tmp_path_factory):
    return make_demo_chips(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def demo_records(demo_chips, tmp_path_factory):
    return make_records(demo_chips, tmp_path_factory.mktemp("records") / "records")


def read(path):
    with rasterio.open(path) as dataset:
        return dataset.read(), dataset.nodata


def copy(folder, tmp_path):
    return shutil.copytree(folder, tmp_path / os.path.basename(folder))


def test_chip_folder_figures_equal_numpy_over_the_chips(demo_chips):
    inspection = inspect_dataset(demo_chips)
    names = sorted(os.listdir(demo_chips / "images"))
    images = [read(demo_chips / "images" / n) for n in names]
    labels = [read(demo_chips / "labels" / n)[0][0] for n in names]
    assert inspection.verified and inspection.problems == ()
    assert inspection.counts == {"chips": 16, "unpaired": 0, "decoded": 16}
    ((image_layout, image_count),) = inspection.schema["image"]
    assert (image_layout.shape, image_layout.dtype, image_layout.format) == ((64, 64, 4), "uint16", "GTiff")
    assert image_layout.band_names == ("blue", "green", "red", "nir") and image_count == 16
    ((label_layout, _),) = inspection.schema["label"]
    assert (label_layout.shape, label_layout.dtype) == ((64, 64, 1), "uint8")
    for index, band in enumerate(inspection.bands):
        values = np.concatenate([image[index][image[index] != nodata] for image, nodata in images]).astype(float)
        assert band.count == values.size
        assert band.mean == pytest.approx(values.mean(), rel=1e-12)
        assert band.std == pytest.approx(values.std(), rel=1e-9)
        assert (band.minimum, band.maximum) == (values.min(), values.max())
        # Fewer valid pixels than the sample size: the sample is every pixel, percentiles are exact.
        assert band.sample_size == values.size
        assert band.percentiles == tuple(np.percentile(values, [2, 50, 98]))
        assert sum(band.histogram.counts) == values.size
    counts = np.bincount(np.concatenate([label.ravel() for label in labels]))
    assert [(c.value, c.name, c.pixels) for c in inspection.classes] == [
        ("0", "background", counts[0]), ("1", "building", counts[1]), ("2", "water", counts[2]), ("3", "vegetation", counts[3])
    ]
    assert sum(c.frequency for c in inspection.classes) == pytest.approx(1.0)


def test_valid_fractions_agree_with_the_manifest(demo_chips):
    inspection = inspect_dataset(demo_chips)
    manifest = json.loads((demo_chips / "manifest.json").read_text())
    expected = {t["key"]: t["valid_fraction"] for t in manifest_rows(str(demo_chips))}
    assert {c.key: c.valid_fraction for c in inspection.chips} == expected
    summary = inspection.valid_fraction
    assert summary.minimum == min(expected.values()) and summary.maximum == max(expected.values())
    assert sum(summary.histogram.counts) == 16
    assert summary.histogram.counts[-1] == sum(f >= 0.9 for f in expected.values())


def test_an_unpaired_chip_is_named_and_fails_verification(demo_chips, tmp_path):
    chips = copy(demo_chips, tmp_path)
    name = sorted(os.listdir(chips / "images"))[3]
    os.remove(chips / "labels" / name)
    inspection = inspect_dataset(chips)
    assert not inspection.verified
    assert inspection.counts == {"chips": 15, "unpaired": 1, "decoded": 15}
    assert [(p.path, p.message) for p in inspection.problems] == [
        (str(chips / "images" / name), "unpaired: no chip of the same name in labels/")
    ]
    result = run("inspect", chips)
    assert result.exit_code == 1
    assert f"{chips / 'images' / name}: unpaired" in result.output and "NOT verified" in result.output


def test_a_corrupt_chip_and_chips_missing_from_the_manifest_are_named(demo_chips, tmp_path):
    chips = copy(demo_chips, tmp_path)
    names = sorted(os.listdir(chips / "images"))
    corrupt = chips / "images" / names[0]
    corrupt.write_bytes(corrupt.read_bytes()[:600])
    for side in ("images", "labels"):
        os.remove(chips / side / names[1])
    inspection = inspect_dataset(chips)
    problems = {p.path: p.message for p in inspection.problems}
    assert str(corrupt) in problems
    missing = names[1].removesuffix(".tif").replace("#", ":")
    assert problems[str(chips / "manifest.json")] == (
        f"tile {missing} is written according to the manifest, but its chips are missing"
    )
    assert len(problems) == 2 and inspection.counts["decoded"] == 14


def test_records_counts_and_figures_match_dataset_json_and_the_chips(demo_chips, demo_records):
    dataset = json.loads((demo_records / "dataset.json").read_text())
    inspection = inspect_dataset(demo_records)
    chips = inspect_dataset(demo_chips)
    assert inspection.verified, inspection.problems
    assert inspection.counts == {"records": 16, "shards": 4, "decoded": 16}
    assert inspection.splits == {split: info["records"] for split, info in dataset["splits"].items()}
    listed = [(s["file"], split, s["records"], s["sha256"]) for split, info in dataset["splits"].items() for s in info["shards"]]
    assert [(s.file, s.split, s.records, s.sha256) for s in inspection.shards] == listed
    assert all(s.ok for s in inspection.shards)
    ((image_layout, _),) = inspection.schema["image"]
    assert (image_layout.encoding, image_layout.format, image_layout.shape) == ("bytes", "tiff", (64, 64, 4))
    for band, chip_band in zip(inspection.bands, chips.bands):
        assert (band.count, band.minimum, band.maximum) == (chip_band.count, chip_band.minimum, chip_band.maximum)
        assert band.mean == pytest.approx(chip_band.mean, rel=1e-12)
    assert [(c.value, c.pixels) for c in inspection.classes] == [(c.value, c.pixels) for c in chips.classes]
    assert {c.key: c.valid_fraction for c in inspection.chips} == {c.key: c.valid_fraction for c in chips.chips}
    assert {c.split for c in inspection.chips} == {"train", "val"}


def test_a_flipped_byte_in_a_shard_is_detected(demo_records, tmp_path):
    records = copy(demo_records, tmp_path)
    dataset = json.loads((records / "dataset.json").read_text())
    shard = records / dataset["splits"]["train"]["shards"][1]["file"]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    inspection = inspect_dataset(records)
    assert not inspection.verified
    bad = {s.file: s for s in inspection.shards if not s.ok}
    assert list(bad) == [shard.name]
    assert bad[shard.name].records < dataset["splits"]["train"]["shards"][1]["records"]
    messages = [p.message for p in inspection.problems if p.path == str(shard)]
    assert any(m.startswith("corrupt shard after") for m in messages)
    assert any(m.startswith("SHA-256") for m in messages)
    assert all(p.path == str(shard) for p in inspection.problems)
    result = run("inspect", records, "--json")
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert document["verified"] is False and {p["path"] for p in document["problems"]} == {str(shard)}


def test_a_wrong_checksum_alone_fails_verification(demo_records, tmp_path):
    records = copy(demo_records, tmp_path)
    dataset = json.loads((records / "dataset.json").read_text())
    entry = dataset["splits"]["val"]["shards"][0]
    entry["sha256"] = "0" * 64
    (records / "dataset.json").write_text(json.dumps(dataset))
    inspection = inspect_dataset(records)
    assert [(p.path, p.message.split()[0]) for p in inspection.problems] == [(str(records / entry["file"]), "SHA-256")]
    assert inspection.counts["records"] == 16


def test_missing_and_unlisted_shards_are_named(demo_records, tmp_path):
    records = copy(demo_records, tmp_path)
    dataset = json.loads((records / "dataset.json").read_text())
    missing = records / dataset["splits"]["val"]["shards"][1]["file"]
    os.rename(missing, records / "extra-00000-of-00001.tfrecord")
    inspection = inspect_dataset(records)
    expected = dataset["splits"]["val"]["shards"][1]["records"]
    assert sorted((p.path, p.message) for p in inspection.problems) == sorted([
        (str(records / "extra-00000-of-00001.tfrecord"), "shard not listed in dataset.json"),
        (str(missing), "shard missing"),
        (str(missing), f"0 records read, dataset.json says {expected}"),
    ])


def test_a_glob_pattern_inspects_the_shards_it_matches(demo_records):
    dataset = json.loads((demo_records / "dataset.json").read_text())
    assert inspect_dataset(str(demo_records / "*")).counts["records"] == 16  # dataset.json is no shard
    inspection = inspect_dataset(str(demo_records / "val-*.tfrecord"))
    assert inspection.verified
    assert [s.file for s in inspection.shards] == [s["file"] for s in dataset["splits"]["val"]["shards"]]
    assert inspection.counts["records"] == dataset["splits"]["val"]["records"] and set(inspection.splits) == {"val"}


def test_text_and_json_output(demo_chips):
    result = run("inspect", demo_chips)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"chip folder {demo_chips}: 16 chip pairs, 0 unpaired files"
    assert "image  64 x 64 x 4 uint16 GTiff, bands blue, green, red, nir, nodata 0  (16 chips)" in lines
    assert lines[-1] == "verified: 16 chips, no problem"
    inspection = inspect_dataset(demo_chips)
    blue = next(line for line in lines if line.startswith("blue "))
    assert blue.split()[:2] == ["blue", f"{inspection.bands[0].count:,}"]
    document = json.loads(run("inspect", demo_chips, "--json").stdout)
    assert document["verified"] is True and document["counts"]["chips"] == 16
    assert document["valid_fraction"]["min"] == inspection.valid_fraction.minimum
    assert [b["name"] for b in document["bands"]] == ["blue", "green", "red", "nir"]
    assert document["classes"][1] == {"value": "1", "name": "building", "pixels": inspection.classes[1].pixels,
                                      "frequency": inspection.classes[1].frequency}
    assert len(document["chips"]) == 16


def test_paths_that_are_no_dataset_are_refused(tmp_path):
    with pytest.raises(ChipError, match="neither a chip folder"):
        open_dataset(tmp_path)
    with pytest.raises(ChipError, match="no such chip folder"):
        open_dataset(tmp_path / "nothing-*.tfrecord")
    result = run("inspect", tmp_path)
    assert result.exit_code == 1 and result.output.startswith("Error: ") and str(tmp_path) in result.output


def test_records_that_do_not_decode_are_named_with_their_index(demo_records, tmp_path):
    import tensorflow as tf

    records = copy(demo_records, tmp_path)
    shard = records / "extra-00000-of-00001.tfrecord"
    with tf.io.TFRecordWriter(str(shard)) as writer:
        writer.write(b"\xff\xff\xffnot a protocol buffer")
        writer.write(tf.train.Example().SerializeToString())
    inspection = inspect_dataset(str(shard))
    assert [(p.path, p.message.split(":")[0]) for p in inspection.problems] == [
        (str(shard), "shard not listed in dataset.json"), (str(shard), "record 0"), (str(shard), "record 1")
    ]
    assert inspection.problems[1].message.startswith("record 0: not a tf.train.Example")
    assert inspection.problems[2].message.startswith("record 1: not a tfchips record")
    assert inspection.counts == {"records": 2, "shards": 1, "decoded": 0}


def test_a_split_total_that_disagrees_with_its_shards_is_named(demo_records, tmp_path):
    records = copy(demo_records, tmp_path)
    dataset = json.loads((records / "dataset.json").read_text())
    dataset["splits"]["train"]["records"] += 1
    (records / "dataset.json").write_text(json.dumps(dataset))
    inspection = inspect_dataset(str(records) + os.sep)
    expected = dataset["splits"]["train"]["records"]
    assert [(p.path, p.message) for p in inspection.problems] == [
        (os.path.join(str(records) + os.sep, "dataset.json"), f"split train: {expected} records, its shards list {expected - 1}")
    ]
