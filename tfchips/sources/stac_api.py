"""A STAC API that answers /search (Earth Search, Planetary Computer, pgstac, ...).

Searches cover blocks of tiles (see `tfchips.sources.search_blocks`): a job asks the API
once per ``TFCHIPS_STAC_SEARCH_BLOCK`` x ``TFCHIPS_STAC_SEARCH_BLOCK`` tiles, pages of
``TFCHIPS_STAC_PAGE_LIMIT`` items, and each process keeps the answers of its last
`CACHED_BLOCKS` blocks. Items are read as a static catalog's are (`_ItemSource`).
"""

from __future__ import annotations

import functools
import logging
import importlib
import urllib.parse

import pystac
import shapely
from shapely.geometry import mapping

from tfchips.errors import CatalogError, ItemError
from tfchips.grid import Tile
from tfchips.sources.base import Scene, SceneQuery, first_line, redact_text, redact_url
from tfchips.sources.items import band_names_of, scene_from_item
from tfchips.sources.limits import CatalogLimits
from tfchips.sources.retry import RetryPolicy, with_retries
from tfchips.sources.search_blocks import BlockItems, block_of, search_area
from tfchips.sources.stac import _bounded, _footprint, _ItemSource, _masked
from tfchips.sources.trust import TrustBoundary

logger = logging.getLogger(__name__)

# APIs whose asset URLs must be signed before reading, and the optional package that signs them.
SIGNERS = {"planetarycomputer.microsoft.com": "planetary_computer"}
# Block searches each process keeps per API and query: a worker's tiles come in grid order,
# so it needs the block it is in and, at block edges, a few neighbours.
CACHED_BLOCKS = 16


class StacApi(_ItemSource):
    """A STAC API (Earth Search, Planetary Computer, ...) searched once per block of tiles with
    pystac-client.

    ``boundary`` (what its items may name, and which hosts its pages may come from) and
    ``limits`` default to the environment's; a search that pages past ``max_pages`` fails.
    ``searches`` counts the searches sent (a search of several pages counts once).
    """

    def __init__(
        self,
        url: str,
        collection: str | None = None,
        boundary: TrustBoundary | None = None,
        limits: CatalogLimits | None = None,
    ) -> None:
        import pystac_client
        from pystac_client.conformance import ConformanceClasses
        from pystac_client.stac_api_io import StacApiIO

        self.name = url
        self.boundary = (boundary or TrustBoundary.from_environment()).trusting(url)
        self._limits = limits or CatalogLimits.from_environment()
        self._collection = collection
        signer = _signer(url)
        policy = RetryPolicy.from_environment()
        # Retries are ours (`with_retries`), so that Retry-After and truncated bodies count too.
        stac_io = StacApiIO(timeout=policy.timeout, max_retries=None)
        _bounded(stac_io.session, url, self.boundary, self._limits, policy)
        try:
            self._client = with_retries(
                lambda: pystac_client.Client.open(url, stac_io=stac_io, timeout=policy.timeout, modifier=signer),
                policy,
                what=f"opening {redact_url(url)}",
            )
        except Exception as error:  # requests, APIError, STACTypeError: all mean "not usable"
            raise CatalogError(_masked(f"{url}: cannot open the STAC API ({first_line(error)})", url)) from None
        if not self._client.conforms_to(ConformanceClasses.ITEM_SEARCH):
            raise CatalogError(redact_text(f"{url}: not a STAC API with item search (no /search conformance)"))
        self._server_query = self._client.conforms_to(ConformanceClasses.QUERY)
        self._offered = None if collection is None else self._check_collection(stac_io, collection)
        self.searches = 0
        self._blocks = functools.lru_cache(maxsize=CACHED_BLOCKS)(self._search_block)

    def band_names(self) -> tuple[frozenset[str], frozenset[str]] | None:
        return self._offered

    def _check_collection(self, stac_io, collection: str) -> tuple[frozenset[str], frozenset[str]] | None:
        """Refuse a collection the API does not list; what its ``item_assets`` offer, if it says.

        An API without a usable ``/collections`` is not judged: searches will tell.
        """
        root = self.name.rstrip("/")
        try:
            listed = with_retries(lambda: stac_io.read_json(f"{root}/collections"), what=f"listing {redact_url(root)}")
            ids = [c.get("id") for c in listed.get("collections") or [] if isinstance(c, dict)]
        except Exception:  # noqa: BLE001 - no listing: nothing to check against
            return None
        paged = any(isinstance(link, dict) and link.get("rel") == "next" for link in listed.get("links") or [])
        if collection not in ids and not paged:
            shown = ", ".join(sorted(str(i) for i in ids)[:20]) or "none"
            raise CatalogError(_masked(f"{self.name}: no collection {collection!r} (`collection`); collections: {shown}", self.name))
        document = next((c for c in listed["collections"] if isinstance(c, dict) and c.get("id") == collection), {})
        item_assets = document.get("item_assets")
        if not isinstance(item_assets, dict) or not item_assets:
            return None
        keys, names = band_names_of(item_assets)
        return frozenset(keys), frozenset(names)

    def search(self, tile: Tile, query: SceneQuery) -> list[Scene]:
        block = block_of(tile, self._limits.search_block)
        try:
            found = self._blocks(block, query)
        except ItemError:
            raise
        except Exception as error:
            message = f"{self.name}: search failed for tile {tile.key} ({first_line(error)})"
            raise CatalogError(_masked(message, self.name)) from None
        return found.scenes(tile, query)

    def _search_block(self, block: Tile, query: SceneQuery) -> BlockItems:
        """The items of one search of ``block``; with blocks of one tile the server's answer
        is taken as it is, as it was before searches covered blocks."""
        size = self._limits.search_block
        area = search_area(block, size)
        params: dict = {"intersects": mapping(area), "limit": self._limits.page_limit}
        if self._collection is not None:
            params["collections"] = [self._collection]
        if query.start is not None or query.end is not None:
            params["datetime"] = f"{_iso(query.start)}/{_iso(query.end)}"
        if query.max_cloud is not None and self._server_query:
            params["query"] = {"eo:cloud_cover": {"lte": query.max_cloud}}
        features = with_retries(lambda: self._features(params), what=f"searching {redact_url(self.name)}")
        features = [self._with_self_link(feature) for feature in features]
        footprints = [None if size == 1 else _usable_footprint(feature) for feature in features]
        items = [pystac.Item.from_dict(feature, preserve_dict=False) for feature in features]
        return BlockItems(items, footprints, scene_from_item, everywhere=size == 1)

    def _with_self_link(self, feature: dict) -> dict:
        """``feature`` with an absolute self link, so that relative asset hrefs resolve against
        the item's own URL, as they do in a static catalog, and never against the API's root.

        An absolute self link is kept; a relative one is resolved against the API's URL; an
        item without one gets its canonical URL, ``{api}/collections/{collection}/items/{id}``
        (none when it names no collection).
        """
        if not isinstance(feature, dict):
            return feature
        links = [link for link in feature.get("links") or [] if isinstance(link, dict)]
        own = next((link.get("href") for link in links if link.get("rel") == "self"), None)
        if isinstance(own, str) and own and "://" in own:
            return feature
        root = self.name.rstrip("/") + "/"
        if isinstance(own, str) and own:
            href = urllib.parse.urljoin(root, own)
        elif not (feature.get("collection") or self._collection):
            return feature  # no collection to name the item's URL by: hrefs must be absolute
        else:
            collection = feature.get("collection") or self._collection
            quoted = [urllib.parse.quote(str(part), safe="") for part in (collection, feature.get("id"))]
            href = urllib.parse.urljoin(root, "collections/{}/items/{}".format(*quoted))
        others = [link for link in links if link.get("rel") != "self"]
        return {**feature, "links": [*others, {"rel": "self", "href": href, "type": "application/geo+json"}]}

    def _features(self, params: dict) -> list[dict]:
        """Every feature of every page of one search; no more than ``max_pages`` pages."""
        self.searches += 1
        features: list[dict] = []
        for number, page in enumerate(self._client.search(**params).pages_as_dicts(), 1):
            features += page.get("features") or []
            following = any(isinstance(link, dict) and link.get("rel") == "next" for link in page.get("links") or [])
            if following and number >= self._limits.max_pages:
                raise self._limits.too_many_pages()
        return features

    def _item(self, scene: Scene) -> tuple[pystac.Item, str]:
        return scene.handle, self.name




def _signer(url: str):
    """The function that signs asset URLs of this API in place, if it needs one (see `SIGNERS`)."""
    package = SIGNERS.get(urllib.parse.urlparse(url).hostname or "")
    if package is None:
        return None
    try:
        return importlib.import_module(package).sign_inplace
    except ImportError:
        raise CatalogError(
            redact_text(f"{url}: the assets of this API need signed URLs; pip install {package.replace('_', '-')}")
        ) from None




def _iso(moment) -> str:
    return ".." if moment is None else moment.isoformat().replace("+00:00", "Z")


def _usable_footprint(feature: dict) -> shapely.Geometry | None:
    """The footprint of a feature (see `_footprint`); None, with a warning, when it has none
    to place it by: the item is then left out, as a static catalog leaves it out."""
    label = redact_text(f"item {feature.get('id')!r}")
    try:
        return _footprint(feature, label)
    except ItemError as error:
        logger.warning("%s is left out: %s", label, error)
        return None
