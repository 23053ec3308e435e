"""What every imagery source offers: scenes that cover a tile, and their pixels on its grid."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Sequence

import numpy as np

from tfchips.grid import Tile
# Re-exported: sources and their callers redact through this module's names.
from tfchips.redaction import REDACTED, redact_text, redact_url  # noqa: F401

# Resampling names accepted everywhere; categorical masks are always read with "nearest".
RESAMPLING = ("nearest", "bilinear", "cubic", "average", "mode")


@dataclass(frozen=True)
class SceneQuery:
    """Scene-level filters: an acquisition window (inclusive, UTC) and a cloud ceiling in percent."""

    start: datetime | None = None
    end: datetime | None = None
    max_cloud: float | None = None

    def accepts(self, when: datetime, cloud_cover: float | None) -> bool:
        """Whether a scene taken at ``when`` with ``cloud_cover`` percent passes the filters.

        A scene that does not report its cloud cover is kept: there is nothing to judge it by.
        """
        if self.start is not None and when < self.start:
            return False
        if self.end is not None and when > self.end:
            return False
        return self.max_cloud is None or cloud_cover is None or cloud_cover <= self.max_cloud


@dataclass(frozen=True)
class Scene:
    """One acquisition: an item of a STAC catalog or an EarthOne image.

    ``handle`` is whatever the source needs to read the scene later (a pystac Item,
    an image id); it takes no part in comparisons.
    """

    id: str
    datetime: datetime
    cloud_cover: float | None
    handle: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Pixels:
    """Bands of one scene on a tile grid.

    ``values`` is a masked array (bands, rows, cols): masked where the scene has no data
    (outside its footprint, or at its nodata value). ``nodata`` is the value the scene
    declares, or None when it declares none. ``scale_offset`` holds one (scale, offset)
    per band that turns stored values into physical ones (empty: none declared).
    """

    values: np.ma.MaskedArray
    nodata: int | float | None
    scale_offset: tuple[tuple[float, float], ...] = ()


class Source(abc.ABC):
    """A place to find scenes and read them onto tiles.

    ``name`` is the catalog string the source was opened from; errors quote it.
    """

    name: str

    @abc.abstractmethod
    def search(self, tile: Tile, query: SceneQuery) -> list[Scene]:
        """Scenes whose footprint meets the tile and that pass ``query``, sorted by time then id."""

    def band_names(self) -> tuple[frozenset[str], frozenset[str]] | None:
        """(asset keys, ``eo:bands`` names) that the source's items offer between them, or
        None when it cannot tell without reading every item."""
        return None

    @abc.abstractmethod
    def read(self, scene: Scene, bands: Sequence[str], tile: Tile, resampling: str = "nearest") -> Pixels:
        """The named bands of ``scene`` resampled onto the tile's CRS, transform and shape."""

    def read_with_masks(
        self, scene: Scene, bands: Sequence[str], masks: Sequence[str], tile: Tile, resampling: str = "nearest"
    ) -> tuple[Pixels, np.ma.MaskedArray]:
        """``bands`` with ``resampling``, and the mask assets ``masks`` with nearest (class and
        probability rasters are never interpolated) as a masked (masks, rows, cols) array.

        Sources that read files override this to warp bands and masks in one call per grid.
        """
        pixels = self.read(scene, bands, tile, resampling)
        empty = np.ma.masked_all((0, *tile.shape), dtype=np.uint8)
        return pixels, (self.read(scene, masks, tile, "nearest").values if masks else empty)


def as_utc(moment: datetime) -> datetime:
    """An aware UTC datetime; naive values are taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def sorted_scenes(scenes: Sequence[Scene]) -> list[Scene]:
    """Scenes in time order, ties by id, so that every search returns the same list."""
    return sorted(scenes, key=lambda scene: (scene.datetime, scene.id))


def first_line(error: BaseException) -> str:
    """The first line of an exception's message, for one-line errors that quote a library.

    Where the message only points at the error it was raised from (rasterio's "Read
    failed. See previous exception for details."), that error's message is used.
    """
    text = str(error).strip()
    if "previous exception" in text and error.__cause__ is not None:
        return first_line(error.__cause__)
    return (text or type(error).__name__).splitlines()[0]
