"""STAC sources: a static catalog on disk or behind a URL (here), and a STAC API that answers
/search (`tfchips.sources.stac_api`).

Both turn items into `Scene`s and read their assets as `tfchips.sources.items` says.
What a catalog can make tfchips read is bounded twice: by the `TrustBoundary` (which
files and URLs its links and hrefs may name) and by the `CatalogLimits` (bytes per
document, seconds per request, pages per search, items per static catalog). Both come
from the environment unless given; every error names the catalog, item or URL with
credentials masked.
"""

from __future__ import annotations

import abc
import functools
import json
import logging
import os
import urllib.parse
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import pystac
import requests
import shapely
from shapely.geometry import shape

from tfchips import __version__
from tfchips.errors import CatalogError, ItemError
from tfchips.grid import Tile
from tfchips.sources.base import (
    REDACTED,
    Pixels,
    Scene,
    SceneQuery,
    Source,
    first_line,
    redact_text,
    redact_url,
    sorted_scenes,
)
from tfchips.sources.items import band_names_of, read_item, read_item_with_masks, scene_from_properties
from tfchips.sources.limits import CatalogLimits, bound_session, read_local
from tfchips.sources.retry import TRANSIENT_STATUS, RetryPolicy, TransientError, retry_after_seconds, with_retries
from tfchips.sources.trust import TrustBoundary

logger = logging.getLogger(__name__)

# Items of a static catalog kept parsed between reads: a tile reads each of its scenes twice
# or more (bands, then mask assets), and neighbouring tiles share scenes.
_PARSED_ITEMS = 64


class _ItemSource(Source):
    """Reading is the same for every STAC source; only finding items differs."""

    boundary: TrustBoundary

    def read(self, scene: Scene, bands: Sequence[str], tile: Tile, resampling: str = "nearest") -> Pixels:
        item, origin = self._item(scene)
        return read_item(item, bands, tile, resampling, self.boundary, origin)

    def read_with_masks(
        self, scene: Scene, bands: Sequence[str], masks: Sequence[str], tile: Tile, resampling: str = "nearest"
    ) -> tuple[Pixels, np.ma.MaskedArray]:
        item, origin = self._item(scene)
        return read_item_with_masks(item, bands, masks, tile, resampling, self.boundary, origin)

    @abc.abstractmethod
    def _item(self, scene: Scene) -> tuple[pystac.Item, str]:
        """The item behind ``scene`` and where it was read from."""


class _Entry(NamedTuple):
    """An item file of a static catalog: where it is, its id and its JSON."""

    href: str
    id: str
    data: dict


class StaticCatalog(_ItemSource):
    """Every item under a ``catalog.json`` or ``collection.json`` (a path or URL), indexed.

    Each item file is read once to index its id, time, cloud cover and footprint; only
    those stay in memory, and an item is read again when its pixels are. ``collection``,
    when given, keeps only the items of that collection id. An item whose footprint is
    unusable (NaN or infinite coordinates, a malformed geometry) is left out with a
    warning that names it. ``boundary`` and ``limits`` default to the environment's.
    """

    def __init__(
        self,
        href: str,
        collection: str | None = None,
        boundary: TrustBoundary | None = None,
        limits: CatalogLimits | None = None,
    ) -> None:
        self.name = href
        self.boundary = (boundary or TrustBoundary.from_environment()).trusting(href)
        self._documents = _Documents(href, self.boundary, limits or CatalogLimits.from_environment())
        self._scenes: list[Scene] = []
        self._assets: set[str] = set()
        self._named: set[str] = set()
        footprints = []
        for entry in _walk(_catalog_file(href), self._documents):
            if collection is not None and entry.data.get("collection") != collection:
                continue
            _check_datetime(entry)
            label = redact_text(f"item {entry.id!r} ({entry.href})")
            footprint = _footprint(entry.data, label)
            if footprint is not None:
                self._scenes.append(scene_from_properties(entry.id, entry.data.get("properties"), label, entry.href))
                footprints.append(footprint)
                keys, names = band_names_of(entry.data.get("assets"))
                self._assets |= keys
                self._named |= names
        if collection is not None and not self._scenes:
            raise CatalogError(redact_text(f"{href}: no items in collection {collection!r}"))
        footprints = np.array(footprints, dtype=object)
        invalid = ~shapely.is_valid(footprints)
        footprints[invalid] = shapely.make_valid(footprints[invalid])  # a self-intersecting ring, say
        self._tree = shapely.STRtree(footprints)
        self._parsed = functools.lru_cache(maxsize=_PARSED_ITEMS)(self._parse)

    def __len__(self) -> int:
        return len(self._scenes)

    def band_names(self) -> tuple[frozenset[str], frozenset[str]]:
        return frozenset(self._assets), frozenset(self._named)

    def search(self, tile: Tile, query: SceneQuery) -> list[Scene]:
        hits = self._tree.query(tile.geometry, predicate="intersects")
        return sorted_scenes([s for s in (self._scenes[i] for i in hits) if query.accepts(s.datetime, s.cloud_cover)])

    def _item(self, scene: Scene) -> tuple[pystac.Item, str]:
        return self._parsed(scene.handle), scene.handle

    def _parse(self, href: str) -> pystac.Item:
        data = self._documents.read(href, ItemError)
        try:
            return pystac.Item.from_dict(data, href=href, preserve_dict=False)
        except Exception as error:  # pystac raises KeyError, TypeError, STACTypeError...
            raise ItemError(redact_text(f"{href}: not a usable STAC item ({first_line(error)})")) from None


def _bounded(
    session: requests.Session, catalog: str, boundary: TrustBoundary, limits: CatalogLimits, policy: RetryPolicy
) -> requests.Session:
    """``session`` made to send only what ``boundary`` lets ``catalog`` name, within ``limits``,
    and to turn 429 and 5xx answers into `TransientError`s."""
    session.headers["User-Agent"] = f"tfchips/{__version__}"
    session.hooks["response"].append(_refuse_transient_status)
    return bound_session(session, limits, policy.timeout, lambda url: boundary.check(url, catalog, "request for"))


def _refuse_transient_status(response, *args, **kwargs) -> None:
    """A requests hook: a 429 or 5xx answer becomes a `TransientError` that keeps its Retry-After."""
    if response.status_code in TRANSIENT_STATUS:
        response.close()
        raise TransientError(
            f"HTTP {response.status_code} from {response.url}", retry_after_seconds(response.headers.get("Retry-After"))
        )


class _Documents:
    """Reads the JSON documents of a static catalog within ``limits``: local files directly,
    URLs through one session that retries them and checks every redirect against ``boundary``."""

    def __init__(self, catalog: str, boundary: TrustBoundary, limits: CatalogLimits) -> None:
        self.boundary, self.limits = boundary, limits
        self._catalog = catalog
        self._session: requests.Session | None = None

    def read(self, href: str, error_type: type[Exception]) -> dict:
        """The JSON object at ``href``; ``error_type`` (naming ``href``) when there is none."""
        try:
            if href.startswith(("http://", "https://")):
                text = with_retries(lambda: self._fetch(href), what=f"reading {redact_url(href)}")
            else:
                text = read_local(_local_path(href), self.limits)
            data = json.loads(text)
        except CatalogError:
            raise  # over a limit: the message says so
        except FileNotFoundError:
            raise error_type(redact_text(f"{href}: no such file")) from None
        except Exception as error:  # OSError, requests, JSON errors alike
            message = f"{href}: cannot read STAC JSON ({first_line(error)})"
            raise error_type(_masked(message, self._catalog)) from None
        if not isinstance(data, dict):
            raise error_type(redact_text(f"{href}: not a STAC object (JSON {type(data).__name__})"))
        return data

    def _fetch(self, url: str) -> bytes:
        if self._session is None:
            policy = RetryPolicy.from_environment()
            self._session = _bounded(requests.Session(), self._catalog, self.boundary, self.limits, policy)
        response = self._session.get(url)
        response.raise_for_status()
        return response.content


def _masked(text: str, url: str) -> str:
    """``text`` with its URLs redacted and, wherever they appear, the secrets of ``url``.

    Libraries quote parts of URLs that `redact_text` cannot recognise as URLs ("Max retries
    exceeded with url: /api?token=..."), so the values it would mask in ``url`` itself
    (a password, a token) are masked anywhere in ``text``.
    """
    text = redact_text(text)
    for secret in _secrets(url):
        text = text.replace(secret, REDACTED)
    return text


def _secrets(url: str) -> set[str]:
    """The password and the credential query values of ``url``: what `redact_url` masks."""
    try:
        original, shown = urllib.parse.urlsplit(url), urllib.parse.urlsplit(redact_url(url))
        password = original.password
    except ValueError:
        return set()
    found = {password} if password and password != shown.password else set()
    for given, masked_value in zip(original.query.split("&"), shown.query.split("&")):
        value = given.partition("=")[2]
        if value and value != masked_value.partition("=")[2]:
            found |= {value, urllib.parse.unquote_plus(value)}
    # Very short values would mask ordinary words.
    return {secret for secret in found if len(secret) >= 3}


def _local_path(href: str) -> str:
    return urllib.parse.unquote(urllib.parse.urlsplit(href).path) if href.startswith("file://") else href


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


def _walk(href: str, documents: _Documents | None = None) -> Iterator[_Entry]:
    """Items under a catalog, depth first, read one file at a time so errors can name it.

    Each catalog and item file is read once, however many links lead to it: a child link
    back up the tree would otherwise be followed forever. Every link passes the trust
    boundary of the document holding it; past ``max_items`` items the walk fails.
    """
    documents = documents or _Documents(href, TrustBoundary.from_environment(), CatalogLimits.from_environment())
    root = documents.read(href, CatalogError)
    if root.get("type") == "Feature":
        raise CatalogError(redact_text(f"{href}: is a STAC item, not a catalog or collection"))
    seen = {_absolute(href)}
    stack = [(href, root)]
    count = 0
    while stack:
        where, catalog = stack.pop()
        for rel, target in _links(where, catalog, documents.boundary):
            key = _absolute(target)
            if key in seen:
                continue
            seen.add(key)
            if rel == "child":
                child = documents.read(target, CatalogError)
                if child.get("type") != "Feature":
                    stack.append((target, child))
                continue
            item = documents.read(target, ItemError)
            if item.get("type") != "Feature" or not isinstance(item.get("id"), str):
                raise ItemError(redact_text(f"{target}: linked as an item but is not a STAC item"))
            count += 1
            if count > documents.limits.max_items:
                raise documents.limits.too_many_items(href)
            yield _Entry(target, item["id"], item)


def _links(where: str, catalog: dict, boundary: TrustBoundary) -> Iterator[tuple[str, str]]:
    """(rel, absolute href) of the item and child links of the document read from ``where``."""
    links = catalog.get("links")
    for link in links if isinstance(links, list) else []:
        if not isinstance(link, dict) or link.get("rel") not in ("item", "child"):
            continue
        href = link.get("href")
        if not isinstance(href, str) or not href:
            raise CatalogError(redact_text(f"{where}: a {link['rel']} link has no href"))
        target = _resolve(href, where)
        boundary.check(target, where, f"{link['rel']} link", CatalogError if link["rel"] == "child" else ItemError)
        yield link["rel"], target


def _resolve(href: str, where: str) -> str:
    """The ``href`` of a link in the document read from ``where``, made absolute as pystac
    makes it: URLs and GDAL /vsi paths as they are, the rest relative to ``where``."""
    if "://" in href or href.startswith("/vsi"):
        return href
    if "://" in where:
        return urllib.parse.urljoin(where, href)
    return os.path.abspath(os.path.join(os.path.dirname(where), href))


def _absolute(href: str) -> str:
    """One spelling per file: local paths made absolute and normalised, URLs as they are."""
    return href if "://" in href else os.path.normpath(os.path.abspath(href))


def _check_datetime(entry: _Entry) -> None:
    """pystac's rule for an item's time, in pystac's words (which the error table documents)."""
    properties = entry.data.get("properties")
    if isinstance(properties, dict) and properties.get("datetime") is None:
        if not (properties.get("start_datetime") and properties.get("end_datetime")):
            problem = "Invalid Item: If datetime is None, a start_datetime and end_datetime must be supplied."
            raise ItemError(redact_text(f"{entry.href}: cannot read STAC JSON ({problem})"))


def _footprint(data: dict, label: str) -> shapely.Geometry | None:
    """The item's footprint in WGS84 degrees, maybe invalid; None (with a warning) when unusable.

    Raises:
        ItemError: the item has neither geometry nor bbox.
    """
    geometry, box = data.get("geometry"), data.get("bbox")
    if geometry is None and not (isinstance(box, list) and len(box) in (4, 6)):
        raise ItemError(redact_text(f"{label} has neither geometry nor bbox"))
    problem = None
    try:
        if geometry is None:
            # A 3D bbox is (west, south, bottom, east, north, top).
            footprint = shapely.box(*(box if len(box) == 4 else (box[0], box[1], box[3], box[4])))
        elif isinstance(geometry, dict) and geometry.get("type") == "Polygon":
            # Most footprints: built straight from the rings, 10 times faster than `shape`.
            rings = [np.asarray(ring, dtype=float)[:, :2] for ring in geometry["coordinates"]]
            if not rings:
                problem = "an empty geometry"
            elif not all(np.isfinite(ring).all() for ring in rings):
                problem = "NaN or infinite coordinates"  # which GEOS would call an unclosed ring
            else:
                return shapely.polygons(rings[0], holes=rings[1:] or None)
        else:
            footprint = shape(geometry)
        if problem is None:
            if shapely.is_empty(footprint):
                problem = "an empty geometry"
            elif not np.isfinite(shapely.get_coordinates(footprint)).all():
                problem = "NaN or infinite coordinates"
            else:
                return footprint
    except Exception as error:  # shapely and GEOS errors of a malformed geometry
        problem = f"an unusable geometry ({first_line(error)})"
    logger.warning("%s", redact_text(f"{label} is left out: it has {problem}"))
    return None
