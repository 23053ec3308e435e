"""STAC sources: a static catalog on disk or behind a URL, and a STAC API that answers /search.

Both turn items into `Scene`s the same way and read assets with `read_bands`: a band is
an asset key, or the ``name`` / ``common_name`` of an entry in an asset's ``eo:bands``
(STAC 1.1 ``bands``). Nodata comes from the file, else from ``raster:bands[].nodata``.
"""

from __future__ import annotations

import importlib
import math
import os
import urllib.parse
import urllib.request
from typing import Iterator, Sequence

import pystac
import shapely
from shapely.geometry import mapping, shape

from tfchips import __version__
from tfchips.errors import CatalogError, ItemError
from tfchips.grid import Tile
from tfchips.sources.base import (
    Pixels,
    Scene,
    SceneQuery,
    Source,
    as_utc,
    first_line,
    redact_text,
    redact_url,
    sorted_scenes,
)
from tfchips.sources.raster import BandRef, read_bands
from tfchips.sources.retry import TRANSIENT_STATUS, RetryPolicy, TransientError, retry_after_seconds, with_retries

# APIs whose asset URLs must be signed before reading, and the optional package that signs them.
SIGNERS = {"planetarycomputer.microsoft.com": "planetary_computer"}


def scene_from_item(item: pystac.Item) -> Scene:
    """The `Scene` of a STAC item: its id, datetime (or start_datetime) and ``eo:cloud_cover``."""
    label = _item_label(item)
    when = item.datetime or item.common_metadata.start_datetime
    if when is None:
        raise ItemError(f"{label} has no datetime")
    cloud = item.properties.get("eo:cloud_cover")
    number = isinstance(cloud, (int, float)) and not isinstance(cloud, bool)
    if cloud is not None and not (number and math.isfinite(cloud)):
        raise ItemError(f"{label} has eo:cloud_cover {cloud!r}; expected a number of percent")
    return Scene(
        id=item.id,
        datetime=as_utc(when),
        cloud_cover=None if cloud is None else float(cloud),
        handle=item,
    )


def band_refs(item: pystac.Item, names: Sequence[str]) -> list[BandRef]:
    """Where each named band of ``item`` lives: asset keys first, then ``eo:bands`` names."""
    return [_band_ref(item, name) for name in names]


def read_item(item: pystac.Item, names: Sequence[str], tile: Tile, resampling: str) -> Pixels:
    """The named bands of a STAC item on the tile grid."""
    return read_bands(band_refs(item, names), tile, resampling, label=_item_label(item))


class _ItemSource(Source):
    """Reading is the same for every STAC source; only finding items differs."""

    def read(self, scene: Scene, bands: Sequence[str], tile: Tile, resampling: str = "nearest") -> Pixels:
        return read_item(scene.handle, bands, tile, resampling)


class StaticCatalog(_ItemSource):
    """Every item under a ``catalog.json`` or ``collection.json`` (a path or URL), held in memory.

    ``collection``, when given, keeps only the items of that collection id.
    """

    def __init__(self, href: str, collection: str | None = None) -> None:
        self.name = href
        self._scenes: list[Scene] = []
        footprints = []
        for item in _walk(_catalog_file(href)):
            if collection is not None and item.collection_id != collection:
                continue
            self._scenes.append(scene_from_item(item))
            footprints.append(_footprint(item))
        if collection is not None and not self._scenes:
            raise CatalogError(f"{href}: no items in collection {collection!r}")
        self._tree = shapely.STRtree(footprints)

    def __len__(self) -> int:
        return len(self._scenes)

    def search(self, tile: Tile, query: SceneQuery) -> list[Scene]:
        hits = self._tree.query(tile.geometry, predicate="intersects")
        return sorted_scenes([s for s in (self._scenes[i] for i in hits) if query.accepts(s.datetime, s.cloud_cover)])


class StacApi(_ItemSource):
    """A STAC API (Earth Search, Planetary Computer, ...) searched once per tile with pystac-client."""

    def __init__(self, url: str, collection: str | None = None) -> None:
        import pystac_client
        from pystac_client.conformance import ConformanceClasses
        from pystac_client.stac_api_io import StacApiIO

        self.name = url
        self._collection = collection
        signer = _signer(url)
        policy = RetryPolicy.from_environment()
        # Retries are ours (`with_retries`), so that Retry-After and truncated bodies count too.
        stac_io = StacApiIO(timeout=policy.timeout, max_retries=None)
        stac_io.session.hooks["response"].append(_refuse_transient_status)
        try:
            self._client = with_retries(
                lambda: pystac_client.Client.open(url, stac_io=stac_io, timeout=policy.timeout, modifier=signer),
                policy,
                what=f"opening {redact_url(url)}",
            )
        except Exception as error:  # requests, APIError, STACTypeError: all mean "not usable"
            raise CatalogError(redact_text(f"{url}: cannot open the STAC API ({first_line(error)})")) from None
        if not self._client.conforms_to(ConformanceClasses.ITEM_SEARCH):
            raise CatalogError(f"{url}: not a STAC API with item search (no /search conformance)")
        self._server_query = self._client.conforms_to(ConformanceClasses.QUERY)

    def search(self, tile: Tile, query: SceneQuery) -> list[Scene]:
        params: dict = {"intersects": mapping(tile.geometry)}
        if self._collection is not None:
            params["collections"] = [self._collection]
        if query.start is not None or query.end is not None:
            params["datetime"] = f"{_iso(query.start)}/{_iso(query.end)}"
        if query.max_cloud is not None and self._server_query:
            params["query"] = {"eo:cloud_cover": {"lte": query.max_cloud}}
        try:
            items = with_retries(
                lambda: list(self._client.search(**params).items()), what=f"searching {redact_url(self.name)}"
            )
        except Exception as error:
            message = f"{self.name}: search failed for tile {tile.key} ({first_line(error)})"
            raise CatalogError(redact_text(message)) from None
        # Filter again here: servers differ on open intervals and some ignore `query`.
        scenes = [scene_from_item(item) for item in items]
        return sorted_scenes([s for s in scenes if query.accepts(s.datetime, s.cloud_cover)])


def _refuse_transient_status(response, *args, **kwargs) -> None:
    """A requests hook: a 429 or 5xx answer becomes a `TransientError` that keeps its Retry-After."""
    if response.status_code in TRANSIENT_STATUS:
        response.close()
        raise TransientError(
            f"HTTP {response.status_code} from {response.url}", retry_after_seconds(response.headers.get("Retry-After"))
        )


class _HttpStacIO(pystac.stac_io.DefaultStacIO):
    """pystac's reader with a timeout on HTTP(S) reads; `with_retries` around it retries them."""

    def read_text_from_href(self, href: str) -> str:
        if not href.startswith(("http://", "https://")):
            return super().read_text_from_href(href)
        request = urllib.request.Request(href, headers={"User-Agent": f"tfchips/{__version__}", **self.headers})
        with urllib.request.urlopen(request, timeout=RetryPolicy.from_environment().timeout) as response:
            return response.read().decode("utf-8")


def _signer(url: str):
    """The function that signs asset URLs of this API in place, if it needs one (see `SIGNERS`)."""
    package = SIGNERS.get(urllib.parse.urlparse(url).hostname or "")
    if package is None:
        return None
    try:
        return importlib.import_module(package).sign_inplace
    except ImportError:
        raise CatalogError(
            f"{url}: the assets of this API need signed URLs; pip install {package.replace('_', '-')}"
        ) from None


def _catalog_file(href: str) -> str:
    """The catalog.json or collection.json to open for a path, folder or URL."""
    if "://" in href:
        return href
    if os.path.isdir(href):
        for name in ("catalog.json", "collection.json"):
            if os.path.isfile(os.path.join(href, name)):
                return os.path.join(href, name)
        raise CatalogError(f"{href}: folder has no catalog.json or collection.json")
    if not os.path.exists(href):
        raise CatalogError(f"{href}: no such catalog file")
    return href


def _walk(href: str) -> Iterator[pystac.Item]:
    """Items under a catalog, depth first, read one file at a time so errors can name it.

    Each catalog and item file is read once, however many links lead to it: a child link
    back up the tree would otherwise be followed forever.
    """
    root = _read(href, CatalogError)
    if isinstance(root, pystac.Item):
        raise CatalogError(f"{href}: is a STAC item, not a catalog or collection")
    seen = {_absolute(href)}
    stack = [root]
    while stack:
        catalog = stack.pop()
        for link in catalog.links:
            if link.rel not in ("item", "child"):
                continue
            target = link.get_absolute_href()
            key = _absolute(target)
            if key in seen:
                continue
            seen.add(key)
            if link.rel == "item":
                item = _read(target, ItemError)
                if not isinstance(item, pystac.Item):
                    raise ItemError(f"{target}: linked as an item but is a {type(item).__name__}")
                yield item
            else:
                child = _read(target, CatalogError)
                if isinstance(child, pystac.Catalog):
                    stack.append(child)


def _absolute(href: str) -> str:
    """One spelling per file: local paths made absolute and normalised, URLs as they are."""
    return href if "://" in href else os.path.normpath(os.path.abspath(href))


def _read(href: str, error_type: type[Exception]):
    try:
        if href.startswith(("http://", "https://")):
            read = lambda: pystac.read_file(href, stac_io=_HttpStacIO())  # noqa: E731
            return with_retries(read, what=f"reading {redact_url(href)}")
        return pystac.read_file(href)
    except FileNotFoundError:
        raise error_type(f"{href}: no such file") from None
    except Exception as error:  # urllib, JSON and STAC errors alike
        raise error_type(redact_text(f"{href}: cannot read STAC JSON ({first_line(error)})")) from None


def _footprint(item: pystac.Item) -> shapely.Geometry:
    if item.geometry is not None:
        return shapely.make_valid(shape(item.geometry))
    if item.bbox is not None:
        box = item.bbox
        # A 3D bbox is (west, south, bottom, east, north, top).
        return (
            shapely.box(box[0], box[1], box[2], box[3])
            if len(box) == 4
            else shapely.box(box[0], box[1], box[3], box[4])
        )
    raise ItemError(f"{_item_label(item)} has neither geometry nor bbox")


def _band_ref(item: pystac.Item, name: str) -> BandRef:
    label = _item_label(item)
    asset = item.assets.get(name)
    if asset is not None:
        count = max(len(_band_list(asset)), 1)
        if count > 1:
            names = ", ".join(str(b.get("common_name") or b.get("name")) for b in _band_list(asset))
            raise ItemError(f"{label}: asset {name!r} has {count} bands; ask for one of them by name ({names})")
        return BandRef(_href(item, name, asset), 1, _stac_nodata(item, name, asset, 0))
    for key in ("name", "common_name", "eo:common_name"):
        for asset_key, candidate in item.assets.items():
            for position, band in enumerate(_band_list(candidate)):
                if band.get(key) == name:
                    return BandRef(
                        _href(item, asset_key, candidate),
                        position + 1,
                        _stac_nodata(item, asset_key, candidate, position),
                    )
    raise ItemError(
        f"{label} has no asset or eo:bands name {name!r}; assets: {', '.join(sorted(item.assets)) or 'none'}"
    )


def _band_list(asset: pystac.Asset) -> list[dict]:
    return asset.extra_fields.get("eo:bands") or asset.extra_fields.get("bands") or []


def _stac_nodata(item: pystac.Item, key: str, asset: pystac.Asset, position: int) -> int | float | None:
    """Nodata of band ``position`` from the raster extension (or STAC 1.1 ``bands``)."""
    for field in ("raster:bands", "bands"):
        bands = asset.extra_fields.get(field) or []
        if position < len(bands) and bands[position].get("nodata") is not None:
            return _nodata_number(item, key, field, bands[position]["nodata"])
    value = asset.extra_fields.get("nodata")
    return None if value is None else _nodata_number(item, key, "nodata", value)


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
    raise ItemError(f"{_item_label(item)}: asset {key!r} has {field} nodata {value!r}; expected a number")


def _href(item: pystac.Item, key: str, asset: pystac.Asset) -> str:
    href = asset.get_absolute_href() or asset.href
    if not href:
        raise ItemError(f"{_item_label(item)}: asset {key!r} has no href")
    return href


def _item_label(item: pystac.Item) -> str:
    href = item.get_self_href()
    return f"item {item.id!r}" + (f" ({href})" if href else "")


def _iso(moment) -> str:
    return ".." if moment is None else moment.isoformat().replace("+00:00", "Z")
