"""STAC API and EarthOne sources against services served on 127.0.0.1 by the test itself."""

import base64
import http.server
import json
import re
import socket
import threading
import time
from datetime import datetime, timezone

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from pyproj import Transformer

from conftest import write_vector
from tfchips.aoi import bbox_geometry
from tfchips.demo_data import SceneSpec, write_catalog
from tfchips.errors import CatalogError, CredentialsError, ItemError
from tfchips.grid import Tile, tiles_for_shape
from tfchips.imagery import ImageryRequest, imagery_for_tile
from tfchips.labels import LabelRequest
from tfchips.samples import SampleJob, create_samples
from tfchips.sources import SceneQuery, StacApi, open_source, stac_api

TILE = Tile(tilesize=8, pad=0, resolution=10.0, zone=13, ti=-135, tj=6170)
WEST, SOUTH, EAST, NORTH = TILE.bounds


class _Service(http.server.ThreadingHTTPServer):
    """A loopback server whose handler asks ``respond(method, path, body)`` for (status, type, bytes)
    and records every request; files under ``/files/`` are served with HTTP range support."""

    daemon_threads = True

    def __init__(self, respond, files):
        self.respond, self.files, self.requests = respond, files, []
        super().__init__(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _answer(self, method, send_body=True):
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.server.requests.append((method, self.path, body))
        if self.path.startswith("/files/"):
            status, kind, payload = self._file()
        else:
            status, kind, payload = self.server.respond(method, self.path, body)
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", self._content_range)
        self.end_headers()
        if send_body:
            self.wfile.write(payload)

    def _file(self):
        data = self.server.files.get(self.path[len("/files/") :].split("?")[0])
        if data is None:
            return 404, "text/plain", b"not found"
        match = re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if not match:
            return 200, "image/tiff", data
        first = int(match.group(1))
        last = min(int(match.group(2) or len(data) - 1), len(data) - 1)
        self._content_range = f"bytes {first}-{last}/{len(data)}"
        return 206, "image/tiff", data[first : last + 1]

    def do_GET(self):
        self._answer("GET")

    def do_HEAD(self):
        self._answer("HEAD", send_body=False)

    def do_POST(self):
        self._answer("POST")

    def do_PUT(self):
        self._answer("PUT")


@pytest.fixture
def serve():
    servers = []

    def start(respond, files=None):
        server = _Service(respond, files or {})
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return server

    open_source.cache_clear()
    yield start
    open_source.cache_clear()
    for server in servers:
        server.shutdown()
        server.server_close()


def _json(document, status=200, kind="application/json"):
    return status, kind, json.dumps(document).encode()


def _geotiff(value: int, tmp_path) -> bytes:
    path = tmp_path / f"v{value}.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=12,
        height=12,
        count=1,
        dtype="uint16",
        crs=TILE.crs,
        transform=Affine(10, 0, WEST - 20, 0, -10, NORTH + 20),
    ) as dataset:
        dataset.write(np.full((1, 12, 12), value, dtype=np.uint16))
    return path.read_bytes()


def _item(base, item_id, day, cloud, value):
    lon0, lat0, lon1, lat1 = TILE.geometry.buffer(0.01).bounds
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": item_id,
        "collection": "s2",
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[lon0, lat0], [lon1, lat0], [lon1, lat1], [lon0, lat1], [lon0, lat0]]],
        },
        "bbox": [lon0, lat0, lon1, lat1],
        "properties": {"datetime": f"2023-06-{day:02d}T10:00:00Z", "eo:cloud_cover": cloud},
        "links": [],
        "assets": {
            "B04": {
                "href": f"{base}/files/v{value}.tif",
                "eo:bands": [{"name": "B04", "common_name": "red"}],
                "raster:bands": [{"nodata": 0}],
            }
        },
    }


def _stac_api(tmp_path, serve, items, files=None):
    """A loopback STAC API whose searches return ``items(base_url)``; ``files`` (default: three
    constant GeoTIFFs v11, v22, v33) are served under /files/."""
    files = files or {f"v{v}.tif": _geotiff(v, tmp_path) for v in (11, 22, 33)}

    def respond(method, path, body):
        if path == "/":
            return _json(
                {
                    "type": "Catalog",
                    "stac_version": "1.0.0",
                    "id": "test-api",
                    "description": "loopback STAC API",
                    "conformsTo": [
                        "https://api.stacspec.org/v1.0.0/core",
                        "https://api.stacspec.org/v1.0.0/item-search",
                    ],
                    "links": [
                        {"rel": "self", "href": server.url + "/", "type": "application/json"},
                        {"rel": "root", "href": server.url + "/", "type": "application/json"},
                        {
                            "rel": "search",
                            "href": server.url + "/search",
                            "type": "application/geo+json",
                            "method": "POST",
                        },
                    ],
                }
            )
        if path.startswith("/search"):
            return _json(
                {"type": "FeatureCollection", "features": items(server.url), "links": []}, kind="application/geo+json"
            )
        return _json({"code": "NotFound"}, status=404)

    server = serve(respond, files)
    return server


def test_stac_api_search_sends_the_tile_and_filters_then_reads_over_http(tmp_path, serve):
    # The server answers every search with all three items; the client filters again.
    server = _stac_api(
        tmp_path,
        serve,
        lambda base: [_item(base, "a", 1, 10.0, 11), _item(base, "b", 12, 70.0, 22), _item(base, "c", 20, 5.0, 33)],
    )
    source = open_source(server.url, "s2")
    assert isinstance(source, StacApi)
    start = datetime(2023, 6, 1, tzinfo=timezone.utc)
    end = datetime(2023, 6, 15, tzinfo=timezone.utc)
    scenes = source.search(TILE, SceneQuery(start, end, max_cloud=50))
    assert [s.id for s in scenes] == ["a"]
    method, path, body = [r for r in server.requests if r[1].startswith("/search")][0]
    assert (method, body["collections"]) == ("POST", ["s2"])
    assert body["datetime"] == "2023-06-01T00:00:00Z/2023-06-15T00:00:00Z"
    assert body["intersects"]["type"] == "Polygon"
    pixels = source.read(scenes[0], ["red"], TILE)
    assert (pixels.values == 11).all() and pixels.nodata == 0
    assert any(r[1] == "/files/v11.tif" for r in server.requests)


def test_stac_api_composite_through_imagery_for_tile(tmp_path, serve):
    server = _stac_api(tmp_path, serve, lambda base: [_item(base, "a", 1, 10.0, 11), _item(base, "c", 20, 5.0, 33)])
    request = ImageryRequest.from_options(
        {"catalog": server.url, "collection": "s2", "bands": "red", "method": "median"}
    )
    result = imagery_for_tile(TILE, request)
    assert (result.data == 22).all() and result.scenes == ("a", "c") and result.valid_fraction == 1.0


def test_stac_api_band_missing_names_the_item(tmp_path, serve):
    server = _stac_api(tmp_path, serve, lambda base: [_item(base, "a", 1, 10.0, 11)])
    source = open_source(server.url)
    scene = source.search(TILE, SceneQuery())[0]
    # The item is named by its own URL, which an item without a self link gets from its collection.
    with pytest.raises(ItemError, match=r"item 'a' \(http://127\.0\.0\.1:\d+/collections/s2/items/a\) has no asset or eo:bands name 'nir'"):
        source.read(scene, ["nir"], TILE)


def test_apis_that_need_signed_urls_sign_every_asset(tmp_path, serve, monkeypatch):
    import sys
    import types

    import pystac

    def sign_inplace(found):
        # Like planetary_computer.sign_inplace: items, item collections, or their JSON.
        if isinstance(found, dict):
            for item in found.get("features", [found]):
                for asset in item.get("assets", {}).values():
                    asset["href"] += "?sig=granted"
            return
        for item in found.items if isinstance(found, pystac.ItemCollection) else [found]:
            for asset in item.assets.values():
                asset.href += "?sig=granted"

    monkeypatch.setitem(sys.modules, "loopback_signer", types.SimpleNamespace(sign_inplace=sign_inplace))
    monkeypatch.setattr(stac_api, "SIGNERS", {"127.0.0.1": "loopback_signer"})
    server = _stac_api(tmp_path, serve, lambda base: [_item(base, "a", 1, 10.0, 11)])
    source = open_source(server.url)
    pixels = source.read(source.search(TILE, SceneQuery())[0], ["red"], TILE)
    assert (pixels.values == 11).all()
    assert any(r[1] == "/files/v11.tif?sig=granted" for r in server.requests)
    monkeypatch.setattr(stac_api, "SIGNERS", {"127.0.0.1": "no_such_signer"})
    with pytest.raises(CatalogError, match="need signed URLs; pip install no-such-signer"):
        StacApi(server.url)


def test_unreachable_stac_api_names_the_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(CatalogError, match=f"{re.escape(url)}: cannot open the STAC API"):
        open_source(url)


def test_a_catalog_without_search_is_refused(serve):
    server = serve(
        lambda method, path, body: _json(
            {"type": "Catalog", "stac_version": "1.0.0", "id": "x", "description": "no search", "links": []}
        )
    )
    with pytest.raises(CatalogError, match="not a STAC API with item search"):
        open_source(server.url + "/api")


def test_stac_api_static_catalog_over_http_and_local_files_give_identical_chips(tmp_path, serve):
    # Two overlapping 40 x 40 px scenes in UTM 13N, one shifted 10 px east, with cloudy pixels.
    def scene(scene_id, day, value, shift):
        classes = np.full((40, 40), 4, np.uint8)
        classes[5 + day % 7 : 12 + day % 7, 8:20] = 9
        return SceneSpec(
            id=scene_id, datetime=datetime(2023, 6, day, 10, tzinfo=timezone.utc), crs=TILE.crs,
            transform=Affine(10, 0, WEST - 40 + 10 * shift, 0, -10, NORTH + 40),
            assets={"red": np.arange(1600, dtype=np.uint16).reshape(40, 40) + value, "scl": classes},
            cloud_cover=5.0, stac_nodata=0, common_names={"red": ["red"]},
        )

    catalog = write_catalog(tmp_path / "catalog", [scene("a", 3, 100, 0), scene("b", 11, 5000, 10)])
    root = tmp_path / "catalog"
    files = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}

    def api_items(base):
        found = []
        for name in ("a", "b"):
            item = json.loads(files[f"{name}/{name}.json"])
            for asset in item["assets"].values():
                asset["href"] = f"{base}/files/{name}/{asset['href'].removeprefix('./')}"
            item["links"] = []
            found.append(item)
        return found

    server = _stac_api(tmp_path, serve, api_items, files)
    to_wgs84 = Transformer.from_crs(TILE.crs, 4326, always_xy=True)
    west, north = to_wgs84.transform(WEST, NORTH)
    east, south = to_wgs84.transform(WEST + 240, NORTH - 240)
    tiles = tiles_for_shape(bbox_geometry((west, south, east, north)), 10.0, 8, 2)
    labels = write_vector(tmp_path / "labels.gpkg", [shapely.box(west, south, (west + east) / 2, north)],
                          fields={"class": [1]})
    chips = {}
    for name, source in (("api", server.url), ("http", server.url + "/files/catalog.json"), ("local", catalog)):
        options = {"catalog": source, "bands": "red", "mask_asset": "scl", "mask_values": "9", "method": "median"}
        job = SampleJob(ImageryRequest.from_options(options), LabelRequest.from_options({"labels": labels, "attribute": "class"}),
                        str(tmp_path / name), provenance=True)
        summary = create_samples(tiles, job, parameters=options, workers=1)
        assert summary.count("written") == len(tiles) >= 9, summary.line
        chips[name] = {
            p.relative_to(tmp_path / name).as_posix(): p.read_bytes()
            for sub in ("images", "labels", "provenance") for p in sorted((tmp_path / name / sub).glob("*.tif"))
        }
        open_source.cache_clear()
    assert len(chips["local"]) == 3 * len(tiles)
    assert chips["api"] == chips["local"] and chips["http"] == chips["local"]
    paths = [path for _, path, _ in server.requests]
    assert "/search" in paths and "/files/catalog.json" in paths and "/files/a/red.tif" in paths


# EarthOne: a catalog answering image searches and a Raster service answering /npz.


def _earthone_clients(url):
    from earthdaily.earthone.auth import Auth
    from earthdaily.earthone.catalog import CatalogClient
    from earthdaily.earthone.core.client.services.raster import Raster

    claims = json.dumps({"aud": "tfchips-test", "exp": time.time() + 3600}).encode()
    token = "header." + base64.urlsafe_b64encode(claims).decode().rstrip("=") + ".signature"
    auth = Auth(jwt_token=token, token_info_path=None)
    return CatalogClient(url=url + "/catalog", auth=auth, retries=0), Raster(url=url + "/raster", auth=auth, retries=0)


def _npz_response(array: np.ma.MaskedArray) -> bytes:
    """The Raster service's blosc stream: metadata, array header, one chunk of data and mask."""
    import blosc2

    data = np.ascontiguousarray(array.data)
    mask = np.ascontiguousarray(np.ma.getmaskarray(array))
    return b"".join(
        [
            json.dumps({"id": "mosaic"}).encode() + b"\n",
            json.dumps({"shape": list(data.shape), "dtype": data.dtype.name, "chunks": 1}).encode() + b"\n",
            json.dumps({"offset": [0, 0, 0], "shape": list(data.shape)}).encode() + b"\n",
            blosc2.compress(data, typesize=data.dtype.itemsize),
            blosc2.compress(mask, typesize=1),
        ]
    )


IMAGES = [
    # id, acquired, cloud_fraction, pixel value
    ("prod:early", "2023-06-02T17:00:00Z", 0.05, 100),
    ("prod:near", "2023-06-14T17:00:00Z", 0.20, 200),
    ("prod:late", "2023-06-30T17:00:00Z", 0.01, 300),
]


def _earthone_service(serve):
    values = {image_id: value for image_id, _, _, value in IMAGES}

    def respond(method, path, body):
        if method == "PUT" and path.startswith("/catalog/images"):
            if "continuation" in path:
                return _json({"data": [], "links": {}, "meta": {}})
            data = [
                {
                    "type": "image",
                    "id": image_id,
                    "attributes": {"acquired": acquired, "cloud_fraction": cloud, "product_id": "prod"},
                }
                for image_id, acquired, cloud, _ in IMAGES
            ]
            return _json({"data": data, "links": {}, "meta": {"count": len(data)}})
        if method == "POST" and path == "/raster/npz":
            shape = (len(body["bands"]), *TILE.shape)
            array = np.ma.MaskedArray(np.zeros(shape, dtype=np.uint16), mask=np.zeros(shape, dtype=bool))
            for band in range(shape[0]):
                array.data[band] = values[body["ids"][0]] + band
            if body["ids"][0] == "prod:near":
                array.mask[:, :, :4] = True  # the western half is outside this image
            return 200, "application/octet-stream", _npz_response(array)
        return _json({"errors": [{"detail": "not found"}]}, status=404)

    return serve(respond)


def test_earthone_search_filters_on_the_server_and_reads_dltiles(serve):
    pytest.importorskip("earthdaily.earthone", reason="earthdaily-earthone is not installed")
    from tfchips.sources import EarthOneProduct

    server = _earthone_service(serve)
    source = EarthOneProduct("prod", *_earthone_clients(server.url))
    query = SceneQuery(datetime(2023, 6, 1, tzinfo=timezone.utc), datetime(2023, 6, 20, tzinfo=timezone.utc), 30)
    scenes = source.search(TILE, query)
    # The recorded answer holds all three images; "late" is outside the dates and dropped here too.
    assert [(s.id, s.cloud_cover) for s in scenes] == [("prod:early", 5.0), ("prod:near", 20.0)]
    _, path, body = server.requests[0]
    filters = json.loads(body["filter"])
    assert {"op": "eq", "name": "product_id", "val": "prod"} in filters
    assert {"name": "cloud_fraction", "op": "lte", "val": 0.3} in filters
    assert {"name": "acquired", "op": "gte", "val": "2023-06-01T00:00:00+00:00"} in filters
    assert json.loads(body["intersects"])["type"] == "Polygon"

    pixels = source.read(scenes[1], ["red", "nir"], TILE, "bilinear")
    raster_request = server.requests[-1][2]
    assert raster_request["ids"] == ["prod:near"] and raster_request["bands"] == ["red", "nir"]
    assert raster_request["srs"] == TILE.crs and raster_request["outputBounds"] == list(TILE.bounds)
    assert raster_request["resolution"] == 10.0 and raster_request["resampleAlg"] == "bilinear"
    assert pixels.values[:, 0, 4].tolist() == [200, 201]
    assert pixels.values.mask[:, :, :4].all() and not pixels.values.mask[:, :, 4:].any()


def test_earthone_closest_composite_fills_from_the_next_image(serve, monkeypatch):
    pytest.importorskip("earthdaily.earthone", reason="earthdaily-earthone is not installed")
    import tfchips.sources as sources
    from tfchips.sources import EarthOneProduct

    server = _earthone_service(serve)
    clients = _earthone_clients(server.url)
    monkeypatch.setattr(sources, "EarthOneProduct", lambda product: EarthOneProduct(product, *clients))
    request = ImageryRequest.from_options(
        {
            "catalog": "earthone:prod",
            "bands": "red",
            "start": "2023-06-01",
            "end": "2023-06-30",
            "reference_date": "2023-06-15",
        }
    )
    result = imagery_for_tile(TILE, request)
    # "near" is closest but covers only the east half; "early" (13 days away) beats "late" (15).
    assert result.data[0, :, :4].tolist() == [[100] * 4] * 8
    assert result.data[0, :, 4:].tolist() == [[200] * 4] * 8
    assert result.scenes == ("prod:near", "prod:early") and result.valid_fraction == 1.0


def test_earthone_without_credentials_says_which_variable_to_set(tmp_path, monkeypatch):
    pytest.importorskip("earthdaily.earthone", reason="earthdaily-earthone is not installed")
    for name in (
        "EARTHONE_TOKEN",
        "EARTHONE_CLIENT_ID",
        "EARTHONE_CLIENT_SECRET",
        "EARTHONE_REFRESH_TOKEN",
        "CLIENT_ID",
        "CLIENT_SECRET",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("EARTHONE_TOKEN_INFO_PATH", str(tmp_path / "token_info.json"))
    open_source.cache_clear()
    with pytest.raises(
        CredentialsError,
        match="earthone:prod: no EarthOne credentials; set EARTHONE_CLIENT_ID and EARTHONE_CLIENT_SECRET",
    ):
        open_source("earthone:prod")
    monkeypatch.setenv("EARTHONE_CLIENT_ID", "someone")
    with pytest.raises(CredentialsError, match="set EARTHONE_CLIENT_SECRET"):
        open_source("earthone:prod")
    open_source.cache_clear()


def test_earthone_refused_token_is_a_credentials_error(serve):
    pytest.importorskip("earthdaily.earthone", reason="earthdaily-earthone is not installed")
    from tfchips.sources import EarthOneProduct

    server = serve(lambda method, path, body: _json({"errors": [{"status": "401", "detail": "bad token"}]}, status=401))
    source = EarthOneProduct("prod", *_earthone_clients(server.url))
    with pytest.raises(CredentialsError, match="earthone:prod: image search for tile .* was refused"):
        source.search(TILE, SceneQuery())
