"""Landsat-like imagery at real scale, generated: 30 m scenes of ``size`` x ``size`` pixels
(Landsat's 7,000 by default), several dates, overlapping footprints, one or more UTM zones.

Each scene is a static-catalog item (`tfchips.demo_data.write_catalog`) with COG assets
``red`` and ``nir`` (uint16, STAC nodata 0) and ``qa_pixel`` (Landsat Collection 2 bits:
0 fill, 3 cloud, 6 clear). Data cover a footprint tilted like Landsat's inside the
raster, each date shifted from the last; clouds are 64-pixel blocks in about a tenth of
it. Values are ramps with sensor noise that differ per scene, so a composite shows which scene each
pixel came from. Scene grids are Landsat's: pixel corners at odd multiples of 15 m, so a 30 m
tile of the same zone, whose corners are at multiples of 30 m, has every pixel centre on a
corner of four source pixels (a tie for nearest resampling; the exact answer is the pixel
whose upper-left corner it is). One scene is in memory at a time.

Used by `benchmarks/bench_odc.py` and `tests/test_remote.py`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
import shapely
from affine import Affine
from pyproj import Transformer

from tfchips.demo_data import SceneSpec, write_catalog

RESOLUTION = 30.0
# Landsat's UTM grid: pixel centres at multiples of 30 m, corners half a pixel off them.
GRID_OFFSET = 15.0
BANDS = ("red", "nir")
# Landsat Collection 2 QA_PIXEL: clear (bit 6) with low confidences; cloud adds bit 3; fill is bit 0.
QA_CLEAR, QA_CLOUD, QA_FILL = 21824, 21824 | 1 << 3, 1
# Landsat's footprint is tilted about 12 degrees from north-up in UTM.
_TILT = math.radians(12.0)
_ROWS_PER_BLOCK = 512


@dataclass(frozen=True)
class SceneLayout:
    """Where one scene lies: its id, date, UTM zone (north) and upper-left corner in that zone (m)."""

    id: str
    datetime: datetime
    zone: int
    west: float
    north: float
    seed: int


def layout(
    size: int,
    center: tuple[float, float] = (-108.0, 38.0),
    zones: Sequence[int] = (12, 13),
    dates: int = 3,
) -> list[SceneLayout]:
    """Scenes of ``size`` pixels around ``center`` (lon, lat degrees): ``dates`` per zone, 16
    days apart, the zones' dates interleaved; each scene's centre sits off ``center`` by a
    fifth of a scene toward its zone's side and moves a twentieth of a scene per date."""
    width = size * RESOLUTION
    lon, lat = center
    scenes = []
    middle = (len(zones) - 1) / 2
    for z, zone in enumerate(zones):
        to_utm = Transformer.from_crs(4326, f"EPSG:{32600 + zone}", always_xy=True)
        x, y = to_utm.transform(lon, lat)
        for d in range(dates):
            shift = (d - (dates - 1) / 2) * width / 20
            cx = x + (z - middle) * width / 5 + shift
            cy = y - shift
            west = math.floor((cx - width / 2) / RESOLUTION) * RESOLUTION + GRID_OFFSET
            north = math.floor((cy + width / 2) / RESOLUTION) * RESOLUTION + GRID_OFFSET
            when = datetime(2023, 6, 1, 17, 30, tzinfo=timezone.utc) + timedelta(days=16 * d + 7 * z)
            scenes.append(SceneLayout(f"LL{zone}_{when:%Y%m%d}", when, zone, west, north, seed=100 * z + d))
    return scenes


def write_landsat_like(out_dir: str | os.PathLike, size: int, scenes: Sequence[SceneLayout]) -> str:
    """Write ``scenes`` as a static STAC catalog under ``out_dir``; returns its catalog.json path."""
    return write_catalog(out_dir, _Scenes(size, tuple(scenes)), catalog_id="landsat-like", title="Landsat-like scenes")


class _Scenes(Sequence):
    """Scene specs made when asked for, so that a catalog of many large scenes is written one at a time."""

    def __init__(self, size: int, layouts: tuple[SceneLayout, ...]):
        self.size, self.layouts = size, layouts

    def __len__(self) -> int:
        return len(self.layouts)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return _scene(self.size, self.layouts[index])


def _scene(size: int, scene: SceneLayout) -> SceneSpec:
    red = np.empty((size, size), np.uint16)
    qa = np.empty((size, size), np.uint16)
    rng = np.random.default_rng(scene.seed)
    clouds = rng.random((-(-size // 64), -(-size // 64))) < 0.1
    cols = np.arange(size)
    for top in range(0, size, _ROWS_PER_BLOCK):
        rows = np.arange(top, min(top + _ROWS_PER_BLOCK, size))[:, np.newaxis]
        # Footprint: a tilted square inside the raster, in pixel units about its centre.
        u = (cols - size / 2) * math.cos(_TILT) + (rows - size / 2) * math.sin(_TILT)
        v = (rows - size / 2) * math.cos(_TILT) - (cols - size / 2) * math.sin(_TILT)
        inside = (np.abs(u) < 0.4 * size) & (np.abs(v) < 0.4 * size)
        # Sensor noise of a few bits, so that the files compress about as real scenes do.
        noise = rng.integers(0, 64, (len(rows), size), dtype=np.uint16)
        ramp = 6000 + (cols // 4) % 700 + (rows // 4) % 900 + 97 * scene.seed % 1500 + noise
        red[rows[:, 0]] = np.where(inside, ramp, 0)
        cloudy = clouds[rows[:, 0] // 64][:, cols // 64]
        qa[rows[:, 0]] = np.where(inside, np.where(cloudy, QA_CLOUD, QA_CLEAR), QA_FILL)
    nir = np.where(red > 0, red + 4000, 0).astype(np.uint16)
    crs = f"EPSG:{32600 + scene.zone}"
    transform = Affine(RESOLUTION, 0, scene.west, 0, -RESOLUTION, scene.north)
    return SceneSpec(
        id=scene.id,
        datetime=scene.datetime,
        crs=crs,
        transform=transform,
        assets={"red": red, "nir": nir, "qa_pixel": qa},
        cloud_cover=round(float(clouds.mean()) * 100, 1),
        stac_nodata=0,
        common_names={"red": ["red"], "nir": ["nir08"]},
        overview_resampling={"qa_pixel": "nearest"},
        geometry=_footprint(size, crs, transform),
    )


def _footprint(size: int, crs: str, transform: Affine) -> shapely.Polygon:
    """The tilted data square as a WGS84 polygon of its four corners (a little wider: edges curve)."""
    half = 0.41 * size
    cos, sin = math.cos(_TILT), math.sin(_TILT)
    corners = [(u * cos - v * sin, u * sin + v * cos) for u, v in ((-half, -half), (half, -half), (half, half), (-half, half))]
    xs, ys = zip(*(transform @ (size / 2 + col, size / 2 + row) for col, row in corners))
    lon, lat = Transformer.from_crs(crs, 4326, always_xy=True).transform(xs, ys)
    return shapely.Polygon(zip(lon, lat))
