"""Areas of interest: vector files or bounding boxes, as one WGS84 geometry."""

from __future__ import annotations

import os

import numpy as np
import shapely
from pyproj import CRS, Transformer
from shapely.geometry.base import BaseGeometry

from tfchips.errors import ShapeError, TileKeyError, VectorFileError
from tfchips.grid import Tile
from tfchips.vectors import read_vector


def read_aoi(path: str | os.PathLike, layer: str | int | None = None) -> BaseGeometry:
    """Union of every feature of an OGR-readable vector file, in WGS84 lon/lat.

    Points and lines are kept as they are: they select the tiles that contain them.
    """
    layer_data = read_vector(path, layer)
    shapes = layer_data.geometries
    if not layer_data.crs.equals(CRS.from_epsg(4326), ignore_axis_order=True):
        transformer = Transformer.from_crs(layer_data.crs, 4326, always_xy=True)
        shapes = shapely.transform(shapes, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1])))
    shapes = shapely.make_valid(shapes)
    return shapely.union_all(shapes)


def bbox_geometry(bbox: tuple[float, float, float, float]) -> BaseGeometry:
    """Polygon of a (west, south, east, north) box in WGS84 degrees."""
    west, south, east, north = bbox
    if not (west < east and south < north):
        raise ShapeError(f"bounding box {bbox} is empty: expected west < east and south < north")
    return shapely.box(west, south, east, north)



def read_tile_list(path: str | os.PathLike) -> list[Tile]:
    """Tiles named in a text file (one key per line) or a vector file's ``tile_key`` column.

    Lets a dataset be rebuilt exactly, or extended with another product or date
    range over the same tiles. Duplicate keys are dropped, order is kept.
    """
    import pyogrio

    path = os.fspath(path)
    if not os.path.exists(path):
        raise VectorFileError(f"{path}: no such file")
    try:
        with open(path, encoding="utf-8") as stream:
            lines = [line.strip() for line in stream if line.strip() and not line.startswith("#")]
        keys = lines if all(_looks_like_key(line) for line in lines) else None
    except UnicodeDecodeError:
        keys = None
    if keys is None:
        try:
            _, _, _, fields = pyogrio.raw.read(path, columns=["tile_key"], read_geometry=False)
        except Exception as error:
            raise VectorFileError(
                f"{path}: neither a list of tile keys nor a vector file with a 'tile_key' column ({error})"
            ) from None
        if not fields:
            raise VectorFileError(f"{path}: the vector file has no 'tile_key' column")
        keys = [str(k) for k in fields[0] if k]
    if not keys:
        raise VectorFileError(f"{path}: no tile keys")
    try:
        return list(dict.fromkeys(Tile.from_key(key) for key in keys))
    except TileKeyError as error:
        raise TileKeyError(f"{path}: {error}") from None


def _looks_like_key(text: str) -> bool:
    return text.count(":") == 5
