"""Tiles per second for a 10 km x 10 km AOI at 0.5 m, 256 px, against the reference client."""

from __future__ import annotations

from typing import Iterator

import shapely

from benchmarks.result import Result, best_seconds
from tfchips.grid import tiles_for_shape

# About 10 km x 10 km near Santa Fe, New Mexico (UTM zone 13).
AOI = shapely.box(-106.00, 35.60, -105.89, 35.69)
RESOLUTION, TILESIZE, PAD = 0.5, 256, 0


def run() -> Iterator[Result]:
    try:
        from earthdaily.earthone.geo import DLTile
    except ImportError:
        print('{"benchmark": "grid", "skipped": "earthdaily-earthone is not installed (pip install .[test])"}')
        return
    count = len(tiles_for_shape(AOI, RESOLUTION, TILESIZE, PAD))
    ours = best_seconds(lambda: tiles_for_shape(AOI, RESOLUTION, TILESIZE, PAD), repeat=5)
    reference = best_seconds(
        lambda: DLTile.from_shape(shapely.geometry.mapping(AOI), RESOLUTION, TILESIZE, PAD), repeat=1
    )
    yield Result(
        name="grid.tiles_for_shape",
        unit="tiles/s",
        figure=count / ours,
        baseline=count / reference,
        goal_ratio=50,
        details={"tiles": count, "baseline_is": "earthone DLTile.from_shape"},
    )
