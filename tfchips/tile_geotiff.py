"""GeoTIFFs on a tile's grid, as a chip folder holds them: encoded in memory and read back checked.

The chip-folder sink (`tfchips.chip_folder`) writes chips and `tfchips.provenance` rasters
with `encode_geotiff`, and reads them back to resume with `open_written_chip`.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
from rasterio.errors import RasterioError
from rasterio.io import MemoryFile

from tfchips import storage
from tfchips.errors import ChipError
from tfchips.grid import Tile
from tfchips.sources.base import first_line

# The tag of an image chip (and a provenance raster) naming the scenes its pixels came from.
SCENES_TAG = "TFCHIPS_SCENES"


def encode_geotiff(
    array: np.ndarray,
    tile: Tile,
    nodata: int | float | None,
    band_names: tuple[str, ...] = (),
    tags: dict[str, str] | None = None,
    scale_offset: tuple[tuple[float, float], ...] = (),
) -> bytes:
    """(bands, rows, cols) on the tile's grid as the bytes of a tiled LZW GeoTIFF; ``scale_offset``
    (one pair per band) is written as GDAL's band scale and offset."""
    if array.ndim != 3 or array.shape[1:] != tile.shape:
        raise ChipError(f"array of shape {array.shape} does not fit tile {tile.key} ({tile.size} px square)")
    # Internal tiles must be multiples of 16 pixels; one tile per chip up to 256 pixels.
    block = min(256, -(-tile.size // 16) * 16)
    profile = dict(
        driver="GTiff", width=tile.size, height=tile.size, count=array.shape[0], dtype=array.dtype,
        crs=tile.crs, transform=tile.transform, nodata=nodata, compress="lzw",
        tiled=True, blockxsize=block, blockysize=block,
    )
    with MemoryFile() as memory:
        with memory.open(**profile) as dataset:
            dataset.write(array)
            for index, band_name in enumerate(band_names, start=1):
                dataset.set_band_description(index, band_name)
            if tags:
                dataset.update_tags(**tags)
            if scale_offset:
                dataset.scales, dataset.offsets = zip(*scale_offset)
        return memory.read()


@contextlib.contextmanager
def open_written_chip(path: str, tile: Tile) -> Iterator:
    """A raster ``create-samples`` wrote (a chip, a provenance raster), opened from memory and
    checked against its tile; decoding errors become `ChipError`."""
    try:
        with MemoryFile(storage.read(path)) as memory, memory.open() as dataset:
            if dataset.shape != tile.shape or not dataset.transform.almost_equals(tile.transform) or (
                dataset.crs is None or dataset.crs.to_string() != tile.crs
            ):
                raise ChipError(
                    f"{path}: {dataset.width}x{dataset.height} px at {dataset.transform.c:.1f},"
                    f" {dataset.transform.f:.1f} in {dataset.crs} is not on the grid of tile {tile.key}"
                )
            yield dataset
    except RasterioError as error:
        raise ChipError(f"{path}: corrupt chip ({first_line(error)})") from None
