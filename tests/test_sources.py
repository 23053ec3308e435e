"""Static STAC catalogs and reading scenes onto tile grids, with exact pixel values."""

import itertools
import json
import math
from datetime import datetime, timezone

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer
from rasterio.warp import reproject

from tfchips.demo_data import SceneSpec, write_catalog
from tfchips.errors import CatalogError, ItemError, RasterReadError
from tfchips.grid import Tile
from tfchips.sources import BandRef, SceneQuery, StaticCatalog, open_source, read_bands
from tfchips.sources.raster import _source_window
from tfchips.sources.stac import _walk

TILE = Tile(tilesize=8, pad=0, resolution=10.0, zone=13, ti=-135, tj=6170)
WEST, SOUTH, EAST, NORTH = TILE.bounds


def when(day: int) -> datetime:
    return datetime(2023, 6, day, 12, tzinfo=timezone.utc)


def aligned(margin: int = 2, resolution: float = 10.0) -> Affine:
    """A transform on the tile's grid starting ``margin`` pixels north-west of it."""
    return Affine(resolution, 0, WEST - margin * resolution, 0, -resolution, NORTH + margin * resolution)


def ramp(rows: int = 12, cols: int = 12, start: int = 1) -> np.ndarray:
    return (np.arange(rows * cols, dtype=np.uint16) + start).reshape(rows, cols)


def spec(scene_id: str, day: int, assets: dict, **kwargs) -> SceneSpec:
    kwargs.setdefault("crs", TILE.crs)
    kwargs.setdefault("transform", aligned())
    return SceneSpec(id=scene_id, datetime=when(day), assets=assets, **kwargs)


@pytest.fixture(autouse=True)
def fresh_sources():
    open_source.cache_clear()
    yield
    open_source.cache_clear()


# Static catalog: search and band selection.


def test_search_filters_by_footprint_dates_and_cloud(tmp_path):
    far = Affine(10, 0, WEST + 5000, 0, -10, NORTH)
    path = write_catalog(
        tmp_path,
        [
            spec("early", 1, {"red": ramp()}, cloud_cover=5),
            spec("cloudy", 10, {"red": ramp()}, cloud_cover=80),
            spec("elsewhere", 10, {"red": ramp()}, cloud_cover=0, transform=far),
            spec("unknown-cloud", 20, {"red": ramp()}),
        ],
    )
    source = StaticCatalog(path)
    assert len(source) == 4
    ids = lambda query: [s.id for s in source.search(TILE, query)]  # noqa: E731
    assert ids(SceneQuery()) == ["early", "cloudy", "unknown-cloud"]
    assert ids(SceneQuery(max_cloud=50)) == ["early", "unknown-cloud"]
    assert ids(SceneQuery(start=when(2), end=when(19))) == ["cloudy"]
    found = source.search(TILE, SceneQuery(end=when(1)))
    assert [(s.id, s.datetime, s.cloud_cover) for s in found] == [("early", when(1), 5.0)]


def test_bands_by_asset_key_common_name_and_multiband_asset(tmp_path):
    stack = np.stack([ramp(start=1), ramp(start=1001), ramp(start=2001)])
    path = write_catalog(
        tmp_path,
        [
            spec(
                "s1",
                1,
                {"B04": ramp(start=500), "visual": stack},
                common_names={"B04": ["red"], "visual": ["red", "green", "blue"]},
            )
        ],
    )
    source = StaticCatalog(path)
    scene = source.search(TILE, SceneQuery())[0]
    pixels = source.read(scene, ["B04", "green", "red"], TILE)
    # The tile starts 2 px into the 12 x 12 scene: pixel (0, 0) is scene pixel (2, 2).
    assert pixels.values.shape == (3, 8, 8)
    assert pixels.values[:, 0, 0].tolist() == [500 + 26, 1001 + 26, 500 + 26]
    assert not pixels.values.mask.any()
    with pytest.raises(ItemError, match=r"item 's1' .*s1\.json.* no asset or eo:bands name 'nir'; assets: B04, visual"):
        source.read(scene, ["nir"], TILE)
    with pytest.raises(ItemError, match="asset 'visual' has 3 bands"):
        source.read(scene, ["visual"], TILE)


def test_nodata_from_file_or_from_raster_extension(tmp_path):
    values = ramp()
    values[2, 2] = 0
    values[2, 3] = 9
    path = write_catalog(
        tmp_path,
        [
            spec("stac-nodata", 1, {"red": values}, stac_nodata=0),
            spec("file-nodata", 2, {"red": values}, file_nodata=9),
        ],
    )
    with rasterio.open(tmp_path / "stac-nodata" / "red.tif") as dataset:
        assert dataset.nodata is None  # declared only in the STAC item
    source = StaticCatalog(path)
    first, second = source.search(TILE, SceneQuery())
    by_stac = source.read(first, ["red"], TILE)
    by_file = source.read(second, ["red"], TILE)
    assert by_stac.nodata == 0 and by_file.nodata == 9
    assert by_stac.values.mask[0, 0, :2].tolist() == [True, False]
    assert by_file.values.mask[0, 0, :2].tolist() == [False, True]
    assert by_stac.values.mask.sum() == 1 and by_file.values.mask.sum() == 1


def test_collection_filter_and_folder_path(tmp_path):
    path = write_catalog(tmp_path, [spec("a", 1, {"red": ramp()})])
    source = open_source(str(tmp_path))
    assert [s.id for s in source.search(TILE, SceneQuery())] == ["a"]
    assert open_source(str(tmp_path)) is source  # opened once per process
    assert open_source(path) is not source
    with pytest.raises(CatalogError, match="no items in collection 'sentinel-2-l2a'"):
        open_source(path, "sentinel-2-l2a")


def test_missing_catalog_names_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "catalog.json"
    with pytest.raises(CatalogError, match=f"{missing}: no such catalog file"):
        open_source(str(missing))
    with pytest.raises(CatalogError, match="folder has no catalog.json"):
        open_source(str(tmp_path))


def test_item_without_datetime_names_the_item(tmp_path):
    path = write_catalog(tmp_path, [spec("a", 1, {"red": ramp()}), spec("b", 2, {"red": ramp()})])
    item_path = tmp_path / "b" / "b.json"
    item = json.loads(item_path.read_text())
    del item["properties"]["datetime"]
    item_path.write_text(json.dumps(item))
    with pytest.raises(ItemError, match=f"{item_path}.*datetime"):
        open_source(path)


def test_child_link_cycle_reads_each_file_once(tmp_path):
    path = write_catalog(tmp_path, [spec("a", 1, {"red": ramp()})])
    sub = tmp_path / "sub" / "catalog.json"
    sub.parent.mkdir()
    links = [{"rel": "child", "href": "../catalog.json"}, {"rel": "item", "href": "../a/a.json"}]
    catalog = {"type": "Catalog", "stac_version": "1.0.0", "id": "sub", "description": "a loop", "links": links}
    sub.write_text(json.dumps(catalog))
    root = json.loads((tmp_path / "catalog.json").read_text())
    # The catalog is its own child, and its child links back to it: both loops end.
    root["links"] += [{"rel": "child", "href": "./catalog.json"}, {"rel": "child", "href": "./sub/catalog.json"}]
    (tmp_path / "catalog.json").write_text(json.dumps(root))
    assert [item.id for item in itertools.islice(_walk(path), 5)] == ["a"]
    assert len(StaticCatalog(path)) == 1


def _edit_item(path, edit) -> None:
    item = json.loads(path.read_text())
    edit(item)
    path.write_text(json.dumps(item))


def test_boolean_cloud_cover_and_malformed_nodata_name_the_item(tmp_path):
    path = write_catalog(tmp_path, [spec("a", 1, {"red": ramp()}, stac_nodata=0)])
    item_path = tmp_path / "a" / "a.json"
    _edit_item(item_path, lambda item: item["properties"].update({"eo:cloud_cover": True}))
    with pytest.raises(ItemError, match=r"item 'a' .* has eo:cloud_cover True; expected a number of percent"):
        StaticCatalog(path)
    _edit_item(item_path, lambda item: item["properties"].update({"eo:cloud_cover": 5}))
    _edit_item(item_path, lambda item: item["assets"]["red"]["raster:bands"][0].update(nodata="none"))
    source = StaticCatalog(path)
    scene = source.search(TILE, SceneQuery())[0]
    with pytest.raises(ItemError, match=r"item 'a' .*: asset 'red' has raster:bands nodata 'none'; expected a number"):
        source.read(scene, ["red"], TILE)


def test_earthone_refresh_token_without_client_id_names_that_variable(tmp_path, monkeypatch):
    pytest.importorskip("earthdaily.earthone", reason="earthdaily-earthone is not installed")
    from tfchips.errors import CredentialsError
    from tfchips.sources.earthone import check_credentials

    for name in ("EARTHONE_TOKEN", "EARTHONE_CLIENT_ID", "EARTHONE_CLIENT_SECRET", "CLIENT_ID", "CLIENT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("EARTHONE_REFRESH_TOKEN", "refresh")
    monkeypatch.setenv("EARTHONE_TOKEN_INFO_PATH", str(tmp_path / "token_info.json"))
    message = "earthone:p: EARTHONE_REFRESH_TOKEN is set but no id; set EARTHONE_CLIENT_ID"
    with pytest.raises(CredentialsError, match=message):
        check_credentials("earthone:p")


def test_unreachable_catalog_url_names_the_url():
    url = f"http://127.0.0.1:{_closed_port()}/stac/catalog.json"
    with pytest.raises(CatalogError, match=f"{url}: cannot read STAC JSON"):
        open_source(url)


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Reading onto the tile grid.


def test_partial_coverage_is_masked(tmp_path):
    # A 12 x 5 scene whose west edge is 3 px inside the tile: columns 0-2 have no data.
    path = tmp_path / "east.tif"
    _write(path, ramp(12, 5)[np.newaxis], Affine(10, 0, WEST + 30, 0, -10, NORTH + 20))
    pixels = read_bands([BandRef(str(path))], TILE)
    assert pixels.values.mask[0].sum(axis=0).tolist() == [8, 8, 8, 0, 0, 0, 0, 0]
    assert pixels.values[0, 0, 3:5].tolist() == [11, 12]  # scene row 2, columns 0 and 1


def test_other_crs_is_warped_with_nearest_exactly(tmp_path):
    # A scene in the neighbouring UTM zone at 7 m: each tile pixel takes the value of the
    # scene pixel that contains its centre.
    to_12 = Transformer.from_crs(TILE.crs, "EPSG:32612", always_xy=True)
    x0, y0 = to_12.transform(WEST, NORTH)
    transform = Affine(7.0, 0, math.floor(x0) - 70, 0, -7.0, math.ceil(y0) + 70)
    values = ramp(40, 40)
    path = tmp_path / "zone12.tif"
    _write(path, values[np.newaxis], transform, crs="EPSG:32612")
    pixels = read_bands([BandRef(str(path))], TILE)
    assert not pixels.values.mask.any()
    rows, cols = np.mgrid[0:8, 0:8]
    x, y = TILE.transform @ (cols + 0.5, rows + 0.5)
    col, row = ~transform @ to_12.transform(x, y)
    expected = values[np.floor(row).astype(int), np.floor(col).astype(int)]
    assert np.array_equal(pixels.values.data[0], expected)


def test_bilinear_resampling_interpolates(tmp_path):
    # A scene at 20 m with a ramp along x: at 10 m, bilinear gives half steps, nearest does not.
    values = np.tile(np.arange(0, 80, 10, dtype=np.float32), (8, 1))
    path = tmp_path / "coarse.tif"
    _write(path, values[np.newaxis], Affine(20, 0, WEST - 40, 0, -20, NORTH + 40))
    nearest = read_bands([BandRef(str(path))], TILE, "nearest").values[0, 0]
    bilinear = read_bands([BandRef(str(path))], TILE, "bilinear").values[0, 0]
    assert nearest.tolist() == [20, 20, 30, 30, 40, 40, 50, 50]
    assert bilinear.tolist() == [17.5, 22.5, 27.5, 32.5, 37.5, 42.5, 47.5, 52.5]


def test_coarse_tiles_read_the_overview(tmp_path):
    # Full resolution is a 0/100 checkerboard at 5 m; its averaged overview is 50 everywhere.
    # A 10 m tile can only see 50 if the overview, not the full resolution, was read.
    checker = (np.indices((64, 64)).sum(axis=0) % 2 * 100).astype(np.uint16)
    path = tmp_path / "fine.tif"
    _write(path, checker[np.newaxis], Affine(5, 0, WEST - 80, 0, -5, NORTH + 80), overviews=[2, 4])
    pixels = read_bands([BandRef(str(path))], TILE)
    assert (pixels.values == 50).all()


def test_only_the_window_under_the_tile_is_read(tmp_path):
    path = tmp_path / "large.tif"
    _write(path, np.zeros((1, 2000, 3000), dtype=np.uint8), Affine(10, 0, WEST - 10000, 0, -10, NORTH + 5000))
    with rasterio.open(path) as dataset:
        source = _source_window(dataset, TILE.bounds, 1, 3)
    # 8 x 8 tile pixels plus 3 on every side, at column 1000 and row 500 of the scene.
    window = source.window
    assert (window.col_off, window.row_off, window.width, window.height) == (997, 497, 14, 14)
    assert source.shape == (14, 14)


# A 2000 x 3000 scene rotated a quarter turn and mirrored: x grows down its rows, y along its columns.
TRANSPOSED = Affine(0, 10, WEST - 5000, 10, 0, SOUTH - 7000)


def test_rotated_rasters_read_only_the_window_under_the_tile(tmp_path):
    path = tmp_path / "transposed.tif"
    _write(path, np.zeros((1, 2000, 3000), dtype=np.uint8), TRANSPOSED)
    with rasterio.open(path) as dataset:
        window = _source_window(dataset, TILE.bounds, 1, 3).window
    assert (window.col_off, window.row_off, window.width, window.height) == (697, 497, 14, 14)


def test_south_up_and_rotated_rasters_are_read_exactly(tmp_path):
    north_up, south_up, rotated = tmp_path / "north.tif", tmp_path / "south.tif", tmp_path / "rotated.tif"
    _write(north_up, ramp()[np.newaxis], aligned())
    # The same pixels stored bottom row first, with a positive y pixel size.
    _write(south_up, ramp()[::-1][np.newaxis], Affine(10, 0, WEST - 20, 0, 10, SOUTH - 20))
    expected = read_bands([BandRef(str(north_up))], TILE).values
    assert expected[0, 0, 0] == 27  # scene row 2, column 2
    got = read_bands([BandRef(str(south_up))], TILE).values
    assert np.array_equal(got.data, expected.data) and not got.mask.any()

    # Transposed: tile pixel (row r, column c) lies in scene row c + 2, column 9 - r.
    values = ramp()
    _write(rotated, values[np.newaxis], Affine(0, 10, WEST - 20, 10, 0, SOUTH - 20))
    got = read_bands([BandRef(str(rotated))], TILE).values
    r, c = np.mgrid[0:8, 0:8]
    assert np.array_equal(got.data[0], values[c + 2, 9 - r]) and not got.mask.any()


def _write_ramp_with_overview(path, rows, cols, tile, shift):
    """A 10 m float ramp (value = column + 100 * row) starting ``shift`` px west and north of
    ``tile``, with a 2x averaged overview, whose origin is not on the overview's grid."""
    r, c = np.mgrid[0:rows, 0:cols]
    values = (c + 100 * r).astype(np.float32)
    west, _, _, north = tile.bounds
    transform = Affine(10, 0, west - 10 * shift, 0, -10, north + 10 * shift)
    _write(path, values[np.newaxis], transform, crs=tile.crs, overviews=[2])
    return transform


def test_overview_pixels_are_read_where_they_lie(tmp_path):
    # A 20 m tile reads the 2x overview. The tile starts 13 px into the scene, an odd number,
    # so the window must be snapped to whole overview pixels to keep them in place.
    tile = Tile(tilesize=8, pad=0, resolution=20.0, zone=13, ti=-68, tj=3085)
    path = tmp_path / "ramp.tif"
    _write_ramp_with_overview(path, 40, 44, tile, shift=13)
    got = read_bands([BandRef(str(path))], tile, "bilinear").values[0]
    # Averages of a linear ramp are the ramp at each block's centre, and bilinear
    # interpolation of it is exact: the tile pixel's centre, in scene pixels, is at
    # column 13 + 2c + 1 and row 13 + 2r + 1, where the ramp holds (column - 0.5) + 100 (row - 0.5).
    r, c = np.mgrid[0:8, 0:8]
    assert np.array_equal(got.data, (13.5 + 2 * c) + 100 * (13.5 + 2 * r)) and not got.mask.any()


def test_overview_of_a_raster_whose_size_is_not_a_multiple_of_its_factor(tmp_path):
    # 45 x 41 px: GDAL's 2x overview is 23 x 21 px, each 45/23 by 41/21 full pixels. A tile
    # over the east and south edges must see the overview exactly as GDAL georeferences it.
    tile = Tile(tilesize=8, pad=0, resolution=20.0, zone=13, ti=-68, tj=3085)
    path = tmp_path / "odd.tif"
    _write_ramp_with_overview(path, 41, 45, tile, shift=33)
    got = read_bands([BandRef(str(path))], tile, "bilinear").values[0]
    with rasterio.open(path, overview_level=0) as overview:
        assert (overview.width, overview.height) == (23, 21)
        expected = np.full(tile.shape, np.nan, dtype=np.float32)
        reproject(
            overview.read(1),
            expected,
            src_transform=overview.transform,
            src_crs=overview.crs,
            dst_transform=tile.transform,
            dst_crs=tile.crs,
            resampling=rasterio.enums.Resampling.bilinear,
        )
    covered = ~got.mask
    assert covered.sum() == 6 * 4  # the scene ends 120 m east and 80 m south of the tile's corner
    np.testing.assert_allclose(got.data[covered], expected[covered], rtol=0, atol=1e-3)


def test_band_errors_name_the_file(tmp_path):
    path = tmp_path / "one.tif"
    _write(path, ramp()[np.newaxis], aligned())
    with pytest.raises(RasterReadError, match=f"{path} has 1 band"):
        read_bands([BandRef(str(path), index=2)], TILE)
    with pytest.raises(RasterReadError, match=f"item 'x': cannot read {tmp_path / 'missing.tif'}"):
        read_bands([BandRef(str(tmp_path / "missing.tif"))], TILE, label="item 'x'")


def test_raster_in_a_local_crs_is_a_read_error_naming_the_file(tmp_path):
    # PROJ finds no way from UTM to an engineering CRS: GDAL raises an error rasterio does not wrap.
    path = tmp_path / "local.tif"
    local = 'LOCAL_CS["site grid",UNIT["metre",1],AXIS["Easting",EAST],AXIS["Northing",NORTH]]'
    _write(path, ramp()[np.newaxis], aligned(), crs=rasterio.crs.CRS.from_wkt(local))
    with pytest.raises(RasterReadError, match=f"item 'x': cannot read {path}: Cannot find coordinate operations"):
        read_bands([BandRef(str(path))], TILE, label="item 'x'")


def _write(path, array, transform, crs=None, overviews=None):
    profile = dict(
        driver="GTiff",
        width=array.shape[2],
        height=array.shape[1],
        count=array.shape[0],
        dtype=array.dtype.name,
        crs=crs or TILE.crs,
        transform=transform,
        tiled=True,
        blockxsize=256,
        blockysize=256,
    )
    with rasterio.open(path, "w", **profile) as dataset:
        dataset.write(array)
        if overviews:
            dataset.build_overviews(overviews, rasterio.enums.Resampling.average)
