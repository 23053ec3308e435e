"""Imagery served on 127.0.0.1 for the fetch benchmark and its tests: Cloud-Optimized GeoTIFFs
with byte ranges and a STAC API-like ``/search``, both counting what they serve.

`make_world` writes scenes (several dates over two overlapping footprints, one COG per
band plus a ``qa_pixel`` asset with a cloud bit) and a static catalog of them; `Service`
serves the files and searches them the way a STAC API does (``intersects``, ``datetime``,
``collections``, pages of ``limit`` items, 10 when not asked, as pgstac does).
"""

from __future__ import annotations

import http.server
import json
import os
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np
import rasterio
from affine import Affine
from shapely.geometry import shape

from tfchips.grid import Tile
from tfchips.utm import utm_to_lonlat

ZONE = 13
COLLECTION = "loopback-l2"
BANDS = ("blue", "green", "red", "nir")
# Scene pixels start this far (metres) from the tile grid, as another grid's do.
OFFSET = 7.0
_DEFAULT_PAGE = 10


@dataclass
class World:
    """Scenes on disk: ``root`` holds ``files/`` and ``catalog.json``; ``items`` are the STAC
    items with hrefs relative to the files folder; ``tiles`` the grid (in grid order) they cover."""

    root: str
    items: list[dict]
    tiles: list[Tile]
    start: datetime

    @property
    def catalog(self) -> str:
        return os.path.join(self.root, "catalog.json")

    def options(self, catalog: str, method: str = "closest", **extra) -> dict:
        """`ImageryRequest.from_options` values for this world through ``catalog``."""
        return {
            "catalog": catalog,
            "collection": COLLECTION,
            "bands": ",".join(BANDS),
            "method": method,
            "start": self.start.date().isoformat(),
            "end": (self.start + timedelta(days=60)).date().isoformat(),
            "mask_bits": "qa_pixel=3",
            **extra,
        }


def tile_grid(side: int, tilesize: int, resolution: float, ti0: int = -32, tj0: int = 1008) -> list[Tile]:
    """``side`` x ``side`` tiles, row by row from the north-west, in zone `ZONE`."""
    return [Tile(tilesize, 0, resolution, ZONE, ti0 + i, tj0 + j) for j in reversed(range(side)) for i in range(side)]


def make_world(
    root: str, tiles: list[Tile], dates: int = 3, blocksize: int = 256, seed: int = 0, offset: float = OFFSET
) -> World:
    """Scenes over ``tiles``: ``dates`` dates x two footprints (west and east, overlapping by a
    third), each a COG per band of `BANDS` and ``qa_pixel``, at 30 m, their pixels ``offset``
    metres off the tile grid (15: half a pixel, where nearest resampling meets ties); a static
    catalog of them."""
    os.makedirs(os.path.join(root, "files"), exist_ok=True)
    west = min(t.bounds[0] for t in tiles)
    south = min(t.bounds[1] for t in tiles)
    east = max(t.bounds[2] for t in tiles)
    north = max(t.bounds[3] for t in tiles)
    resolution = 30.0
    width = east - west
    footprints = [(west - 600, west + width * 2 / 3), (west + width / 3, east + 600)]
    rng = np.random.default_rng(seed)
    start = datetime(2023, 6, 1, tzinfo=timezone.utc)
    items = []
    for day in range(dates):
        for number, (left, right) in enumerate(footprints):
            left, top = left + offset, north + 600 + offset
            cols = int((right - left) // resolution)
            rows = int((top - (south - 600)) // resolution)
            transform = Affine(resolution, 0, left, 0, -resolution, top)
            scene = f"scene-{day}-{number}"
            assets = {}
            yy, xx = np.mgrid[0:rows, 0:cols]
            base = (1000 + 3 * xx + 2 * yy + 500 * day).astype(np.uint16)
            for band, name in enumerate(BANDS):
                noise = rng.integers(0, 64, (rows, cols), dtype=np.uint16)
                data = base + np.uint16(band * 100) + noise
                data[:2, :] = 0  # a nodata strip along the north edge
                assets[name] = _write(root, f"{scene}-{name}.tif", data, transform, blocksize, nodata=0)
            clouds = np.zeros((rows, cols), dtype=np.uint16)
            for _ in range(6):
                r, c = rng.integers(0, rows), rng.integers(0, cols)
                clouds[max(r - 40, 0) : r + 40, max(c - 40, 0) : c + 40] = 1 << 3
            assets["qa_pixel"] = _write(root, f"{scene}-qa_pixel.tif", clouds, transform, blocksize, nodata=None)
            items.append(_item(scene, start + timedelta(days=10 * day + number), transform, rows, cols, assets))
    _write_catalog(root, items)
    return World(root, items, tiles, start)


def _write(root: str, name: str, data: np.ndarray, transform: Affine, blocksize: int, nodata) -> str:
    path = os.path.join(root, "files", name)
    profile = dict(
        driver="COG", width=data.shape[1], height=data.shape[0], count=1, dtype=data.dtype.name,
        crs=f"EPSG:{32600 + ZONE}", transform=transform, nodata=nodata, compress="DEFLATE", blocksize=blocksize,
    )
    with rasterio.open(path, "w", **profile) as dataset:
        dataset.write(data[np.newaxis])
    return name


def _item(scene: str, when: datetime, transform: Affine, rows: int, cols: int, assets: dict) -> dict:
    left, top = transform.c, transform.f
    right, bottom = left + cols * transform.a, top + rows * transform.e
    xs, ys = np.array([left, right, right, left, left]), np.array([bottom, bottom, top, top, bottom])
    lon, lat = utm_to_lonlat(xs, ys, ZONE)
    ring = [[float(x), float(y)] for x, y in zip(lon, lat)]
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": [],
        "id": scene,
        "collection": COLLECTION,
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "bbox": [min(lon), min(lat), max(lon), max(lat)],
        "properties": {"datetime": when.isoformat().replace("+00:00", "Z"), "eo:cloud_cover": 10.0},
        "links": [],
        "assets": {key: {"href": href, "type": "image/tiff; application=geotiff"} for key, href in assets.items()},
    }


def _write_catalog(root: str, items: list[dict]) -> None:
    links = []
    for item in items:
        local = {**item, "assets": {k: {**a, "href": f"./files/{a['href']}"} for k, a in item["assets"].items()}}
        with open(os.path.join(root, f"{item['id']}.json"), "w") as stream:
            json.dump(local, stream)
        links.append({"rel": "item", "href": f"./{item['id']}.json", "type": "application/geo+json"})
    catalog = {"type": "Catalog", "stac_version": "1.0.0", "id": "loopback", "description": "benchmark", "links": links}
    with open(os.path.join(root, "catalog.json"), "w") as stream:
        json.dump(catalog, stream)


@dataclass
class Log:
    """What a `Service` served: ``searches`` (first pages) with the ``limits`` they asked for,
    ``pages``, and ``ranges`` as (file, first byte, last byte) per file request."""

    searches: int = 0
    pages: int = 0
    limits: list = field(default_factory=list)
    ranges: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fetched(self) -> int:
        return sum(last - first + 1 for _, first, last in self.ranges)

    def unique(self) -> int:
        """Bytes of the union of the ranges served, file by file."""
        total = 0
        for name in {n for n, _, _ in self.ranges}:
            spans = sorted((first, last) for n, first, last in self.ranges if n == name)
            end = -1
            for first, last in spans:
                if last > end:
                    total += last - max(first, end + 1) + 1
                    end = last
        return total

    def reset(self) -> None:
        with self.lock:
            self.searches, self.pages, self.limits, self.ranges = 0, 0, [], []


class Service(http.server.ThreadingHTTPServer):
    """``/files/NAME`` (byte ranges) from ``world.root/files`` and a STAC API over ``world.items``."""

    daemon_threads = True

    def __init__(self, world: World) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.world, self.log = world, Log()
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        folder = os.path.join(world.root, "files")
        self._files = {name: os.path.join(folder, name) for name in os.listdir(folder)}
        self._footprints = [shape(item["geometry"]) for item in world.items]
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    def __enter__(self) -> Service:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()

    def features(self, body: dict) -> list[dict]:
        area = shape(body["intersects"]) if body.get("intersects") else None
        low, _, high = (body.get("datetime") or "../..").partition("/")
        found = []
        for item, footprint in zip(self.world.items, self._footprints):
            if area is not None and not footprint.intersects(area):
                continue
            when = item["properties"]["datetime"]
            if (low not in ("", "..") and when < low) or (high not in ("", "..") and when > high):
                continue
            if body.get("collections") and item["collection"] not in body["collections"]:
                continue
            assets = {k: {**a, "href": f"{self.url}/files/{a['href']}"} for k, a in item["assets"].items()}
            found.append({**item, "assets": assets})
        return found


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: with Nagle's algorithm each answer on a kept-alive
    # connection would wait for the client's delayed acknowledgement (40 ms).
    disable_nagle_algorithm = True

    def log_message(self, *args) -> None:
        pass

    def do_HEAD(self) -> None:
        self._file(send_body=False)

    def do_GET(self) -> None:
        if self.path.startswith("/files/"):
            self._file()
        elif self.path.rstrip("/") == "":
            self._json(self._landing())
        elif self.path.startswith("/collections"):
            self._json({"collections": [{"id": COLLECTION, "type": "Collection"}], "links": []})
        else:
            self._json({"code": "NotFound"}, 404)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else {}
        if not self.path.startswith("/search"):
            return self._json({"code": "NotFound"}, 404)
        server: Service = self.server
        limit = int(body.get("limit") or _DEFAULT_PAGE)
        offset = int(body.get("token") or 0)
        with server.log.lock:
            server.log.pages += 1
            if offset == 0:
                server.log.searches += 1
                server.log.limits.append(body.get("limit"))
        features = server.features(body)
        page = features[offset : offset + limit]
        links = []
        if offset + limit < len(features):
            following = {**body, "token": offset + limit}
            links.append({"rel": "next", "href": f"{server.url}/search", "method": "POST", "body": following})
        self._json({"type": "FeatureCollection", "features": page, "links": links}, kind="application/geo+json")

    def _landing(self) -> dict:
        url = self.server.url
        return {
            "type": "Catalog", "stac_version": "1.0.0", "id": "loopback-api", "description": "loopback STAC API",
            "conformsTo": ["https://api.stacspec.org/v1.0.0/core", "https://api.stacspec.org/v1.0.0/item-search"],
            "links": [
                {"rel": "self", "href": url + "/", "type": "application/json"},
                {"rel": "root", "href": url + "/", "type": "application/json"},
                {"rel": "search", "href": url + "/search", "type": "application/geo+json", "method": "POST"},
            ],
        }

    def _json(self, document: dict, status: int = 200, kind: str = "application/json") -> None:
        payload = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _file(self, send_body: bool = True) -> None:
        server: Service = self.server
        path = server._files.get(self.path[len("/files/") :].split("?")[0])
        if path is None:
            return self._json({"code": "NotFound"}, 404)
        size = os.path.getsize(path)
        match = re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        first, last = 0, size - 1
        if match:
            first, last = int(match.group(1)), min(int(match.group(2) or size - 1), size - 1)
        if send_body:
            with server.log.lock:
                server.log.ranges.append((os.path.basename(path), first, last))
        self.send_response(206 if match else 200)
        self.send_header("Content-Type", "image/tiff")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(last - first + 1))
        if match:
            self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.end_headers()
        if send_body:
            with open(path, "rb") as stream:
                stream.seek(first)
                self.wfile.write(stream.read(last - first + 1))

