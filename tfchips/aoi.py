"""Areas of interest: vector files or bounding boxes, as one WGS84 geometry."""

from __future__ import annotations

import os

import shapely
from pyproj import CRS
from shapely.geometry.base import BaseGeometry

from tfchips.errors import ShapeError, TileKeyError, VectorFileError
from tfchips.grid import Tile, is_tile_key
from tfchips.vectors import projector, read_vector, segment_length


def read_aoi(path: str | os.PathLike, layer: str | int | None = None) -> BaseGeometry:
    """Union of every feature of an OGR-readable vector file, in WGS84 lon/lat.

    Points and lines are kept as they are: they select the tiles that contain them.
    """
    layer_data = read_vector(path, layer)
    shapes, crs = layer_data.geometries, layer_data.crs
    if not crs.equals(CRS.from_epsg(4326), ignore_axis_order=True):
        # Densified first: an edge straight in the file's CRS is a curve in lon/lat.
        shapes = shapely.segmentize(shapes, segment_length(crs))
        shapes = shapely.transform(shapes, projector(crs.to_wkt(), "EPSG:4326"))
    shapes = shapely.make_valid(shapes)
    return shapely.union_all(shapes)


def bbox_geometry(bbox: tuple[float, float, float, float]) -> BaseGeometry:
    """Polygon of a (west, south, east, north) box in WGS84 degrees."""
    west, south, east, north = bbox
    if not (west < east and south < north):
        raise ShapeError(f"bounding box {bbox} is empty: expected west < east and south < north")
    return shapely.box(west, south, east, north)


def read_tile_list(path: str | os.PathLike) -> list[Tile]:
    """Tiles named in a text file (one key per line; blank lines and lines starting with
    ``#`` skipped) or a vector file's ``tile_key`` column.

    Lets a dataset be rebuilt exactly, or extended with another product or date
    range over the same tiles. Duplicate keys are dropped, order is kept.
    """
    import pyogrio

    path = os.fspath(path)
    if not os.path.exists(path):
        raise VectorFileError(f"{path}: no such file")
    lines = _text_lines(path)
    if lines is not None and all(is_tile_key(line) for _, line in lines):
        keys = [line for _, line in lines]
    else:
        try:
            _, _, _, fields = pyogrio.raw.read(path, columns=["tile_key"], read_geometry=False)
        except Exception as error:
            if lines:
                # Text, but not a vector format: a list of keys with a bad one, most likely.
                number, line = next((n, line) for n, line in lines if not is_tile_key(line))
                raise TileKeyError(f"{path}: malformed tile key {line!r} on line {number}") from None
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


def _text_lines(path: str) -> list[tuple[int, str]] | None:
    """(1-based number, text) of the lines of a UTF-8 text file (byte order mark allowed) that
    are neither blank nor comments, stripped; None when the file is not UTF-8 text."""
    try:
        with open(path, encoding="utf-8-sig") as stream:
            stripped = [(number, line.strip()) for number, line in enumerate(stream, start=1)]
    except UnicodeDecodeError:
        return None
    return [(number, line) for number, line in stripped if line and not line.startswith("#")]
