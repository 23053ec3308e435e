"""Per-tile label rasterization with the spatial index against a scan of every feature.

100,000 small lon/lat squares (10-60 m) over 20 x 20 tiles of 64 px at 10 m near
Santa Fe. Two baselines, timed in the same run on a sample of the tiles: the same
`GroundTruth.rasterize` with its STRtree swapped for a scan of every envelope (only
the lookup differs), and naive code that tests every feature against each tile's
footprint and hands shapely shapes to rasterio.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pyogrio.raw
import rasterio.features
import shapely
from pyproj import Transformer

from benchmarks.result import Result
from tfchips.grid import Tile
from tfchips.labels import GroundTruth, LabelRequest

FEATURES = 100_000
TILESIZE, RESOLUTION, ZONE = 64, 10.0, 13
TI0, TJ0, SIDE = 130, 6165, 20  # SIDE x SIDE tiles
BASELINE_TILES = 40  # the scan is slow: time it on a sample of the tiles


def _squares(crs: str) -> tuple[np.ndarray, np.ndarray]:
    """Random squares inside the tiles, in ``crs``, with classes 1-9."""
    rng = np.random.default_rng(42)
    width = TILESIZE * RESOLUTION * SIDE
    west, south = 500000 + TI0 * TILESIZE * RESOLUTION, TJ0 * TILESIZE * RESOLUTION
    x = west + rng.uniform(0, width, FEATURES)
    y = south + rng.uniform(0, width, FEATURES)
    size = rng.uniform(10, 60, FEATURES)
    utm = shapely.box(x, y, x + size, y + size)
    transformer = Transformer.from_crs(f"EPSG:{32600 + ZONE}", crs, always_xy=True)
    squares = shapely.transform(utm, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1])))
    return squares, rng.integers(1, 10, FEATURES)


def _naive(lonlat: np.ndarray, classes: np.ndarray, tile: Tile) -> np.ndarray:
    """Rasterize ``tile`` after testing every feature against its footprint."""
    hits = np.flatnonzero(shapely.intersects(lonlat, tile.geometry))
    transformer = Transformer.from_crs("EPSG:4326", tile.crs, always_xy=True)
    shapes = shapely.transform(lonlat[hits], lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1])))
    return rasterio.features.rasterize(
        zip(shapes, classes[hits].tolist()), out_shape=tile.shape, transform=tile.transform, dtype=np.uint8
    )


class _ScanAll:
    """Stand-in for the STRtree: tests every feature envelope against the query box."""

    def __init__(self, envelopes: np.ndarray) -> None:
        self.envelopes = envelopes

    def query(self, geometry: shapely.Geometry) -> np.ndarray:
        return np.flatnonzero(shapely.intersects(self.envelopes, geometry))


def _per_tile_ms(function, tiles: list[Tile]) -> tuple[float, list[np.ndarray]]:
    start = time.perf_counter()
    rasters = [function(tile) for tile in tiles]
    return (time.perf_counter() - start) * 1000 / len(tiles), rasters


def run() -> Iterator[Result]:
    squares, classes = _squares("EPSG:4326")
    tiles = [Tile(TILESIZE, 0, RESOLUTION, ZONE, TI0 + i, TJ0 + j) for j in range(SIDE) for i in range(SIDE)]
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "labels.gpkg")
        wkb = shapely.to_wkb(squares)
        pyogrio.raw.write(path, wkb, [classes], ["cls"], geometry_type="Polygon", crs="EPSG:4326", driver="GPKG")
        start = time.perf_counter()
        truth = GroundTruth.load(LabelRequest(path, attribute="cls"))
        load_s = time.perf_counter() - start

    # The same GroundTruth with its index swapped for a scan: only the lookup differs.
    labels = truth._labels
    scanning = GroundTruth(truth.request, dataclasses.replace(labels, tree=_ScanAll(labels.tree.geometries)), None)
    sample = tiles[:: len(tiles) // BASELINE_TILES]
    indexed_ms, indexed = _per_tile_ms(truth.rasterize, tiles)
    scan_ms, scanned = _per_tile_ms(scanning.rasterize, sample)
    naive_ms, naive = _per_tile_ms(lambda tile: _naive(squares, classes, tile), sample)

    # Every variant must burn the same pixels, or the comparison means nothing.
    same = all(
        np.array_equal(indexed[tiles.index(tile)], a) and np.array_equal(a, b)
        for tile, a, b in zip(sample, scanned, naive)
    )
    common = {
        "features": truth.feature_count,
        "tiles": len(tiles),
        "baseline_tiles": len(sample),
        "identical_rasters": same,
    }
    yield Result(
        name="labels.rasterize_per_tile.index",
        unit="ms/tile",
        figure=indexed_ms,
        baseline=scan_ms,
        goal_ratio=2,
        higher_is_better=False,
        details={**common, "baseline_is": "the same rasterize, its STRtree replaced by a scan of all envelopes"},
    )
    yield Result(
        name="labels.rasterize_per_tile.naive",
        unit="ms/tile",
        figure=indexed_ms,
        baseline=naive_ms,
        goal_ratio=2,
        higher_is_better=False,
        details={
            **common,
            "load_s": round(load_s, 2),
            "baseline_is": "shapely.intersects of every feature with tile.geometry, shapely shapes to rasterio",
        },
    )
