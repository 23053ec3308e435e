"""STAC items as scenes, and their bands as rasters to read.

A band is an asset key, or the ``name`` / ``common_name`` of an entry in an asset's
``eo:bands`` (STAC 1.1 ``bands``). Nodata comes from the file, else from
``raster:bands[].nodata``, as do ``scale`` and ``offset``. Every asset href passes the catalog `TrustBoundary` of the
document the item was read from before anything opens it.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Mapping, Sequence

import numpy as np
import pystac
from pystac.utils import str_to_datetime

from tfchips.errors import ItemError
from tfchips.grid import Tile
from tfchips.sources.base import Pixels, Scene, as_utc, redact_text
from tfchips.sources.raster import BandRef, read_bands, read_bands_and_masks
from tfchips.sources.trust import TrustBoundary


def scene_from_item(item: pystac.Item) -> Scene:
    """The `Scene` of a STAC item: its id, datetime (or start_datetime) and ``eo:cloud_cover``."""
    return scene_from_properties(item.id, item.properties, item_label(item), item)


def scene_from_properties(item_id: str, properties: Mapping[str, Any], label: str, handle: Any) -> Scene:
    """The `Scene` of an item given as its id and ``properties`` (an item's JSON, unparsed).

    ``label`` names the item in errors; ``handle`` is what the source reads it with later.

    Raises:
        ItemError: no usable datetime, or a cloud cover that is not a finite number.
    """
    if not isinstance(properties, Mapping):
        raise ItemError(redact_text(f"{label} has no properties object"))
    when = _moment(properties.get("datetime"), label) or _moment(properties.get("start_datetime"), label)
    if when is None:
        raise ItemError(redact_text(f"{label} has no datetime"))
    cloud = properties.get("eo:cloud_cover")
    number = isinstance(cloud, (int, float)) and not isinstance(cloud, bool)
    if cloud is not None and not (number and math.isfinite(cloud)):
        raise ItemError(redact_text(f"{label} has eo:cloud_cover {cloud!r}; expected a number of percent"))
    return Scene(id=item_id, datetime=as_utc(when), cloud_cover=None if cloud is None else float(cloud), handle=handle)


def _moment(value: Any, label: str) -> datetime | None:
    if value is None:
        return None
    try:
        # fromisoformat reads what STAC writes ("2023-06-01T10:00:00Z") ten times faster.
        return datetime.fromisoformat(value)
    except (TypeError, ValueError):
        pass
    try:
        return str_to_datetime(value)
    except (TypeError, ValueError, OverflowError):
        raise ItemError(redact_text(f"{label} has datetime {value!r}; expected ISO 8601")) from None


def band_refs(item: pystac.Item, names: Sequence[str], boundary: TrustBoundary, origin: str) -> list[BandRef]:
    """Where each named band of ``item`` lives: asset keys first, then ``eo:bands`` names.

    Args:
        item: the STAC item.
        names: band names as the user gave them.
        boundary: what the document at ``origin`` may name.
        origin: the path or URL the item was read from (a STAC API's URL for its items).

    Raises:
        ItemError: a band is missing or ambiguous, or its asset href is outside the boundary.
    """
    return [_band_ref(item, name, boundary, origin) for name in names]


def read_item(
    item: pystac.Item, names: Sequence[str], tile: Tile, resampling: str, boundary: TrustBoundary, origin: str
) -> Pixels:
    """The named bands of a STAC item on the tile grid (see `band_refs` for the arguments)."""
    return read_bands(band_refs(item, names, boundary, origin), tile, resampling, label=item_label(item))


def read_item_with_masks(
    item: pystac.Item,
    names: Sequence[str],
    masks: Sequence[str],
    tile: Tile,
    resampling: str,
    boundary: TrustBoundary,
    origin: str,
) -> tuple[Pixels, np.ma.MaskedArray]:
    """The named bands of a STAC item with ``resampling`` and its mask assets ``masks`` with
    nearest, warped together (see `read_bands_and_masks`; `band_refs` for the arguments)."""
    refs = band_refs(item, [*names, *masks], boundary, origin)
    return read_bands_and_masks(refs[: len(names)], refs[len(names) :], tile, resampling, label=item_label(item))


def item_label(item: pystac.Item) -> str:
    """How errors name an item: its id and, when known, where it was read from."""
    href = item.get_self_href()
    return redact_text(f"item {item.id!r}" + (f" ({href})" if href else ""))


def _band_ref(item: pystac.Item, name: str, boundary: TrustBoundary, origin: str) -> BandRef:
    label = item_label(item)
    asset = item.assets.get(name)
    if asset is not None:
        count = max(len(_band_list(asset)), 1)
        if count > 1:
            names = ", ".join(str(b.get("common_name") or b.get("name")) for b in _band_list(asset))
            raise ItemError(f"{label}: asset {name!r} has {count} bands; ask for one of them by name ({names})")
        return BandRef(_href(item, name, asset, boundary, origin), 1, *_stac_band(item, name, asset, 0))
    for key in ("name", "common_name", "eo:common_name"):
        for asset_key, candidate in item.assets.items():
            for position, band in enumerate(_band_list(candidate)):
                if band.get(key) == name:
                    return BandRef(
                        _href(item, asset_key, candidate, boundary, origin),
                        position + 1,
                        *_stac_band(item, asset_key, candidate, position),
                    )
    raise ItemError(
        f"{label} has no asset or eo:bands name {name!r}; assets: {', '.join(sorted(item.assets)) or 'none'}"
    )


def _band_list(asset: pystac.Asset) -> list[dict]:
    bands = asset.extra_fields.get("eo:bands") or asset.extra_fields.get("bands") or []
    return [band for band in bands if isinstance(band, dict)] if isinstance(bands, list) else []


def band_names_of(assets: Any) -> tuple[set[str], set[str]]:
    """(asset keys, ``eo:bands`` and ``bands`` names) of an item's raw ``assets`` JSON."""
    if not isinstance(assets, Mapping):
        return set(), set()
    keys = {key for key in assets if isinstance(key, str)}
    names = set()
    for asset in assets.values():
        for field in ("eo:bands", "bands"):
            bands = asset.get(field) if isinstance(asset, Mapping) else None
            for band in bands if isinstance(bands, list) else []:
                if isinstance(band, Mapping):
                    names |= {band.get(k) for k in ("name", "common_name", "eo:common_name")}
    return keys, {name for name in names if isinstance(name, str)}


def _stac_band(item: pystac.Item, key: str, asset: pystac.Asset, position: int) -> tuple[int | float | None, float, float]:
    """Nodata, scale and offset of band ``position`` from the raster extension (or STAC 1.1 ``bands``)."""
    nodata, scale, offset = None, 1.0, 0.0
    for field in ("raster:bands", "bands"):
        bands = asset.extra_fields.get(field) or []
        if isinstance(bands, list) and position < len(bands) and isinstance(bands[position], dict):
            band = bands[position]
            if nodata is None and band.get("nodata") is not None:
                nodata = _nodata_number(item, key, field, band["nodata"])
            scale = _scaling(item, key, field, band, "scale", scale)
            offset = _scaling(item, key, field, band, "offset", offset)
    value = asset.extra_fields.get("nodata")
    if nodata is None and value is not None:
        nodata = _nodata_number(item, key, "nodata", value)
    return nodata, scale, offset


def _scaling(item: pystac.Item, key: str, field: str, band: dict, name: str, default: float) -> float:
    value = band.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ItemError(f"{item_label(item)}: asset {key!r} has {field} {name} {value!r}; expected a finite number")
    return float(value)


def _nodata_number(item: pystac.Item, key: str, field: str, value) -> int | float:
    """A nodata value as a number; the raster extension writes non-finite ones as the
    strings "nan", "inf" and "-inf"."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    raise ItemError(f"{item_label(item)}: asset {key!r} has {field} nodata {value!r}; expected a number")


def _href(item: pystac.Item, key: str, asset: pystac.Asset, boundary: TrustBoundary, origin: str) -> str:
    href = asset.get_absolute_href() or asset.href
    if not href or not isinstance(href, str):
        raise ItemError(f"{item_label(item)}: asset {key!r} has no href")
    return boundary.check(href, origin, f"asset {key!r} of {item_label(item)}", ItemError)
