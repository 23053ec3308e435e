import json
import math
from pathlib import Path

import numpy as np
import pytest
import shapely
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pyproj import Transformer

from tfchips.errors import GridError, ShapeError, TileKeyError
from tfchips.grid import (
    Tile,
    filename_to_key,
    key_to_filename,
    lonlat_to_utm,
    tile_indices_for_shape,
    tiles_for_shape,
    tiles_to_geojson,
    utm_to_lonlat,
)

# Copied from shared/reference: keys computed offline by earthdaily-earthone 6.2.0.
REFERENCE = json.loads((Path(__file__).parent / "data" / "dltile_keys.json").read_text())["cases"]


def cover(tiles):
    return {tile.key: (tile.crs, list(tile.bounds)) for tile in tiles}


@pytest.mark.parametrize(
    "case", REFERENCE, ids=[f"{c['name']}-{c['resolution']}-{c['tilesize']}-{c['pad']}" for c in REFERENCE]
)
def test_cover_equals_recorded_reference(case):
    shape = shapely.geometry.shape(case["aoi_wgs84"])
    ours = cover(tiles_for_shape(shape, case["resolution"], case["tilesize"], case["pad"]))
    assert ours == {t["key"]: (t["crs"], t["bounds"]) for t in case["tiles"]}


def test_southern_tiles_keep_northern_epsg_with_negative_northings():
    case = next(c for c in REFERENCE if c["name"] == "southern-hemisphere")
    tiles = tiles_for_shape(shapely.geometry.shape(case["aoi_wgs84"]), case["resolution"], case["tilesize"], 0)
    assert {t.crs for t in tiles} == {"EPSG:32656"}
    assert all(t.tj < 0 and t.bounds[3] <= 0 for t in tiles)


def test_order_is_zone_then_row_then_column():
    tiles = tiles_for_shape(shapely.box(-102.3, 35.0, -101.7, 35.2), 60.0, 256, 0)
    assert [(t.zone, t.tj, t.ti) for t in tiles] == sorted((t.zone, t.tj, t.ti) for t in tiles)
    assert {t.zone for t in tiles} == {13, 14}


def test_tile_geometry_properties():
    tile = Tile.from_key("256:16:10.0:13:-34:1542")
    assert tile.size == 288 and tile.shape == (288, 288)
    assert tile.bounds == (412800.0, 3947360.0, 415680.0, 3950240.0)
    assert tile.transform.c == 412800.0 and tile.transform.f == 3950240.0
    assert tile.transform.a == 10.0 and tile.transform.e == -10.0
    assert tile.transform @ (288, 288) == (415680.0, 3947360.0)
    # The WGS84 polygon is the padded square, checked against PROJ.
    to_utm = Transformer.from_crs(4326, tile.crs, always_xy=True)
    x, y = to_utm.transform(*np.asarray(tile.geometry.exterior.coords).T)
    np.testing.assert_allclose([x.min(), y.min(), x.max(), y.max()], tile.bounds, atol=0.01)


def test_projection_agrees_with_proj_to_a_millimetre():
    lon = np.array([-105.9, -102.0, 0.1, 151.2, 19.5])
    lat = np.array([35.7, -33.9, 0.0, -33.8, 69.6])
    for x, y, zone in zip(lon, lat, (13, 14, 31, 56, 34)):
        east, north = lonlat_to_utm(x, y, zone)
        proj_east, proj_north = Transformer.from_crs(4326, 32600 + zone, always_xy=True).transform(x, y)
        # Southern points: EPSG:326ZZ has no false northing either, so PROJ agrees.
        np.testing.assert_allclose([east, north], [proj_east, proj_north], rtol=0, atol=1e-3)
        back_lon, back_lat = utm_to_lonlat(east, north, zone)
        np.testing.assert_allclose([back_lon, back_lat], [x, y], rtol=0, atol=1e-8)  # ~1 mm


@pytest.mark.parametrize(
    "key",
    ["256:0:0.5:43:-1730:16423", "64:2:60.0:05:0:-3", "1024:32:1.0:60:12:1", "100:0:0.123457:01:-1:-1"],
)
def test_key_round_trips(key):
    tile = Tile.from_key(key)
    assert tile.key == key
    assert Tile.from_key(tile.key) == tile
    assert filename_to_key(key_to_filename(key) + ".tif") == key
    assert filename_to_key(key_to_filename(key) + ".bmp") == key  # every chip suffix the reader knows


def test_non_canonical_key_is_normalised():
    assert Tile.from_key("256:0:10:5:1:2").key == "256:0:10.0:05:1:2"


@pytest.mark.parametrize(
    "key",
    ["", "256:0:10.0:13:-34", "256:0:10.0:13:-34:x", "256:0:10.0:61:0:0", "0:0:10.0:13:0:0",
     "256:-1:10.0:13:0:0", "256:0:0:13:0:0", "256:0:10.0:13:0:0/..", " 256:0:10.0:13:0:0"],
)
def test_malformed_key_error_quotes_it(key):
    with pytest.raises(TileKeyError) as raised:
        Tile.from_key(key)
    assert repr(key) in str(raised.value)
    assert isinstance(raised.value, ValueError)


@pytest.mark.parametrize(
    "name",
    ["../256#0#10.0#13#0#0.tif", "a/256#0#10.0#13#0#0.tif", "..\\256#0#10.0#13#0#0.tif", "..", "256#0#10.0#13#0.tif",
     "notakey.png"],
)
def test_file_names_cannot_escape_or_lie(name):
    with pytest.raises(TileKeyError):
        filename_to_key(name)


def test_key_to_filename_refuses_separators():
    with pytest.raises(TileKeyError):
        key_to_filename("256:0:10.0:13:0:0/../../etc")


def test_points_give_the_tiles_that_contain_them():
    points = shapely.MultiPoint([(-105.91, 35.70), (-105.91, 35.7001), (151.2, -33.86)])
    tiles = tiles_for_shape(points, 10.0, 256, 8)
    assert len(tiles) == 2
    for tile, (lon, lat) in zip(sorted(tiles, key=lambda t: t.zone), [(-105.91, 35.70), (151.2, -33.86)]):
        east, north = lonlat_to_utm(np.array([lon]), np.array([lat]), tile.zone)
        west, south, east_edge, north_edge = tile.bounds
        assert west + 80 <= east[0] < east_edge - 80 and south + 80 <= north[0] < north_edge - 80


def test_lines_give_the_tiles_they_cross():
    line = shapely.LineString([(-105.95, 35.70), (-105.90, 35.70)])
    tiles = tiles_for_shape(line, 10.0, 256, 0)
    assert len({t.tj for t in tiles}) == 1
    assert all(t.geometry.intersects(line) for t in tiles)
    # Only the tiles the line crosses, not those of its bounding box's neighbours.
    assert len(tiles) == len(tiles_for_shape(shapely.box(-105.95, 35.70, -105.90, 35.70001), 10.0, 256, 0))


def test_mixed_collection_is_the_union_of_its_parts():
    polygon = shapely.box(-105.95, 35.68, -105.90, 35.72)
    point = shapely.Point(-105.5, 35.7)
    tiles = tiles_for_shape(shapely.GeometryCollection([polygon, point]), 10.0, 256, 0)
    assert cover(tiles) == {**cover(tiles_for_shape(polygon, 10.0, 256, 0)), **cover(tiles_for_shape(point, 10.0, 256, 0))}


def test_hole_excludes_tiles_inside_it():
    outer = shapely.box(-106.0, 35.6, -105.8, 35.8)
    holed = outer.difference(shapely.box(-105.95, 35.65, -105.85, 35.75))
    full, with_hole = tiles_for_shape(outer, 60.0, 64, 0), tiles_for_shape(holed, 60.0, 64, 0)
    assert set(with_hole) < set(full)
    assert all(t.geometry.intersects(holed) for t in with_hole)


@pytest.mark.parametrize(
    "shape, message",
    [
        (shapely.Polygon(), "empty"),
        (shapely.box(500000, 4000000, 510000, 4010000), "outside WGS84"),
        (shapely.box(170, 10, 181, 11), "outside WGS84"),
        ("POLYGON", "shapely geometry"),
    ],
)
def test_bad_shapes(shape, message):
    with pytest.raises(ShapeError, match=message):
        tiles_for_shape(shape, 10.0, 256, 0)


@pytest.mark.parametrize("resolution, tilesize, pad", [(0, 256, 0), (-1, 256, 0), (10, 0, 0), (10, 256, -1), (math.nan, 256, 0)])
def test_bad_grid_parameters(resolution, tilesize, pad):
    with pytest.raises(GridError):
        tiles_for_shape(shapely.box(0, 0, 0.1, 0.1), resolution, tilesize, pad)


def test_indices_match_tiles():
    shape = shapely.box(-105.95, 35.68, -105.90, 35.72)
    indices = tile_indices_for_shape(shape, 10.0, 256, 0)
    assert [tuple(row) for row in indices.tolist()] == [(t.zone, t.ti, t.tj) for t in tiles_for_shape(shape, 10.0, 256, 0)]


def test_geojson_features_carry_key_crs_and_bounds():
    tiles = tiles_for_shape(shapely.box(-105.95, 35.68, -105.90, 35.72), 10.0, 256, 0)
    collection = tiles_to_geojson(tiles)
    assert collection["type"] == "FeatureCollection" and len(collection["features"]) == len(tiles)
    first = collection["features"][0]
    assert first["properties"] == {"key": tiles[0].key, "crs": tiles[0].crs, "bounds": list(tiles[0].bounds)}
    assert shapely.geometry.shape(first["geometry"]).equals(tiles[0].geometry)


# Live comparison with the reference client on random shapes.
earthone = pytest.importorskip("earthdaily.earthone.geo", reason="earthdaily-earthone (test extra) is the DLTile reference")

GRIDS = st.sampled_from([(0.5, 256), (1.0, 128), (2.5, 64), (10.0, 256), (30.0, 128), (60.0, 64), (10.0, 512)])


@st.composite
def shapes(draw):
    resolution, tilesize = draw(GRIDS)
    pad = draw(st.sampled_from([0, 1, 8, 16, 32]))
    # Near zone edges often, and anywhere from pole to pole.
    lon = draw(st.one_of(st.floats(-179.0, 179.0), st.integers(-29, 29).map(lambda z: 6.0 * z + 0.01)))
    lat = draw(st.floats(-84.0, 84.0))
    extent = tilesize * resolution / 111_000.0
    width = draw(st.floats(0.3, 10.0)) * extent / max(math.cos(math.radians(lat)), 0.1)
    height = draw(st.floats(0.3, 10.0)) * extent
    unit = draw(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=3, max_size=8))
    points = [(lon + x * width, lat + y * height) for x, y in unit]
    hull = shapely.MultiPoint(points).convex_hull
    if hull.geom_type != "Polygon":
        hull = shapely.box(lon, lat, lon + width, lat + height)
    assume(hull.bounds[2] <= 180.0)  # beyond the antimeridian both refuse the shape (tested above)
    return hull, resolution, tilesize, pad


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(shapes())
def test_cover_equals_live_reference_on_random_shapes(case):
    shape, resolution, tilesize, pad = case
    reference = earthone.DLTile.from_shape(shapely.geometry.mapping(shape), resolution, tilesize, pad)
    expected = {t.key: (t.crs, list(t.bounds)) for t in reference}
    assert cover(tiles_for_shape(shape, resolution, tilesize, pad)) == expected


@pytest.mark.parametrize(
    "shape, resolution, tilesize, pad",
    [
        (shapely.box(179.5, 10, 180, 10.5), 60.0, 256, 0),
        (shapely.box(-180, -10.5, -179.5, -10), 60.0, 256, 0),
        (shapely.box(10, 88, 12, 90), 1000.0, 256, 0),
        (shapely.box(-3, -90, 3, -88.5), 1000.0, 256, 4),
        (shapely.box(-1, -0.5, 1, 0.5).difference(shapely.box(-0.5, -0.2, 0.5, 0.2)), 60.0, 64, 0),
        (shapely.MultiPolygon([shapely.box(5, 5, 5.2, 5.2), shapely.box(7, 5, 7.1, 5.1)]), 60.0, 64, 0),
        (shapely.Polygon([(-120, 40), (-100, 41), (-100, 40.5)]), 1000.0, 128, 0),
    ],
    ids=["antimeridian-east", "antimeridian-west", "north-pole", "south-pole", "equator-with-hole", "multipolygon", "four-zones"],
)
def test_cover_equals_live_reference_at_the_edges_of_the_world(shape, resolution, tilesize, pad):
    reference = earthone.DLTile.from_shape(shapely.geometry.mapping(shape), resolution, tilesize, pad)
    assert {t.key for t in tiles_for_shape(shape, resolution, tilesize, pad)} == {t.key for t in reference}


@settings(max_examples=100, deadline=None, derandomize=True)
@given(lon=st.floats(-179.99, 179.99), lat=st.floats(-84.0, 84.0), grid=GRIDS, pad=st.sampled_from([0, 8]))
def test_point_tile_equals_live_reference(lon, lat, grid, pad):
    resolution, tilesize = grid
    reference = earthone.DLTile.from_latlon(lat, lon, resolution, tilesize, pad)
    assert [t.key for t in tiles_for_shape(shapely.Point(lon, lat), resolution, tilesize, pad)] == [reference.key]
