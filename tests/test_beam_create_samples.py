import json
import os
import shutil

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from shapely.geometry import mapping

from beam_pipelines import create_training_samples
from tfchips.cli.main import cli
from tfchips.grid import Tile
from tfchips.manifest import manifest_rows


def options(demo, out, tiles_file, catalog=None):
    return [
        "--tiles", str(tiles_file), "--catalog", catalog or demo.catalog, "--bands", ",".join(demo.bands),
        "--start", demo.start, "--end", demo.end, "--mask-asset", demo.mask_asset,
        "--mask-values", ",".join(map(str, demo.mask_values)), "--reference-date", demo.reference_date,
        "--labels", demo.labels, "--attribute", demo.attribute, "--out", str(out),
    ]


def with_broken_scene(demo, folder, key):
    """A copy of the demo catalog plus a scene over tile ``key`` alone whose files are missing:
    that tile fails (a tile no scene covers is only skipped)."""
    root = os.path.dirname(demo.catalog)
    shutil.copytree(root, folder)
    first = json.loads((folder / "catalog.json").read_text())
    item_link = next(link for link in first["links"] if link["rel"] == "item")
    item = json.loads((folder / item_link["href"]).read_text())
    item["id"] = "BROKEN"
    item["geometry"], item["bbox"] = mapping(Tile.from_key(key).geometry), list(Tile.from_key(key).geometry.bounds)
    for asset in item["assets"].values():
        asset["href"] = "./missing.tif"
    (folder / "BROKEN").mkdir()
    (folder / "BROKEN" / "BROKEN.json").write_text(json.dumps(item))
    first["links"].append({"rel": "item", "href": "./BROKEN/BROKEN.json", "type": "application/json"})
    (folder / "catalog.json").write_text(json.dumps(first))
    return str(folder / "catalog.json")


def pixels(out):
    found = {}
    for sub in ("images", "labels"):
        # The chips: labels/*.vrt beside them are ESRI's view of the ignore value.
        for name in sorted(n for n in os.listdir(out / sub) if n.endswith(".tif")):
            with rasterio.open(out / sub / name) as dataset:
                found[f"{sub}/{name}"] = (dataset.read(), dataset.transform, dataset.crs)
    return found


def dead_letters(out):
    return [json.loads(line) for f in (out / "dead_letter").iterdir() for line in f.read_text().splitlines()]


def serialized_by_key(out):
    """Each record of the shards in ``out`` as stored, by tile key."""
    import tensorflow as tf
    from tfchips.records.writer import read_dataset_json, shard_paths
    from tfchips.records.schema import decode_example

    dataset = read_dataset_json(str(out))
    found = {}
    for path in shard_paths(str(out)):
        for serialized in tf.data.TFRecordDataset(path):
            found[decode_example(serialized.numpy(), dataset).key] = serialized.numpy()
    return found


@pytest.mark.parametrize("mode", ["in_memory", "multi_processing"])
def test_pipeline_writes_the_chips_and_manifest_the_cli_writes_and_fails_as_it_does(demo, tmp_path, mode):
    good = ["32:0:10.0:13:-263:12341", "32:0:10.0:13:-262:12341", "32:0:10.0:13:-263:12342"]
    failing = "32:0:10.0:13:-263:14000"  # only a scene with missing files covers it
    catalog = with_broken_scene(demo, tmp_path / "catalog", failing)
    tiles_file = tmp_path / "tiles.txt"
    tiles_file.write_text("\n".join(good + [failing]) + "\n")
    local = CliRunner().invoke(
        cli, ["create-samples", *options(demo, tmp_path / "local", tiles_file, catalog), "--workers", "1"]
    )
    assert local.exit_code == 1, local.output  # the failing tile
    with pytest.raises(SystemExit) as exited:
        create_training_samples.main(
            [*options(demo, tmp_path / "beam", tiles_file, catalog), "--runner=DirectRunner",
             f"--direct_running_mode={mode}", "--direct_num_workers=2"]
        )
    assert exited.value.code == 1  # as the CLI: a failed tile fails the run
    beam_chips, local_chips = pixels(tmp_path / "beam"), pixels(tmp_path / "local")
    assert sorted(beam_chips) == sorted(local_chips) and len(beam_chips) == 2 * len(good)
    for name, (array, transform, crs) in local_chips.items():
        np.testing.assert_array_equal(beam_chips[name][0], array)
        assert beam_chips[name][1:] == (transform, crs)
    dead = dead_letters(tmp_path / "beam")
    assert [d["key"] for d in dead] == [failing] and dead[0]["error"]
    manifest = json.loads((tmp_path / "beam" / "manifest.json").read_text())
    local_manifest = json.loads((tmp_path / "local" / "manifest.json").read_text())
    assert manifest["counts"] == {"written": 3, "skipped": 0, "failed": 1}
    # The same manifest; parameters differ only by the options given differently, and Beam
    # merges per-tile moments in its own order: band means and deviations equal up to rounding.
    ran_with, local_ran_with = manifest.pop("parameters"), local_manifest.pop("parameters")
    bands, local_bands = manifest["statistics"].pop("bands"), local_manifest["statistics"].pop("bands")
    assert manifest == local_manifest
    assert [b.pop("name") for b in bands] == [b.pop("name") for b in local_bands]
    assert bands == [pytest.approx(band, rel=1e-12) for band in local_bands]
    # The same rows, in tile order; written as Beam's shards of JSON lines, no worker holding them all.
    assert sorted(manifest_rows(str(tmp_path / "beam")), key=lambda r: r["key"]) == list(manifest_rows(str(tmp_path / "local")))
    assert len(list(manifest_rows(str(tmp_path / "beam")))) == 4
    assert (tmp_path / "beam" / "map.txt").read_text() == (tmp_path / "local" / "map.txt").read_text()
    assert {k: v for k, v in ran_with.items() if k not in ("out", "workers")} == {
        k: v for k, v in local_ran_with.items() if k not in ("out", "workers")
    }


@pytest.mark.parametrize("encoding", ["array", "bytes"])
def test_pipeline_writes_records_byte_identical_to_chips_then_to_tfrecords(demo, tmp_path, encoding):
    from tfchips.records.writer import read_dataset_json

    good = ["32:0:10.0:13:-263:12341", "32:0:10.0:13:-262:12341", "32:0:10.0:13:-263:12342", "32:0:10.0:13:-262:12342"]
    failing = "32:0:10.0:13:-263:14000"
    catalog = with_broken_scene(demo, tmp_path / "catalog", failing)
    tiles_file = tmp_path / "tiles.txt"
    tiles_file.write_text("\n".join(good + [failing]) + "\n")
    record_options = ["--encoding", encoding, "--split", "train=0.5,val=0.5", "--shards", "1"]
    local = CliRunner().invoke(
        cli, ["create-samples", *options(demo, tmp_path / "chips", tiles_file, catalog), "--workers", "1"]
    )
    assert local.exit_code == 1, local.output
    converted = CliRunner().invoke(cli, ["to-tfrecords", str(tmp_path / "chips"), "--out", str(tmp_path / "local"), *record_options])
    assert converted.exit_code == 0, converted.output
    with pytest.raises(SystemExit) as exited:
        create_training_samples.main(
            [*options(demo, tmp_path / "beam", tiles_file, catalog), "--tfrecords", str(tmp_path / "beam"),
             *record_options, "--runner=DirectRunner"]
        )
    assert exited.value.code == 1
    assert not (tmp_path / "beam" / "images").exists()
    direct, via_chips = serialized_by_key(tmp_path / "beam"), serialized_by_key(tmp_path / "local")
    assert sorted(direct) == sorted(via_chips) == sorted(good)
    assert direct == via_chips  # the same bytes, record for record
    described, local_described = read_dataset_json(str(tmp_path / "beam")), read_dataset_json(str(tmp_path / "local"))
    for name in ("image", "label", "features", "schema"):
        assert described[name] == local_described[name]
    assert sum(split["records"] for split in described["splits"].values()) == len(good)
    assert [d["key"] for d in dead_letters(tmp_path / "beam")] == [failing]


def test_a_sample_whose_chips_cannot_be_encoded_fails_only_itself():
    import numpy as np

    from tfchips.grid import Tile
    from tfchips.manifest import ChipRecord
    from tfchips.records import RecordOptions
    from tfchips.sample_records import sample_record
    from tfchips.samples import Sample

    tile = Tile(8, 0, 10.0, 13, -132, 6170)
    wrong = np.zeros((1, 4, 4), np.uint16)  # not the tile's 8 x 8 grid
    sample = Sample(tile, ChipRecord(tile.key, "written"), ("red",), wrong, np.ones((4, 4), bool),
                    np.zeros((4, 4), np.uint8), 0, 255)
    record, encoded = sample_record(sample, RecordOptions("array"), "chips")
    assert encoded is None and record.status == "failed" and "does not fit tile" in record.reason
    skipped = Sample(tile, ChipRecord(tile.key, "skipped", reason="no scene"), ("red",))
    assert sample_record(skipped, RecordOptions("array")) == (skipped.record, None)
