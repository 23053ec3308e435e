"""Writing chip pairs (temporary module; moves into chips.py)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from rasterio.errors import RasterioError
from rasterio.io import MemoryFile

from tfchips import storage
from tfchips.errors import ChipError
from tfchips.grid import Tile, key_to_filename
from tfchips.sources.base import first_line

IMAGES, LABELS = "images", "labels"
SCENES_TAG = "TFCHIPS_SCENES"


def chip_paths(out: str, key: str) -> tuple[str, str]:
    """(image, label) GeoTIFF paths of a tile key under ``out`` (a folder or URL)."""
    name = key_to_filename(key) + ".tif"
    return storage.join(out, IMAGES, name), storage.join(out, LABELS, name)


def chip_pair_exists(out: str, key: str) -> bool:
    """True when both chips of ``key`` are in place (each is published only once complete)."""
    return all(storage.exists(path) for path in chip_paths(out, key))


def remove_partial_files(out: str) -> int:
    """Delete temporary chips and metadata files left by a killed run; returns how many."""
    folders = (out, storage.join(out, IMAGES), storage.join(out, LABELS))
    return sum(storage.remove_partial_files(folder) for folder in folders)


def encode_geotiff(
    array: np.ndarray,
    tile: Tile,
    nodata: int | float | None,
    band_names: tuple[str, ...] = (),
    tags: dict[str, str] | None = None,
) -> bytes:
    """(bands, rows, cols) on the tile's grid as the bytes of a tiled LZW GeoTIFF."""
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
        return memory.read()


def write_chip_pair(
    out: str,
    tile: Tile,
    image: np.ndarray,
    image_nodata: int | float | None,
    band_names: tuple[str, ...],
    label: np.ndarray,
    label_nodata: int | None,
    scenes: tuple[str, ...],
) -> None:
    """Publish images/KEY.tif then labels/KEY.tif; the pair counts as done once the label exists."""
    image_path, label_path = chip_paths(out, tile.key)
    image_bytes = encode_geotiff(image, tile, image_nodata, band_names, {SCENES_TAG: ",".join(scenes)})
    label_bytes = encode_geotiff(label[np.newaxis], tile, label_nodata, ("label",))
    storage.publish(image_path, image_bytes)
    storage.publish(label_path, label_bytes)


@dataclass(frozen=True)
class WrittenPair:
    """A chip pair read back: image (bands, rows, cols), valid and label (rows, cols)."""

    image: np.ndarray
    valid: np.ndarray
    label: np.ndarray
    label_nodata: int | None
    band_names: tuple[str, ...]
    scenes: tuple[str, ...]


def read_written_pair(out: str, key: str) -> WrittenPair:
    """Read back a pair written by `write_chip_pair` (to resume a job).

    Raises `ChipError` naming the file when a chip cannot be decoded or is not on
    the grid of ``key`` (size, transform or CRS differ).
    """
    image_path, label_path = chip_paths(out, key)
    tile = Tile.from_key(key)
    with _open_chip(image_path, tile) as dataset:
        image = dataset.read()
        nodata = dataset.nodata
        band_names = tuple(d or f"band_{i}" for i, d in enumerate(dataset.descriptions, start=1))
        scenes = tuple(s for s in dataset.tags().get(SCENES_TAG, "").split(",") if s)
    with _open_chip(label_path, tile) as dataset:
        label = dataset.read(1)
        label_nodata = None if dataset.nodata is None else int(dataset.nodata)
    return WrittenPair(image, valid_pixels(image, nodata), label, label_nodata, band_names, scenes)


@contextlib.contextmanager
def _open_chip(path: str, tile: Tile) -> Iterator:
    """A chip opened from memory, checked against its tile; decoding errors become `ChipError`."""
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


def valid_pixels(image: np.ndarray, nodata: int | float | None) -> np.ndarray:
    """(rows, cols) True where no band of (bands, rows, cols) holds ``nodata``."""
    if nodata is None:
        return np.ones(image.shape[1:], dtype=bool)
    missing = np.isnan(image) if isinstance(nodata, float) and np.isnan(nodata) else image == nodata
    return ~np.any(missing, axis=0)
