"""The generated demo catalog: structure, determinism, clouds, and labels visible in the imagery."""

import json
import os
import time
from datetime import datetime

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from click.testing import CliRunner
from pyproj import Transformer
from rasterio.features import rasterize

from tfchips.cli.main import cli
from tfchips.demo_data import SceneSpec, generate, write_catalog
from tfchips.grid import tiles_for_shape
from tfchips.imagery import ImageryRequest, imagery_for_tile
from tfchips.sources import SceneQuery, open_source


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    open_source.cache_clear()
    yield generate(tmp_path_factory.mktemp("demo"), seed=0)
    open_source.cache_clear()


def _items(demo):
    catalog = json.load(open(demo.catalog))
    folder = os.path.dirname(demo.catalog)
    return [json.load(open(os.path.join(folder, link["href"]))) for link in catalog["links"] if link["rel"] == "item"]


def test_catalog_holds_five_dated_scenes_in_two_crs(demo):
    items = _items(demo)
    assert [item["properties"]["datetime"][:10] for item in items] == [
        "2023-06-03",
        "2023-06-13",
        "2023-06-23",
        "2023-07-03",
        "2023-07-13",
    ]
    assert sorted({item["properties"]["proj:epsg"] for item in items}) == [32612, 32613]
    for item in items:
        assert set(item["assets"]) == {"blue", "green", "red", "nir", "scl"}
        assert item["assets"]["red"]["eo:bands"] == [{"name": "red", "common_name": "red"}]
        assert item["assets"]["red"]["raster:bands"][0]["nodata"] == 0


def test_assets_are_cogs_whose_nodata_is_only_in_stac(demo):
    folder = os.path.join(demo.root, "DEMO_S2_20230603")
    for name, dtype in (("red", "uint16"), ("scl", "uint8")):
        with rasterio.open(os.path.join(folder, f"{name}.tif")) as dataset:
            assert dataset.dtypes[0] == dtype and dataset.nodata is None
            assert dataset.block_shapes[0] == (128, 128) and dataset.overviews(1) == [2, 4]
            assert dataset.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"


def test_cloud_cover_matches_the_flagged_pixels_and_clouds_are_bright(demo):
    for item in _items(demo):
        folder = os.path.join(demo.root, item["id"])
        with rasterio.open(os.path.join(folder, "scl.tif")) as dataset:
            scl = dataset.read(1)
        with rasterio.open(os.path.join(folder, "blue.tif")) as dataset:
            blue = dataset.read(1)
        covered = scl > 0
        flagged = np.isin(scl, (8, 9, 10)) & covered
        assert item["properties"]["eo:cloud_cover"] == round(100 * flagged.sum() / covered.sum(), 2)
        thick = scl == 9
        if thick.any():
            assert blue[thick].mean() > 5000 > 2500 > blue[np.isin(scl, (4, 5, 6))].mean()
    assert min(item["properties"]["eo:cloud_cover"] for item in _items(demo)) < 5
    assert max(item["properties"]["eo:cloud_cover"] for item in _items(demo)) > 50


def test_one_scene_covers_only_part_of_the_area(demo):
    source = open_source(demo.catalog)
    tiles = tiles_for_shape(shapely.box(*demo.bbox), demo.resolution, demo.tilesize)
    assert 9 <= len(tiles) <= 25
    covering = [len(source.search(tile, SceneQuery())) for tile in tiles]
    assert min(covering) == 4 and max(covering) == 5
    with rasterio.open(os.path.join(demo.root, "DEMO_S2_20230613", "red.tif")) as dataset:
        red = dataset.read(1)
    assert 0.2 < (red == 0).mean() < 0.6


def test_same_seed_same_pixels_other_seed_other_pixels(demo, tmp_path):
    again = generate(tmp_path / "again", seed=0)
    other = generate(tmp_path / "other", seed=1)

    def pixels(data):
        with rasterio.open(os.path.join(data.root, "DEMO_S2_20230623", "nir.tif")) as dataset:
            return dataset.read()

    assert np.array_equal(pixels(demo), pixels(again))
    assert not np.array_equal(pixels(demo), pixels(other))
    assert _items(demo) == _items(again)


def test_labels_are_wgs84_polygons_with_integer_classes(demo):
    info = pyogrio.read_info(demo.labels)
    assert info["crs"] == "EPSG:4326" and info["geometry_type"] == "Polygon"
    _, _, geometries, fields = pyogrio.raw.read(demo.labels, columns=[demo.attribute])
    classes = fields[0]
    assert classes.dtype.kind == "i" and set(classes.tolist()) == {1, 2, 3}
    assert set(demo.class_names) == {0, 1, 2, 3}
    shapes = shapely.from_wkb(geometries)
    assert shapely.box(*demo.bbox).buffer(0.001).contains(shapely.union_all(shapes))


def test_label_classes_are_visible_in_the_composite(demo):
    request = ImageryRequest.from_options(demo.imagery_options())
    _, _, geometries, fields = pyogrio.raw.read(demo.labels, columns=[demo.attribute])
    shapes = shapely.from_wkb(geometries)
    sums, counts = np.zeros((4, 4)), np.zeros(4)
    for tile in tiles_for_shape(shapely.box(*demo.bbox), demo.resolution, demo.tilesize):
        imagery = imagery_for_tile(tile, request)
        assert imagery.band_names == ("blue", "green", "red", "nir") and imagery.data.dtype == np.uint16
        assert imagery.valid_fraction > 0.8
        to_tile = Transformer.from_crs(4326, tile.crs, always_xy=True)
        projected = shapely.transform(shapes, to_tile.transform, interleaved=False)
        truth = rasterize(zip(projected, fields[0].tolist()), out_shape=tile.shape, transform=tile.transform, fill=0)
        for value in range(4):
            where = (truth == value) & imagery.valid
            sums[value] += imagery.data[:, where].sum(axis=1)
            counts[value] += where.sum()
    blue, green, red, nir = (sums / counts[:, None]).T
    background, building, water, vegetation = range(4)
    assert counts.min() > 50
    assert nir[water] < 400 and nir.argmin() == water
    assert nir[vegetation] > 3 * red[vegetation] and nir.argmax() == vegetation
    assert blue.argmax() == building


def test_command_prints_the_paths_and_the_next_command(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(cli, ["demo-data", "--out", str(out), "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert f"catalog: {out / 'catalog.json'}" in result.output
    assert str(out / "labels.gpkg") in result.output
    assert "tfchips create-samples --bbox -105.95,35.68,-105.93,35.697" in result.output
    assert "--mask-values 3,8,9,10" in result.output
    assert os.path.isfile(out / "catalog.json") and not [n for n in os.listdir(out) if n.endswith(".tmp")]


@pytest.fixture
def local_time_zone(monkeypatch):
    """The process runs 5 hours behind UTC for the test (a POSIX TZ rule: no tz database needed)."""
    monkeypatch.setenv("TZ", "TFC+5")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_naive_scene_datetimes_are_utc_whatever_the_local_time_zone(tmp_path, local_time_zone):
    spec = SceneSpec(
        id="naive",
        datetime=datetime(2023, 6, 1, 12, 30),
        crs="EPSG:32613",
        transform=rasterio.Affine(10, 0, 400000, 0, -10, 3950000),
        assets={"red": np.ones((4, 4), dtype=np.uint16)},
    )
    write_catalog(tmp_path, [spec])
    item = json.loads((tmp_path / "naive" / "naive.json").read_text())
    assert item["properties"]["datetime"] == "2023-06-01T12:30:00Z"
