"""Vector ground truth rasterized onto DLTiles as single-band uint8 class labels.

A `GroundTruth` reads its vector file(s) once, repairs invalid geometries and
indexes them; `GroundTruth.rasterize` then burns only the features whose
envelope meets a tile, reprojected straight from the file's CRS to the tile's
UTM CRS.

The spatial index holds each feature's WGS84 lon/lat envelope and is queried
with the lon/lat envelope of the tile's densified UTM outline. Doing the query
in lon/lat, rather than moving the tile into the file's CRS, stays correct for
every tile whatever the file's CRS: a tile of zone 13 reaching past its 6-degree
band, or a file in another zone's (or a local) projection whose formulas are
not valid that far away. Geometries themselves stay in the file's CRS and are
densified to 100 m segments when loaded (`tfchips.vectors.segment_length`), so that
an edge that is straight in the file's CRS keeps its shape once reprojected (and
its envelope stays exact).

Overlapping features: the later feature in file order wins (rasterio and
GDAL's order), so sort the file to put the classes that must stay visible last.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from dataclasses import dataclass

import numpy as np
import rasterio.features
import shapely

from tfchips.errors import ConfigError, LabelError, VectorFileError
from tfchips.grid import Tile
from tfchips.vectors import projector, read_vector, segment_length

logger = logging.getLogger(__name__)

_WGS84 = "EPSG:4326"
# Pieces per side of the tile outline used to find its lon/lat envelope.
_OUTLINE_PIECES = 32
# Geometries reaching further than this many pixels past a tile are clipped before
# burning, so a huge polygon costs its vertex count once, not once per raster row.
_CLIP_MARGIN_PX = 2


@dataclass(frozen=True)
class LabelRequest:
    """What to rasterize: plain values, picklable for worker processes.

    ``attribute`` names a field burnt as the class: whole numbers, or text that
    ``classes`` (value -> name pairs, see `parse_classes`) maps to numbers; None burns
    1 for every feature. ``background`` fills pixels no feature covers; pixels outside
    the polygons of ``extent`` (the surveyed area) get ``ignore_value``, and so, unless
    ``label_without_imagery``, do pixels where the image has no valid value: a model
    should not learn from pixels it will never see. Layers are chosen by name or
    0-based index.
    """

    path: str
    attribute: str | None = None
    layer: str | int | None = None
    all_touched: bool = False
    background: int = 0
    extent: str | None = None
    extent_layer: str | int | None = None
    ignore_value: int = 255
    classes: tuple[tuple[int, str], ...] = ()
    label_without_imagery: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(sorted(parse_classes(dict(self.classes)).items())))
        for name in ("background", "ignore_value"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
                raise ConfigError(f"{name} must be a whole number 0-255, got {value!r}")
        if self.background == self.ignore_value:
            raise ConfigError(
                f"background and ignore_value are both {self.background}: unlabelled pixels would read as ignored"
            )
        if self.attribute is None and self.ignore_value == 1:
            raise ConfigError("ignore_value 1 is the value every feature burns when no attribute is given")

    @property
    def nodata(self) -> int | None:
        """The label raster's nodata: ``ignore_value`` when some pixels may be ignored
        (an extent is given, or pixels without imagery are ignored), else None."""
        return self.ignore_value if self.extent is not None or not self.label_without_imagery else None

    @classmethod
    def from_options(cls, options: dict) -> LabelRequest:
        """Request from job options named like the CLI options (``labels``, ``labels_layer``, ...).

        Missing or None options take their defaults; other keys are ignored.
        """
        path = options.get("labels")
        if path is None:
            raise ConfigError("no labels file given (`labels`)")
        values = {
            "path": os.fspath(path),
            "attribute": options.get("attribute"),
            "layer": options.get("labels_layer"),
            "all_touched": bool(options.get("all_touched") or False),
            "extent": None if options.get("extent") is None else os.fspath(options["extent"]),
            "extent_layer": options.get("extent_layer"),
            "classes": tuple(parse_classes(options.get("classes")).items()),
            "label_without_imagery": bool(options.get("label_without_imagery") or False),
        }
        for name in ("background", "ignore_value"):
            if options.get(name) is not None:
                values[name] = _whole_number(name, options[name])
        return cls(**values)


def parse_classes(value: object) -> dict[int, str]:
    """Class names by value from ``"0=background,1=building"``, ``"water=1,building=2"``
    (either side may hold the number) or a mapping of either kind (YAML).

    Raises:
        ConfigError: an entry is not a number paired with a name, or a value is outside 0-255.
    """
    if not value:
        return {}
    if isinstance(value, dict):
        pairs = list(value.items())
    else:
        pairs = [item.partition("=")[::2] for item in str(value).split(",") if item.strip()]
    names: dict[int, str] = {}
    for left, right in pairs:
        left, right = str(left).strip(), str(right).strip()
        number, name = (left, right) if left.isdigit() else (right, left)
        if not number.isdigit() or not name or int(number) > 255:
            raise ConfigError(
                f"`classes` expects VALUE=NAME or NAME=VALUE pairs with values 0-255, got {left}={right}"
            )
        names[int(number)] = name
    return names


def _whole_number(name: str, value: object) -> int:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a whole number 0-255, got {value!r}") from None
    if isinstance(value, bool) or not number.is_integer():
        raise ConfigError(f"{name} must be a whole number 0-255, got {value!r}")
    return int(number)


@dataclass(frozen=True, eq=False)
class _Layer:
    """Features of one vector layer: geometries in the file's CRS, their classes and an index."""

    path: str
    crs_wkt: str
    geometries: np.ndarray
    values: np.ndarray  # uint8, one per geometry
    tree: shapely.STRtree  # over WGS84 envelopes, same order as geometries
    repaired: int

    def burn(self, tile: Tile, fill: int, all_touched: bool) -> np.ndarray:
        """(rows, cols) uint8 of ``tile``; later features overwrite earlier ones."""
        found = np.unique(np.concatenate([self.tree.query(query) for query in _tile_lonlat_boxes(tile)]))
        if found.size == 0:
            return np.full(tile.shape, fill, dtype=np.uint8)
        # np.unique sorts the indices back into file order, which decides overlaps.
        geometries = shapely.transform(self.geometries[found], projector(self.crs_wkt, tile.crs))
        margin = _CLIP_MARGIN_PX * tile.resolution
        window = np.array(tile.bounds) + np.array([-margin, -margin, margin, margin])
        bounds = shapely.bounds(geometries)
        overhanging = (bounds[:, :2] < window[:2]).any(axis=1) | (bounds[:, 2:] > window[2:]).any(axis=1)
        geometries[overhanging] = shapely.clip_by_rect(geometries[overhanging], *window.tolist())
        shapes, owner = _burnable(geometries)
        if not shapes:
            return np.full(tile.shape, fill, dtype=np.uint8)
        return rasterio.features.rasterize(
            zip(shapes, self.values[found][owner].tolist()),
            out_shape=tile.shape,
            transform=tile.transform,
            fill=fill,
            all_touched=all_touched,
            dtype=np.uint8,
        )


def _burnable(geometries: np.ndarray) -> tuple[list, np.ndarray]:
    """Non-empty single parts of ``geometries`` for rasterio, and the index each part came from.

    Polygons become GeoJSON-like dicts built from one vectorised read of their
    coordinates: rasterio takes those about three times faster than shapely's
    per-object ``__geo_interface__``. The parts of a feature share its value, so
    burning them in turn equals burning the whole feature.
    """
    parts, owner = shapely.get_parts(geometries, return_index=True)
    nonempty = ~shapely.is_empty(parts)
    parts, owner = parts[nonempty], owner[nonempty]
    polygons = np.flatnonzero(shapely.get_type_id(parts) == shapely.GeometryType.POLYGON)
    rings, ring_owner = shapely.get_rings(parts[polygons], return_index=True)
    coords, coord_ring = shapely.get_coordinates(rings, return_index=True)
    flat = coords.tolist()
    ring_starts = np.searchsorted(coord_ring, np.arange(rings.size + 1)).tolist()
    ring_coords = [flat[a:b] for a, b in zip(ring_starts[:-1], ring_starts[1:])]
    part_starts = np.searchsorted(ring_owner, np.arange(polygons.size + 1)).tolist()
    shapes = list(parts)
    for k, i in enumerate(polygons.tolist()):
        shapes[i] = {"type": "Polygon", "coordinates": ring_coords[part_starts[k] : part_starts[k + 1]]}
    return shapes, owner


class GroundTruth:
    """Labels (and optional surveyed extent) loaded once, ready to rasterize on any tile."""

    def __init__(self, request: LabelRequest, labels: _Layer, extent: _Layer | None) -> None:
        self.request = request
        self._labels = labels
        self._extent = extent

    @classmethod
    def load(cls, request: LabelRequest) -> GroundTruth:
        """Read, validate, repair and index the labels and extent files (each read once)."""
        labels = _read_layer(
            request.path, request.layer, "`labels_layer`", request.attribute, request.ignore_value, request.classes
        )
        extent = None
        if request.extent is not None:
            extent = _read_layer(request.extent, request.extent_layer, "`extent_layer`")
            polygonal = [shapely.GeometryType.POLYGON, shapely.GeometryType.MULTIPOLYGON]
            not_polygonal = ~np.isin(shapely.get_type_id(extent.geometries), polygonal)
            if not_polygonal.any():
                example = extent.geometries[not_polygonal][0].geom_type
                raise VectorFileError(
                    f"{request.extent}: the surveyed extent must be polygons;"
                    f" {int(not_polygonal.sum())} features are not (e.g. a {example})"
                )
        return cls(request, labels, extent)

    @property
    def feature_count(self) -> int:
        """Label features with a geometry (the extent's are not counted)."""
        return int(self._labels.geometries.size)

    @property
    def repaired(self) -> int:
        """Invalid geometries repaired with ``make_valid``, labels and extent together."""
        return self._labels.repaired + (self._extent.repaired if self._extent is not None else 0)

    @property
    def nodata(self) -> int | None:
        """The label raster's nodata: ``ignore_value`` when an extent is given, else None."""
        return self.request.nodata

    def rasterize(self, tile: Tile) -> np.ndarray:
        """(rows, cols) uint8 classes on ``tile``'s grid (``tile.transform``, ``tile.crs``).

        Pixels are burnt when their centre is inside a feature (any touch with
        ``all_touched``); pixels whose centre is outside the extent get ``ignore_value``.
        """
        request = self.request
        labels = self._labels.burn(tile, request.background, request.all_touched)
        if self._extent is not None:
            surveyed = self._extent.burn(tile, 0, all_touched=False)
            labels[surveyed == 0] = request.ignore_value
        return labels


@functools.lru_cache(maxsize=4)
def load_ground_truth(request: LabelRequest) -> GroundTruth:
    """`GroundTruth.load`, cached per process so that each worker reads the files once."""
    return GroundTruth.load(request)


def _read_layer(
    path: str,
    layer: str | int | None,
    layer_option: str,
    attribute: str | None = None,
    ignore_value: int = 255,
    classes: tuple[tuple[int, str], ...] = (),
) -> _Layer:
    """Read one layer once; without ``attribute`` every feature gets class 1."""
    layer_data = read_vector(path, layer, () if attribute is None else (attribute,), layer_option)
    if attribute is not None and attribute not in layer_data.fields:
        available = ", ".join(layer_data.field_names) or "none"
        raise LabelError(f"{path}: no attribute {attribute!r}; available: {available}")
    geometries = layer_data.geometries
    if attribute is None:
        values = np.ones(geometries.size, dtype=np.uint8)
    else:
        raw = _text_classes(layer_data.fields[attribute], layer_data.rows, path, attribute, classes)
        values = _class_values(raw, layer_data.rows, path, attribute, ignore_value)

    invalid = ~shapely.is_valid(geometries)
    repaired = int(invalid.sum())
    if repaired:
        # "structure" keeps polygons polygonal: no stray lines from collapsed rings.
        geometries[invalid] = shapely.make_valid(geometries[invalid], method="structure", keep_collapsed=False)
        logger.warning("%s: repaired %d invalid geometries with make_valid", path, repaired)
        nonempty = ~shapely.is_empty(geometries)
        geometries, values = geometries[nonempty], values[nonempty]

    crs = layer_data.crs
    crs_wkt = crs.to_wkt()
    geometries = shapely.segmentize(geometries, segment_length(crs))
    envelopes = shapely.bounds(shapely.transform(geometries, projector(crs_wkt, _WGS84)))
    # Transforms give inf or NaN outside their domain; a file declared as lon/lat is not
    # transformed at all, so coordinates in another unit show up as out-of-range degrees.
    in_range = (np.abs(envelopes[:, [0, 2]]) <= 360.0) & (np.abs(envelopes[:, [1, 3]]) <= 90.0)
    unplaceable = ~in_range.all(axis=1)
    if unplaceable.any():
        raise VectorFileError(
            f"{path}: {int(unplaceable.sum())} features cannot be placed in lon/lat from {crs.name};"
            " are the coordinates in the CRS the file declares?"
        )
    return _Layer(
        path=path,
        crs_wkt=crs_wkt,
        geometries=geometries,
        values=values,
        tree=shapely.STRtree(shapely.box(*envelopes.T)),
        repaired=repaired,
    )


def _text_classes(
    raw: np.ndarray, rows: np.ndarray, path: str, attribute: str, classes: tuple[tuple[int, str], ...]
) -> np.ndarray:
    """A text attribute column as class numbers through ``classes``; other columns as they are."""
    if raw.dtype.kind in "iuf" or not classes:
        return raw
    numbers = {name: value for value, name in classes}
    mapped = np.array([numbers.get(v, np.nan) if isinstance(v, str) else np.nan for v in raw], dtype=np.float64)
    unknown = np.flatnonzero(np.isnan(mapped))
    if unknown.size:
        first = int(unknown[0])
        known = ", ".join(f"{name}={value}" for value, name in classes)
        raise LabelError(
            f"{path}: attribute {attribute!r} has {unknown.size} values that `classes` does not name,"
            f" e.g. {raw[first]!r} in feature {int(rows[first])}; `classes` maps {known}"
        )
    return mapped


def _class_values(
    raw: np.ndarray, rows: np.ndarray, path: str, attribute: str, ignore_value: int
) -> np.ndarray:
    """uint8 classes from an attribute column; whole-number floats are accepted."""
    rule = f"class values must be whole numbers 0-255 other than the ignore value {ignore_value}"
    if raw.dtype.kind not in "iuf":
        example = next((value for value in raw if value is not None), None)
        raise LabelError(
            f"{path}: attribute {attribute!r} holds {raw.dtype} values such as {example!r}; {rule},"
            f" or text that `classes` maps to them (e.g. {example}=1)"
        )
    numbers = raw.astype(np.float64)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(numbers) | (numbers != np.round(numbers)) | (numbers < 0) | (numbers > 255)
        bad |= numbers == ignore_value
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        example = "null" if math.isnan(numbers[first]) else repr(raw[first].item())
        raise LabelError(
            f"{path}: attribute {attribute!r} has {int(bad.sum())} bad values, e.g. {example}"
            f" in feature {int(rows[first])}; {rule}"
        )
    return numbers.astype(np.uint8)


@functools.lru_cache(maxsize=64)
def _tile_lonlat_boxes(tile: Tile) -> tuple[shapely.Polygon, ...]:
    """Lon/lat envelope(s) of a tile: two across the antimeridian, up to the pole around one."""
    west, south, east, north = tile.bounds
    outline = shapely.segmentize(shapely.box(west, south, east, north), (east - west) / _OUTLINE_PIECES)
    lon, lat = projector(tile.crs, _WGS84)(shapely.get_coordinates(outline)).T
    pole_x, pole_y = projector(_WGS84, tile.crs)(np.array([[0.0, 90.0], [0.0, -90.0]])).T
    holds_pole = (west <= pole_x) & (pole_x <= east) & (south <= pole_y) & (pole_y <= north)
    if holds_pole[0]:
        return (shapely.box(-180.0, lat.min(), 180.0, 90.0),)
    if holds_pole[1]:
        return (shapely.box(-180.0, -90.0, 180.0, lat.max()),)
    if np.ptp(lon) > 180.0:
        return (
            shapely.box(lon[lon >= 0].min(), lat.min(), 180.0, lat.max()),
            shapely.box(-180.0, lat.min(), lon[lon < 0].max(), lat.max()),
        )
    return (shapely.box(lon.min(), lat.min(), lon.max(), lat.max()),)
