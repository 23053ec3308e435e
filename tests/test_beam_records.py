import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from beam_pipelines import chips_to_tfrecords
from tfchips.cli.main import cli
from tfchips.demo_data import generate
from tfchips.errors import ChipError
from tfchips.records.writer import read_dataset_json


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


@pytest.fixture(scope="module")
def bare_chips(chips, tmp_path_factory):
    """The chips without their manifest, as an ESRI export or the replaced scripts leave them: statistics are computed."""
    import shutil

    copy = tmp_path_factory.mktemp("bare") / "chips"
    shutil.copytree(chips, copy)
    (copy / "manifest.json").unlink()
    return copy


def records_by_key(out):
    """key -> (image, label, crs, transform, split) of every record in a TFRecord folder (test_beam_create_samples uses it)."""
    import tensorflow as tf

    from tfchips.records import decode_example
    from tfchips.records.writer import shard_paths

    dataset = read_dataset_json(str(out))
    found = {}
    for path in shard_paths(str(out)):
        compression = "GZIP" if path.endswith(".gz") else ""
        for serialized in tf.data.TFRecordDataset(path, compression_type=compression):
            example = decode_example(serialized.numpy(), dataset)
            found[example.key] = (example.image, example.label, example.crs, example.transform, path.split("/")[-1].split("-")[0])
    return found


def files_of(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir())}


CASES = [
    ("array", "in_memory", "none"),
    ("bytes", "multi_processing", "gzip"),
    ("bytes", "in_memory", "zlib"),
]


@pytest.mark.parametrize("encoding, mode, compression", CASES)
def test_pipeline_writes_the_cli_shards_and_dataset_json_byte_for_byte(bare_chips, tmp_path, encoding, mode, compression):
    chips = bare_chips
    common = ["--encoding", encoding, "--split", "train=0.6,val=0.2,test=0.2", "--shards", "2", "--compression", compression]
    local = CliRunner().invoke(cli, ["to-tfrecords", str(chips), "--out", str(tmp_path / "local"), *common])
    assert local.exit_code == 0, local.output
    chips_to_tfrecords.main(
        [str(chips), "--out", str(tmp_path / "beam"), *common, "--runner=DirectRunner",
         f"--direct_running_mode={mode}", "--direct_num_workers=2"]
    )
    beam, cli_files = files_of(tmp_path / "beam"), files_of(tmp_path / "local")
    assert sorted(beam) == sorted(cli_files) and len(beam) > 2
    for name, data in cli_files.items():
        assert beam[name] == data, name
    described = read_dataset_json(str(tmp_path / "beam"))
    assert described["statistics_source"] == "sample" and described["statistics"]["class_counts"]
    assert sum(info["records"] for info in described["splits"].values()) == len(list((chips / "images").iterdir()))


def test_the_chip_folder_and_output_can_be_any_filesystems_url(chips, tmp_path):
    """A chip folder in a Beam file system no ``os`` call reaches: listed, read and written through FileSystems."""
    from beam_memory_fs import MemoryFileSystem

    root = "memchips://bucket/chips"
    for path in sorted(chips.rglob("*")):
        if path.is_file():
            MemoryFileSystem.files[f"{root}/{path.relative_to(chips).as_posix()}"] = path.read_bytes()
    common = ["--encoding", "array", "--split", "train=0.5,val=0.5", "--shards", "3", "--exact-statistics"]
    local = CliRunner().invoke(cli, ["to-tfrecords", str(chips), "--out", str(tmp_path / "local"), *common])
    assert local.exit_code == 0, local.output
    chips_to_tfrecords.main([root, "--out", "memchips://bucket/records", *common, "--runner=DirectRunner"])
    written = {p.rsplit("/", 1)[1]: d for p, d in MemoryFileSystem.files.items() if p.startswith("memchips://bucket/records/")}
    assert written == files_of(tmp_path / "local")


def test_a_million_chip_pipeline_serialises_to_under_1_mb_and_lists_nothing_while_built(tmp_path):
    import time

    import apache_beam as beam
    from beam_memory_fs import MemoryFileSystem

    from tfchips.records import RecordOptions, WriterOptions

    sizes = {}
    for count in (10, 1_000_000):
        root = f"memchips://bucket/virtual{count}"
        MemoryFileSystem.virtual[root] = count  # listed only when the pipeline runs
        MemoryFileSystem.files[f"{root}/manifest.json"] = b"{}"
        MemoryFileSystem.listed.clear()
        options = WriterOptions(RecordOptions("array"), shards=64, splits={"train": 0.8, "val": 0.2}, skip_bad=True)
        started = time.perf_counter()
        pipeline = beam.Pipeline()
        chips_to_tfrecords.build(pipeline, root, str(tmp_path / f"out{count}"), options)
        sizes[count] = len(pipeline.to_runner_api().SerializeToString())
        assert time.perf_counter() - started < 30  # no listing: seconds whatever the count
        assert not any("/images" in prefix or "/labels" in prefix for prefix in MemoryFileSystem.listed)
    assert sizes[1_000_000] <= 1_000_000
    assert abs(sizes[1_000_000] - sizes[10]) <= 64  # only the folder name differs


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
    splits = {"train": 0.9, "val": 0.05, "test": 0.05}
    names = [p.name for p in find_chip_pairs(str(chips)).pairs]
    # A seed that leaves a split without chips, and another with fewer chips than shards.
    seed = next(
        s for s in range(200)
        if sorted(len(plan_shards(names, 8, splits, seed=s).split_names(split)) for split in splits)[:2][0] == 0
        and 0 < sorted(len(plan_shards(names, 8, splits, seed=s).split_names(split)) for split in splits)[1] < 8
    )
    plan = plan_shards(names, 8, splits, seed=seed)
    chips_to_tfrecords.main([str(chips), "--out", str(out), "--split", "train=0.9,val=0.05,test=0.05", "--shards", "8", "--seed", str(seed)])
    described = read_dataset_json(str(out))
    for split, shards in plan.shards.items():
        # As the local writer: no more shards than chips, none for a split without chips, no empty shard.
        assert [s["records"] for s in described["splits"][split]["shards"]] == [len(n) for n in shards if n]
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
