"""The read path before issue #18, re-implemented as the baseline of `bench_fetch` and of the
tests that pin pixels: every file opened afresh for each tile, its values and its coverage
warped in two calls per file, a scene's bands and its mask assets read apart; with
``TFCHIPS_STAC_SEARCH_BLOCK=1`` (set by `install`) a STAC API is searched once per tile.

Not part of tfchips: it exists so that speed and pixels are compared in the same run.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.warp import reproject, transform_bounds

from tfchips.grid import Tile
from tfchips.sources import items
from tfchips.sources.base import Pixels
from tfchips.sources.dataset_pool import gdal_options
from tfchips.sources.raster import BandRef, _overview_factor, _source_window
from tfchips.sources.warp import fits_dtype


def legacy_read_bands(refs: Sequence[BandRef], tile: Tile, resampling: str = "nearest", label: str = "") -> Pixels:
    """`tfchips.sources.read_bands` as it was: two warps per file, each file opened per call."""
    positions: dict[str, list[int]] = {}
    for position, ref in enumerate(refs):
        positions.setdefault(ref.href, []).append(position)
    parts = {}
    with rasterio.Env(**gdal_options()):
        for href, where in positions.items():
            with rasterio.open(href) as dataset:
                parts[href] = _read_file(dataset, [refs[p] for p in where], tile, resampling)
    dtype = np.result_type(*(part.values.dtype for part in parts.values()))
    values = np.ma.masked_all((len(refs), *tile.shape), dtype=dtype)
    for href, where in positions.items():
        values[where] = parts[href].values
    scale_offset = tuple((float(ref.scale), float(ref.offset)) for ref in refs)
    return Pixels(values=values, nodata=parts[refs[0].href].nodata, scale_offset=scale_offset)


def _read_file(dataset, refs: Sequence[BandRef], tile: Tile, resampling: str) -> Pixels:
    indexes = [ref.index for ref in refs]
    declared = [
        dataset.nodatavals[index - 1] if dataset.nodatavals[index - 1] is not None else ref.nodata
        for index, ref in zip(indexes, refs)
    ]
    dtype = np.dtype(dataset.dtypes[indexes[0] - 1])
    rows, cols = tile.shape
    bounds = transform_bounds(tile.crs, dataset.crs, *tile.bounds, densify_pts=21)
    source = _source_window(dataset, bounds, _overview_factor(dataset, indexes[0], bounds, tile.shape))
    if source is None:
        return Pixels(np.ma.masked_all((len(refs), rows, cols), dtype=dtype), declared[0])
    data = dataset.read(indexes, window=source.window, out_shape=(len(indexes), *source.shape), masked=True)
    invalid = np.ma.getmaskarray(data).copy()
    raw = np.asarray(data.data)
    for band, value in enumerate(declared):
        if value is None:
            continue
        invalid[band] |= np.isnan(raw[band]) if np.isnan(value) else raw[band] == value
    if raw.dtype.kind == "f":
        invalid |= np.isnan(raw)
    fill = next((v for v in declared if v is not None and fits_dtype(v, raw.dtype)), 0)
    filled = np.where(invalid, np.asarray(fill, dtype=raw.dtype), raw)
    warped = np.full((len(indexes), rows, cols), fill, dtype=raw.dtype)
    common = dict(src_transform=source.transform, src_crs=dataset.crs, dst_transform=tile.transform, dst_crs=tile.crs)
    reproject(
        filled, warped, src_nodata=fill if invalid.any() else None, dst_nodata=fill,
        resampling=Resampling[resampling], **common,
    )
    coverage = np.zeros((len(indexes), rows, cols), dtype=np.uint8)
    reproject(
        (~invalid).astype(np.uint8), coverage, src_nodata=0, dst_nodata=0, resampling=Resampling.nearest, **common
    )
    return Pixels(np.ma.MaskedArray(warped, mask=coverage == 0), declared[0])


def _legacy_bands_and_masks(refs, masks, tile, resampling="nearest", label=""):
    pixels = legacy_read_bands(refs, tile, resampling, label)
    if not masks:
        return pixels, np.ma.masked_all((0, *tile.shape), dtype=np.uint8)
    return pixels, legacy_read_bands(masks, tile, "nearest", label).values


def install() -> None:
    """Make this process read as before #18 (a process pool's initializer, say)."""
    os.environ["TFCHIPS_STAC_SEARCH_BLOCK"] = "1"
    items.read_bands_and_masks = _legacy_bands_and_masks
    items.read_bands = legacy_read_bands
