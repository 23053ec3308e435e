"""Imagery for one tile: find the scenes that cover it, read them onto its grid, composite.

`imagery_for_tile` turns an `ImageryRequest` (see `tfchips.products`, which also says how
products merge and stack and how options become requests) and a `Tile` into a
`TileImagery`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from tfchips.composite import PRIORITY_METHODS, composite, scene_order
from tfchips.errors import ConfigError
from tfchips.grid import Tile
from tfchips.products import ImageryRequest, Product
from tfchips.sources import Scene, SceneQuery, Source, TrustBoundary, open_source
from tfchips.sources.masks import bits_set
from tfchips.sources.warp import fits_dtype

__all__ = ["ImageryRequest", "Product", "TileImagery", "check_bands", "imagery_for_tile"]


@dataclass(frozen=True)
class TileImagery:
    """Composited imagery on a tile's grid.

    ``data`` is (bands, rows, cols), ``nodata`` where a band has no valid value; ``valid``
    (rows, cols) is True where every band has one; ``scenes`` are the ids of the scenes
    that gave pixels, the main product's then each stacked product's: most preferred
    first for a priority method, in time order for ``median``. ``scale_offset`` is one
    (scale, offset) per band: applied to the values unless ``scaled`` is False, in which
    case readers should apply them. ``reason`` says why a tile has no valid pixel.

    ``provenance`` (products, rows, cols) says where each pixel came from, one layer for
    the main product then one per stacked product, of the kind ``provenance_kinds`` names:
    ``scene``, the 1-based position in ``scenes`` of the scene taken (priority methods), or
    ``count``, how many scenes were valid there (``median``); 0 where none. ``scene_dates``
    are the acquisition times of ``scenes``.
    """

    data: np.ndarray
    valid: np.ndarray
    nodata: int | float
    band_names: tuple[str, ...]
    scenes: tuple[str, ...]
    valid_fraction: float
    scale_offset: tuple[tuple[float, float], ...] = ()
    scaled: bool = True
    reason: str | None = None
    provenance: np.ndarray | None = None
    provenance_kinds: tuple[str, ...] = ()
    scene_dates: tuple[datetime, ...] = ()


def imagery_for_tile(tile: Tile, request: ImageryRequest) -> TileImagery:
    """Search, read and composite the imagery of ``request`` on ``tile`` (its CRS, transform, shape).

    Sources are opened once per process (see `open_source`). Raises a `TfchipsError`
    subclass that names the catalog, item or file when something cannot be used.
    """
    scaled = not request.stored_values
    parts = [_composite_part(tile, settings, scaled) for settings in (request, *request.stack)]
    return _assemble(parts, request, tile)


def check_bands(request: ImageryRequest, boundary: TrustBoundary | None = None) -> None:
    """Open every product's catalog and refuse, once and up front, a band or mask asset
    that no item of it has, listing what its items offer.

    Sources that cannot tell without reading every item (a STAC API whose collection
    declares no ``item_assets``, EarthOne) are not checked here.

    Raises:
        ConfigError: a band or mask asset is in no item; names the catalog and the parameter.
    """
    stacked = request.stack
    for product in (request, *request.merge, *stacked, *(m for s in stacked for m in s.merge)):
        source = open_source(product.catalog, product.collection, boundary)
        offered = source.band_names()
        if offered is None:
            continue
        assets, named = offered
        asked = [(band, "bands") for band in product.bands]
        asked += [(asset, _mask_parameter(product, asset)) for asset in product.pixel_masks]
        for band, parameter in asked:
            if band not in assets and band not in named:
                raise ConfigError(
                    f"{source.name}: no item has {band!r} (`{parameter}`); asset keys:"
                    f" {', '.join(sorted(assets)) or 'none'}; eo:bands names: {', '.join(sorted(named)) or 'none'}"
                )


def _mask_parameter(product: Product, asset: str) -> str:
    if asset == product.mask_asset:
        return "mask_asset"
    return "mask_bits" if product.mask_bits is not None and asset == product.mask_bits[0] else "cloud_prob_asset"


@dataclass(frozen=True)
class _Part:
    """The composite of the main product or of one stacked product; ``data`` is None when
    no scene covers the tile."""

    data: np.ndarray | None
    valid: np.ndarray
    nodata: int | float | None
    bands: tuple[str, ...]
    scenes: tuple[str, ...]
    scale_offset: tuple[tuple[float, float], ...] = ()
    reason: str | None = None
    # Per pixel: the 1-based position in ``scenes`` of the scene taken, or the count of valid scenes.
    provenance: np.ndarray | None = None
    provenance_kind: str = "scene"
    dates: tuple[datetime, ...] = ()


@dataclass(frozen=True)
class _Candidate:
    scene: Scene
    product: Product
    source: Source


def _composite_part(tile: Tile, settings: ImageryRequest, scaled: bool) -> _Part:
    """Composite of one product and the products merged into it; ``scaled`` applies scale and offset."""
    products = (settings, *settings.merge)
    candidates = _candidates(tile, products)
    empty = np.zeros(tile.shape, dtype=bool)
    priority = settings.method in PRIORITY_METHODS
    kind = "scene" if priority else "count"
    if not candidates:
        reason = _no_scene_reason(tile, products)
        return _Part(None, empty, None, settings.bands, (), reason=reason, provenance_kind=kind)
    scenes = [c.scene for c in candidates]
    if priority:
        method, reference = settings.method, settings.reference
        if method == "closest" and reference is None:
            method = "latest"  # no date to aim at: the newest scene is the one closest to now
        order = scene_order(
            method, [s.datetime for s in scenes], [s.cloud_cover for s in scenes], [s.id for s in scenes], reference
        )
    else:
        order = range(len(candidates))
    arrays, masks, read = [], [], []
    nodata, scale_offset = None, ()
    covered = empty.copy()
    for index in order:
        data, valid, declared, declared_scaling = _read_scene(candidates[index], tile, settings.resampling, scaled)
        scale_offset = scale_offset or declared_scaling
        arrays.append(data)
        masks.append(valid)
        read.append(candidates[index].scene.id)
        nodata = declared if nodata is None else nodata
        if priority:
            covered |= valid
            # Later scenes rank lower everywhere: once every pixel is filled they cannot show.
            if covered.all():
                break
    dtype = np.result_type(*(a.dtype for a in arrays))
    stack = np.stack([a.astype(dtype, copy=False) for a in arrays])
    fill = nodata if nodata is not None and fits_dtype(nodata, dtype) else 0
    result = composite(stack, np.stack(masks), settings.method, order=range(len(arrays)), nodata=fill)
    used = tuple(scene_id for scene_id, flag in zip(read, result.used) if flag)
    dates = tuple(candidates[index].scene.datetime for index, flag in zip(order, result.used) if flag)
    provenance = result.provenance
    if priority:
        # Stack index (-1 where none) -> 1-based position among the scenes used (0 where none).
        provenance = np.concatenate([[0], np.cumsum(result.used)])[provenance + 1]
    return _Part(
        result.data, result.valid, nodata, settings.bands, used, scale_offset,
        provenance=provenance, provenance_kind=kind, dates=dates,
    )


def _no_scene_reason(tile: Tile, products: Sequence[Product]) -> str:
    """Why no scene is left for ``tile``: none covers it, or the filters removed how many."""
    found = sum(len(open_source(p.catalog, p.collection).search(tile, SceneQuery())) for p in products)
    if not found:
        return "no scene covers the tile"
    words = []
    for product in products:
        for name in ("start", "end", "max_cloud"):
            value = getattr(product, name)
            if value is not None:
                shown = f"{value:g}" if isinstance(value, float) else value.isoformat().replace("+00:00", "Z")
                words.append(f"`{name}={shown}`")
    return f"no scene after filters: 0 of {found} passed {' '.join(dict.fromkeys(words))}"


def _candidates(tile: Tile, products: Sequence[Product]) -> list[_Candidate]:
    """Scenes of every product that pass its filters, each scene once, in time order."""
    found: dict[tuple[str, str], _Candidate] = {}
    for product in products:
        source = open_source(product.catalog, product.collection)
        for scene in source.search(tile, product.query):
            found.setdefault((source.name, scene.id), _Candidate(scene, product, source))
    return sorted(found.values(), key=lambda c: (c.scene.datetime, c.scene.id, c.source.name))


def _read_scene(
    candidate: _Candidate, tile: Tile, resampling: str, scaled: bool
) -> tuple[np.ndarray, np.ndarray, float | None, tuple[tuple[float, float], ...]]:
    """Band values (bands, rows, cols), pixel validity (rows, cols), declared nodata and
    (scale, offset) per band of one scene; with ``scaled`` the values have them applied."""
    scene, product, source = candidate.scene, candidate.product, candidate.source
    pixels, masks = source.read_with_masks(scene, product.bands, product.pixel_masks, tile, resampling)
    valid = ~np.ma.getmaskarray(pixels.values).any(axis=0)
    values = np.ma.getdata(pixels.values)
    scale_offset = pixels.scale_offset or ((1.0, 0.0),) * len(product.bands)
    if scaled and any(pair != (1.0, 0.0) for pair in scale_offset):
        scale, offset = (np.array(column, dtype=np.float64)[:, np.newaxis, np.newaxis] for column in zip(*scale_offset))
        values = (values * scale + offset).astype(np.float32)
    if product.pixel_masks:
        valid &= ~np.ma.getmaskarray(masks).any(axis=0)
        layers = iter(np.ma.getdata(masks))
        if product.mask_asset is not None:
            valid &= ~np.isin(next(layers), product.mask_values)
        if product.mask_bits is not None:
            valid &= ~bits_set(next(layers), product.mask_bits[1])
        if product.cloud_prob_asset is not None:
            valid &= next(layers) <= product.cloud_prob_threshold
    return values, valid, pixels.nodata, scale_offset


def _assemble(parts: Sequence[_Part], request: ImageryRequest, tile: Tile) -> TileImagery:
    read = [p.data.dtype for p in parts if p.data is not None]
    if request.dtype is not None:
        dtype = np.dtype(request.dtype)
    else:
        dtype = np.result_type(*read) if read else np.dtype(np.float32)
    if request.nodata is not None:
        nodata = request.nodata
    else:
        nodata = next((p.nodata for p in parts if p.nodata is not None), 0)
    if not fits_dtype(nodata, dtype):
        raise ConfigError(f"nodata {nodata} does not fit the output dtype {dtype}; set `nodata` or `dtype`")
    nodata = dtype.type(nodata).item()
    arrays = []
    for part in parts:
        if part.data is None:
            arrays.append(np.full((len(part.bands), *tile.shape), nodata, dtype=dtype))
        else:
            _check_range(part, dtype, tile)
            data = part.data.astype(dtype)
            data[:, ~part.valid] = nodata
            arrays.append(data)
    valid = np.logical_and.reduce([p.valid for p in parts])
    layers, before = [], 0
    for part in parts:
        layer = np.zeros(tile.shape, np.int64) if part.provenance is None else part.provenance
        # Positions count from the start of the tile's scenes: the stacked products' come after the main one's.
        layers.append(np.where(layer > 0, layer + before, 0) if part.provenance_kind == "scene" else layer)
        before += len(part.scenes)
    reason = next((p.reason for p in parts if p.reason is not None), None)
    if reason is None and not valid.any():
        reason = "no valid pixel in any scene"
    return TileImagery(
        data=np.concatenate(arrays),
        valid=valid,
        nodata=nodata,
        band_names=request.band_names,
        scenes=tuple(scene for part in parts for scene in part.scenes),
        valid_fraction=float(valid.mean()),
        scale_offset=tuple(pair for p in parts for pair in (p.scale_offset or ((1.0, 0.0),) * len(p.bands))),
        scaled=not request.stored_values,
        reason=reason,
        provenance=np.stack(layers),
        provenance_kinds=tuple(p.provenance_kind for p in parts),
        scene_dates=tuple(moment for part in parts for moment in part.dates),
    )


def _check_range(part: _Part, dtype: np.dtype, tile: Tile) -> None:
    """Refuse valid values that ``dtype`` cannot hold, which numpy would wrap around."""
    if np.can_cast(part.data.dtype, dtype, "safe"):
        return
    values = part.data[:, part.valid]
    if values.size == 0:
        return
    low, high = values.min().item(), values.max().item()
    if dtype.kind == "f":
        fits = fits_dtype(low, dtype) and fits_dtype(high, dtype)
    else:
        fits = np.iinfo(dtype).min <= low and high <= np.iinfo(dtype).max
    if not fits:
        raise ConfigError(
            f"tile {tile.key}: bands {','.join(part.bands)} of scenes {', '.join(part.scenes)} hold values"
            f" from {low} to {high}, beyond the range of `dtype` {dtype}; choose a wider `dtype`"
        )


