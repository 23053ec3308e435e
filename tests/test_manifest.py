import json

import numpy as np
import pytest
import rasterio

from tfchips.chip_folder import chip_pair_exists, chip_paths, read_written_pair, remove_partial_files, write_chip_pair
from tfchips.tile_geotiff import encode_geotiff
from tfchips import storage
from tfchips.errors import ChipError
from tfchips.grid import Tile
from tfchips.manifest import build_manifest, chip_record, dataset_statistics
from tfchips.statistics import empty_statistics, statistics_json

TILE = Tile.from_key("32:4:10.0:13:-34:1542")


def chip(seed):
    rng = np.random.default_rng(seed)
    image = rng.integers(1, 5000, size=(3, TILE.size, TILE.size), dtype=np.uint16)
    image[:, :5, :] = 0  # nodata rows
    label = rng.integers(0, 3, size=TILE.shape, dtype=np.uint8)
    label[-3:, :] = 255
    valid = np.ones(TILE.shape, bool)
    valid[:5, :] = False
    return image, valid, label


def test_statistics_merge_equals_numpy_over_all_values():
    rng = np.random.default_rng(1)
    parts = [rng.normal(100, 20, size=(n, 1, 1)) for n in (10, 1000, 1, 7)]
    merged = empty_statistics(1)
    for part in parts:
        labels = np.zeros(part.shape[:2], dtype=np.uint8)
        merged = merged.merge(chip_record("k", np.moveaxis(part, -1, 0), np.ones(part.shape[:2], bool), labels, (), 0, None).statistics)
    everything = np.concatenate([p.ravel() for p in parts])
    summary = statistics_json(merged, ("x",))["bands"][0]
    assert summary["count"] == everything.size
    assert summary["mean"] == pytest.approx(everything.mean(), rel=1e-12)
    assert summary["std"] == pytest.approx(everything.std(), rel=1e-9)
    assert (summary["min"], summary["max"]) == (everything.min(), everything.max())


def test_statistics_over_records_match_numpy():
    chips = [chip(seed) for seed in range(3)]
    records = [chip_record(f"k{i}", im, va, la, ("s",), 0, 255) for i, (im, va, la) in enumerate(chips)]
    stats = dataset_statistics(records, ("b", "g", "r"))
    for band in range(3):
        values = np.concatenate([im[band][va] for im, va, _ in chips]).astype(float)
        assert stats["bands"][band]["mean"] == pytest.approx(values.mean())
        assert stats["bands"][band]["std"] == pytest.approx(values.std())
        assert stats["bands"][band]["min"] == values.min()
    labels = np.concatenate([la.ravel() for _, _, la in chips])
    # The ignore value is not a class: it is left out of counts and frequencies.
    assert stats["class_counts"] == {str(v): int((labels == v).sum()) for v in (0, 1, 2)}
    labelled = labels[labels != 255]
    assert stats["class_frequencies"]["1"] == pytest.approx((labelled == 1).mean())
    assert records[0].labelled_fraction == pytest.approx(np.isin(chips[0][2], (1, 2)).mean())


def test_chip_pair_is_written_with_georeference_names_and_tags(tmp_path):
    image, valid, label = chip(0)
    write_chip_pair(str(tmp_path), TILE, image, 0, ("blue", "green", "red"), label, 255, ("scene-a", "scene-b"))
    image_path, label_path = chip_paths(str(tmp_path), TILE.key)
    assert image_path.endswith("images/32#4#10.0#13#-34#1542.tif")
    with rasterio.open(image_path) as dataset:
        assert dataset.crs.to_string() == "EPSG:32613"
        assert dataset.transform == TILE.transform
        assert dataset.descriptions == ("blue", "green", "red")
        assert dataset.nodata == 0 and dataset.compression.name == "lzw"
        assert dataset.block_shapes == [(48, 48)] * 3
        np.testing.assert_array_equal(dataset.read(), image)
    with rasterio.open(label_path) as dataset:
        assert dataset.count == 1 and dataset.dtypes[0] == "uint8" and dataset.nodata == 255
        np.testing.assert_array_equal(dataset.read(1), label)
    pair = read_written_pair(str(tmp_path), TILE.key)
    np.testing.assert_array_equal(pair.valid, valid)
    np.testing.assert_array_equal(pair.image, image)
    np.testing.assert_array_equal(pair.label, label)
    assert pair.scenes == ("scene-a", "scene-b") and pair.label_nodata == 255
    assert pair.band_names == ("blue", "green", "red")
    assert chip_pair_exists(str(tmp_path), TILE.key)


def test_an_array_that_does_not_fit_the_tile_is_refused():
    with pytest.raises(ChipError, match="does not fit tile"):
        encode_geotiff(np.zeros((1, 3, 3), dtype=np.uint8), TILE, None)


def test_a_failed_publish_leaves_no_file(tmp_path, monkeypatch):
    def interrupted(*args):
        raise KeyboardInterrupt  # as if killed mid-write

    monkeypatch.setattr("os.replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        storage.publish(str(tmp_path / "images" / "x.tif"), b"data")
    assert list((tmp_path / "images").iterdir()) == []


def test_partial_files_are_removed(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / ".partial-abc.tif").write_bytes(b"half")
    (tmp_path / "images" / "kept.tif").write_bytes(b"x")
    assert remove_partial_files(str(tmp_path)) == 1
    assert [p.name for p in (tmp_path / "images").iterdir()] == ["kept.tif"]


def test_valid_pixels_leave_out_nodata_and_nan_in_any_band():
    from tfchips.chips import valid_pixels

    image = np.ones((2, 2, 3), dtype=np.float32)
    image[0, 0, 0] = np.nan
    image[1, 1, 2] = -9999
    np.testing.assert_array_equal(valid_pixels(image, None), [[False, True, True], [True, True, True]])
    np.testing.assert_array_equal(valid_pixels(image, -9999), [[False, True, True], [True, True, False]])
    assert valid_pixels(np.zeros((1, 2, 2), np.uint8), float("nan")).all()


def records_of_three_tiles():
    from tfchips.manifest import ChipRecord

    keys = ["32:4:10.0:13:-34:1542", "32:4:10.0:13:-33:1542", "32:4:10.0:13:-34:1543"]
    written = [chip_record(key, *chip(seed)[:2], chip(seed)[2], ("s",), 0, 255) for seed, key in enumerate(keys[:2])]
    return [*written, ChipRecord(keys[2], "failed", reason="boom")]


def test_the_summary_merges_in_any_grouping_to_the_counts_and_statistics_of_the_rows():
    from tfchips.manifest import ManifestSummary, summarize

    records = records_of_three_tiles()
    one, two, three = (ManifestSummary.of(r) for r in records)
    left, right = one.merge(two).merge(three), three.merge(two.merge(one))
    assert left.counts == right.counts == {"written": 2, "skipped": 0, "failed": 1}
    assert left.statistics.class_counts == right.statistics.class_counts == summarize(records).statistics.class_counts
    for a, b in zip(left.statistics.bands, right.statistics.bands):
        assert (a.count, a.minimum, a.maximum) == (b.count, b.minimum, b.maximum)
        assert a.mean == pytest.approx(b.mean, rel=1e-12) and a.m2 == pytest.approx(b.m2, rel=1e-12)
    assert build_manifest(records, {}, ("a", "b", "c"), {}, 255) == build_manifest(summarize(records), {}, ("a", "b", "c"), {}, 255)


def test_rows_are_written_beside_the_manifest_and_an_earlier_runs_rows_go(tmp_path):
    from tfchips.manifest import manifest_rows, rows_files, write_rows

    (tmp_path / "manifest").mkdir()
    stale = tmp_path / "manifest" / "rows-00003-of-00004.jsonl"
    stale.write_text('{"key": "gone", "status": "written"}\n')
    records = records_of_three_tiles()
    write_rows(str(tmp_path), reversed(records))
    assert [p.rsplit("/", 1)[-1] for p in rows_files(str(tmp_path))] == ["rows-00000-of-00001.jsonl"]
    rows = list(manifest_rows(str(tmp_path), build_manifest(records, {}, ("a", "b", "c"), {}, 255)))
    assert rows == [r.as_json() for r in sorted(records, key=lambda r: r.key)]


def test_manifests_with_their_rows_inline_are_still_read(tmp_path):
    from tfchips.manifest import manifest_rows

    old = {"counts": {"written": 1}, "tiles": [{"key": TILE.key, "status": "written"}]}
    (tmp_path / "manifest.json").write_text(json.dumps(old))
    assert list(manifest_rows(str(tmp_path))) == old["tiles"]


def test_a_rows_file_that_is_not_json_lines_is_named(tmp_path):
    from tfchips.manifest import manifest_rows

    (tmp_path / "manifest").mkdir()
    (tmp_path / "manifest" / "rows-00000-of-00001.jsonl").write_text('{"key": 1}\nnot json\n')
    with pytest.raises(ChipError, match="rows-00000-of-00001.jsonl: line 2 is not a manifest row"):
        list(manifest_rows(str(tmp_path), {"rows": "manifest/rows-*.jsonl"}))
