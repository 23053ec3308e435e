"""Imagery for a tile: options, and exact composites from small catalogs with known pixels."""

import math
import pickle
from datetime import date, datetime, timedelta, timezone

import click
import numpy as np
import pytest
from affine import Affine
from pyproj import Transformer

from tfchips.options import imagery_options
from tfchips.demo_data import SceneSpec, write_catalog
from tfchips.errors import ConfigError
from tfchips.grid import Tile
from tfchips.imagery import ImageryRequest, Product, imagery_for_tile
from tfchips.sources import open_source

TILE = Tile(tilesize=4, pad=0, resolution=10.0, zone=13, ti=-540, tj=24682)
WEST, SOUTH, EAST, NORTH = TILE.bounds
ON_GRID = Affine(10, 0, WEST - 10, 0, -10, NORTH + 10)  # 6 x 6 arrays, one pixel around the tile


@pytest.fixture(autouse=True)
def fresh_sources():
    open_source.cache_clear()
    yield
    open_source.cache_clear()


def scl(**masked) -> np.ndarray:
    """A 6 x 6 SCL raster of vegetation (4) with classes set at tile pixels: p01=3 masks (0, 1)."""
    classes = np.full((6, 6), 4, dtype=np.uint8)
    for name, value in masked.items():
        classes[int(name[1]) + 1, int(name[2]) + 1] = value
    return classes


def scene(scene_id, day, red, cloud, mask=None, size=6, **kwargs):
    assets = {"red": np.full((size, size), red, np.uint16), "nir": np.full((size, size), red + 100, np.uint16)}
    if mask is not None:
        assets["scl"] = mask
    kwargs.setdefault("crs", TILE.crs)
    kwargs.setdefault("transform", ON_GRID)
    return SceneSpec(
        id=scene_id,
        datetime=datetime(2023, 6, day, 10, tzinfo=timezone.utc),
        assets=assets,
        cloud_cover=cloud,
        stac_nodata=0,
        common_names={"red": ["red"], "nir": ["nir"]},
        **kwargs,
    )


@pytest.fixture
def three_scenes(tmp_path):
    """a: June 1, 3 % cloud, 10, masked at (0, 0); b: June 12, 5 %, 25, masked at (0, 0) and
    (0, 1); c: June 20, 40 %, 30, masked at (1, 0)."""
    return write_catalog(
        tmp_path / "three",
        [
            scene("a", 1, 10, 3.0, scl(p00=9)),
            scene("b", 12, 25, 5.0, scl(p00=8, p01=3)),
            scene("c", 20, 30, 40.0, scl(p10=9)),
        ],
    )


def request(catalog, **options):
    base = {"catalog": catalog, "bands": "red,nir", "mask_asset": "scl", "mask_values": "3,8,9,10"}
    return ImageryRequest.from_options({**base, **options})


def grid(top_left, first_row_second, second_row_first, rest):
    values = np.full((4, 4), rest)
    values[0, 0], values[0, 1], values[1, 0] = top_left, first_row_second, second_row_first
    return values.tolist()


@pytest.mark.parametrize(
    "method, expected, scenes",
    [
        # June 10: b (2 days), a (9), c (10).
        ("closest", grid(30, 10, 25, 25), ("b", "a", "c")),
        ("latest", grid(30, 30, 25, 30), ("c", "b")),
        ("least-cloudy", grid(30, 10, 10, 10), ("a", "c")),
        # (0, 0): 30 alone; (0, 1): 10, 30; (1, 0): 10, 25 -> 17.5 rounds up; else 10, 25, 30.
        ("median", grid(30, 20, 18, 25), ("a", "b", "c")),
    ],
)
def test_each_method_gives_the_exact_composite(three_scenes, method, expected, scenes):
    result = imagery_for_tile(TILE, request(three_scenes, method=method, reference_date="2023-06-10"))
    assert result.data[0].tolist() == expected
    assert (result.data[1] == result.data[0] + 100).all()
    assert result.band_names == ("red", "nir") and result.data.dtype == np.uint16
    assert result.scenes == scenes
    assert result.valid.all() and result.valid_fraction == 1.0


def test_closest_ties_go_to_lower_cloud_then_lower_id(tmp_path):
    # Both 2 days from June 10 at 10:00, both 5 % cloud: "b" < "d".
    noon = "2023-06-10T10:00:00Z"
    tie = write_catalog(tmp_path / "tie", [scene("d", 8, 40, 5.0), scene("b", 12, 25, 5.0)])
    result = imagery_for_tile(TILE, request(tie, reference_date=noon, mask_asset=None, mask_values=None))
    assert (result.data[0] == 25).all() and result.scenes == ("b",)
    cloud = write_catalog(tmp_path / "cloud", [scene("d", 8, 40, 4.0), scene("b", 12, 25, 5.0)])
    result = imagery_for_tile(TILE, request(cloud, reference_date=noon, mask_asset=None, mask_values=None))
    assert (result.data[0] == 40).all() and result.scenes == ("d",)


def test_scene_filters_drop_scenes_before_compositing(three_scenes):
    without_c = imagery_for_tile(TILE, request(three_scenes, method="median", max_cloud=30))
    # Median of a and b where both are valid: 17.5 -> 18; (0, 0) has neither.
    assert without_c.data[0].tolist() == grid(0, 10, 18, 18)
    assert without_c.valid_fraction == 15 / 16 and not without_c.valid[0, 0]
    late = imagery_for_tile(TILE, request(three_scenes, method="median", start="2023-06-12", end="2023-06-20"))
    assert late.data[0].tolist() == grid(30, 30, 25, 28) and late.scenes == ("b", "c")


def test_default_reference_is_the_middle_of_the_dates(three_scenes):
    # June 1..21: middle June 11, where b is closest; without any date the newest (c) leads.
    dated = imagery_for_tile(TILE, request(three_scenes, start="2023-06-01", end="2023-06-20"))
    assert dated.scenes[0] == "b"
    undated = imagery_for_tile(TILE, request(three_scenes))
    assert undated.data[0].tolist() == grid(30, 30, 25, 30)


def test_cloud_probability_masks_pixels(tmp_path):
    probability = np.full((6, 6), 10, dtype=np.uint8)
    probability[1, 1:3] = 80  # tile pixels (0, 0) and (0, 1)
    first, second = scene("x", 14, 50, 1.0), scene("y", 1, 7, 1.0)
    first.assets["cp"] = probability
    second.assets["cp"] = np.full((6, 6), 50, dtype=np.uint8)  # at the threshold: kept
    catalog = write_catalog(tmp_path / "cp", [first, second])
    result = imagery_for_tile(
        TILE,
        request(
            catalog,
            mask_asset=None,
            mask_values=None,
            cloud_prob_asset="cp",
            cloud_prob_threshold=50,
            reference_date="2023-06-15",
        ),
    )
    assert result.data[0].tolist() == grid(7, 7, 50, 50)


def test_other_crs_fills_a_scene_that_covers_part_of_the_tile(tmp_path):
    # "east" (closest) covers only the two eastern columns; "zone12" lies in UTM zone 12.
    to_12 = Transformer.from_crs(TILE.crs, "EPSG:32612", always_xy=True)
    x, y = to_12.transform(WEST, NORTH)
    in_zone_12 = Affine(10, 0, math.floor(x) - 30, 0, -10, math.ceil(y) + 30)
    east = Affine(10, 0, WEST + 20, 0, -10, NORTH + 10)
    catalog = write_catalog(
        tmp_path / "mixed",
        [
            scene("east", 12, 25, 1.0, transform=east),
            scene("zone12", 1, 77, 1.0, size=10, crs="EPSG:32612", transform=in_zone_12),
        ],
    )
    result = imagery_for_tile(TILE, request(catalog, mask_asset=None, mask_values=None, reference_date="2023-06-12"))
    assert result.data[0].tolist() == [[77, 77, 25, 25]] * 4
    assert result.scenes == ("east", "zone12") and result.valid_fraction == 1.0


def test_pixels_nothing_covers_stay_nodata_and_are_counted(tmp_path):
    east = Affine(10, 0, WEST + 20, 0, -10, NORTH + 10)
    catalog = write_catalog(tmp_path / "half", [scene("east", 12, 25, 1.0, transform=east)])
    result = imagery_for_tile(TILE, request(catalog, mask_asset=None, mask_values=None))
    assert result.data[0].tolist() == [[0, 0, 25, 25]] * 4
    assert result.valid[:, :2].sum() == 0 and result.valid_fraction == 0.5 and result.nodata == 0
    filled = imagery_for_tile(TILE, request(catalog, mask_asset=None, mask_values=None, nodata="65535"))
    assert filled.data[0].tolist() == [[65535, 65535, 25, 25]] * 4 and filled.nodata == 65535


def test_a_tile_no_scene_covers_is_all_nodata(three_scenes):
    far = Tile(tilesize=4, pad=0, resolution=10.0, zone=13, ti=100, tj=24682)
    result = imagery_for_tile(far, request(three_scenes, dtype="uint16"))
    assert result.scenes == () and result.valid_fraction == 0.0
    assert result.data.shape == (2, 4, 4) and result.data.dtype == np.uint16 and (result.data == 0).all()


def test_merged_products_fill_each_other(tmp_path, three_scenes):
    # A second sensor whose red is asset "B04"; it has no SCL, so it unsets the mask.
    other = SceneSpec(
        id="landsat",
        datetime=datetime(2023, 6, 5, tzinfo=timezone.utc),
        crs=TILE.crs,
        transform=ON_GRID,
        assets={"B04": np.full((6, 6), 61, np.uint16), "B05": np.full((6, 6), 161, np.uint16)},
        cloud_cover=50.0,
    )
    landsat = write_catalog(tmp_path / "landsat", [other])
    options = {"reference_date": "2023-06-10", "max_cloud": 45}
    merged = request(three_scenes, merge=[f"catalog={landsat} bands=B04,B05 mask-asset= max-cloud=60"], **options)
    assert merged.merge[0] == Product(catalog=landsat, bands=("B04", "B05"), max_cloud=60.0)
    result = imagery_for_tile(TILE, merged)
    # From June 10: b (2 days 10 h), landsat (5 days), a, c; b is masked at (0, 0) and (0, 1).
    assert result.data[0].tolist() == grid(61, 61, 25, 25)
    assert result.data[1].tolist() == grid(161, 161, 125, 125)
    assert result.scenes == ("b", "landsat") and result.band_names == ("red", "nir")


def test_stacked_products_are_composited_apart_and_appended(tmp_path, three_scenes):
    dem = SceneSpec(
        id="dem",
        datetime=datetime(2021, 1, 1, tzinfo=timezone.utc),
        crs=TILE.crs,
        transform=ON_GRID,
        assets={"elevation": np.arange(36, dtype=np.float32).reshape(6, 6) + 0.5},
    )
    catalog = write_catalog(tmp_path / "dem", [dem])
    result = imagery_for_tile(
        TILE,
        request(
            three_scenes,
            reference_date="2023-06-10",
            start="2023-06-01",
            end="2023-06-30",
            stack=[{"catalog": catalog, "bands": ["elevation"]}],
        ),
    )
    assert result.band_names == ("red", "nir", "elevation")
    assert result.data.dtype == np.float32 and result.data.shape == (3, 4, 4)
    assert result.data[0].tolist() == grid(30, 10, 25, 25)
    assert result.data[2, 0].tolist() == [7.5, 8.5, 9.5, 10.5]  # row 1, columns 1-4 of the DEM
    assert result.scenes == ("b", "a", "c", "dem")


# Options.


def test_options_from_the_command_line_and_from_yaml_agree():
    cli = ImageryRequest.from_options(
        {
            "catalog": "c.json",
            "bands": "red, nir",
            "start": "2023-06-01",
            "end": "2023-06-30",
            "max-cloud": "20",
            "mask-asset": "scl",
            "mask-values": "3,8",
            "method": "median",
            "merge": (),
            "stack": (),
            "labels": "ignored.gpkg",
        }
    )
    yaml = ImageryRequest.from_options(
        {
            "catalog": "c.json",
            "bands": ["red", "nir"],
            "start": date(2023, 6, 1),
            "end": date(2023, 6, 30),
            "max_cloud": 20,
            "mask_asset": "scl",
            "mask_values": [3, 8],
            "method": "median",
        }
    )
    assert cli == yaml
    assert cli.end == datetime(2023, 6, 30, 23, 59, 59, 999999, tzinfo=timezone.utc)
    assert abs(cli.reference - datetime(2023, 6, 16, tzinfo=timezone.utc)) < timedelta(seconds=1)
    assert pickle.loads(pickle.dumps(cli)) == cli


def test_merge_specs_inherit_and_stack_specs_do_not():
    main = ImageryRequest.from_options(
        {
            "catalog": "https://earth-search.aws.element84.com/v1",
            "collection": "sentinel-2-l2a",
            "bands": "red,nir",
            "start": "2023-06-01",
            "mask_asset": "scl",
            "mask_values": "3,8,9",
            "merge": ["collection=landsat-c2-l2 bands=red,nir08 'mask-asset=qa_pixel' mask-values=1,2"],
            "stack": ["catalog=dem.json bands=elevation resampling=bilinear method=median"],
        }
    )
    (landsat,) = main.merge
    assert (landsat.catalog, landsat.collection) == ("https://earth-search.aws.element84.com/v1", "landsat-c2-l2")
    assert landsat.bands == ("red", "nir08") and landsat.start == main.start
    assert (landsat.mask_asset, landsat.mask_values) == ("qa_pixel", (1, 2))
    (dem,) = main.stack
    assert (dem.catalog, dem.bands, dem.resampling, dem.method) == ("dem.json", ("elevation",), "bilinear", "median")
    assert dem.start is None and dem.mask_asset is None
    assert main.band_names == ("red", "nir", "elevation")


@pytest.mark.parametrize(
    "options, message",
    [
        ({"bands": "red"}, "`catalog` is required"),
        ({"catalog": "c.json"}, "`bands` is required"),
        ({"catalog": "c.json", "bands": "red", "method": "mean"}, "`method`: expected one of closest, median"),
        ({"catalog": "c.json", "bands": "red", "start": "June"}, "`start`: expected a date YYYY-MM-DD"),
        ({"catalog": "c.json", "bands": "red", "max_cloud": "120"}, "`max_cloud`: expected a percentage"),
        ({"catalog": "c.json", "bands": "red", "mask_values": "3,8"}, "`mask_asset` and `mask_values` go together"),
        ({"catalog": "c.json", "bands": "red", "mask_asset": "scl", "mask_values": "a"}, "`mask_values`: expected"),
        ({"catalog": "c.json", "bands": "red", "cloud_prob_asset": "cp"}, "`cloud_prob_threshold` go together"),
        ({"catalog": "c.json", "bands": "red", "start": "2023-07-01", "end": "2023-06-01"}, "is after `end`"),
        ({"catalog": "c.json", "bands": "red", "dtype": "str"}, "`dtype`: expected a numeric dtype"),
        ({"catalog": "c.json", "bands": "red", "resampling": "lanczos"}, "`resampling`: expected one of"),
        ({"catalog": "c.json", "bands": "red", "merge": ["bands=nir"]}, "needs its own catalog= or collection="),
        ({"catalog": "c.json", "bands": "red", "merge": ["catalog=d.json bands=a,b"]}, "has 2 band"),
        ({"catalog": "c.json", "bands": "red", "merge": ["catalog=d.json method=median"]}, "unknown setting 'method'"),
        ({"catalog": "c.json", "bands": "red", "merge": ["catalog"]}, "'catalog' is not name=value"),
        ({"catalog": "c.json", "bands": "red", "stack": ["catalog=d.json"]}, "needs catalog= and bands="),
        ({"catalog": "c.json", "bands": "red", "stack": ["catalog=d.json bands=x max-cloud=x"]}, "`max_cloud`"),
    ],
)
def test_bad_options_are_config_errors_naming_the_option(options, message):
    with pytest.raises(ConfigError, match=message):
        ImageryRequest.from_options(options)


def test_nodata_must_fit_the_output_dtype(three_scenes):
    with pytest.raises(ConfigError, match="nodata -1 does not fit the output dtype uint16"):
        imagery_for_tile(TILE, request(three_scenes, nodata="-1"))


def test_nodata_that_does_not_fit_the_dtype_is_refused_with_the_request():
    with pytest.raises(ConfigError, match="`nodata` -1 does not fit `dtype` uint8"):
        ImageryRequest.from_options({"catalog": "c.json", "bands": "red", "nodata": "-1", "dtype": "uint8"})
    with pytest.raises(ConfigError, match=r"`nodata` 9{10}\d+ does not fit `dtype` float32"):
        ImageryRequest.from_options({"catalog": "c.json", "bands": "red", "nodata": "1e39", "dtype": "float32"})
    assert ImageryRequest.from_options({"catalog": "c.json", "bands": "red", "nodata": "nan", "dtype": "float32"})


def test_values_that_do_not_fit_the_dtype_fail_the_tile_instead_of_wrapping(tmp_path):
    # uint16 reflectance up to 7500 (a cloud) would wrap to 76 in uint8.
    bright = scene("bright", 1, 7400, 0.0)
    catalog = write_catalog(tmp_path, [bright])
    narrow = {"catalog": catalog, "bands": "red,nir", "dtype": "uint8"}
    message = (
        rf"tile {TILE.key}: bands red,nir of scenes bright hold values from 7400 to 7500,"
        r" beyond the range of `dtype` uint8; choose a wider `dtype`"
    )
    with pytest.raises(ConfigError, match=message):
        imagery_for_tile(TILE, ImageryRequest.from_options(narrow))
    # Values that fit are converted; so are the scenes' own dtype and a wider one.
    assert imagery_for_tile(TILE, ImageryRequest.from_options({**narrow, "dtype": "int16"})).data.max() == 7500
    dark = write_catalog(tmp_path / "dark", [scene("dark", 1, 100, 0.0)])
    result = imagery_for_tile(TILE, ImageryRequest.from_options({**narrow, "catalog": dark}))
    assert result.data.dtype == np.uint8 and result.data[:, 0, 0].tolist() == [100, 200]


def test_click_options_feed_from_options():
    seen = {}

    @click.command()
    @imagery_options
    def job(**values):
        seen["request"] = ImageryRequest.from_options(values)

    job.main(
        [
            "--catalog",
            "c.json",
            "--bands",
            "red,nir",
            "--max-cloud",
            "20",
            "--method",
            "latest",
            "--nodata",
            "0",
            "--merge",
            "collection=l8 bands=B4,B5",
            "--stack",
            "catalog=dem.json bands=elevation",
        ],
        standalone_mode=False,
    )
    made = seen["request"]
    assert (made.max_cloud, made.method, made.nodata) == (20.0, "latest", 0)
    assert made.merge[0].collection == "l8" and made.stack[0].bands == ("elevation",)
