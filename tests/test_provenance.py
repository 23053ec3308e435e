"""Provenance rasters: per pixel, the scene a composite took or how many scenes it combined."""

import json
from datetime import datetime, timezone

import numpy as np
import pytest
import rasterio
import yaml
from affine import Affine
from click.testing import CliRunner

from tfchips.cli.main import cli
from tfchips.composite import first_valid, median
from tfchips.demo_data import SceneSpec, write_catalog
from tfchips.grid import Tile, key_to_filename
from tfchips.imagery import ImageryRequest, imagery_for_tile
from tfchips.manifest import manifest_rows
from tfchips.provenance import chip_provenance, provenance_path, read_provenance, write_provenance
from tfchips.sources import open_source

TILE = Tile(tilesize=4, pad=0, resolution=10.0, zone=13, ti=-540, tj=24682)
WEST, SOUTH, EAST, NORTH = TILE.bounds
CLASSES = "0=background,1=building,2=water,3=vegetation"


@pytest.fixture(autouse=True)
def fresh_sources():
    open_source.cache_clear()
    yield
    open_source.cache_clear()


def _scene(scene_id, day, red, cloud, masked):
    # 6 x 6 pixels, one around the tile; SCL 9 (cloud) at the tile pixels in ``masked``.
    scl = np.full((6, 6), 4, dtype=np.uint8)
    for row, col in masked:
        scl[row + 1, col + 1] = 9
    return SceneSpec(
        id=scene_id,
        datetime=datetime(2023, 6, day, 10, tzinfo=timezone.utc),
        crs=TILE.crs,
        transform=Affine(10, 0, WEST - 10, 0, -10, NORTH + 10),
        assets={"red": np.full((6, 6), red, np.uint16), "scl": scl},
        cloud_cover=cloud,
        stac_nodata=0,
        common_names={"red": ["red"]},
    )


@pytest.fixture
def three_scenes(tmp_path):
    """a: June 1, value 10, cloud at (0, 0); b: June 12, 25, cloud at (0, 0), (0, 1); c: June 20, 30, cloud at (1, 0)."""
    scenes = [_scene("a", 1, 10, 3.0, [(0, 0)]), _scene("b", 12, 25, 5.0, [(0, 0), (0, 1)]), _scene("c", 20, 30, 40.0, [(1, 0)])]
    return write_catalog(tmp_path / "three", scenes)


def _request(catalog, method):
    return ImageryRequest.from_options(
        {"catalog": catalog, "bands": "red", "mask_asset": "scl", "mask_values": "9", "method": method,
         "reference_date": "2023-06-10"}
    )


def _grid(top_left, top_second, second_first, rest):
    values = np.full((4, 4), rest)
    values[0, 0], values[0, 1], values[1, 0] = top_left, top_second, second_first
    return values.tolist()


def test_composites_say_which_scene_each_pixel_took_or_how_many_were_valid():
    data = np.arange(3, dtype=np.uint16).reshape(3, 1, 1, 1) * np.ones((1, 1, 2, 2), np.uint16)
    valid = np.array([[[False, True], [False, False]], [[True, True], [False, False]], [[True, False], [False, True]]])
    assert first_valid(data, valid, [2, 0, 1]).provenance.tolist() == [[2, 0], [-1, 2]]
    assert median(data, valid).provenance.tolist() == [[2, 2], [0, 1]]
    assert first_valid(data, valid, []).provenance.tolist() == [[-1, -1], [-1, -1]]


def test_closest_provenance_points_at_the_scene_whose_value_each_pixel_holds(three_scenes):
    # June 10: b (2 days), then a (9), then c (10).
    result = imagery_for_tile(TILE, _request(three_scenes, "closest"))
    assert result.scenes == ("b", "a", "c") and result.provenance_kinds == ("scene",)
    assert result.provenance[0].tolist() == _grid(3, 2, 1, 1)
    value_of = {"a": 10, "b": 25, "c": 30}
    taken = np.array([value_of[result.scenes[k - 1]] for k in result.provenance[0].ravel()]).reshape(4, 4)
    assert (taken == result.data[0]).all()
    assert [d.day for d in result.scene_dates] == [12, 1, 20]


def test_median_provenance_counts_the_valid_scenes(three_scenes):
    result = imagery_for_tile(TILE, _request(three_scenes, "median"))
    assert result.provenance_kinds == ("count",)
    assert result.provenance[0].tolist() == _grid(1, 2, 2, 3)


def test_a_stacked_product_counts_its_scenes_after_the_main_ones(three_scenes, tmp_path):
    other = write_catalog(tmp_path / "other", [_scene("z", 5, 7, 1.0, [(3, 3)])])
    request = ImageryRequest.from_options(
        {"catalog": three_scenes, "bands": "red", "mask_asset": "scl", "mask_values": "9", "method": "latest",
         "stack": [f"catalog={other} bands=red mask_asset=scl mask_values=9"]}
    )
    result = imagery_for_tile(TILE, request)
    # latest: c everywhere but (1, 0), where b is; then the stacked z at position 3, none at (3, 3).
    assert result.scenes == ("c", "b", "z")
    assert result.provenance[0].tolist() == _grid(1, 1, 2, 1)
    expected = np.full((4, 4), 3)
    expected[3, 3] = 0
    assert result.provenance[1].tolist() == expected.tolist()


def test_the_raster_reads_back_with_its_scenes_and_dates(three_scenes, tmp_path):
    result = imagery_for_tile(TILE, _request(three_scenes, "closest"))
    provenance = chip_provenance(result)
    write_provenance(str(tmp_path), TILE, provenance)
    path = provenance_path(str(tmp_path), TILE.key)
    with rasterio.open(path) as dataset:
        assert dataset.dtypes == ("uint8",) and dataset.nodata == 0 and dataset.compression.name.lower() == "lzw"
        assert dataset.transform == TILE.transform and dataset.descriptions == ("scene",)
    again = read_provenance(str(tmp_path), TILE.key)
    assert again.scenes == ("b", "a", "c")
    assert again.dates == ("2023-06-12T10:00:00Z", "2023-06-01T10:00:00Z", "2023-06-20T10:00:00Z")
    assert (again.layers == result.provenance).all()


def _create_samples(demo, out, *extra):
    args = [
        "create-samples", "--bbox", ",".join(map(str, demo.bbox)), "--resolution", "10", "--tilesize", "32",
        "--catalog", demo.catalog, "--bands", ",".join(demo.bands), "--start", demo.start, "--end", demo.end,
        "--mask-asset", demo.mask_asset, "--mask-values", ",".join(map(str, demo.mask_values)),
        "--reference-date", demo.reference_date, "--labels", demo.labels, "--attribute", demo.attribute,
        "--classes", CLASSES, "--out", str(out), "--workers", "1", *extra,
    ]
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    return {**manifest, "tiles": list(manifest_rows(str(out), manifest))}


def _scene_alone(demo, scene):
    """Imagery options that select one demo scene only, by its date."""
    return {**demo.imagery_options(), "start": scene["datetime"], "end": scene["datetime"], "max_cloud": None}


def test_create_samples_provenance_matches_each_scene_read_alone(demo, tmp_path):
    out = tmp_path / "chips"
    manifest = _create_samples(demo, out, "--provenance")
    written = [t for t in manifest["tiles"] if t["status"] == "written"]
    assert written
    for entry in written[:4]:
        tile = Tile.from_key(entry["key"])
        assert [s["id"] for s in entry["provenance"]["scenes"]] == entry["scenes"]
        assert entry["provenance"]["path"] == f"provenance/{key_to_filename(tile.key)}.tif"
        with rasterio.open(out / entry["provenance"]["path"]) as dataset:
            source = dataset.read(1)
        with rasterio.open(out / "images" / f"{key_to_filename(tile.key)}.tif") as dataset:
            image = dataset.read()
        assert set(np.unique(source)) <= set(range(len(entry["scenes"]) + 1))
        for position, scene in enumerate(entry["provenance"]["scenes"], start=1):
            alone = imagery_for_tile(tile, ImageryRequest.from_options(_scene_alone(demo, scene)))
            assert alone.scenes == (scene["id"],)
            taken = source == position
            assert taken.any() and (image[:, taken] == alone.data[:, taken]).all()


def test_yaml_provenance_and_resume_add_the_rasters_a_plain_run_lacks(demo, tmp_path):
    out = tmp_path / "chips"
    plain = _create_samples(demo, out)
    assert not (out / "provenance").exists() and "provenance" not in plain["tiles"][0]
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump({"provenance": True, "method": "median"}))
    # median: another fingerprint, so --overwrite; every tile then gets a count raster.
    manifest = _create_samples(demo, out, "--config", config, "--overwrite")
    written = [t for t in manifest["tiles"] if t["status"] == "written"]
    assert all(t["provenance"]["bands"] == ["count"] for t in written)
    assert sorted(p.name for p in (out / "provenance").iterdir()) == sorted(
        f"{key_to_filename(t['key'])}.tif" for t in written
    )
    resumed = _create_samples(demo, out, "--config", config)
    assert all(t["resumed"] for t in resumed["tiles"] if t["status"] == "written")
    assert resumed["tiles"] == [{**t, "resumed": True} if t["status"] == "written" else t for t in manifest["tiles"]]
