"""ESRI "Classified Tiles" metadata: its shape here, ESRI's own prepare_data where .venv-arcgis exists."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from conftest import write_vector
from tfchips.chips import find_chip_pairs
from tfchips.cli import main
from tfchips.errors import ChipError
from tfchips.esri import esri_classes, remove_esri_metadata, write_esri_metadata
from tfchips.grid import Tile
from tfchips.manifest import build_manifest, chip_record

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCGIS_VENV = os.path.join(REPO, ".venv-arcgis")
ARCGIS_PYTHON = os.path.join(ARCGIS_VENV, "bin", "python")
TILE = Tile.from_key("32:4:10.0:13:-34:1542")
NAME = "32#4#10.0#13#-34#1542.tif"


def run(*args):
    return CliRunner().invoke(main.cli, [str(a) for a in args])


def small_manifest(class_names, ignore_value=255):
    rng = np.random.default_rng(0)
    image = rng.integers(1, 5000, size=(3, TILE.size, TILE.size), dtype=np.uint16)
    label = rng.integers(0, 3, size=TILE.shape, dtype=np.uint8)
    if ignore_value is not None:
        label[-3:, :] = ignore_value
    valid = np.ones(TILE.shape, bool)
    record = chip_record(TILE.key, image, valid, label, ("s",), 0, ignore_value)
    manifest = build_manifest([record], {"collection": "sentinel-2-l2a"}, ("red", "green", "blue"), class_names, ignore_value)
    return (manifest, [record.as_json()]), label


def write_label(folder, label):
    from tfchips.chip_folder import write_chip_pair

    image = np.ones((3, TILE.size, TILE.size), np.uint16)
    write_chip_pair(str(folder), TILE, image, 0, ("red", "green", "blue"), label, 255, ("s",))


def test_metadata_has_esri_fields_names_types_and_order(tmp_path):
    (manifest, rows), label = small_manifest({0: "background", 1: "road", 2: "water"})
    write_esri_metadata(str(tmp_path), manifest, rows, TILE.size, 10.0, TILE.crs)
    emd = json.loads((tmp_path / "esri_model_definition.emd").read_text())
    # Class 0 was named: every class moves up one, 0 stays ESRI's NoData.
    assert emd["Classes"] == [
        {"Value": 1, "Name": "background", "Color": [0, 0, 0]},
        {"Value": 2, "Name": "road", "Color": [230, 25, 75]},
        {"Value": 3, "Name": "water", "Color": [60, 180, 75]},
    ]
    assert emd["MetaDataMode"] == "Classified_Tiles" and emd["ImageHeight"] == TILE.size == emd["ImageWidth"]
    assert emd["InputRastersProps"] == {"RasterCount": 1, "SensorName": "sentinel-2-l2a", "BandNames": ["red", "green", "blue"]}
    bands = manifest["statistics"]["bands"]
    assert emd["AllTilesStats"] == [
        {"BandName": b["name"], "Min": b["min"], "Max": b["max"], "Mean": b["mean"], "StdDev": b["std"]} for b in bands
    ]
    stats = json.loads((tmp_path / "esri_accumulated_stats.json").read_text())
    assert list(stats)[:2] == ["Version", "MetaDataMode"] and stats["MetaDataMode"] == "Classified_Tiles"
    assert stats["NumTiles"] == 1 and stats["NumBands"] == 3 and stats["SpatialReference"]["wkid"] == 32613
    assert stats["NumClasses"] == 3
    assert stats["Classes"] == [
        {"ClassValue": 1, "ClassName": "background"}, {"ClassValue": 2, "ClassName": "road"}, {"ClassValue": 3, "ClassName": "water"}
    ]
    pixels = stats["ClassPixelStats"]
    expected = [int((label == value).sum()) for value in (0, 1, 2)]
    # ESRI reads these as np.array(..., dtype=np.int64) in the order of Classes.
    assert pixels["NumPixelsPerClass"] == expected and all(type(n) is int for n in expected)
    assert np.array(pixels["NumPixelsPerClass"], dtype=np.int64).sum() == TILE.size**2 - 3 * TILE.size
    assert pixels["NumImagesTotal"] == 1 and pixels["NumImagesPerClass"] == [1, 1, 1]
    assert pixels["NumClassesPerImage"] == {"Min": 3, "Max": 3, "Mean": 3.0, "Sum": 3, "Count": 1}
    assert [p["Sum"] for p in pixels["PixelsPerClass"]] == expected
    assert stats["OutputFeatures"] == sum(expected)
    assert [s["Num"] for s in stats["BandStatsState"]] == [b["count"] for b in bands]
    assert stats["BandStatsState"][0]["M2"] == pytest.approx(bands[0]["std"] ** 2 * bands[0]["count"])
    assert "FeatureStats" not in stats  # its list of objects is what ESRI could not read
    assert (tmp_path / "map.txt").read_text() == f"images\\{NAME}  labels\\{NAME[:-4]}.vrt\n"
    assert "Class 1 (background): " in (tmp_path / "stats.txt").read_text()


def test_esri_class_values_keep_names_and_send_ignore_to_nodata():
    named_zero = esri_classes({0: "background", 1: "building"}, {0: 10, 1: 5, 3: 2}, 255)
    assert named_zero.values == {0: 1, 1: 2, 3: 4}
    assert named_zero.names == {1: "background", 2: "building", 4: "class_3"}
    lookup = named_zero.lookup()
    assert (lookup[0], lookup[1], lookup[3], lookup[2], lookup[255]) == (1, 2, 4, 0, 0)
    assert not named_zero.is_identity(None)
    unnamed_zero = esri_classes({1: "building", 2: "water"}, {0: 10, 1: 5}, None)
    assert unnamed_zero.values == {1: 1, 2: 2} and unnamed_zero.is_identity(None)
    assert not unnamed_zero.is_identity(255)  # 255 must read as NoData, not as class index 255
    ignore_zero = esri_classes({0: "outside", 1: "building"}, {1: 5}, 0)
    assert ignore_zero.values == {1: 1} and ignore_zero.is_identity(0)


def test_label_view_reads_esri_values_through_gdal(tmp_path):
    manifest, label = small_manifest({0: "background", 1: "road", 2: "water"})
    write_label(tmp_path, label)
    write_esri_metadata(str(tmp_path), *manifest, TILE.size, 10.0, TILE.crs)
    with rasterio.open(tmp_path / "labels" / (NAME[:-4] + ".vrt")) as view:
        seen = view.read(1)
        assert view.crs.to_string() == TILE.crs and view.transform.almost_equals(TILE.transform)
    expected = np.where(label == 255, 0, label + 1)
    np.testing.assert_array_equal(seen, expected)
    with rasterio.open(tmp_path / "labels" / NAME) as chip:
        np.testing.assert_array_equal(chip.read(1), label)  # tfchips' own label keeps its values
    # tfchips pairs by raster suffix: the view is no chip.
    assert [p.name for p in find_chip_pairs(tmp_path).pairs] == [NAME[:-4]]


def test_views_an_earlier_run_wrote_go_when_no_longer_needed(tmp_path):
    manifest, label = small_manifest({0: "background", 1: "road"})
    write_label(tmp_path, label)
    write_esri_metadata(str(tmp_path), *manifest, TILE.size, 10.0, TILE.crs)
    view = tmp_path / "labels" / (NAME[:-4] + ".vrt")
    assert view.exists()
    identity, _ = small_manifest({1: "road", 2: "water"}, ignore_value=None)
    write_esri_metadata(str(tmp_path), *identity, TILE.size, 10.0, TILE.crs)
    assert not view.exists()
    assert (tmp_path / "map.txt").read_text() == f"images\\{NAME}  labels\\{NAME}\n"
    write_esri_metadata(str(tmp_path), *manifest, TILE.size, 10.0, TILE.crs)
    remove_esri_metadata(str(tmp_path))  # a later run wrote no chip: an earlier chip keeps its view
    assert view.exists() and (tmp_path / "labels" / NAME).exists() and not (tmp_path / "map.txt").exists()
    write_esri_metadata(str(tmp_path), *manifest, TILE.size, 10.0, TILE.crs)
    for side in ("images", "labels"):
        (tmp_path / side / NAME).unlink()  # as create-samples removes the chips of a tile that failed
    remove_esri_metadata(str(tmp_path))
    assert not view.exists() and not (tmp_path / "map.txt").exists()


def esri_export(tmp_path, stats):
    for sub in ("images", "labels"):
        (tmp_path / sub).mkdir()
    for index in range(3):
        (tmp_path / "images" / f"{index:09d}.tif").write_bytes(b"II*\0")
        (tmp_path / "labels" / f"{index:09d}.xml").write_text("<annotation/>")
    (tmp_path / "esri_accumulated_stats.json").write_bytes(stats)
    return tmp_path


@pytest.mark.timeout(30)
def test_other_esri_metadata_modes_are_named_not_counted_as_unpaired(tmp_path):
    folder = esri_export(tmp_path, json.dumps({"MetaDataMode": "PASCAL_VOC_rectangles"}).encode())
    with pytest.raises(ChipError, match=r"esri_accumulated_stats\.json: MetaDataMode is 'PASCAL_VOC_rectangles'; "
                       r"tfchips reads only Classified_Tiles"):
        find_chip_pairs(folder)
    for command in (["to-tfrecords", folder, "--out", tmp_path / "records", "--shards", "1"], ["inspect", folder]):
        result = subprocess.run(
            [sys.executable, "-m", "tfchips", *map(str, command)], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 1, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "MetaDataMode is 'PASCAL_VOC_rectangles'" in lines[0], result.stderr
        assert "unpaired" not in result.stderr
    assert not (tmp_path / "records").exists()


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "content, problem",
    [
        (b"{not json", "not a valid ESRI statistics file"),
        (b"[1, 2]", "not a valid ESRI statistics file"),
        (b'{"MetaDataMode": {"x": 1}}', "MetaDataMode is \"{'x': 1}\""),
        (b" " * (16 * 2**20 + 1), "ESRI statistics over 16 MiB"),
    ],
)
def test_hostile_esri_statistics_give_one_line_naming_the_file(tmp_path, content, problem):
    folder = esri_export(tmp_path, content)
    with pytest.raises(ChipError) as raised:
        find_chip_pairs(folder)
    message = str(raised.value)
    assert message.startswith(str(folder / "esri_accumulated_stats.json")) and problem in message
    assert "\n" not in message


def test_classified_tiles_exports_still_pair(tmp_path):
    folder = esri_export(tmp_path, b'\xef\xbb\xbf{"MetaDataMode": "Classified_Tiles"}')
    for index in range(3):
        (folder / "labels" / f"{index:09d}.tif").write_bytes(b"II*\0")
    assert len(find_chip_pairs(folder).pairs) == 3


# ---------------------------------------------------------------------------
# ESRI's own loader (opt-in: `make test-arcgis` builds .venv-arcgis)
# ---------------------------------------------------------------------------


def create_samples(demo, out, **overrides):
    options = {**demo.job_options(), "out": out, "workers": 1, **overrides}
    args = ["create-samples"]
    for name, value in options.items():
        args += [f"--{name.replace('_', '-')}", value]
    result = run(*args)
    assert result.exit_code == 0, result.output
    return out


def eight_bit_catalog(demo, root):
    """The demo catalog with its visible bands divided by 8 into uint8 (what an RGB export holds)."""
    copy = shutil.copytree(demo.root, root)
    for item_path in sorted(copy.glob("*/*.json")):
        item = json.loads(item_path.read_text())
        for band in ("red", "green", "blue"):
            path = item_path.parent / f"{band}.tif"
            with rasterio.open(path) as dataset:
                pixels, profile = dataset.read(), dataset.profile
            profile.update(dtype="uint8", driver="GTiff")
            eight = np.where(pixels == 0, 0, np.clip(pixels // 8, 1, 255)).astype(np.uint8)
            with rasterio.open(path, "w", **profile) as dataset:
                dataset.write(eight)
            for entry in item["assets"][band]["raster:bands"]:
                entry["data_type"] = "uint8"
        item_path.write_text(json.dumps(item))
    return str(copy / "catalog.json")


def arcgis_folders(demo, root):
    """Four chip folders: the demo, 3-band uint8, one with an ignore extent, one whose class 0 is named."""
    west, south, east, north = demo.bbox
    import shapely

    extent = write_vector(root / "extent.gpkg", [shapely.box(west, south, (west + east) / 2, north)])
    no_zero = "1=building,2=water,3=vegetation"
    return {
        "demo": create_samples(demo, root / "demo"),
        "rgb8": create_samples(
            demo, root / "rgb8", catalog=eight_bit_catalog(demo, root / "catalog8"), bands="red,green,blue", classes=no_zero
        ),
        "extent": create_samples(demo, root / "extent", extent=extent, classes=no_zero),
        "class0": create_samples(demo, root / "class0", extent=extent, classes="0=land,1=building,2=water,3=vegetation"),
    }


def expected_classes(manifest):
    names = {int(k): v for k, v in manifest["class_names"].items()}
    counts = {int(k): c for k, c in manifest["statistics"]["class_counts"].items()}
    classes = esri_classes(names, counts, manifest["ignore_value"])
    pixels = [sum(c for v, c in counts.items() if classes.values.get(v) == esri) for esri in classes.names]
    total = sum(pixels)
    weights = [total / p if p else 0.0 for p in pixels]
    return ["NoData", *classes.names.values()], weights


@pytest.mark.timeout(900)
def test_arcgis_prepare_data_accepts_tfchips_folders(demo, tmp_path):
    if not os.path.exists(os.path.join(ARCGIS_VENV, ".installed")):
        # `make test-arcgis` sets TFCHIPS_REQUIRE_ARCGIS, so that there a missing venv fails.
        assert not os.environ.get("TFCHIPS_REQUIRE_ARCGIS"), f"{ARCGIS_VENV} is not built"
        pytest.skip("ESRI's arcgis.learn lives in .venv-arcgis, which is not built; `make test-arcgis` builds it and runs this")
    folders = arcgis_folders(demo, tmp_path)
    harness = os.path.join(REPO, "tests", "arcgis", "prepare_data_report.py")
    result = subprocess.run(
        [ARCGIS_PYTHON, harness, str(tmp_path / "arcgis"), *map(str, folders.values())],
        capture_output=True, text=True, timeout=840,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    reports = json.loads((tmp_path / "arcgis" / "report.json").read_text())
    for name, folder in folders.items():
        report = reports[str(folder)]
        manifest = json.loads((folder / "manifest.json").read_text())
        classes, weights = expected_classes(manifest)
        assert report["classes"] == classes, name
        assert report["class_weight"] == pytest.approx(weights), name
        # No label prepare_data loads lies outside the declared classes: not 255, not beyond c.
        assert set(report["label_values"]) <= set(range(report["c"])) and report["c"] == len(classes), name
        assert report["train"] + report["valid"] == manifest["counts"]["written"] == 16, name
        assert report["valid"] == 4, name
        assert report["batch_x"][0] == 4 and report["batch_y"][1:] == [1, 64, 64], name
        assert np.isfinite(report["loss"]) and report["show_batch_bytes"] > 10_000, name
        bands = manifest["statistics"]["bands"]
        if len(bands) > 3:  # ESRI's multispectral path takes names and statistics from the .emd
            assert report["is_multispectral"] and report["band_names"] == [b["name"] for b in bands], name
            assert report["band_min"] == pytest.approx([b["min"] for b in bands]), name
            assert report["band_max"] == pytest.approx([b["max"] for b in bands]), name
            assert report["band_mean"] == pytest.approx([b["mean"] for b in bands]), name
            assert report["band_std"] == pytest.approx([b["std"] for b in bands]), name
            assert min(report["band_min"]) > 0  # nodata pixels left out
        else:
            assert report["batch_x"][1] == 3 and not report["is_multispectral"], name
    assert reports[str(folders["class0"])]["classes"][1] == "land"
    assert 0 in reports[str(folders["extent"])]["label_values"]  # the ignored pixels, as NoData
