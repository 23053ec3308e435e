"""A job's tiles as a few blocks: small values that stand for any number of tiles.

A Beam pipeline of a million tiles cannot carry a million keys in its graph (Dataflow
refuses graphs over 10 MB, and the driver takes seconds per 100k tiles to build them).
A `TileSource` says where the tiles come from (an area on a grid, or a tiles file);
`TileSource.blocks` cuts them into at most about `MAX_BLOCKS` blocks, each a tuple of a
few integers: a band of neighbouring grid rows of one UTM zone, or a range of lines of a
tiles file. A worker expands a block into its tiles with `TileSource.block_tiles`,
computing only those (`tfchips.grid.tile_indices_in_rows`), so workers get spatially
coherent work and the graph does not grow with the tile count.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from tfchips.aoi import read_tile_list
from tfchips.grid import Tile, tile_indices_for_shape, tile_indices_in_rows

# About this many blocks per job: enough to spread over hundreds of workers, few
# enough that the graph stays kilobytes whatever the tile count.
MAX_BLOCKS = 256

Block = tuple[int, ...]


@dataclass(frozen=True)
class TileSource:
    """The tiles of a job: those of ``area`` (WGS84, as WKB) on the grid ``grid``
    (tilesize and pad in pixels, resolution in metres), or those of ``tiles_path``.

    Picklable and small: what a pipeline's workers receive instead of the tiles.
    ``count`` is the number of distinct tiles.
    """

    count: int
    area: bytes | None = None
    grid: tuple[int, int, float] | None = None
    tiles_path: str | None = None

    @classmethod
    def of_area(
        cls, geometry: BaseGeometry, resolution: float, tilesize: int, pad: int = 0
    ) -> tuple[TileSource, list[Block]]:
        """The source of the tiles touching ``geometry``, and its blocks (bands of grid rows)."""
        indices = tile_indices_for_shape(geometry, resolution, tilesize, pad)
        source = cls(len(indices), shapely.to_wkb(geometry), (int(tilesize), int(pad), float(resolution)))
        return source, _row_bands(indices)

    @classmethod
    def of_file(cls, path: str) -> tuple[TileSource, list[Block]]:
        """The source of the tiles listed in ``path`` (`tfchips.aoi.read_tile_list`), and its blocks (line ranges)."""
        count = len(_file_tiles(path))
        size = max(1, math.ceil(count / MAX_BLOCKS))
        return cls(count, tiles_path=path), [(start, min(count, start + size)) for start in range(0, count, size)]

    def block_tiles(self, block: Block) -> list[Tile]:
        """The tiles of one block, in the job's tile order."""
        if self.tiles_path is not None:
            start, stop = block
            return list(_file_tiles(self.tiles_path)[start:stop])
        zone, first, last = block
        tilesize, pad, resolution = self.grid
        found = tile_indices_in_rows(_geometry(self.area), resolution, tilesize, zone, (first, last))
        return [Tile._unchecked(tilesize, pad, resolution, zone, ti, tj) for zone, ti, tj in found.tolist()]

    def tiles(self, blocks: list[Block]) -> list[Tile]:
        """Every tile of ``blocks``, in order (for a local job, which holds them all)."""
        return [tile for block in blocks for tile in self.block_tiles(block)]


def _row_bands(indices: np.ndarray) -> list[Block]:
    """(zone, first tj, last tj) bands of whole grid rows, each about ``len(indices) / MAX_BLOCKS`` tiles."""
    if not len(indices):
        return []
    target = max(1, math.ceil(len(indices) / MAX_BLOCKS))
    # Rows in tile order, with their tile counts: ``indices`` are sorted by (zone, tj, ti), so
    # each row is one run (np.unique over rows would sort a million of them again).
    zones, tjs = indices[:, 0], indices[:, 2]
    starts = np.flatnonzero(np.r_[True, (zones[1:] != zones[:-1]) | (tjs[1:] != tjs[:-1])])
    rows, counts = indices[starts][:, [0, 2]], np.diff(np.r_[starts, len(indices)])
    blocks, start, held = [], 0, 0
    for index, ((zone, _), count) in enumerate(zip(rows.tolist(), counts.tolist())):
        held += count
        last_of_zone = index + 1 == len(rows) or rows[index + 1][0] != zone
        if held >= target or last_of_zone:
            blocks.append((int(zone), int(rows[start][1]), int(rows[index][1])))
            start, held = index + 1, 0
    return blocks


@functools.lru_cache(maxsize=4)
def _file_tiles(path: str) -> tuple[Tile, ...]:
    """The distinct tiles of a tiles file, read once per process."""
    return tuple(dict.fromkeys(read_tile_list(path)))


@functools.lru_cache(maxsize=4)
def _geometry(wkb: bytes) -> BaseGeometry:
    return shapely.from_wkb(wkb)
