"""Where each pixel of a chip came from: an optional raster per chip (``provenance``).

``OUT/provenance/KEY.tif`` lies beside ``images/`` and ``labels/``, on the chip's grid:
a tiled LZW GeoTIFF, uint8 (uint16 when a value passes 255), nodata 0, one band per
product (the main one, then each stacked one), described by its kind:

- ``scene`` (methods ``closest``, ``latest``, ``least-cloudy``): the 1-based position,
  in the tile's ``scenes``, of the scene the pixel was taken from;
- ``count`` (method ``median``): how many scenes had a valid value at the pixel;

0 where no scene gave one. The scene ids and acquisition times are in the file's tags
and in the tile's manifest row (``provenance``; `tfchips.manifest.manifest_rows`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np

from tfchips import storage
from tfchips.chips import PROVENANCE_DIR
from tfchips.errors import ChipError
from tfchips.grid import Tile, key_to_filename
from tfchips.imagery import TileImagery
from tfchips.sources.base import as_utc
from tfchips.tile_geotiff import SCENES_TAG, encode_geotiff, open_written_chip

DATES_TAG = "TFCHIPS_SCENE_DATES"
KINDS = ("scene", "count")


@dataclass(frozen=True)
class ChipProvenance:
    """The provenance of one chip: ``layers`` (products, rows, cols), unsigned, of the
    ``kinds`` in `KINDS`; ``scenes`` and their ``dates`` (ISO 8601, UTC) in the order
    ``scene`` values count them (1 is the first)."""

    layers: np.ndarray
    kinds: tuple[str, ...]
    scenes: tuple[str, ...]
    dates: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.layers.ndim != 3 or self.layers.shape[0] != len(self.kinds):
            raise ValueError(f"expected {len(self.kinds)} provenance layer(s), got an array shaped {self.layers.shape}")
        if len(self.scenes) != len(self.dates):
            raise ValueError(f"{len(self.scenes)} scene id(s) for {len(self.dates)} date(s)")

    def as_json(self, key: str) -> dict:
        """The manifest entry of tile ``key``: the file, its band kinds, the scenes it counts."""
        return {
            "path": f"{PROVENANCE_DIR}/{key_to_filename(key)}.tif",
            "bands": list(self.kinds),
            "scenes": [{"id": scene, "datetime": date} for scene, date in zip(self.scenes, self.dates)],
        }


def chip_provenance(imagery: TileImagery) -> ChipProvenance:
    """The provenance of composited ``imagery`` (see `TileImagery.provenance`)."""
    layers = imagery.provenance
    dtype = np.uint8 if int(layers.max(initial=0)) <= np.iinfo(np.uint8).max else np.uint16
    return ChipProvenance(layers.astype(dtype), imagery.provenance_kinds, imagery.scenes, tuple(map(_iso, imagery.scene_dates)))


def provenance_path(out: str, key: str) -> str:
    """Path (or URL) of the provenance raster of tile ``key`` under the chip folder ``out``."""
    return storage.join(out, PROVENANCE_DIR, key_to_filename(key) + ".tif")


def write_provenance(out: str, tile: Tile, provenance: ChipProvenance) -> None:
    """Publish ``provenance`` as ``OUT/provenance/KEY.tif`` (temporary name, then rename)."""
    tags = {SCENES_TAG: ",".join(provenance.scenes), DATES_TAG: ",".join(provenance.dates)}
    data = encode_geotiff(provenance.layers, tile, 0, provenance.kinds, tags)
    storage.publish(provenance_path(out, tile.key), data)


def read_provenance(out: str, key: str) -> ChipProvenance:
    """Read back what `write_provenance` wrote for tile ``key``.

    Raises:
        ChipError: the file is missing, corrupt, off the tile's grid or not a provenance raster.
    """
    path = provenance_path(out, key)
    if not storage.exists(path):
        raise ChipError(f"{path}: no provenance raster")
    with open_written_chip(path, Tile.from_key(key)) as dataset:
        layers, kinds, tags = dataset.read(), tuple(dataset.descriptions), dataset.tags()
    scenes = tuple(s for s in tags.get(SCENES_TAG, "").split(",") if s)
    dates = tuple(d for d in tags.get(DATES_TAG, "").split(",") if d)
    if any(kind not in KINDS for kind in kinds) or len(scenes) != len(dates):
        raise ChipError(f"{path}: not a tfchips provenance raster (bands {kinds}, {len(scenes)} scenes, {len(dates)} dates)")
    return ChipProvenance(layers, kinds, scenes, dates)


def _iso(moment: datetime) -> str:
    return as_utc(moment).isoformat().replace("+00:00", "Z")
