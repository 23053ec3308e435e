"""Imagery for one tile: find the scenes that cover it, read them onto its grid, composite.

`ImageryRequest` holds every imagery option as plain, picklable values; `imagery_for_tile`
turns a request and a `Tile` into a `TileImagery`. Several products combine two ways:

- ``merge``: more products whose scenes join the main product's candidate list, so two
  sensors fill each other's gaps (same bands, one composite);
- ``stack``: products composited on their own, with their own bands and method, whose
  bands are appended after the main product's (a DEM or a model output beside imagery).

On the command line each extra product is one ``--merge`` or ``--stack`` option holding
the product's own settings as ``name=value`` words, named like the options themselves::

    --merge "collection=landsat-c2-l2 bands=blue,green,red,nir08 mask-asset=qa_pixel mask-values=..."
    --stack "catalog=dem/catalog.json bands=elevation resampling=bilinear"

In YAML they are lists of mappings with the same keys. A merged product inherits every
setting of the main product it does not set (setting ``catalog`` drops the inherited
``collection``, ``mask-asset`` the inherited ``mask-values``, ``cloud-prob-asset`` the
inherited threshold; ``name=`` with no value unsets). A stacked product inherits nothing.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from tfchips.composite import METHODS, PRIORITY_METHODS, composite, scene_order
from tfchips.errors import ConfigError
from tfchips.grid import Tile
from tfchips.sources import RESAMPLING, Scene, SceneQuery, Source, TrustBoundary, open_source
from tfchips.sources.base import as_utc
from tfchips.sources.masks import bits_set, mask_bits, mask_classes
from tfchips.sources.raster import fits_dtype

# Settings that describe where scenes come from and which pixels count.
PRODUCT_SETTINGS = (
    "catalog",
    "collection",
    "bands",
    "start",
    "end",
    "max_cloud",
    "mask_asset",
    "mask_values",
    "mask_bits",
    "cloud_prob_asset",
    "cloud_prob_threshold",
)
# Settings of a composite; a stacked product may set them, a merged one shares the main one's.
COMPOSITE_SETTINGS = ("method", "reference_date", "resampling")
# Settings of the whole output.
OUTPUT_SETTINGS = ("nodata", "dtype", "stored_values")
# Setting the first of a pair in a merged product stops it inheriting the second.
_INHERITED_WITH = {"catalog": "collection", "mask_asset": "mask_values", "cloud_prob_asset": "cloud_prob_threshold"}


@dataclass(frozen=True)
class Product:
    """One imagery product and its filters.

    ``start`` and ``end`` bound acquisition times (inclusive, UTC); ``max_cloud`` is the
    scene-level ceiling in percent. A pixel of a scene is masked where ``mask_asset``
    holds one of ``mask_values`` (e.g. Sentinel-2 SCL classes 3, 8, 9, 10), where the
    asset of ``mask_bits`` (asset, bit numbers) has any of those bits set (Landsat
    QA_PIXEL), or where ``cloud_prob_asset`` exceeds ``cloud_prob_threshold`` (in that
    asset's units). Names and presets: `tfchips.sources.masks`.
    """

    catalog: str
    bands: tuple[str, ...]
    collection: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    max_cloud: float | None = None
    mask_asset: str | None = None
    mask_values: tuple[int, ...] = ()
    mask_bits: tuple[str, tuple[int, ...]] | None = None
    cloud_prob_asset: str | None = None
    cloud_prob_threshold: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "bands", tuple(self.bands))
        object.__setattr__(self, "mask_values", tuple(self.mask_values))
        if self.mask_bits is not None:
            object.__setattr__(self, "mask_bits", _wrapped(mask_bits, "mask_bits", self.mask_bits, ""))
        if not isinstance(self.catalog, str) or not self.catalog:
            raise ConfigError("`catalog` is required: a catalog.json, a STAC API URL or earthone:PRODUCT_ID")
        if not self.bands or not all(isinstance(b, str) and b for b in self.bands):
            raise ConfigError(f"{self.catalog}: `bands` needs at least one band name, got {self.bands!r}")
        if self.start is not None and self.end is not None and self.start > self.end:
            raise ConfigError(f"`start` {self.start.isoformat()} is after `end` {self.end.isoformat()}")
        if self.max_cloud is not None and not 0 <= self.max_cloud <= 100:
            raise ConfigError(f"`max_cloud` must be a percentage from 0 to 100, got {self.max_cloud}")
        if (self.mask_asset is None) != (not self.mask_values):
            raise ConfigError("`mask_asset` and `mask_values` go together: name the asset and the classes to mask")
        if (self.cloud_prob_asset is None) != (self.cloud_prob_threshold is None):
            raise ConfigError("`cloud_prob_asset` and `cloud_prob_threshold` go together")

    @property
    def query(self) -> SceneQuery:
        return SceneQuery(self.start, self.end, self.max_cloud)

    @property
    def pixel_masks(self) -> tuple[str, ...]:
        """Assets read (with nearest resampling) to mask pixels."""
        bits = None if self.mask_bits is None else self.mask_bits[0]
        return tuple(a for a in (self.mask_asset, bits, self.cloud_prob_asset) if a is not None)


@dataclass(frozen=True)
class ImageryRequest(Product):
    """Everything the imagery options describe: the main product, how to composite it,
    the products merged into it or stacked beside it, and the output's nodata and dtype.

    ``reference_date`` is for ``closest``; when it is not set, the middle of
    ``start``..``end`` is used, else whichever of them is set, else the newest scene wins.
    ``nodata`` defaults to the nodata of the scenes (0 when they declare none); ``dtype``
    to the scenes' own (float32 for a tile no scene covers). Values are converted to
    ``dtype`` as numpy converts them (a float is truncated toward zero), but never wrapped
    around: a tile holding a valid value outside the range of ``dtype`` fails with
    `ConfigError`, and so does a request whose ``nodata`` does not fit its ``dtype``.

    Bands whose STAC ``raster:bands`` declare a ``scale`` or ``offset`` are read as
    ``stored * scale + offset`` in float32 (Landsat Collection 2 reflectance, say);
    ``stored_values`` keeps the stored numbers, and the chips then carry the scale and
    offset for readers to apply. Either way the manifest records them per tile.
    """

    method: str = "closest"
    reference_date: datetime | None = None
    resampling: str = "nearest"
    nodata: int | float | None = None
    dtype: str | None = None
    stored_values: bool = False
    merge: tuple[Product, ...] = ()
    stack: tuple[ImageryRequest, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "merge", tuple(self.merge))
        object.__setattr__(self, "stack", tuple(self.stack))
        if self.method not in METHODS:
            raise ConfigError(f"`method` must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.resampling not in RESAMPLING:
            raise ConfigError(f"`resampling` must be one of {', '.join(RESAMPLING)}, got {self.resampling!r}")
        if self.dtype is not None:
            _parse_dtype("dtype", self.dtype)
            if self.nodata is not None and not fits_dtype(self.nodata, np.dtype(self.dtype)):
                raise ConfigError(f"`nodata` {self.nodata} does not fit `dtype` {self.dtype}")
        for product in self.merge:
            if len(product.bands) != len(self.bands):
                raise ConfigError(
                    f"merged product {product.catalog} has {len(product.bands)} band(s) ({','.join(product.bands)})"
                    f" for the {len(self.bands)} of the main product ({','.join(self.bands)})"
                )
        for product in self.stack:
            if product.stack:
                raise ConfigError(f"stacked product {product.catalog} cannot stack further products")

    @property
    def reference(self) -> datetime | None:
        """The date ``closest`` aims at (see the class docstring)."""
        if self.reference_date is not None:
            return self.reference_date
        if self.start is not None and self.end is not None:
            return self.start + (self.end - self.start) / 2
        return self.end or self.start

    @property
    def band_names(self) -> tuple[str, ...]:
        """Names of the output bands: the main product's, then each stacked product's."""
        return self.bands + tuple(name for product in self.stack for name in product.bands)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> ImageryRequest:
        """A request from option values keyed by option name (``max_cloud`` or ``max-cloud``).

        Values may be strings as typed on the command line or YAML scalars and lists;
        None and empty tuples mean "not given", and keys of other options are ignored, so
        a whole job config can be passed. ``merge`` and ``stack`` take lists of
        ``"name=value ..."`` strings or of mappings. Raises `ConfigError`.
        """
        values = _normalised(options)
        settings = _parse(values, PRODUCT_SETTINGS + COMPOSITE_SETTINGS + OUTPUT_SETTINGS, "")
        missing = [f"`{name}`" for name in ("catalog", "bands") if name not in settings]
        if missing:
            raise ConfigError(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required for imagery")
        merge = tuple(_merged(settings, spec) for spec in _entries(values.get("merge"), "merge"))
        stack = tuple(_stacked(spec) for spec in _entries(values.get("stack"), "stack"))
        return cls(**settings, merge=merge, stack=stack)


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
    pixels = source.read(scene, product.bands, tile, resampling)
    valid = ~np.ma.getmaskarray(pixels.values).any(axis=0)
    values = np.ma.getdata(pixels.values)
    scale_offset = pixels.scale_offset or ((1.0, 0.0),) * len(product.bands)
    if scaled and any(pair != (1.0, 0.0) for pair in scale_offset):
        scale, offset = (np.array(column, dtype=np.float64)[:, np.newaxis, np.newaxis] for column in zip(*scale_offset))
        values = (values * scale + offset).astype(np.float32)
    if product.pixel_masks:
        # Class and probability rasters must never be interpolated.
        masks = source.read(scene, product.pixel_masks, tile, "nearest").values
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


# Option parsing: one parser per setting, shared by the CLI, YAML configs and product specs.


def _normalised(options: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(options, Mapping):
        raise ConfigError(f"imagery options must be a mapping of option names to values, got {type(options).__name__}")
    return {str(key).replace("-", "_"): value for key, value in options.items()}


def _given(value: Any) -> bool:
    return value is not None and not (isinstance(value, (tuple, list)) and len(value) == 0)


def _parse(values: Mapping[str, Any], names: Sequence[str], where: str) -> dict[str, Any]:
    """Parsed values of the ``names`` present in ``values``; ``where`` prefixes errors."""
    parsed = {}
    for name in names:
        if name in values and _given(values[name]):
            parsed[name] = _PARSERS[name](name, values[name], where)
    return parsed


def _entries(value: Any, option: str) -> list[tuple[str, dict[str, Any]]]:
    """(text for errors, settings) of each ``--merge`` / ``--stack`` entry."""
    if not _given(value):
        return []
    if isinstance(value, (str, Mapping)):
        value = [value]
    entries = []
    for entry in value:
        if isinstance(entry, Mapping):
            entries.append((f"`{option}` {dict(entry)}", _normalised(entry)))
            continue
        if not isinstance(entry, str):
            raise ConfigError(f"`{option}`: expected 'name=value ...' or a mapping, got {entry!r}")
        settings = {}
        try:
            words = shlex.split(entry)
        except ValueError as error:
            raise ConfigError(f"`{option}` {entry!r}: {error}") from None
        for word in words:
            name, equals, text = word.partition("=")
            if not equals or not name:
                raise ConfigError(f"`{option}` {entry!r}: {word!r} is not name=value")
            settings[name.replace("-", "_")] = text
        entries.append((f"`{option}` {entry!r}", settings))
    return entries


def _merged(main: Mapping[str, Any], entry: tuple[str, dict[str, Any]]) -> Product:
    where, settings = entry
    _check_names(settings, PRODUCT_SETTINGS, where)
    if "catalog" not in settings and "collection" not in settings:
        raise ConfigError(f"{where}: a merged product needs its own catalog= or collection=")
    inherited = {name: main[name] for name in PRODUCT_SETTINGS if name in main}
    for first, second in _INHERITED_WITH.items():
        if first in settings:
            inherited.pop(second, None)
    for name in settings:
        inherited.pop(name, None)
    own = _parse({k: v for k, v in settings.items() if v != ""}, PRODUCT_SETTINGS, where + ": ")
    return _built(Product, {**inherited, **own}, where)


def _stacked(entry: tuple[str, dict[str, Any]]) -> ImageryRequest:
    where, settings = entry
    _check_names(settings, PRODUCT_SETTINGS + COMPOSITE_SETTINGS + ("merge",), where)
    own = _parse({k: v for k, v in settings.items() if v != ""}, PRODUCT_SETTINGS + COMPOSITE_SETTINGS, where + ": ")
    if "catalog" not in own or "bands" not in own:
        raise ConfigError(f"{where}: a stacked product needs catalog= and bands=")
    merge = tuple(_merged(own, sub) for sub in _entries(settings.get("merge"), "merge"))
    return _built(ImageryRequest, {**own, "merge": merge}, where)


def _built(kind: type, settings: dict[str, Any], where: str):
    try:
        return kind(**settings)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None


def _check_names(settings: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    unknown = sorted(set(settings) - set(allowed))
    if unknown:
        names = ", ".join(n.replace("_", "-") for n in allowed)
        raise ConfigError(f"{where}: unknown setting {unknown[0].replace('_', '-')!r}; allowed: {names}")


def _fail(name: str, where: str, message: str) -> ConfigError:
    return ConfigError(f"{where}`{name}`: {message}")


def _parse_text(name: str, value: Any, where: str = "") -> str:
    if not isinstance(value, str):
        raise _fail(name, where, f"expected text, got {value!r}")
    return value.strip()


def _parse_names(name: str, value: Any, where: str = "") -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
        raise _fail(name, where, f"expected comma-separated names, got {value!r}")
    names = tuple(i.strip() for i in items if i.strip())
    if not names:
        raise _fail(name, where, "expected at least one name")
    return names


def _parse_number(name: str, value: Any, where: str = "") -> int | float:
    if isinstance(value, bool):
        raise _fail(name, where, f"expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        number = value
    else:
        try:
            number = float(str(value).strip())
        except ValueError:
            raise _fail(name, where, f"expected a number, got {value!r}") from None
        if number.is_integer():
            number = int(number)
    if isinstance(number, float) and math.isinf(number):
        raise _fail(name, where, f"expected a finite number, got {value!r}")
    return number


def _parse_percent(name: str, value: Any, where: str = "") -> float:
    number = float(_parse_number(name, value, where))
    if not 0 <= number <= 100:
        raise _fail(name, where, f"expected a percentage from 0 to 100, got {value!r}")
    return number


def _parse_moment(name: str, value: Any, where: str = "", end_of_day: bool = False) -> datetime:
    """A UTC datetime from a date or datetime (ISO 8601 text or a YAML value).

    A bare date means its first instant, or with ``end_of_day`` its last one, so that
    ``--end 2023-06-30`` includes scenes taken on June 30.
    """
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime.combine(value, time.max if end_of_day else time.min)
    elif isinstance(value, str):
        text = value.strip()
        try:
            if len(text) == 10:
                return _parse_moment(name, date.fromisoformat(text), where, end_of_day)
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise _fail(name, where, f"expected a date YYYY-MM-DD or an ISO 8601 datetime, got {value!r}") from None
    else:
        raise _fail(name, where, f"expected a date YYYY-MM-DD, got {value!r}")
    return as_utc(moment)


def _parse_choice(choices: Sequence[str]) -> Callable[[str, Any, str], str]:
    def parse(name: str, value: Any, where: str = "") -> str:
        if value not in choices:
            raise _fail(name, where, f"expected one of {', '.join(choices)}, got {value!r}")
        return value

    return parse


def _wrapped(parse: Callable[[Any], Any], name: str, value: Any, where: str) -> Any:
    """``parse(value)`` with its errors naming the option ``name`` after ``where``."""
    try:
        return parse(value)
    except ConfigError as error:
        raise _fail(name, where, str(error)) from None


def _parse_flag(name: str, value: Any, where: str = "") -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in ("true", "false", "yes", "no", "1", "0"):
        raise _fail(name, where, f"expected true or false, got {value!r}")
    return text in ("true", "yes", "1")


def _parse_dtype(name: str, value: Any, where: str = "") -> str:
    try:
        dtype = np.dtype(value)
    except TypeError:
        raise _fail(name, where, f"expected a numeric dtype such as uint16 or float32, got {value!r}") from None
    if dtype.kind not in "uif":
        raise _fail(name, where, f"expected a numeric dtype such as uint16 or float32, got {value!r}")
    return dtype.name


_PARSERS: dict[str, Callable[..., Any]] = {
    "catalog": _parse_text,
    "collection": _parse_text,
    "bands": _parse_names,
    "start": _parse_moment,
    "end": lambda name, value, where="": _parse_moment(name, value, where, end_of_day=True),
    "max_cloud": _parse_percent,
    "mask_asset": _parse_text,
    "mask_values": lambda name, value, where="": _wrapped(mask_classes, name, value, where),
    "mask_bits": lambda name, value, where="": _wrapped(mask_bits, name, value, where),
    "cloud_prob_asset": _parse_text,
    "cloud_prob_threshold": _parse_number,
    "method": _parse_choice(METHODS),
    "reference_date": _parse_moment,
    "resampling": _parse_choice(RESAMPLING),
    "nodata": _parse_number,
    "dtype": _parse_dtype,
    "stored_values": lambda name, value, where="": _parse_flag(name, value, where),
}
