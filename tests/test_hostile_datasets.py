"""dataset.json as untrusted input: each hostile file of issue #15 gets one clear error, or a problem from inspect.

Every case writes a real TFRecord folder (six 32 x 32 chips, four uint16 bands),
then damages its dataset.json the way the issue measured, and reads it back
through the public readers: `make_dataset`, `read_dataset_info`, `inspect_dataset`
and ``tfchips inspect``.
"""

import hashlib
import json
import os
import pickle
import shutil

import numpy as np
import pytest
import tensorflow as tf
from test_inspect import run
from test_parse import records, write_chips

from tfchips.errors import RecordError
from tfchips.inspect import inspect_dataset
from tfchips.parse import make_dataset
from tfchips.records import DatasetInfo, RecordOptions, WriterOptions, read_dataset_info, write_tfrecords
from tfchips.records.dataset_info import MAX_BYTES, MAX_DEPTH, BadChip
from tfchips.records.writer import write_dataset_json


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    return records(write_chips(root / "chips"), root / "records")


@pytest.fixture
def folder(pristine, tmp_path):
    """A copy of the records folder to damage."""
    return shutil.copytree(pristine, tmp_path / "records")


def edit(folder, change):
    """Rewrite ``folder``'s dataset.json with ``change`` applied to its parsed content."""
    path = folder / "dataset.json"
    content = json.loads(path.read_text())
    change(content)
    path.write_text(json.dumps(content))
    return str(path)


def one_line(error) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.mark.timeout(30)
@pytest.mark.parametrize("file", ["../outside.tfrecord", "sub/../../outside.tfrecord"])
def test_a_shard_file_outside_the_folder_is_refused_not_read_as_empty(folder, file):
    outside = folder.parent / "outside.tfrecord"
    shutil.copy(folder / "train-00000-of-00002.tfrecord", outside)
    path = edit(folder, lambda d: d["splits"]["train"]["shards"][0].update(file=file))
    with pytest.raises(RecordError) as error:
        make_dataset(str(folder), "train")
    assert one_line(error).startswith(f"{path}: splits.train.shards[0].file: {file!r} steps out of")


@pytest.mark.timeout(30)
def test_a_shard_symlinked_outside_the_folder_is_refused(folder):
    outside = folder.parent / "elsewhere.tfrecord"
    shard = folder / "train-00000-of-00002.tfrecord"
    os.replace(shard, outside)
    os.symlink(outside, shard)
    with pytest.raises(RecordError) as error:
        make_dataset(str(folder), "train")
    assert "splits.train.shards[0].file: 'train-00000-of-00002.tfrecord' resolves outside" in one_line(error)
    with pytest.raises(RecordError, match="resolves outside"):
        inspect_dataset(folder)


@pytest.mark.timeout(30)
def test_inspect_of_an_absolute_shard_path_neither_reads_nor_hashes_it(folder, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    digest = hashlib.sha256(secret.read_bytes()).hexdigest()
    for named in (str(secret), "/etc/passwd"):
        path = edit(folder, lambda d: d["splits"]["train"]["shards"][0].update(file=named))
        result = run("inspect", folder, "--json")
        assert result.exit_code == 1
        assert result.output == f"Error: {path}: splits.train.shards[0].file: {named!r} is an absolute path; " \
            "shard files must lie inside the dataset folder\n"
        assert digest not in result.output


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "text, message",
    [
        ("[1, 2, 3]", "expected an object, got a list"),
        ('"dataset"', "expected an object, got a string"),
        ("[" * 200_000 + "]" * 200_000, f"JSON nested more than {MAX_DEPTH} deep"),
        ('{"a": ' * (MAX_DEPTH + 1) + "1" + "}" * (MAX_DEPTH + 1), f"JSON nested more than {MAX_DEPTH} deep"),
        ("{not json", "not valid JSON (Expecting property name enclosed in double quotes"),
        (b"\xff\xfe{}", "not UTF-8 text (invalid start byte at byte 0)"),
    ],
)
def test_a_dataset_json_that_is_no_object_or_nests_too_deep_is_one_clear_error(folder, text, message):
    path = folder / "dataset.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(RecordError) as error:
        make_dataset(str(folder))
    assert one_line(error).startswith(f"{path}: {message}")


@pytest.mark.timeout(30)
def test_brackets_inside_strings_do_not_count_as_nesting(folder):
    edit(folder, lambda d: d["skipped"].append({"name": "[" * 1000, "reason": '"{' * 500}))
    assert read_dataset_info(folder).skipped[0] == BadChip("[" * 1000, '"{' * 500)


@pytest.mark.timeout(30)
def test_a_dataset_json_over_the_size_bound_is_refused_before_parsing(folder):
    path = folder / "dataset.json"
    with open(path, "wb") as stream:
        stream.truncate(MAX_BYTES + 1)  # sparse: no 64 MiB written
    with pytest.raises(RecordError) as error:
        read_dataset_info(folder)
    assert one_line(error) == f"{path}: {MAX_BYTES + 1:,} bytes, more than the {MAX_BYTES:,} a dataset.json may hold"


@pytest.mark.timeout(30)
def test_a_fifo_named_dataset_json_is_refused_not_waited_on(folder):
    path = folder / "dataset.json"
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(RecordError, match=f"^{path}: not a regular file$"):
        read_dataset_info(folder)


@pytest.mark.timeout(30)
def test_missing_parts_are_derived_and_wrong_parts_are_named(folder):
    expected = [image.numpy() for image, _ in make_dataset(str(folder), image_dtype=None)]
    edit(folder, lambda d: d["image"].pop("parts"))
    images = [image.numpy() for image, _ in make_dataset(str(folder), image_dtype=None)]
    assert len(images) == 6 and all(np.array_equal(a, b) for a, b in zip(images, expected))
    path = edit(folder, lambda d: d["image"].update(parts=[3]))
    with pytest.raises(RecordError) as error:
        make_dataset(str(folder))
    assert one_line(error) == f"{path}: image.parts: [3] is not how array holds 4 bands ([4])"


@pytest.mark.timeout(30)
def test_a_dtype_numpy_knows_but_records_cannot_hold_is_named(folder):
    path = edit(folder, lambda d: d["image"].update(dtype="object"))
    with pytest.raises(RecordError) as error:
        make_dataset(str(folder))
    assert one_line(error).startswith(f"{path}: image.dtype: 'object' is not one of uint8, int8, uint16")


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "change, field, message",
    [
        (lambda d: d.pop("splits"), "", "missing field 'splits'"),
        (lambda d: d.update(schema_version=2), "schema_version", "2 is not the 1 this version reads"),
        (lambda d: d.update(schema="mine"), "schema", "'mine' is not one of tfchips, legacy"),
        (lambda d: d.update(extra=1), "", "unknown field 'extra'"),
        (lambda d: d.update(compression="lz4"), "compression", "'lz4' is not one of none, gzip, zlib"),
        (lambda d: d["image"].update(shape=[32, 32]), "image.shape", "2 entries, not 3 (rows, cols, bands)"),
        (lambda d: d["image"].update(shape=[0, 32, 4]), "image.shape[0]", "0 is not in 1..65536"),
        (lambda d: d["label"].update(shape=[32, 70000, 1]), "label.shape[1]", "70000 is not in 1..65536"),
        (lambda d: d["image"].update(shape=[32, 32, True]), "image.shape[2]", "expected an integer, got a boolean"),
        (lambda d: d["image"].update(band_names=["a"]), "image.band_names", "1 band names for 4 bands"),
        (lambda d: d["image"].update(nodata="zero"), "image.nodata", "expected a number, got a string"),
        (lambda d: d["label"].update(encoding="webp"), "label.encoding", "'webp' is not one of bytes, png, array"),
        (lambda d: d["features"]["image/data"].update(shape=[9]), "features.image/data",
         "{'type': 'bytes', 'shape': [9]} does not follow from schema, image and label, which give "
         "{'type': 'bytes', 'shape': [1]}"),
        (lambda d: d["features"].update(extra={}), "features.extra", "{} does not follow"),
        (lambda d: d["splits"]["train"]["shards"][1].update(records=-1), "splits.train.shards[1].records",
         "-1 is not in 0..1099511627776"),
        (lambda d: d["splits"]["val"]["shards"][0].update(sha256="abc"), "splits.val.shards[0].sha256",
         "'abc' is not a SHA-256 (64 hex digits)"),
        (lambda d: d["splits"]["train"]["shards"][0].update(file=""), "splits.train.shards[0].file",
         "'' is not a file name"),
        (lambda d: d["splits"]["train"]["shards"][0].update(file="C:\\x.tfrecord"), "splits.train.shards[0].file",
         "'C:\\\\x.tfrecord' is not a file name"),
        (lambda d: d["splits"].update({"../x": d["splits"].pop("val")}), "splits.../x", "split names are words"),
        (lambda d: d["splits"]["val"].update(shards={}), "splits.val.shards", "expected a list, got an object"),
        (lambda d: d.update(class_names={"1": 7}), "class_names.1", "expected a string, got a number"),
        (lambda d: d["statistics"]["bands"][0].update(mean="high"), "statistics.bands[0].mean",
         "expected a number, got a string"),
        (lambda d: d["split"]["fractions"].update(train=2), "split.fractions.train", "2 is not a fraction in (0, 1]"),
        (lambda d: d["skipped"].append({"name": 1}), "skipped[0].name", "expected a string, got a number"),
    ],
)
def test_each_bad_field_is_one_record_error_naming_the_file_and_field(folder, change, field, message):
    path = edit(folder, change)
    with pytest.raises(RecordError) as error:
        read_dataset_info(folder)
    assert one_line(error).startswith(f"{path}: {field + ': ' if field else ''}{message}")


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "change, contradiction",
    [
        (lambda d: d["image"].update(shape=[16, 16, 4]), "image shape 32 x 32 x 4, not 16 x 16 x 4"),
        (lambda d: d["image"].update(dtype="float32"), "image dtype uint16, not float32"),
        (lambda d: d["label"].update(band_names=["classes"]), "label bands ['label'], not ['classes']"),
        (lambda d: d["image"].update(encoding="png", format="png", parts=[4]), "image encoding array, not png"),
    ],
)
def test_inspect_reports_records_that_contradict_dataset_json(folder, change, contradiction):
    edit(folder, change)
    inspection = inspect_dataset(folder)
    assert not inspection.verified
    messages = {p.message.split(" contradicts dataset.json: ")[1] for p in inspection.problems}
    assert messages == {contradiction}
    assert len(inspection.problems) == 6  # one per record
    result = run("inspect", folder)
    assert result.exit_code == 1 and result.stdout.splitlines()[-1] == "NOT verified"


@pytest.mark.timeout(30)
def test_a_shard_holding_fewer_records_than_listed_fails_the_epoch(folder):
    def overstate(content):
        content["splits"]["train"]["shards"][0]["records"] += 2

    edit(folder, overstate)
    dataset = make_dataset(str(folder), "train")
    assert len(dataset) == 5
    with pytest.raises(tf.errors.OpError, match="expected to contain 5 elements but contained only 3"):
        list(dataset)


# ---------------------------------------------------------------------------
# DatasetInfo both ways
# ---------------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "options",
    [
        WriterOptions(shards=2, workers=1, splits={"train": 0.5, "val": 0.5}, compression="gzip"),
        WriterOptions(RecordOptions("png", schema="legacy"), shards=1, workers=1, statistics=False),
        WriterOptions(RecordOptions("bytes"), shards=3, workers=1, split_by="block:2", seed=7),
    ],
)
def test_writer_output_round_trips_through_dataset_info(pristine, tmp_path, options):
    chips = pristine.parent / "chips"
    written = write_tfrecords(chips, tmp_path / "out", options)
    text = (tmp_path / "out" / "dataset.json").read_text()
    assert json.loads(text) == written
    info = DatasetInfo.from_json(text, "dataset.json")
    assert info.as_json() == written
    assert json.dumps(info.as_json(), indent=2) + "\n" == text  # same bytes, key order included
    assert DatasetInfo.from_mapping(info.as_json()) == info
    assert read_dataset_info(tmp_path / "out") == info


@pytest.mark.timeout(30)
def test_dataset_info_is_frozen_and_its_json_a_copy(pristine):
    info = read_dataset_info(pristine)
    with pytest.raises(AttributeError):
        info.schema = "legacy"
    with pytest.raises(TypeError):
        info.statistics["bands"] = ()
    content = info.as_json()
    content["statistics"]["bands"].clear()
    assert len(info.as_json()["statistics"]["bands"]) == 4
    assert pickle.loads(pickle.dumps(info)) == info
    assert [s.name for s in info.splits] == ["train", "val"] and info.split_named("test") is None
    assert info.shard_paths(pristine, "val") == [
        os.path.join(pristine, s.file) for s in info.split_named("val").shards
    ]


@pytest.mark.timeout(30)
def test_the_writer_refuses_to_publish_a_dataset_json_no_reader_accepts(pristine, tmp_path):
    content = read_dataset_info(pristine).as_json()
    content["splits"]["train"]["shards"][0]["file"] = "/etc/passwd"
    with pytest.raises(RecordError, match=r"splits\.train\.shards\[0\]\.file: '/etc/passwd' is an absolute path"):
        write_dataset_json(tmp_path, content)
    assert os.listdir(tmp_path) == []
