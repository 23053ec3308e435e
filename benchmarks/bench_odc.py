"""tfchips against odc-stac 0.5.3, the library users pick for STAC to arrays, in the same run.

The same local COG tiles for both: Landsat-like scenes (`benchmarks.landsat_like`) of
TFCHIPS_BENCH_ODC_SCENE_PX pixels (7,000) at 30 m, four dates in UTM zone 13 with shifted,
tilted footprints, and the TFCHIPS_BENCH_ODC_TILES (500) tiles of 256 px nearest the middle.
Bands red and nir, nodata 0, nearest resampling, no pixel masks.

- tfchips: `imagery_for_tile` per tile;
- odc-stac: ``odc.stac.load`` of the items that touch the tile on the tile's GeoBox, then a
  numpy composite (``np.nanmedian`` rounded half up, or the first valid scene by time
  distance for ``closest``), as one writes it with odc-stac.

Each side runs in a fresh 2-process pool, warmed up before the clock starts; the figure is
tiles per second, best of TFCHIPS_BENCH_ODC_REPEAT (2) runs, with the workers' CPU seconds
per tile beside it. Pixels are checked on every 25th tile against an exact reference (the
scenes' own pixels under the tile; every pixel centre is a half-pixel tie, as on Landsat's
grid, settled toward the pixel whose corner it is): the share of pixels equal to it is
reported for both. Goals: 1.5x for ``median``, 2x for ``closest``.
``TFCHIPS_BENCH_ODC_DATA`` keeps the generated scenes in a folder between runs.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import math
import multiprocessing
import os
import sys
import tempfile
import time
import warnings
from datetime import datetime, timezone
from typing import Iterator

import numpy as np
import rasterio
import shapely
from rasterio.windows import Window

from benchmarks.landsat_like import BANDS, layout, write_landsat_like
from benchmarks.result import Result
from tfchips.grid import Tile, tiles_for_shape

SCENE_PX = int(os.environ.get("TFCHIPS_BENCH_ODC_SCENE_PX", "7000"))
TILES = int(os.environ.get("TFCHIPS_BENCH_ODC_TILES", "500"))
REPEAT = int(os.environ.get("TFCHIPS_BENCH_ODC_REPEAT", "2"))
WORKERS = 2
TILESIZE, RESOLUTION = 256, 30.0
CENTER = (-105.0, 38.0)  # the central meridian of UTM zone 13
REFERENCE = datetime(2023, 7, 1, tzinfo=timezone.utc)
CHECK_EVERY = 25
GOALS = {"median": 1.5, "closest": 2.0}

_items = None  # odc workers: the catalog's pystac items and their footprints, loaded once


def run() -> Iterator[Result]:
    if importlib.util.find_spec("odc") is None or importlib.util.find_spec("odc.stac") is None:
        print("bench_odc: not run: odc-stac is not installed (pip install '.[bench]'; make bench does)", file=sys.stderr)
        return
    folder = os.environ.get("TFCHIPS_BENCH_ODC_DATA")
    with tempfile.TemporaryDirectory() as scratch:
        catalog = _catalog(folder or scratch)
        tiles = _tiles()
        for method in ("median", "closest"):
            yield _compare(catalog, tiles, method)


def _catalog(folder: str) -> str:
    path = os.path.join(folder, f"landsat-like-{SCENE_PX}", "catalog.json")
    if not os.path.exists(path):
        write_landsat_like(os.path.dirname(path), SCENE_PX, layout(SCENE_PX, CENTER, zones=(13,), dates=4))
    return path


def _tiles() -> list[Tile]:
    """The ``TILES`` tiles of zone 13 nearest ``CENTER``."""
    half = TILESIZE * RESOLUTION * (TILES**0.5) / 111_000
    lon, lat = CENTER
    area = shapely.box(lon - 1.5 * half, lat - half, lon + 1.5 * half, lat + half)
    tiles = [t for t in tiles_for_shape(area, RESOLUTION, TILESIZE) if t.zone == 13]
    middle = shapely.Point(CENTER)
    return sorted(tiles, key=lambda t: (t.geometry.centroid.distance(middle), t.key))[:TILES]


def _compare(catalog: str, tiles: list[Tile], method: str) -> Result:
    ours, baseline = [], []
    for _ in range(REPEAT):  # alternated, so that a busy machine slows both alike
        ours.append(_timed(_tfchips_tile, catalog, tiles, method))
        baseline.append(_timed(_odc_tile, catalog, tiles, method))
    best, best_baseline = min(ours, key=lambda r: r[0]), min(baseline, key=lambda r: r[0])
    checked = tiles[::CHECK_EVERY]
    exact = [_reference(catalog, tile, method) for tile in checked]
    share = {
        name: float(np.mean([np.mean(pixels[i] == exact[i]) for i in range(len(checked))]))
        for name, pixels in (("tfchips", best[2]), ("odc_stac", best_baseline[2]))
    }
    return Result(
        name=f"odc_stac.{method}",
        unit="tiles/s",
        figure=len(tiles) / best[0],
        baseline=len(tiles) / best_baseline[0],
        goal_ratio=GOALS[method],
        details={
            "tiles": len(tiles), "tilesize": TILESIZE, "scene_px": SCENE_PX, "workers": WORKERS,
            "cpu_s_per_tile": round(best[1] / len(tiles), 4),
            "baseline_cpu_s_per_tile": round(best_baseline[1] / len(tiles), 4),
            "exact_share": round(share["tfchips"], 6), "baseline_exact_share": round(share["odc_stac"], 6),
            "baseline_is": "odc-stac 0.5.3 odc.stac.load on each tile's GeoBox + numpy composite",
        },
    )


def _timed(function, catalog: str, tiles: list[Tile], method: str) -> tuple[float, float, list[np.ndarray]]:
    """(wall seconds, worker CPU seconds, the pixels of every CHECK_EVERY-th tile) of one run in a fresh pool."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(WORKERS, mp_context=context) as pool:
        # Warm-up: imports and the catalog in each worker, off the clock.
        list(pool.map(_warm, [(function, catalog)] * WORKERS * 2))
        start = time.perf_counter()
        results = list(pool.map(function, [(catalog, tile, method) for tile in tiles], chunksize=4))
        wall = time.perf_counter() - start
    cpu = sum(r[1] for r in results)
    return wall, cpu, [r[0] for r in results[::CHECK_EVERY]]


def _warm(task) -> None:
    function, catalog = task
    function((catalog, None, "median"))


def _tfchips_tile(task) -> tuple[np.ndarray | None, float]:
    from tfchips.imagery import ImageryRequest, imagery_for_tile

    catalog, tile, method = task
    start = time.process_time()
    request = ImageryRequest.from_options(
        {"catalog": catalog, "bands": ",".join(BANDS), "method": method, "reference_date": REFERENCE.isoformat()}
    )
    if tile is None:
        from tfchips.sources import open_source

        open_source(catalog)
        return None, 0.0
    return imagery_for_tile(tile, request).data, time.process_time() - start


def _odc_tile(task) -> tuple[np.ndarray | None, float]:
    import odc.stac
    import pystac
    from odc.geo.geobox import GeoBox

    global _items
    catalog, tile, method = task
    if _items is None:
        items = list(pystac.Catalog.from_file(catalog).get_items(recursive=True))
        _items = [(item, shapely.geometry.shape(item.geometry)) for item in items]
    if tile is None:
        return None, 0.0
    start = time.process_time()
    touching = [item for item, footprint in _items if footprint.intersects(tile.geometry)]
    if not touching:
        return np.zeros((len(BANDS), *tile.shape), np.uint16), time.process_time() - start
    loaded = odc.stac.load(
        touching, bands=list(BANDS), geobox=GeoBox(tile.shape, tile.transform, tile.crs),
        resampling="nearest", groupby="id",
    )
    data = np.stack([loaded[band].values for band in BANDS], axis=1)  # (time, bands, rows, cols)
    times = [datetime.fromtimestamp(t.astype("datetime64[s]").astype(int), timezone.utc) for t in loaded.time.values]
    return _numpy_composite(data, times, method), time.process_time() - start


def _numpy_composite(data: np.ndarray, times: list[datetime], method: str) -> np.ndarray:
    """What one writes without tfchips: nanmedian rounded half up, or the first valid scene by time distance."""
    valid = (data != 0).all(axis=1)
    if method == "median":
        values = np.where(valid[:, np.newaxis], data.astype(np.float32), np.float32(np.nan))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels: no scene there
            middle = np.nanmedian(values, axis=0)
        return np.where(np.isnan(middle), 0, np.floor(middle + 0.5)).astype(data.dtype)
    order = np.argsort([abs((t - REFERENCE).total_seconds()) for t in times], kind="stable")
    ranked = valid[order]
    best = order[ranked.argmax(axis=0)]
    out = np.take_along_axis(data, best[np.newaxis, np.newaxis], axis=0)[0]
    out[:, ~ranked.any(axis=0)] = 0
    return out


def _reference(catalog: str, tile: Tile, method: str) -> np.ndarray:
    """The exact composite of ``tile``: at each pixel centre, each scene's pixel whose upper-left corner
    it is (the centres fall on source corners: `benchmarks.landsat_like`), composited by numpy."""
    import pystac

    stack, times = [], []
    for item in pystac.Catalog.from_file(catalog).get_items(recursive=True):
        bands = []
        for band in BANDS:
            with rasterio.open(item.assets[band].get_absolute_href()) as dataset:
                # Multiples of 15 m: these divisions are exact.
                col = math.floor((tile.transform.c + RESOLUTION / 2 - dataset.transform.c) / RESOLUTION)
                row = math.floor((dataset.transform.f - (tile.transform.f - RESOLUTION / 2)) / RESOLUTION)
                window = Window(col, row, tile.size, tile.size)
                bands.append(dataset.read(1, window=window, boundless=True, fill_value=0))
        stack.append(np.stack(bands))
        times.append(item.datetime)
    return _numpy_composite(np.stack(stack), times, method)
