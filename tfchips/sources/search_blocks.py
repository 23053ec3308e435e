"""Searching a STAC API once per block of tiles, then finding each tile's items locally.

A search per tile costs a round trip (several, when the server pages few items) for
every tile, although neighbouring tiles see the same scenes. A search covers instead a
square block of ``search_block`` x ``search_block`` tiles of the grid (the tiles that
share a zone, a size and the same ``ti // search_block`` and ``tj // search_block``),
grown by one tile on every side; the items it returns are indexed by footprint, as a
static catalog's are, and each tile of the block takes the items that meet it.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import shapely

from tfchips.errors import ItemError
from tfchips.grid import Tile
from tfchips.utm import utm_to_lonlat
from tfchips.sources.base import Scene, SceneQuery, sorted_scenes

# Points per edge of a block's search polygon: UTM lines are curves in lon/lat.
_EDGE_POINTS = 9


def block_of(tile: Tile, size: int) -> Tile:
    """The block of ``size`` x ``size`` tiles holding ``tile``, as one large tile of the same
    grid (same zone, pad and resolution); ``tile`` itself when ``size`` is 1."""
    if size == 1:
        return tile
    return Tile._unchecked(tile.tilesize * size, tile.pad, tile.resolution, tile.zone, tile.ti // size, tile.tj // size)


def search_area(block: Tile, size: int) -> shapely.Polygon:
    """The lon/lat polygon one search of ``block`` (of ``size`` x ``size`` tiles) sends: the
    block grown by one tile on every side, so that the curvature of its edges in lon/lat
    loses no item; a block of one tile sends the tile's own footprint."""
    if size == 1:
        return block.geometry
    west, south, east, north = block.bounds
    margin = (block.tilesize // size + 2 * block.pad) * block.resolution
    west, south, east, north = west - margin, south - margin, east + margin, north + margin
    steps = np.linspace(0.0, 1.0, _EDGE_POINTS)[:-1]
    xs = np.concatenate([west + (east - west) * steps, np.full(steps.size, east), east - (east - west) * steps,
                         np.full(steps.size, west)])
    ys = np.concatenate([np.full(steps.size, south), south + (north - south) * steps, np.full(steps.size, north),
                         north - (north - south) * steps])
    lon, lat = utm_to_lonlat(np.append(xs, xs[0]), np.append(ys, ys[0]), block.zone)
    return shapely.Polygon(np.column_stack([lon, lat]))


class BlockItems:
    """The items one block search returned, indexed by footprint.

    ``footprints`` are WGS84 polygons, one per entry of ``items`` (None where an item has
    none usable: it is left out); ``scene_of`` turns an item into its `Scene` and may raise
    `ItemError`, which then fails only the tiles that the item meets. With ``everywhere``
    every item belongs to every tile (a search of the tile alone: the server judged).
    """

    def __init__(
        self,
        items: Sequence[object],
        footprints: Sequence[shapely.Geometry | None],
        scene_of: Callable[[object], Scene],
        everywhere: bool = False,
    ) -> None:
        kept = [(item, footprint) for item, footprint in zip(items, footprints) if footprint is not None or everywhere]
        self._items = [item for item, _ in kept]
        self._scene_of = scene_of
        self._scenes: dict[int, Scene | ItemError] = {}
        self._everywhere = everywhere
        if not everywhere:
            shapes = np.array([footprint for _, footprint in kept], dtype=object)
            invalid = ~shapely.is_valid(shapes) if len(shapes) else np.zeros(0, dtype=bool)
            shapes[invalid] = shapely.make_valid(shapes[invalid])
            self._tree = shapely.STRtree(shapes)

    def __len__(self) -> int:
        return len(self._items)

    def scenes(self, tile: Tile, query: SceneQuery) -> list[Scene]:
        """Scenes of the items that meet ``tile`` and pass ``query``, in time order."""
        hits = range(len(self._items)) if self._everywhere else self._tree.query(tile.geometry, "intersects")
        scenes = [self._scene(int(i)) for i in hits]
        # Filter again here: servers differ on open intervals and some ignore `query`.
        return sorted_scenes([s for s in scenes if query.accepts(s.datetime, s.cloud_cover)])

    def _scene(self, index: int) -> Scene:
        scene = self._scenes.get(index)
        if scene is None:
            try:
                scene = self._scene_of(self._items[index])
            except ItemError as error:
                scene = error
            self._scenes[index] = scene
        if isinstance(scene, ItemError):
            raise ItemError(str(scene)) from None
        return scene
