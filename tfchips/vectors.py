"""Reading OGR vector files once, with the checks every reader needs, and reprojecting
their geometries.

A missing file, an unknown or ambiguous layer, a file without CRS and a file
without geometries each raise `VectorFileError` naming the file.

Geometries are reprojected vertex by vertex, so an edge that is straight in the file's
CRS would stay straight in the target CRS and cut the curve it really is there (1.4 km
off across a 200 km UTM square at 60 N): densify them to `segment_length` first.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np
import shapely
from pyproj import CRS, Transformer

from tfchips import redaction  # noqa: F401  (imported for its hooks: GDAL's warnings quote the file's URL)
from tfchips.errors import VectorFileError

# Longest edge kept before reprojecting, in metres; its sagitta after reprojection is below a millimetre.
SEGMENT_M = 100.0
_EARTH_RADIUS_M = 6378137.0


@dataclass(frozen=True, eq=False)
class VectorLayer:
    """Non-empty geometries of one layer in the file's own CRS, with requested columns.

    ``rows`` are the 0-based feature numbers of the kept geometries; ``fields``
    holds the requested columns that exist, aligned with ``geometries``.
    """

    path: str
    crs: CRS
    geometries: np.ndarray
    rows: np.ndarray
    fields: dict[str, np.ndarray]
    field_names: tuple[str, ...]


def read_vector(
    path: str | os.PathLike,
    layer: str | int | None = None,
    columns: tuple[str, ...] = (),
    layer_option: str = "`layer`",
) -> VectorLayer:
    """Read one layer of an OGR-readable file (2D geometries and ``columns``)."""
    import pyogrio

    path = os.fspath(path)
    if "://" not in path and not path.startswith("/vsi") and not os.path.exists(path):
        raise VectorFileError(f"{path}: no such file")
    try:
        layer = _resolve_layer(path, layer, pyogrio.list_layers(path), layer_option)
        info = pyogrio.read_info(path, layer=layer)
        field_names = tuple(str(name) for name in info["fields"])
        present = [c for c in columns if c in field_names]
        _, _, wkb, data = pyogrio.raw.read(path, layer=layer, columns=present, force_2d=True)
    except VectorFileError:
        raise
    except Exception as error:  # pyogrio raises several DataSource/DataLayer errors
        raise VectorFileError(f"{path}: cannot read vector data ({error})") from None
    if info.get("crs") is None:
        raise VectorFileError(f"{path}: the file has no CRS; assign one (e.g. with ogr2ogr -a_srs)")
    geometries = shapely.from_wkb(wkb) if wkb is not None else np.empty(0, dtype=object)
    keep = ~(shapely.is_missing(geometries) | shapely.is_empty(geometries))
    if not keep.any():
        raise VectorFileError(f"{path}: the file has no features with a geometry")
    return VectorLayer(
        path=path,
        crs=CRS.from_user_input(info["crs"]),
        geometries=geometries[keep],
        rows=np.flatnonzero(keep),
        fields={name: values[keep] for name, values in zip(present, data)},
        field_names=field_names,
    )


def _resolve_layer(path: str, layer: str | int | None, layers: np.ndarray, layer_option: str) -> str | int | None:
    """Layer name or index for pyogrio; a string of digits names an index unless a layer has that name."""
    names = [str(name) for name in layers[:, 0]]
    listing = ", ".join(f"{i}: {name}" for i, name in enumerate(names))
    if layer is None:
        spatial = [str(name) for name, kind in layers if kind is not None]
        if len(names) <= 1:
            return None
        if len(spatial) == 1:
            return spatial[0]
        raise VectorFileError(f"{path}: holds {len(names)} layers ({listing}); choose one with {layer_option}")
    if isinstance(layer, str) and layer in names:
        return layer
    if isinstance(layer, str) and layer.isdigit():
        layer = int(layer)
    if isinstance(layer, int) and not isinstance(layer, bool) and 0 <= layer < len(names):
        return layer
    raise VectorFileError(f"{path}: no layer {layer!r}; layers: {listing}")


def segment_length(crs: CRS) -> float:
    """About `SEGMENT_M` metres expressed in the units of ``crs``'s first axis (degrees
    for a geographic CRS), for ``shapely.segmentize`` before reprojecting."""
    factor = crs.axis_info[0].unit_conversion_factor if crs.axis_info else 1.0
    if crs.is_geographic:
        # Angular units: the factor converts them to radians.
        return SEGMENT_M / _EARTH_RADIUS_M / factor
    return SEGMENT_M / factor


@functools.lru_cache(maxsize=256)
def projector(source: str, target: str) -> Callable[[np.ndarray], np.ndarray]:
    """Vectorised (N, 2) coordinate function from CRS ``source`` to ``target`` (any string
    pyproj takes, WKT included; x/y order, i.e. lon/lat), for ``shapely.transform``."""
    transformer = Transformer.from_crs(source, target, always_xy=True)

    def project(xy: np.ndarray) -> np.ndarray:
        return np.column_stack(transformer.transform(xy[:, 0], xy[:, 1]))

    return project
