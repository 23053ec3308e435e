"""DLTile-compatible UTM tile grid.

A tile is a square of ``tilesize`` pixels at ``resolution`` metres in a
northern UTM zone (EPSG:326ZZ, also south of the equator, with negative
northings), grown by ``pad`` pixels on every side. Its key is
``"{tilesize}:{pad}:{resolution}:{zone:02d}:{ti}:{tj}"``; ``ti`` counts tiles
east of the false easting (500 000 m) and ``tj`` tiles north of the equator.

The cover of a shape matches ``earthdaily.earthone.geo.DLTile.from_shape``:
a tile belongs to it when the lon/lat quadrilateral through the four corners of
its unpadded square intersects the shape clipped to the zone's 6-degree band.
Like the reference, the grid spans latitudes -90 to 90 (beyond the -80/84 UTM
band) and ignores the Norway/Svalbard zone exceptions; tiles near the poles are
valid but increasingly distorted.
"""

from __future__ import annotations

import math
import os
import re
from typing import Iterable, NamedTuple

import numpy as np
import shapely
from affine import Affine
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from tfchips.errors import GridError, ShapeError, TileKeyError
from tfchips.utm import FALSE_EASTING, lonlat_to_utm, utm_to_lonlat

# Eastings beyond these are outside any zone; the reference never tiles there.
_MIN_EAST = FALSE_EASTING - 334000
_MAX_EAST = FALSE_EASTING + 334000
_POLE_NORTHING = 9997964.943
_ZONE_WIDTH = 6.0
# Tiles are tested a block of _BLOCK x _BLOCK at a time; whole blocks inside
# the shape are taken without testing each tile.
_BLOCK = 16

_KEY = re.compile(
    r"^(?P<tilesize>\d+):(?P<pad>\d+):(?P<resolution>\d+(?:\.\d+)?):"
    r"(?P<zone>\d{1,2}):(?P<ti>-?\d+):(?P<tj>-?\d+)$"
)


def format_resolution(resolution: float) -> str:
    """Resolution as it appears in a key: ``10.0``, ``0.5``, at most 6 decimals."""
    text = ("%f" % resolution).rstrip("0")
    return text + "0" if text.endswith(".") else text


def _check_grid(resolution: float, tilesize: int, pad: int) -> None:
    if not (isinstance(resolution, (int, float)) and math.isfinite(resolution) and resolution > 0):
        raise GridError(f"resolution must be a positive number of metres, got {resolution!r}")
    if int(tilesize) != tilesize or tilesize <= 0:
        raise GridError(f"tilesize must be a positive whole number of pixels, got {tilesize!r}")
    if int(pad) != pad or pad < 0:
        raise GridError(f"pad must be a non-negative whole number of pixels, got {pad!r}")


class _TileFields(NamedTuple):
    tilesize: int
    pad: int
    resolution: float
    zone: int
    ti: int
    tj: int


class Tile(_TileFields):
    """One DLTile: a padded square of ``tilesize + 2 * pad`` pixels in UTM.

    An immutable value (a named tuple, so that covers of millions of tiles stay
    cheap to build) with fields ``tilesize``, ``pad`` (pixels), ``resolution``
    (metres), ``zone``, ``ti``, ``tj``.
    """

    __slots__ = ()

    def __new__(cls, tilesize: int, pad: int, resolution: float, zone: int, ti: int, tj: int) -> Tile:
        _check_grid(resolution, tilesize, pad)
        if not 1 <= zone <= 60:
            raise GridError(f"UTM zone must be 1 to 60, got {zone!r}")
        return tuple.__new__(cls, (int(tilesize), int(pad), float(resolution), int(zone), int(ti), int(tj)))

    @classmethod
    def _unchecked(cls, tilesize: int, pad: int, resolution: float, zone: int, ti: int, tj: int) -> Tile:
        # Skips validation for values the grid itself computed.
        return tuple.__new__(cls, (tilesize, pad, resolution, zone, ti, tj))

    @classmethod
    def from_key(cls, key: str) -> Tile:
        """Parse a key such as ``"256:0:0.5:43:-1730:16423"``."""
        match = _KEY.match(key) if isinstance(key, str) else None
        if match is None:
            raise TileKeyError(
                f"malformed tile key {key!r}: expected 'tilesize:pad:resolution:zone:ti:tj'"
            )
        fields = match.groupdict()
        try:
            return cls(
                tilesize=int(fields["tilesize"]),
                pad=int(fields["pad"]),
                resolution=float(fields["resolution"]),
                zone=int(fields["zone"]),
                ti=int(fields["ti"]),
                tj=int(fields["tj"]),
            )
        except GridError as error:
            raise TileKeyError(f"invalid tile key {key!r}: {error}") from None

    @property
    def key(self) -> str:
        return (
            f"{self.tilesize}:{self.pad}:{format_resolution(self.resolution)}:"
            f"{self.zone:02d}:{self.ti}:{self.tj}"
        )

    @property
    def crs(self) -> str:
        """EPSG code of the northern UTM zone, e.g. ``"EPSG:32613"``."""
        return f"EPSG:{32600 + self.zone}"

    @property
    def size(self) -> int:
        """Chip width and height in pixels, padding included."""
        return self.tilesize + 2 * self.pad

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) of the padded chip."""
        return (self.size, self.size)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """Padded (west, south, east, north) in metres in `crs`."""
        width = self.resolution * self.tilesize
        margin = self.pad * self.resolution
        west = FALSE_EASTING + self.ti * width
        south = self.tj * width
        return (west - margin, south - margin, west + width + margin, south + width + margin)

    @property
    def transform(self) -> Affine:
        """Affine from pixel (col, row) to `crs` metres, top-left origin."""
        west, _, _, north = self.bounds
        return Affine(self.resolution, 0.0, west, 0.0, -self.resolution, north)

    @property
    def geometry(self) -> shapely.Polygon:
        """The padded tile as a WGS84 lon/lat polygon through its four corners."""
        west, south, east, north = self.bounds
        lon, lat = utm_to_lonlat(
            np.array([west, east, east, west, west]), np.array([south, south, north, north, south]), self.zone
        )
        return shapely.Polygon(np.column_stack([lon, lat]))

    def __str__(self) -> str:
        return self.key


def is_tile_key(text: str) -> bool:
    """Whether ``text`` is spelled like a tile key, ``tilesize:pad:resolution:zone:ti:tj``
    (`Tile.from_key` also checks that the values make a tile)."""
    return isinstance(text, str) and _KEY.fullmatch(text) is not None


def key_to_filename(key: str) -> str:
    """File stem for a tile key: ``:`` becomes ``#`` (ESRI Classified Tiles naming)."""
    if not isinstance(key, str) or _KEY.match(key) is None:
        raise TileKeyError(f"malformed tile key {key!r}: expected 'tilesize:pad:resolution:zone:ti:tj'")
    return key.replace(":", "#")


def filename_to_key(filename: str) -> str:
    """Tile key from a chip file name such as ``256#0#10.0#13#-34#1542.tif``.

    Only a bare file name is accepted: anything with a folder part is refused so that
    a key can never point outside the folder it is written to.
    """
    name = str(filename)
    if os.sep in name or "/" in name or "\\" in name:
        raise TileKeyError(f"chip file name {name!r} must not contain a folder")
    stem = name
    for suffix in (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    key = stem.replace("#", ":")
    if _KEY.match(key) is None:
        raise TileKeyError(f"chip file name {name!r} does not hold a tile key")
    return key


def tile_indices_for_shape(
    geometry: BaseGeometry, resolution: float, tilesize: int, pad: int = 0
) -> np.ndarray:
    """Integer array of (zone, ti, tj) rows covering a WGS84 geometry, sorted.

    Vectorised core of `tiles_for_shape`; useful when millions of tiles are wanted.
    """
    _check_grid(resolution, tilesize, pad)
    return _tile_indices(_validated(geometry), tilesize * resolution)


def tile_indices_in_rows(
    geometry: BaseGeometry, resolution: float, tilesize: int, zone: int, rows: tuple[int, int]
) -> np.ndarray:
    """The rows of `tile_indices_for_shape` in UTM ``zone`` whose tj lies in ``rows`` (first, last), sorted.

    Costs about what the tiles of those rows cost, not the whole area: a worker
    expands a block of a large area (`TileBlock`) without computing the rest.
    """
    _check_grid(resolution, tilesize, 0)
    found = _tile_indices(_validated(geometry), tilesize * resolution, zone, rows)
    keep = (found[:, 0] == zone) & (found[:, 2] >= rows[0]) & (found[:, 2] <= rows[1])
    return found[keep]


def _tile_indices(
    geometry: BaseGeometry, grid_width: float, only_zone: int | None = None, rows: tuple[int, int] | None = None
) -> np.ndarray:
    found = [_point_tiles(geometry, grid_width)]
    for part in (_polygonal(geometry), _lineal(geometry)):
        if part.is_empty:
            continue
        min_lon, _, max_lon, _ = part.bounds
        first_zone = max(1, 1 + int(np.floor((min_lon + 180.0) / _ZONE_WIDTH)))
        last_zone = min(60, 1 + int(np.floor((max_lon + 180.0) / _ZONE_WIDTH)))
        for zone in range(first_zone, last_zone + 1):
            if only_zone is not None and zone != only_zone:
                continue
            zone_west = _ZONE_WIDTH * zone - 186.0
            clipped = part.intersection(box(zone_west, -90.0, zone_west + _ZONE_WIDTH, 90.0))
            # A polygon touching the zone edge leaves a line there; the reference ignores it.
            clipped = _polygonal(clipped) if part.geom_type.endswith("Polygon") else _lineal(clipped)
            if not clipped.is_empty:
                found.append(_zone_tiles(clipped, zone, grid_width, rows))
    indices = np.concatenate(found)
    # Zones and blocks are disjoint, so only points or lines beside polygons can repeat a tile.
    if sum(len(f) > 0 for f in found) > 1:
        indices = np.unique(indices, axis=0)
    return indices[np.lexsort((indices[:, 1], indices[:, 2], indices[:, 0]))]


def tiles_for_shape(
    geometry: BaseGeometry, resolution: float, tilesize: int, pad: int = 0
) -> list[Tile]:
    """Every DLTile touching a WGS84 geometry, ordered by zone, then tj, then ti.

    Polygons give the tiles that intersect them (holes respected), lines the tiles
    they cross, points the tile that contains each point. ``resolution`` is in
    metres per pixel, ``tilesize`` and ``pad`` in pixels.
    """
    indices = tile_indices_for_shape(geometry, resolution, tilesize, pad)
    grid = (int(tilesize), int(pad), float(resolution))
    return [Tile._unchecked(*grid, zone, ti, tj) for zone, ti, tj in indices.tolist()]


def _validated(geometry: BaseGeometry) -> BaseGeometry:
    if not isinstance(geometry, BaseGeometry):
        raise ShapeError(f"expected a shapely geometry, got {type(geometry).__name__}")
    if geometry.is_empty:
        raise ShapeError("the area of interest is empty")
    min_lon, min_lat, max_lon, max_lat = geometry.bounds
    if not (-180.0 <= min_lon and max_lon <= 180.0 and -90.0 <= min_lat and max_lat <= 90.0):
        raise ShapeError(
            f"geometry bounds {geometry.bounds} are outside WGS84 lon [-180, 180], lat [-90, 90];"
            " is it in another CRS?"
        )
    if not geometry.is_valid:
        geometry = shapely.make_valid(geometry)
    return geometry


def _parts_of_dimension(geometry: BaseGeometry, dimension: int) -> BaseGeometry:
    parts = [p for p in shapely.get_parts(geometry) if shapely.get_dimensions(p) == dimension and not p.is_empty]
    nested = [q for p in parts for q in shapely.get_parts(p)]
    if dimension == 2:
        return shapely.MultiPolygon(nested) if nested else shapely.MultiPolygon()
    return shapely.MultiLineString(nested) if nested else shapely.MultiLineString()


def _polygonal(geometry: BaseGeometry) -> BaseGeometry:
    return _parts_of_dimension(_flatten(geometry), 2)


def _lineal(geometry: BaseGeometry) -> BaseGeometry:
    return _parts_of_dimension(_flatten(geometry), 1)


def _flatten(geometry: BaseGeometry) -> BaseGeometry:
    """Geometry collection of the single-part members of any (nested) geometry."""
    parts: list[BaseGeometry] = []
    stack = [geometry]
    while stack:
        item = stack.pop()
        if item.geom_type in ("GeometryCollection", "MultiPolygon", "MultiLineString", "MultiPoint"):
            stack.extend(shapely.get_parts(item))
        else:
            parts.append(item)
    return shapely.GeometryCollection(parts)


def _point_tiles(geometry: BaseGeometry, grid_width: float) -> np.ndarray:
    points = [p for p in shapely.get_parts(_flatten(geometry)) if p.geom_type == "Point"]
    if not points:
        return np.empty((0, 3), dtype=np.int64)
    coords = shapely.get_coordinates(points)
    lon, lat = coords[:, 0], coords[:, 1]
    zones = np.clip(1 + np.floor((lon + 180.0) / _ZONE_WIDTH).astype(np.int64), 1, 60)
    rows = []
    for zone in np.unique(zones):
        in_zone = zones == zone
        east, north = lonlat_to_utm(lon[in_zone], lat[in_zone], int(zone))
        ti = np.floor((east - FALSE_EASTING) / grid_width).astype(np.int64)
        tj = np.floor(north / grid_width).astype(np.int64)
        rows.append(np.column_stack([np.full_like(ti, zone), ti, tj]))
    return np.unique(np.concatenate(rows), axis=0)


def _zone_tiles(
    clipped: BaseGeometry, zone: int, grid_width: float, rows: tuple[int, int] | None = None
) -> np.ndarray:
    """(zone, ti, tj) of the tiles of one zone whose lon/lat quadrilateral meets ``clipped``.

    ``rows`` (first, last tj) leaves out the blocks of other rows. Blocks start at
    multiples of `_BLOCK`, so that a block is tested the same way whichever rows are
    asked for: the tiles of some rows are exactly those rows of the whole area's.
    """
    # Bound the candidates with the projected, densified outline plus one tile, so
    # that the curvature of parallels in UTM cannot hide a tile.
    outline = shapely.segmentize(clipped, 0.05)
    coords = shapely.get_coordinates(outline)
    east, north = lonlat_to_utm(coords[:, 0], coords[:, 1], zone)
    min_east = max(float(east.min()) - grid_width, _MIN_EAST)
    max_east = min(float(east.max()) + grid_width, _MAX_EAST)
    ti0 = int(np.floor((min_east - FALSE_EASTING) / grid_width))
    ti1 = int(np.ceil((max_east - FALSE_EASTING) / grid_width))
    tj0 = int(np.floor(float(north.min()) / grid_width)) - 1
    tj1 = int(np.ceil(float(north.max()) / grid_width)) + 1
    shapely.prepare(clipped)
    found = []
    block_ti = np.arange(ti0 - ti0 % _BLOCK, ti1, _BLOCK)
    block_tj = np.arange(tj0 - tj0 % _BLOCK, tj1, _BLOCK)
    if rows is not None:
        block_tj = block_tj[(block_tj + _BLOCK > rows[0]) & (block_tj <= rows[1])]
    block_ti_end = np.minimum(block_ti + _BLOCK, ti1)
    block_tj_end = np.minimum(block_tj + _BLOCK, tj1)
    block_ti, block_tj = np.maximum(block_ti, ti0), np.maximum(block_tj, tj0)
    bi, bj = np.meshgrid(np.arange(block_ti.size), np.arange(block_tj.size), indexing="ij")
    bi, bj = bi.ravel(), bj.ravel()
    quads = _quads(zone, grid_width, block_ti[bi], block_tj[bj], block_ti_end[bi], block_tj_end[bj])
    touching = shapely.intersects(clipped, quads)
    inside = touching & shapely.contains(clipped, quads)
    for b in np.flatnonzero(touching):
        ti = np.arange(block_ti[bi[b]], block_ti_end[bi[b]])
        tj = np.arange(block_tj[bj[b]], block_tj_end[bj[b]])
        gi, gj = (a.ravel() for a in np.meshgrid(ti, tj, indexing="ij"))
        if not inside[b]:
            keep = shapely.intersects(clipped, _quads(zone, grid_width, gi, gj, gi + 1, gj + 1))
            gi, gj = gi[keep], gj[keep]
        found.append(np.column_stack([np.full_like(gi, zone), gi, gj]))
    return np.concatenate(found) if found else np.empty((0, 3), dtype=np.int64)


def _quads(
    zone: int, grid_width: float, ti0: np.ndarray, tj0: np.ndarray, ti1: np.ndarray, tj1: np.ndarray
) -> np.ndarray:
    """Lon/lat quadrilaterals through the corners of UTM boxes given in tile units."""
    west = FALSE_EASTING + ti0 * grid_width
    east = FALSE_EASTING + ti1 * grid_width
    south = tj0 * grid_width
    north = tj1 * grid_width
    xs = np.stack([east, east, west, west], axis=-1)
    ys = np.stack([south, north, north, south], axis=-1)
    lon, lat = utm_to_lonlat(xs, ys, zone)
    polygons = shapely.polygons(np.stack([lon, lat], axis=-1))
    # Boxes that wrap the antimeridian or hold a pole need the reference's special care.
    special = (np.ptp(lon, axis=-1) > 180.0) | (
        (west <= FALSE_EASTING) & (FALSE_EASTING <= east) & ((south <= -_POLE_NORTHING) | (north >= _POLE_NORTHING))
    )
    for i in np.flatnonzero(special):
        polygons[i] = _wrapped_quad(west[i], south[i], east[i], north[i], zone)
    return polygons


def _wrapped_quad(west: float, south: float, east: float, north: float, zone: int) -> BaseGeometry:
    """Lon/lat shape of a UTM box that holds a pole or crosses the antimeridian."""
    utm_box = box(west, south, east, north)
    ring = np.asarray(utm_box.exterior.coords)[:-1]
    lon, lat = utm_to_lonlat(ring[:, 0], ring[:, 1], zone)
    points = np.column_stack([lon, lat])
    north_pole = shapely.Point(FALSE_EASTING, _POLE_NORTHING)
    south_pole = shapely.Point(FALSE_EASTING, -_POLE_NORTHING)
    wrap_north = utm_box.intersects(north_pole)
    wrap_south = utm_box.intersects(south_pole)
    world = box(-180.0, -90.0, 180.0, 90.0)
    if wrap_north or wrap_south:
        by_lon = np.sort(points, axis=0)
        forward = by_lon[:1] + np.array([(360.0, 0.0)])
        back = by_lon[-1:] - np.array([(360.0, 0.0)])
        if wrap_north:
            ring = np.concatenate([back, by_lon, forward, [(forward[0, 0], 91.0), (back[0, 0], 91.0)]])
        else:
            ring = np.concatenate([forward, by_lon[::-1], back, [(back[0, 0], -91.0), (forward[0, 0], -91.0)]])
        return shapely.Polygon(ring).intersection(world)
    west_points, east_points = points.copy(), points.copy()
    west_points[points[:, 0] >= 0.0, 0] -= 360.0
    east_points[points[:, 0] < 0.0, 0] += 360.0
    return shapely.union(
        shapely.Polygon(west_points).intersection(box(-180.0, -90.0, 0.0, 90.0)),
        shapely.Polygon(east_points).intersection(box(0.0, -90.0, 180.0, 90.0)),
    )


def tiles_to_geojson(tiles: Iterable[Tile]) -> dict:
    """GeoJSON FeatureCollection of padded tile polygons (WGS84) with key, crs and bounds."""
    return {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": shapely.geometry.mapping(tile.geometry),
                "properties": {"key": tile.key, "crs": tile.crs, "bounds": list(tile.bounds)},
            }
            for tile in tiles
        ],
    }
