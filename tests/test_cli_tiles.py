import json

import numpy as np
import pytest
import shapely
from click.testing import CliRunner
from conftest import write_vector
from pyproj import Transformer

from tfchips.aoi import read_aoi, read_tile_list
from tfchips.cli.main import cli
from tfchips.errors import TileKeyError
from tfchips.grid import tiles_for_shape

BOX = shapely.box(-105.95, 35.68, -105.90, 35.72)


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])




def test_bbox_prints_one_key_per_line():
    result = run("tiles", "--bbox", "-105.95,35.68,-105.90,35.72", "--resolution", 10, "--tilesize", 256)
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [t.key for t in tiles_for_shape(BOX, 10.0, 256, 0)]


def test_geojson_output(tmp_path):
    result = run("tiles", "--bbox", "-105.95,35.68,-105.90,35.72", "--resolution", 10, "--tilesize", 256,
                 "--pad", 8, "--format", "geojson")
    assert result.exit_code == 0, result.output
    collection = json.loads(result.stdout)
    keys = [f["properties"]["key"] for f in collection["features"]]
    assert keys == [t.key for t in tiles_for_shape(BOX, 10.0, 256, 8)]
    assert all(f["properties"]["crs"] == "EPSG:32613" for f in collection["features"])


def test_aoi_in_another_crs_is_reprojected(tmp_path):
    to_mercator = lambda g: shapely.transform(g, lambda xy: np.column_stack(
        __import__("pyproj").Transformer.from_crs(4326, 3857, always_xy=True).transform(xy[:, 0], xy[:, 1])))
    path = write_vector(tmp_path / "aoi.gpkg", [to_mercator(BOX)], crs="EPSG:3857")
    result = run("tiles", "--aoi", path, "--resolution", 10, "--tilesize", 256)
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [t.key for t in tiles_for_shape(BOX, 10.0, 256, 0)]


def test_projected_aoi_edges_keep_their_shape_in_lon_lat(tmp_path):
    # A 200 km UTM square at 60 N: its straight edges are curves in lon/lat, up to 1.4 km
    # away from the chords between its corners.
    west, south, east, north = 400_000, 6_600_000, 600_000, 6_800_000
    path = write_vector(tmp_path / "square.gpkg", [shapely.box(west, south, east, north)], crs="EPSG:32633")
    aoi = read_aoi(path)
    middle_x, middle_y = (west + east) / 2, (south + north) / 2
    for step in (-50, 50):  # 50 m inside, then outside, of each edge's midpoint
        utm = [(west - step, middle_y), (east + step, middle_y), (middle_x, south - step), (middle_x, north + step)]
        lon, lat = Transformer.from_crs(32633, 4326, always_xy=True).transform(*zip(*utm))
        assert shapely.contains_xy(aoi, lon, lat).tolist() == [step < 0] * 4


def test_tile_list_with_a_byte_order_mark_and_indented_comments(tmp_path):
    keys = ["64:0:10.0:13:-270:12340", "64:0:10.0:13:-269:12340"]
    path = tmp_path / "tiles.txt"
    # As Windows Notepad saves it: a byte order mark, CRLF line ends.
    path.write_bytes(f"{keys[0]}\r\n   # the second tile\r\n\r\n {keys[1]} \r\n{keys[0]}\r\n".encode("utf-8-sig"))
    assert [tile.key for tile in read_tile_list(path)] == keys
    path.write_text(f"{keys[0]}\n{keys[1]}:7\n")
    with pytest.raises(TileKeyError, match=rf"tiles.txt: malformed tile key '{keys[1]}:7' on line 2"):
        read_tile_list(path)


def test_aoi_of_sample_points_gives_their_tiles(tmp_path):
    points = [shapely.Point(-105.91, 35.70), shapely.Point(-105.60, 35.70), shapely.Point(-105.9101, 35.7001)]
    path = write_vector(tmp_path / "points.gpkg", points, fields={"cls": np.array([1, 2, 1])})
    result = run("tiles", "--aoi", path, "--resolution", 10, "--tilesize", 256)
    assert result.exit_code == 0, result.output
    assert len(result.stdout.split()) == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["--aoi", "missing.gpkg"], "missing.gpkg: no such file"),
        (["--bbox", "1,2,3"], "not four numbers"),
        (["--bbox", "3,2,1,4"], "is empty"),
        ([], "exactly one of"),
        (["--bbox", "0,0,1,1", "--aoi", "x.gpkg"], "exactly one of"),
    ],
)
def test_bad_arguments_are_one_line_errors(args, message):
    result = run("tiles", *args, "--resolution", 10, "--tilesize", 256)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_aoi_without_crs_is_an_error(tmp_path):
    # GeoJSON always means WGS84; a shapefile without .prj really has no CRS.
    path = write_vector(tmp_path / "nocrs.shp", [BOX], crs=None, fields={"id": np.array([1])})
    result = run("tiles", "--aoi", path, "--resolution", 10, "--tilesize", 256)
    assert result.exit_code == 1
    assert "has no CRS" in result.output and str(path) in result.output


def test_empty_aoi_is_an_error(tmp_path):
    path = tmp_path / "empty.geojson"
    path.write_text('{"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "EPSG:4326"}}, "features": []}')
    result = run("tiles", "--aoi", path, "--resolution", 10, "--tilesize", 256)
    assert result.exit_code == 1
    assert "no features" in result.output and "empty.geojson" in result.output
