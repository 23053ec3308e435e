"""Rasterizing vector ground truth onto DLTiles (tfchips.labels)."""

from __future__ import annotations

import pickle

import numpy as np
import pyogrio
import pyogrio.raw
import pytest
import shapely
from conftest import write_vector
from pyproj import Transformer

from tfchips.errors import ConfigError, LabelError, VectorFileError
from tfchips.grid import Tile
from tfchips.utm import lonlat_to_utm
from tfchips.labels import GroundTruth, LabelRequest, load_ground_truth

# 32 x 32 pixels of 10 m in UTM zone 13 (EPSG:32613), near Santa Fe.
TILE = Tile(32, 0, 10.0, 13, 130, 12330)
WEST, SOUTH, EAST, NORTH = TILE.bounds


def utm_box(col0: float, row0: float, col1: float, row1: float, tile: Tile = TILE) -> shapely.Polygon:
    """Box in ``tile``'s CRS given in pixel coordinates (col right, row down from the top-left)."""
    west, _, _, north = tile.bounds
    r = tile.resolution
    return shapely.box(west + col0 * r, north - row1 * r, west + col1 * r, north - row0 * r)


def pixel_lonlat(tile: Tile, col: float, row: float) -> tuple[float, float]:
    """WGS84 lon, lat of the centre of pixel (col, row) of ``tile``; fractions move off the centre."""
    west, _, _, north = tile.bounds
    x, y = west + (col + 0.5) * tile.resolution, north - (row + 0.5) * tile.resolution
    return Transformer.from_crs(tile.crs, "EPSG:4326", always_xy=True).transform(x, y)


def write(path, geometries, crs="EPSG:32613", fields=None, layer=None, append=False):
    return write_vector(path, geometries, crs, fields, layer, append)


def reproject(geometry, source, target):
    transformer = Transformer.from_crs(source, target, always_xy=True)
    return shapely.transform(geometry, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1])))


def burn(path, tile=TILE, **options):
    return GroundTruth.load(LabelRequest(str(path), **options)).rasterize(tile)


# Edges on pixel boundaries are 5 m from every pixel centre, far beyond reprojection noise.
A = utm_box(3, 4, 11, 8)  # cols 3-10, rows 4-7: 8 x 4 = 32 pixels
B = utm_box(9, 6, 15, 13)  # cols 9-14, rows 6-12: 6 x 7 = 42 pixels, 4 shared with A


@pytest.fixture
def two_boxes(tmp_path):
    return write(tmp_path / "boxes.gpkg", [A, B], fields={"cls": np.array([3, 7], dtype=np.int32)})


def test_attribute_burns_each_features_class_and_later_feature_wins(two_boxes):
    labels = burn(two_boxes, attribute="cls")
    assert labels.shape == (32, 32) and labels.dtype == np.uint8
    assert (labels[4:8, 3:9] == 3).all() and (labels[4:6, 9:11] == 3).all()
    assert (labels[6:13, 9:15] == 7).all()
    assert np.count_nonzero(labels == 3) == 32 - 4
    assert np.count_nonzero(labels == 7) == 42
    assert np.count_nonzero(labels == 0) == 32 * 32 - 28 - 42


def test_without_attribute_every_feature_burns_one_on_the_background(two_boxes):
    labels = burn(two_boxes, background=9)
    assert set(np.unique(labels)) == {1, 9}
    assert np.count_nonzero(labels == 1) == 32 + 42 - 4


def test_all_touched_burns_every_pixel_a_feature_touches(tmp_path):
    path = write(tmp_path / "small.gpkg", [utm_box(1.7, 1.7, 4.3, 4.3)])
    assert np.count_nonzero(burn(path)) == 2 * 2  # centres of cols/rows 2, 3
    assert np.count_nonzero(burn(path, all_touched=True)) == 4 * 4  # cols/rows 1 to 4


def test_points_and_lines_burn_the_pixels_they_fall_in(tmp_path):
    west, north = WEST, NORTH
    point = shapely.Point(west + 55, north - 125)  # col 5, row 12
    line = shapely.LineString([(west + 5, north - 305), (west + 315, north - 305)])  # row 30
    labels = burn(write(tmp_path / "mixed.gpkg", [point, line]))
    assert labels[12, 5] == 1 and (labels[30] == 1).all()
    assert np.count_nonzero(labels) == 1 + 32


def test_pixels_outside_the_extent_get_the_ignore_value(tmp_path, two_boxes):
    extent = write(tmp_path / "extent.gpkg", [utm_box(0, 0, 12, 32)])  # the 12 left columns
    truth = GroundTruth.load(LabelRequest(two_boxes, attribute="cls", extent=extent))
    labels = truth.rasterize(TILE)
    assert truth.nodata == 255
    assert (labels[:, 12:] == 255).all()
    assert np.count_nonzero(labels == 255) == 32 * 20
    assert np.count_nonzero(labels == 3) == 28
    assert np.count_nonzero(labels == 7) == 7 * 3  # B's columns 9-11
    far = Tile(32, 0, 10.0, 13, 140, 12330)
    assert (truth.rasterize(far) == 255).all()


def test_custom_ignore_value_and_no_nodata_without_extent(tmp_path, two_boxes):
    extent = write(tmp_path / "extent.gpkg", [utm_box(0, 0, 32, 16)])  # the top half
    labels = burn(two_boxes, extent=extent, ignore_value=200)
    assert (labels[16:] == 200).all() and not (labels[:16] == 200).any()
    # Pixels without imagery are ignored by default, so the ignore value is the nodata.
    assert GroundTruth.load(LabelRequest(two_boxes)).nodata == 255
    assert GroundTruth.load(LabelRequest(two_boxes, label_without_imagery=True)).nodata is None


def test_extent_must_be_polygons(tmp_path, two_boxes):
    extent = write(tmp_path / "extent.gpkg", [shapely.Point(WEST, SOUTH)])
    with pytest.raises(VectorFileError, match=r"extent\.gpkg.*must be polygons.*Point"):
        GroundTruth.load(LabelRequest(two_boxes, extent=extent))


@pytest.mark.parametrize("crs", ["EPSG:4326", "EPSG:3857", "EPSG:32612"])
def test_reprojects_vectors_from_another_crs(tmp_path, crs):
    shapes = [reproject(shape, TILE.crs, crs) for shape in (A, B)]
    path = write(tmp_path / "other.gpkg", shapes, crs=crs, fields={"cls": np.array([3, 7])})
    labels = burn(path, attribute="cls")
    assert np.count_nonzero(labels == 3) == 28 and (labels[4:8, 3:9] == 3).all()
    assert np.count_nonzero(labels == 7) == 42 and (labels[6:13, 9:15] == 7).all()


def test_reads_geojson_text(tmp_path):
    lon, lat = pixel_lonlat(TILE, 4, 9)
    path = tmp_path / "point.geojson"
    path.write_text(
        '{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"cls": 12},'
        f' "geometry": {{"type": "Point", "coordinates": [{lon!r}, {lat!r}]}}}}]}}'
    )
    labels = burn(path, attribute="cls")
    assert labels[9, 4] == 12 and np.count_nonzero(labels) == 1


def test_tile_at_a_zone_edge_gets_features_stored_in_the_next_zone(tmp_path):
    # The tile of zone 13 that holds lon -102.0005 reaches past the zone's eastern edge (-102).
    east, north = lonlat_to_utm(np.array([-102.0005]), np.array([35.0]), 13)
    tile = Tile(32, 0, 10.0, 13, int((east[0] - 500000) // 320), int(north[0] // 320))
    assert tile.geometry.bounds[2] > -102.0
    shape = reproject(utm_box(21, 0, 32, 32, tile), tile.crs, "EPSG:32614")
    labels = burn(write(tmp_path / "z14.gpkg", [shape], crs="EPSG:32614"), tile=tile)
    assert (labels[:, 21:] == 1).all() and np.count_nonzero(labels) == 11 * 32


def test_tile_across_the_antimeridian_finds_features_on_both_sides(tmp_path):
    east, north = lonlat_to_utm(np.array([180.0]), np.array([-16.0]), 60)
    tile = Tile(32, 0, 10.0, 60, int((east[0] - 500000) // 320), int(north[0] // 320))
    # Squares in every other pixel of row 10; none of them straddles the meridian.
    squares = [utm_box(c + 0.2, 10.2, c + 0.8, 10.8, tile) for c in range(0, 32, 2)]
    shapes = [reproject(square, tile.crs, "EPSG:4326") for square in squares]
    west_lon, _, east_lon, _ = np.array([shape.bounds for shape in shapes]).T
    assert (west_lon > 0).any() and (east_lon < 0).any() and (np.sign(west_lon) == np.sign(east_lon)).all()
    # Points a tenth of a metre either side of the meridian, where the outline has no vertex.
    points = [
        shapely.Point(179.999999, pixel_lonlat(tile, 16, 20)[1]),
        shapely.Point(-179.999999, pixel_lonlat(tile, 16, 25)[1]),
    ]
    labels = burn(write(tmp_path / "fiji.gpkg", shapes + points, crs="EPSG:4326"), tile=tile)
    assert np.count_nonzero(labels) == 16 + 2 and (labels[10, ::2] == 1).all()
    assert np.count_nonzero(labels[20]) == 1 and np.count_nonzero(labels[25]) == 1


def test_tile_around_the_pole_finds_features_at_any_longitude(tmp_path):
    tile = Tile(32, 1, 10.0, 31, -1, 31243)  # holds the north pole, 10 m from its east edge
    # About 55 m from the pole, on the tile's side of zone 31's central meridian (3 E).
    shapes = [shapely.Point(lon, 89.9995) for lon in (-170.0, -120.0, -60.0, -10.0)]
    # A metre from the pole: north of every point of the tile's outline.
    shapes.append(shapely.Point(-90.0, 89.99999))
    labels = burn(write(tmp_path / "pole.gpkg", shapes, crs="EPSG:4326"), tile=tile)
    assert np.count_nonzero(labels) == 5


def test_overlaps_go_to_the_later_feature_in_file_order(tmp_path):
    starts = np.random.default_rng(0).integers(0, 24, size=40)
    shapes = [utm_box(s, 0, s + 8, 32) for s in starts]
    labels = burn(write(tmp_path / "stack.gpkg", shapes, fields={"cls": np.arange(1, 41)}), attribute="cls")
    expected = np.zeros(32, dtype=np.uint8)
    for value, start in enumerate(starts, start=1):
        expected[start : start + 8] = value
    assert (labels == expected).all()


def test_long_edges_keep_their_shape_in_the_files_crs(tmp_path):
    # A lon/lat box whose northern edge, the parallel through the middle of the tile,
    # runs 10 degrees: a straight chord in UTM would pass kilometres north of it.
    lon, lat = pixel_lonlat(TILE, 15.5, 15.5)  # the tile's centre, between rows 15 and 16
    shape = shapely.box(lon - 5, lat - 5, lon + 5, lat)
    labels = burn(write(tmp_path / "parallel.gpkg", [shape], crs="EPSG:4326"))
    assert (labels[16:] == 1).all() and (labels[:16] == 0).all()


def test_layers_are_chosen_by_name_or_index(tmp_path):
    path = tmp_path / "two.gpkg"
    write(path, [A], fields={"cls": np.array([3])}, layer="first")
    write(path, [B], fields={"cls": np.array([7])}, layer="second", append=True)
    for layer in ("second", 1, "1"):
        assert np.count_nonzero(burn(path, attribute="cls", layer=layer) == 7) == 42
    assert np.count_nonzero(burn(path, attribute="cls", layer=0) == 3) == 32
    with pytest.raises(VectorFileError, match=r"two\.gpkg: holds 2 layers \(0: first, 1: second\); choose"):
        GroundTruth.load(LabelRequest(str(path)))
    for bad in ("third", 2):
        with pytest.raises(VectorFileError, match=rf"two\.gpkg: no layer {bad!r}; layers: 0: first, 1: second"):
            GroundTruth.load(LabelRequest(str(path), layer=bad))


def test_a_lone_spatial_layer_beside_a_table_needs_no_choice(tmp_path):
    path = tmp_path / "mixed.gpkg"
    pyogrio.raw.write(str(path), None, [np.array([1, 2])], ["a"], driver="GPKG", layer="table")
    write(path, [A], layer="shapes", append=True)
    assert np.count_nonzero(burn(path)) == 32


def test_extent_layer_is_chosen_separately(tmp_path, two_boxes):
    path = tmp_path / "extents.gpkg"
    write(path, [utm_box(0, 0, 32, 32)], layer="everything")
    write(path, [utm_box(0, 0, 16, 32)], layer="left", append=True)
    labels = burn(two_boxes, extent=str(path), extent_layer="left")
    assert np.count_nonzero(labels == 255) == 32 * 16


def test_invalid_geometries_are_repaired_and_counted(tmp_path, caplog):
    x0, y0 = WEST + 17, NORTH - 97
    # Two squares of 4 x 4 pixels joined by one ring that touches itself at a corner.
    ring = [(0, 0), (40, 0), (40, 40), (80, 40), (80, 80), (40, 80), (40, 40), (0, 40), (0, 0)]
    bow = shapely.Polygon([(x0 + x, y0 + y) for x, y in ring])
    assert not bow.is_valid
    truth = GroundTruth.load(LabelRequest(write(tmp_path / "bow.gpkg", [bow])))
    assert truth.repaired == 1 and truth.feature_count == 1
    assert "bow.gpkg: repaired 1 invalid geometries with make_valid" in caplog.text
    labels = truth.rasterize(TILE)
    assert (labels[6:10, 2:6] == 1).all() and (labels[2:6, 6:10] == 1).all()
    assert np.count_nonzero(labels) == 32


def test_collapsed_polygons_are_dropped_after_repair(tmp_path):
    flat = shapely.Polygon([(WEST, SOUTH), (WEST + 100, SOUTH), (WEST + 50, SOUTH), (WEST, SOUTH)])
    truth = GroundTruth.load(LabelRequest(write(tmp_path / "flat.gpkg", [flat, A])))
    assert truth.repaired == 1 and truth.feature_count == 1
    assert np.count_nonzero(truth.rasterize(TILE)) == 32


def test_a_tile_without_features_is_all_background(two_boxes):
    assert (burn(two_boxes, tile=Tile(32, 0, 10.0, 13, 131, 12330), background=4) == 4).all()


def test_files_are_read_once_and_not_needed_after_loading(tmp_path, monkeypatch, two_boxes):
    extent = write(tmp_path / "extent.gpkg", [utm_box(0, 0, 12, 32)])
    reads = []
    original = pyogrio.raw.read
    monkeypatch.setattr(pyogrio.raw, "read", lambda *a, **k: reads.append(a[0]) or original(*a, **k))
    load_ground_truth.cache_clear()
    request = LabelRequest(two_boxes, attribute="cls", extent=extent)
    truth = load_ground_truth(request)
    assert load_ground_truth(LabelRequest(two_boxes, attribute="cls", extent=extent)) is truth
    assert reads == [two_boxes, extent]
    (tmp_path / "boxes.gpkg").unlink()
    (tmp_path / "extent.gpkg").unlink()
    tiles = [Tile(32, 0, 10.0, 13, ti, tj) for ti in range(128, 133) for tj in range(12328, 12333)]
    burnt = [truth.rasterize(tile) for tile in tiles]
    assert reads == [two_boxes, extent]
    assert np.count_nonzero(burnt[tiles.index(TILE)] == 7) == 21
    load_ground_truth.cache_clear()


def test_request_pickles_and_reads_job_options():
    request = LabelRequest.from_options(
        {"labels": "gt.gpkg", "attribute": "cls", "labels_layer": "1", "all_touched": True,
         "background": 0, "extent": "area.shp", "extent_layer": None, "ignore_value": 99.0, "resolution": 10}
    )
    assert request == LabelRequest("gt.gpkg", "cls", "1", True, 0, "area.shp", None, 99)
    assert pickle.loads(pickle.dumps(request)) == request
    assert LabelRequest.from_options({"labels": "gt.gpkg", "background": None}) == LabelRequest("gt.gpkg")


@pytest.mark.parametrize(
    "options, message",
    [
        ({}, "no labels file"),
        ({"background": 255}, "both 255"),
        ({"background": 7, "ignore_value": 7}, "both 7"),
        ({"background": 256}, "background must be a whole number 0-255, got 256"),
        ({"ignore_value": -1}, "ignore_value must be a whole number 0-255, got -1"),
        ({"background": 1.5}, "got 1.5"),
        ({"background": "one"}, "got 'one'"),
        ({"ignore_value": 1}, "ignore_value 1 is the value every feature burns"),
    ],
)
def test_bad_options_are_config_errors(options, message):
    if options:
        options = {"labels": "gt.gpkg", **options}
    with pytest.raises(ConfigError, match=message):
        LabelRequest.from_options(options)


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(VectorFileError, match=r"missing\.gpkg: no such file"):
        GroundTruth.load(LabelRequest(str(tmp_path / "missing.gpkg")))
    with pytest.warns(UserWarning, match="crs"):
        no_crs = write(tmp_path / "nocrs.gpkg", [A], crs=None)
    with pytest.raises(VectorFileError, match=r"nocrs\.gpkg: the file has no CRS"):
        GroundTruth.load(LabelRequest(no_crs))
    empty = tmp_path / "empty.gpkg"
    pyogrio.raw.write(
        str(empty), np.array([], dtype=object), [], [], geometry_type="Polygon", crs="EPSG:4326", driver="GPKG"
    )
    with pytest.raises(VectorFileError, match=r"empty\.gpkg: the file has no features"):
        GroundTruth.load(LabelRequest(str(empty)))
    garbage = tmp_path / "garbage.geojson"
    garbage.write_text("not json")
    with pytest.raises(VectorFileError, match=r"garbage\.geojson: cannot read"):
        GroundTruth.load(LabelRequest(str(garbage)))
    metres_as_degrees = write(tmp_path / "wrongcrs.gpkg", [A], crs="EPSG:4326")
    with pytest.raises(VectorFileError, match=r"wrongcrs\.gpkg: 1 features cannot be placed"):
        GroundTruth.load(LabelRequest(metres_as_degrees))


def test_missing_attribute_lists_the_available_ones(two_boxes):
    with pytest.raises(LabelError, match=r"boxes\.gpkg: no attribute 'class'; available: cls"):
        GroundTruth.load(LabelRequest(two_boxes, attribute="class"))


@pytest.mark.parametrize(
    "values, example",
    [
        (np.array([3, 300]), "300 in feature 1"),
        (np.array([-1, 3]), "-1 in feature 0"),
        (np.array([3.0, 2.5]), "2.5 in feature 1"),
        (np.array([3.0, np.nan]), "null in feature 1"),
        (np.array([3, 255]), "255 in feature 1"),
    ],
)
def test_bad_class_values_are_label_errors(tmp_path, values, example):
    path = write(tmp_path / "bad.gpkg", [A, B], fields={"cls": values})
    with pytest.raises(LabelError, match=rf"bad\.gpkg: attribute 'cls' has 1 bad values, e\.g\. {example}"):
        GroundTruth.load(LabelRequest(path, attribute="cls"))


def test_whole_floats_and_255_with_another_ignore_value_are_classes(tmp_path):
    path = write(tmp_path / "floats.gpkg", [A, B], fields={"cls": np.array([4.0, 255.0])})
    labels = burn(path, attribute="cls", ignore_value=254)
    assert np.count_nonzero(labels == 4) == 28 and np.count_nonzero(labels == 255) == 42


def test_text_attribute_is_a_label_error(tmp_path):
    path = write(tmp_path / "text.gpkg", [A, B], fields={"cls": np.array(["road", "field"], dtype=object)})
    with pytest.raises(LabelError, match=r"text\.gpkg: attribute 'cls' holds object values such as 'road'"):
        GroundTruth.load(LabelRequest(path, attribute="cls"))
