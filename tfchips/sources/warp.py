"""Warping the windows read from a scene's files onto a tile grid, one call per source grid.

The bands of one scene usually share a grid (one file per band, same CRS and pixels), so
their windows are stacked and warped together, and their coverage (where a source pixel
has a value) travels in the same call as one more layer: with nearest resampling a
value and its coverage come from the same source pixel whichever call carries them, so
one warp gives exactly what a warp of the values and a second one of a coverage mask
gave. Bands resampled otherwise (bilinear, ...) need the source nodata to keep invalid
pixels out of their kernel; they are warped in one more call per resampling, while their
coverage still follows the nearest source pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from affine import Affine
from rasterio.enums import Resampling
from rasterio.warp import reproject

from tfchips.grid import Tile


@dataclass(frozen=True)
class SourceRead:
    """What one file gave under a tile: its bands at ``positions`` of the request, each
    with its resampling, the file's first declared nodata and its dtype; when the tile
    meets the file, ``filled`` (bands, rows, cols) holds the source window with invalid
    pixels (``invalid``) set to ``fill``, on the grid of ``crs`` and ``transform``."""

    positions: tuple[int, ...]
    methods: tuple[str, ...]
    nodata: int | float | None
    dtype: np.dtype
    filled: np.ndarray | None = None
    invalid: np.ndarray | None = None
    fill: int | float = 0
    crs: Any = None
    transform: Affine | None = None


def warp_reads(reads: Sequence[SourceRead], count: int, tile: Tile) -> np.ma.MaskedArray:
    """The ``count`` bands of ``reads`` on the tile grid as a masked (bands, rows, cols)
    array, masked where the nearest source pixel has no valid value."""
    dtype = np.result_type(*(read.dtype for read in reads))
    values = np.ma.masked_all((count, *tile.shape), dtype=dtype)
    groups: list[list[SourceRead]] = []
    for read in (r for r in reads if r.filled is not None):
        group = next((g for g in groups if _same_grid(g[0], read)), None)
        if group is None:
            groups.append([read])
        else:
            group.append(read)
    for group in groups:
        _warp_group(group, tile, values)
    return values


def _same_grid(a: SourceRead, b: SourceRead) -> bool:
    return a.filled.shape[1:] == b.filled.shape[1:] and a.transform == b.transform and a.crs == b.crs


def _warp_group(group: Sequence[SourceRead], tile: Tile, values: np.ma.MaskedArray) -> None:
    """Warp the reads of one source grid into ``values`` (data and mask, at their positions)."""
    common = dict(
        src_transform=group[0].transform, src_crs=group[0].crs, dst_transform=tile.transform, dst_crs=tile.crs
    )
    # One nearest warp: every nearest band, then the coverage layers, each distinct one once
    # (the band files of a scene mostly agree on where they have data).
    layers: list[np.ndarray] = []
    for read in group:
        layers += [read.filled[b] for b, method in enumerate(read.methods) if method == "nearest"]
    coverages: list[np.ndarray] = []
    coverage_of: list[list[int]] = []
    for read in group:
        indices = []
        for covered in ~read.invalid:
            index = next((i for i, known in enumerate(coverages) if np.array_equal(known, covered)), None)
            if index is None:
                index = len(coverages)
                coverages.append(covered)
            indices.append(len(layers) + index)
        coverage_of.append(indices)
    kinds = [read.dtype for read in group if "nearest" in read.methods]
    common_dtype = np.result_type(*kinds, np.uint8)
    stack = np.stack([layer.astype(common_dtype, copy=False) for layer in layers + coverages])
    warped = np.zeros(stack.shape[:1] + tuple(tile.shape), dtype=stack.dtype)  # 0 outside the source: not covered
    reproject(stack, warped, resampling=Resampling.nearest, **common)
    layer = 0
    for read, indices in zip(group, coverage_of):
        for position, method, index in zip(read.positions, read.methods, indices):
            missing = warped[index] == 0
            values.mask[position] = missing
            if method == "nearest":
                band = warped[layer].astype(read.dtype)
                band[missing] = read.fill  # what a warp with the source nodata leaves there
                values.data[position] = band
                layer += 1
    for (method, _, _, _, _), members in _resampled(group).items():
        _warp_resampled(members, method, tile, values, common)


def _resampled(group: Sequence[SourceRead]) -> dict[tuple, list[tuple[SourceRead, int]]]:
    """(read, band) pairs not resampled with nearest, by what one warp of them must share:
    resampling, dtype, fill, and whether the source nodata is set (a file with invalid
    pixels); a multi-band file warps on its own, as GDAL judges its bands' nodata together."""
    subgroups: dict[tuple, list[tuple[SourceRead, int]]] = {}
    for number, read in enumerate(group):
        alone = number if len(read.positions) > 1 else None
        has_invalid = bool(read.invalid.any())
        for b, method in enumerate(read.methods):
            if method != "nearest":
                key = (method, read.dtype.str, _fill_key(read.fill), has_invalid, alone)
                subgroups.setdefault(key, []).append((read, b))
    return subgroups


def _fill_key(fill: int | float) -> Any:
    return "nan" if isinstance(fill, float) and math.isnan(fill) else fill


def _warp_resampled(
    members: Sequence[tuple[SourceRead, int]], method: str, tile: Tile, values: np.ma.MaskedArray, common: dict
) -> None:
    first = members[0][0]
    stack = np.stack([read.filled[b] for read, b in members])
    warped = np.full((len(members), *tile.shape), first.fill, dtype=first.dtype)
    # Each band judges its own nodata, as when it was warped alone.
    options = {"UNIFIED_SRC_NODATA": "NO"} if len(members) > 1 and len(first.positions) == 1 else {}
    reproject(
        stack,
        warped,
        src_nodata=first.fill if first.invalid.any() else None,
        dst_nodata=first.fill,
        resampling=Resampling[method],
        **common,
        **options,
    )
    for (read, b), band in zip(members, warped):
        values.data[read.positions[b]] = band


def fits_dtype(value: float, dtype: np.dtype) -> bool:
    """Whether ``value`` can be stored in ``dtype``: a whole number within an integer dtype's
    range; for a float dtype NaN, infinities and any number that does not overflow it to
    infinity (it is stored rounded to the nearest value the dtype holds)."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        with np.errstate(over="ignore"):
            return not math.isfinite(value) or bool(np.isfinite(dtype.type(value)))
    if isinstance(value, float) and not value.is_integer():  # also False for NaN and infinities
        return False
    info = np.iinfo(dtype)
    return info.min <= value <= info.max
