import json

import numpy as np
import pytest
from click.testing import CliRunner

from beam_pipelines import chips_to_tfrecords
from tfchips import storage
from tfchips.cli.main import cli
from tfchips.demo_data import generate
from tfchips.errors import ChipError
from tfchips.records import decode_example
from tfchips.records.writer import read_dataset_json, shard_paths


@pytest.fixture(scope="module")
def chips(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    demo = generate(str(root / "data"), seed=0)
    options = demo.job_options(str(root / "chips"))
    args = ["create-samples", "--workers", "1", "--tilesize", "32"]
    for name, value in options.items():
        if name != "tilesize":
            args += [f"--{name.replace('_', '-')}", str(value)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return root / "chips"


def records_by_key(out):
    import tensorflow as tf

    dataset = read_dataset_json(str(out))
    found = {}
    for path in shard_paths(str(out)):
        compression = "GZIP" if path.endswith(".gz") else ""
        for serialized in tf.data.TFRecordDataset(path, compression_type=compression):
            example = decode_example(serialized.numpy(), dataset)
            found[example.key] = (example.image, example.label, example.crs, example.transform, path.split("/")[-1].split("-")[0])
    return found


@pytest.mark.parametrize("mode, compression", [("in_memory", "none"), ("multi_processing", "gzip")])
def test_pipeline_writes_the_records_the_cli_writes(chips, tmp_path, mode, compression):
    common = [str(chips), "--encoding", "array", "--split", "train=0.75,val=0.25", "--shards", "2", "--compression", compression]
    local = CliRunner().invoke(cli, ["to-tfrecords", common[0], "--out", str(tmp_path / "local"), *common[1:]])
    assert local.exit_code == 0, local.output
    chips_to_tfrecords.main(
        [common[0], "--out", str(tmp_path / "beam"), *common[1:], "--runner=DirectRunner", f"--direct_running_mode={mode}", "--direct_num_workers=2"]
    )
    beam, cli_records = records_by_key(tmp_path / "beam"), records_by_key(tmp_path / "local")
    assert sorted(beam) == sorted(cli_records) and len(beam) > 0
    for key, (image, label, crs, transform, split) in cli_records.items():
        np.testing.assert_array_equal(beam[key][0], image)
        np.testing.assert_array_equal(beam[key][1], label)
        assert beam[key][2:] == (crs, transform, split)
    described = read_dataset_json(str(tmp_path / "beam"))
    local_described = read_dataset_json(str(tmp_path / "local"))
    for name in ("image", "label", "statistics", "features", "class_names", "schema"):
        assert described[name] == local_described[name]
    for split, info in described["splits"].items():
        assert info["records"] == local_described["splits"][split]["records"]
        assert len(info["shards"]) == 2
        for shard in info["shards"]:
            assert shard["sha256"] == storage.sha256(str(tmp_path / "beam" / shard["file"]))


def test_a_corrupt_chip_fails_the_pipeline_before_dataset_json(chips, tmp_path):
    import shutil

    broken = tmp_path / "chips"
    shutil.copytree(chips, broken)
    victim = sorted((broken / "images").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:200])
    with pytest.raises(Exception, match=victim.name):
        chips_to_tfrecords.main([str(broken), "--out", str(tmp_path / "out"), "--encoding", "array", "--shards", "1"])
    assert not (tmp_path / "out" / "dataset.json").exists()


def test_unpaired_chips_are_named_unless_skipped(chips, tmp_path):
    import shutil

    broken = tmp_path / "chips"
    shutil.copytree(chips, broken)
    lonely = sorted((broken / "labels").iterdir())[0]
    lonely.unlink()
    with pytest.raises(ChipError, match="unpaired"):
        chips_to_tfrecords.main([str(broken), "--out", str(tmp_path / "out"), "--encoding", "bytes", "--shards", "1"])
    chips_to_tfrecords.main([str(broken), "--out", str(tmp_path / "out"), "--encoding", "bytes", "--shards", "1", "--skip-bad"])
    described = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert [s["name"] for s in described["skipped"]] == [f"images/{lonely.name}"]


def test_shards_are_capped_at_a_splits_chips_and_overwrite_replaces_an_earlier_run(chips, tmp_path):
    from tfchips.chips import find_chip_pairs
    from tfchips.errors import ConfigError
    from tfchips.records.plan import plan_shards

    out = tmp_path / "out"
    splits = {"train": 0.98, "val": 0.01, "test": 0.01}
    plan = plan_shards([p.name for p in find_chip_pairs(str(chips)).pairs], 8, splits)
    assert sorted(map(len, plan.shards.values()))[:2] == [0, 1]  # a split without chips, one with fewer than 8
    chips_to_tfrecords.main([str(chips), "--out", str(out), "--split", "train=0.98,val=0.01,test=0.01", "--shards", "8"])
    described = read_dataset_json(str(out))
    for split, shards in plan.shards.items():
        # As the local writer: no more shards than chips, no empty shard, none for a split without chips.
        assert [s["records"] for s in described["splits"][split]["shards"]] == [len(names) for names in shards]
    with pytest.raises(ConfigError, match="pass `overwrite=True` to replace them"):
        chips_to_tfrecords.main([str(chips), "--out", str(out), "--shards", "1"])
    chips_to_tfrecords.main([str(chips), "--out", str(out), "--shards", "1", "--overwrite"])
    assert sorted(p.name for p in out.iterdir()) == ["data-00000-of-00001.tfrecord", "dataset.json"]


def test_skip_bad_leaves_out_the_chip_unlike_most(chips, tmp_path):
    import shutil

    import rasterio

    copy = tmp_path / "chips"
    shutil.copytree(chips, copy)
    odd = sorted((copy / "images").iterdir())[0]
    with rasterio.open(odd) as dataset:
        profile, pixels = dataset.profile, dataset.read()
    with rasterio.open(odd, "w", **{**profile, "dtype": "float32", "nodata": None}) as dataset:
        dataset.write(pixels.astype("float32"))
    chips_to_tfrecords.main([str(copy), "--out", str(tmp_path / "out"), "--shards", "1", "--skip-bad"])
    described = read_dataset_json(str(tmp_path / "out"))
    assert [s["name"] for s in described["skipped"]] == [odd.stem]
    assert described["splits"]["data"]["records"] == len(list((copy / "images").iterdir())) - 1


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_shard_info_counts_records_while_hashing(tmp_path, compression):
    import hashlib

    import tensorflow as tf

    from tfchips.errors import RecordError

    path = str(tmp_path / f"train-00000-of-00001.tfrecord{'.gz' if compression == 'gzip' else ''}")
    records = [b"a" * 10, b"", b"b" * (3 << 20), b"c" * 7]  # one record larger than a read block
    with tf.io.TFRecordWriter(path, "GZIP" if compression == "gzip" else "") as writer:
        for record in records:
            writer.write(record)
    data = open(path, "rb").read()
    split, info = chips_to_tfrecords.shard_info(path, compression)
    assert (split, info.file, info.records) == ("train", path.rsplit("/", 1)[-1], 4)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    if compression == "none":
        open(path, "wb").write(data[:-3])
        with pytest.raises(RecordError, match="truncated TFRecord shard"):
            chips_to_tfrecords.shard_info(path, compression)
