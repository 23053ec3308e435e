"""Areas of interest: vector files or bounding boxes, as one WGS84 geometry."""

from __future__ import annotations

import os

import numpy as np
import shapely
from pyproj import CRS, Transformer
from shapely.geometry.base import BaseGeometry

from tfchips.errors import ShapeError, VectorFileError


def read_aoi(path: str | os.PathLike, layer: str | int | None = None) -> BaseGeometry:
    """Union of every feature of an OGR-readable vector file, in WGS84 lon/lat.

    Points and lines are kept as they are: they select the tiles that contain them.
    """
    import pyogrio

    path = os.fspath(path)
    if "://" not in path and not os.path.exists(path):
        raise VectorFileError(f"{path}: no such file")
    try:
        meta, _, geometries, _ = pyogrio.raw.read(path, layer=layer, read_geometry=True, columns=[])
    except Exception as error:  # pyogrio raises several DataSource/DataLayer errors
        raise VectorFileError(f"{path}: cannot read vector data ({error})") from None
    if meta.get("crs") is None:
        raise VectorFileError(f"{path}: the file has no CRS; assign one (e.g. with ogr2ogr -a_srs)")
    shapes = shapely.from_wkb(geometries)
    shapes = shapes[~shapely.is_missing(shapes)]
    shapes = shapes[~shapely.is_empty(shapes)]
    if shapes.size == 0:
        raise VectorFileError(f"{path}: the file has no features with a geometry")
    crs = CRS.from_user_input(meta["crs"])
    if not crs.equals(CRS.from_epsg(4326), ignore_axis_order=True):
        transformer = Transformer.from_crs(crs, 4326, always_xy=True)
        shapes = shapely.transform(shapes, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1])))
    shapes = shapely.make_valid(shapes)
    return shapely.union_all(shapes)


def bbox_geometry(bbox: tuple[float, float, float, float]) -> BaseGeometry:
    """Polygon of a (west, south, east, north) box in WGS84 degrees."""
    west, south, east, north = bbox
    if not (west < east and south < north):
        raise ShapeError(f"bounding box {bbox} is empty: expected west < east and south < north")
    return shapely.box(west, south, east, north)

