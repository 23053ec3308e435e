"""Hostile catalogs: what they may name, how long and how much they may make tfchips read,
and items that fail only themselves. Every server here is a thread on 127.0.0.1."""

import http.server
import json
import logging
import os
import socket
import threading
import time

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner

from tfchips.cli.main import cli
from tfchips.errors import CatalogError, ConfigError, ItemError
from tfchips.grid import Tile
from tfchips.imagery import ImageryRequest, imagery_for_tile
from tfchips.sources import CatalogLimits, SceneQuery, TrustBoundary, open_source
from tfchips.sources.limits import ENVIRONMENT as LIMIT_VARIABLES
from tfchips.sources.trust import ENVIRONMENT as TRUST_VARIABLES

from test_flaky_sources import _landing_page

TILE = Tile(tilesize=8, pad=0, resolution=10.0, zone=13, ti=-135, tj=6170)
WEST, SOUTH, EAST, NORTH = TILE.bounds
SECRETS = ("hunter2", "s3cr3t")
NETWORK_ONLY = r"a catalog fetched over the network may name only http\(s\), s3 and gs URLs"


class _Server(http.server.ThreadingHTTPServer):
    """Answers every request with ``handle(handler)``; ``paths`` records what was asked."""

    daemon_threads = True

    def __init__(self, handle, host="127.0.0.1"):
        self.handle, self.paths = handle, []
        super().__init__(("127.0.0.1", 0), _Handler)
        self.url = f"http://{host}:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self):
        self.shutdown()
        self.server_close()


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.body = json.loads(self.rfile.read(length)) if length else None
        self.server.paths.append(self.path)
        self.server.handle(self)

    do_POST = do_GET

    def do_HEAD(self):
        self.head = True
        self.do_GET()


def _send(handler, body: bytes, status=200, kind="application/json", headers=()):
    handler.send_response(status)
    handler.send_header("Content-Type", kind)
    handler.send_header("Content-Length", str(len(body)))
    for name, value in headers:
        handler.send_header(name, value)
    handler.end_headers()
    if not getattr(handler, "head", False):
        handler.wfile.write(body)


def _files(documents: dict):
    """A handler serving ``documents`` (path -> JSON object or bytes) with HTTP range support."""

    def handle(handler):
        data = documents.get(handler.path.split("?")[0])
        if data is None:
            return _send(handler, b"{}", 404)
        if not isinstance(data, bytes):
            return _send(handler, json.dumps(data).encode())
        ranges = handler.headers.get("Range", "")
        if ranges.startswith("bytes="):
            first, _, last = ranges[6:].partition("-")
            first, last = int(first), min(int(last or len(data) - 1), len(data) - 1)
            header = ("Content-Range", f"bytes {first}-{last}/{len(data)}")
            return _send(handler, data[first : last + 1], 206, "image/tiff", [header, ("Accept-Ranges", "bytes")])
        _send(handler, data, kind="image/tiff", headers=[("Accept-Ranges", "bytes")])

    return handle


@pytest.fixture
def serve():
    """Starts `_Server`s for the test and stops them all after it."""
    servers = []

    def start(handle, host="127.0.0.1"):
        servers.append(_Server(handle, host))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(autouse=True)
def strict_environment(monkeypatch):
    """Each test starts from the default boundary and limits, and fast retries."""
    for variable in (*TRUST_VARIABLES.values(), *LIMIT_VARIABLES.values()):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("TFCHIPS_RETRY_BACKOFF", "0.001")
    open_source.cache_clear()
    yield
    open_source.cache_clear()


def _geotiff(path, value: int) -> str:
    """A 12 x 12 uint16 raster of ``value`` over TILE and a 2-pixel margin."""
    profile = dict(driver="GTiff", width=12, height=12, count=1, dtype="uint16", crs=TILE.crs)
    with rasterio.open(path, "w", transform=Affine(10, 0, WEST - 20, 0, -10, NORTH + 20), **profile) as dataset:
        dataset.write(np.full((1, 12, 12), value, dtype=np.uint16))
    return str(path)


def _ring(buffer=0.01):
    lon0, lat0, lon1, lat1 = TILE.geometry.buffer(buffer).bounds
    return [[lon0, lat0], [lon1, lat0], [lon1, lat1], [lon0, lat1], [lon0, lat0]]


def _item(item_id: str, href: str, day: int = 1, geometry=None) -> dict:
    geometry = geometry or {"type": "Polygon", "coordinates": [_ring()]}
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": item_id,
        "geometry": geometry,
        "properties": {"datetime": f"2023-06-{day:02d}T10:00:00Z"},
        "links": [],
        "assets": {"red": {"href": href, "raster:bands": [{"nodata": 0}]}},
    }


def _catalog(items=(), children=()) -> dict:
    links = [{"rel": "item", "href": h} for h in items] + [{"rel": "child", "href": h} for h in children]
    return {"type": "Catalog", "stac_version": "1.0.0", "id": "c", "description": "hostile", "links": links}


def _write_json(path, document) -> str:
    path.write_text(json.dumps(document))
    return str(path)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# The trust boundary -------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_a_network_catalog_cannot_name_local_files_or_gdal_paths(tmp_path, serve):
    secret = _geotiff(tmp_path / "secret.tif", 77)
    internal = serve(_files({"/secret.tif": open(secret, "rb").read()}))
    hrefs = {
        "file": f"file://{secret}",
        "zip": f"/vsizip/{tmp_path}/a.zip/secret.tif",
        "curl": f"/vsicurl/{internal.url}/secret.tif",
        "stdin": "/vsistdin/",
    }
    documents = {f"/{name}.json": _item(name, href) for name, href in hrefs.items()}
    public = serve(_files({"/catalog.json": _catalog([f"./{name}.json" for name in hrefs]), **documents}))
    source = open_source(public.url + "/catalog.json")
    scenes = {scene.id: scene for scene in source.search(TILE, SceneQuery())}
    assert sorted(scenes) == sorted(hrefs)
    for name, href in hrefs.items():
        message = rf"^asset 'red' of item '{name}' \({public.url}/{name}\.json\) {href} is refused: {NETWORK_ONLY}"
        with pytest.raises(ItemError, match=message):
            source.read(scenes[name], ["red"], TILE)
    assert internal.paths == []  # /vsicurl/ reached no host

    # Allowing local files is a choice: then the local pixels are read, but never a stream.
    trusting = open_source(public.url + "/catalog.json", boundary=TrustBoundary(allow_local=True))
    assert (trusting.read(scenes["file"], ["red"], TILE).values == 77).all()
    with pytest.raises(ItemError, match=r"/vsistdin/ is refused: it is a stream"):
        trusting.read(scenes["stdin"], ["red"], TILE)


@pytest.mark.timeout(30)
def test_stac_api_items_cannot_name_local_files(tmp_path, serve):
    secret = _geotiff(tmp_path / "secret.tif", 77)

    def handle(handler):
        if handler.path == "/":
            return _send(handler, json.dumps(_landing_page(server.url)).encode())
        page = {"type": "FeatureCollection", "features": [_item("a", f"file://{secret}")], "links": []}
        _send(handler, json.dumps(page).encode(), kind="application/geo+json")

    server = serve(handle)
    source = open_source(server.url)
    scene = source.search(TILE, SceneQuery())[0]
    with pytest.raises(ItemError, match=rf"{server.url}: asset 'red' of item 'a' .* is refused: {NETWORK_ONLY}"):
        source.read(scene, ["red"], TILE)


@pytest.mark.timeout(30)
def test_links_are_held_to_the_boundary_and_no_catalog_may_name_a_device_or_pipe(tmp_path, serve):
    local_item = _write_json(tmp_path / "local-item.json", _item("local", "./x.tif"))
    public = serve(_files({"/catalog.json": _catalog([f"file://{local_item}"]),
                           "/parent.json": _catalog(children=["file:///dev/zero"])}))
    with pytest.raises(ItemError, match=rf"item link file://{local_item} is refused: {NETWORK_ONLY}"):
        open_source(public.url + "/catalog.json")
    with pytest.raises(CatalogError, match=rf"child link file:///dev/zero is refused: {NETWORK_ONLY}"):
        open_source(public.url + "/parent.json")

    # Even a catalog on disk, and even with local files allowed, cannot name what never ends.
    pipe = tmp_path / "pipe.json"
    os.mkfifo(pipe)
    (tmp_path / "stdin.json").symlink_to("/dev/stdin")
    for name, link, kind in [("zero", "/dev/zero", "child"), ("stdin", "file:///dev/stdin", "item"),
                             ("pipe", str(pipe), "item"), ("linked", str(tmp_path / "stdin.json"), "item")]:
        path = _write_json(tmp_path / f"{name}-catalog.json", _catalog(**{f"{kind}s" if kind == "item" else
                                                                           "children": [link]}))
        with pytest.raises((CatalogError, ItemError), match=rf"{kind} link {link} is refused: it is a device"):
            open_source(path, boundary=TrustBoundary(allow_local=True))


@pytest.mark.timeout(30)
def test_allowed_hosts_keep_assets_and_redirects_on_the_listed_hosts(tmp_path, serve):
    tiff = open(_geotiff(tmp_path / "v.tif", 5), "rb").read()
    documents = {"/v.tif": tiff}
    internal = serve(_files(documents), host="localhost")
    documents["/b.json"] = _item("b", f"{internal.url}/v.tif")

    def handle(handler):
        if handler.path == "/b.json":  # a redirect to another host
            return _send(handler, b"", 302, headers=[("Location", f"{internal.url}/b.json")])
        _files({"/catalog.json": _catalog(["./a.json"]), "/redirect.json": _catalog(["./b.json"]),
                "/a.json": _item("a", f"{internal.url}/v.tif")})(handler)

    public = serve(handle)
    only = TrustBoundary(allowed_hosts=("example.org",))
    source = open_source(public.url + "/catalog.json", boundary=only)  # the catalog's own host is allowed
    with pytest.raises(ItemError, match=r"v\.tif is refused: host 'localhost' is not in TFCHIPS_CATALOG_ALLOWED_HOSTS"):
        source.read(source.search(TILE, SceneQuery())[0], ["red"], TILE)
    with pytest.raises(CatalogError, match=r"request for http://localhost:\d+/b\.json is refused: host 'localhost'"):
        open_source(public.url + "/redirect.json", boundary=only)
    local = _write_json(tmp_path / "local.json", _catalog(["./c.json"]))
    _write_json(tmp_path / "c.json", _item("c", f"/vsicurl/{internal.url}/v.tif"))
    source = open_source(local, boundary=only)  # a local catalog may name /vsicurl/, but not past the list
    with pytest.raises(ItemError, match=r"/vsicurl/http://localhost:\d+/v\.tif is refused: host 'localhost'"):
        source.read(source.search(TILE, SceneQuery())[0], ["red"], TILE)
    assert internal.paths == []

    listed = TrustBoundary(allowed_hosts=("example.org", "localhost"))
    source = open_source(public.url + "/redirect.json", boundary=listed)
    assert (source.read(source.search(TILE, SceneQuery())[0], ["red"], TILE).values == 5).all()


# Secrets in catalog errors ----------------------------------------------------------------


@pytest.mark.timeout(30)
def test_catalog_errors_never_show_passwords_or_tokens(serve, demo, tmp_path):
    no_search = serve(lambda handler: _send(handler, json.dumps(_catalog()).encode()))
    static = serve(_files({"/catalog.json": _catalog(["./a.json"]), "/a.json": _item("a", "./v.tif")}))

    def secret_url(url, path):
        return url.replace("http://", "http://user:hunter2@") + path + "?token=s3cr3t&page=1"

    refused = secret_url(f"http://127.0.0.1:{_closed_port()}", "/api")
    cases = [
        (secret_url(no_search.url, "/api"), None, "not a STAC API with item search"),
        (refused, None, "cannot open the STAC API"),
        (secret_url(static.url, "/catalog.json"), "nothing", "no items in collection 'nothing'"),
    ]
    for url, collection, problem in cases:
        with pytest.raises(CatalogError, match=problem) as caught:
            open_source(url, collection)
        message = str(caught.value)
        assert "user:***@" in message and "token=***" in message and "\n" not in message
        assert not any(secret in message for secret in SECRETS), message

    result = CliRunner().invoke(cli, [
        "create-samples", "--catalog", refused, "--bands", "red", "--bbox", ",".join(map(str, demo.bbox)),
        "--resolution", "10", "--tilesize", "64", "--labels", demo.labels, "--out", str(tmp_path / "out"),
    ])
    assert result.exit_code == 1 and "Error: " in result.output and "cannot open the STAC API" in result.output
    assert not any(secret in result.output for secret in SECRETS), result.output


# Limits -------------------------------------------------------------------------------------


def _paging_forever(serve):
    """A STAC API whose every page of results links to one more."""

    def handle(handler):
        if handler.path == "/":
            return _send(handler, json.dumps(_landing_page(server.url)).encode())
        page = int(handler.path.partition("page=")[2] or 0)
        links = [{"rel": "next", "href": f"{server.url}/search?page={page + 1}", "method": "GET"}]
        body = {"type": "FeatureCollection", "features": [_item(f"p{page}", "./v.tif")], "links": links}
        _send(handler, json.dumps(body).encode(), kind="application/geo+json")

    server = serve(handle)
    return server


@pytest.mark.timeout(30)
def test_a_stac_api_that_pages_forever_stops_at_max_pages(serve, monkeypatch):
    server = _paging_forever(serve)
    with pytest.raises(CatalogError, match=rf"search failed for tile {TILE.key} \(more than 100 pages of results"):
        open_source(server.url).search(TILE, SceneQuery())
    assert sum(path.startswith("/search") for path in server.paths) == 100  # the default

    monkeypatch.setenv("TFCHIPS_STAC_MAX_PAGES", "3")
    server.paths.clear()
    with pytest.raises(CatalogError, match=r"more than 3 pages of results; raise TFCHIPS_STAC_MAX_PAGES"):
        open_source(server.url).search(TILE, SceneQuery())
    assert sum(path.startswith("/search") for path in server.paths) == 3


def _endless(handler, announce=None):
    """Headers, then spaces until the client hangs up (or 20 s pass)."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    if announce is not None:
        handler.send_header("Content-Length", str(announce))
    handler.end_headers()
    stop = time.monotonic() + 20
    try:
        while time.monotonic() < stop:
            handler.wfile.write(b" " * 65536)
    except OSError:
        pass


def _dripping(handler):
    """A 100-byte body announced, then one byte every 0.5 s (for at most 30 s)."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", "100")
    handler.end_headers()
    try:
        for _ in range(60):
            handler.wfile.write(b" ")
            handler.wfile.flush()
            time.sleep(0.5)
    except OSError:
        pass


@pytest.mark.timeout(30)
def test_an_endless_or_oversized_body_stops_at_max_bytes(serve, monkeypatch, tmp_path):
    monkeypatch.setenv("TFCHIPS_CATALOG_MAX_BYTES", "1000000")
    endless = serve(_endless)
    with pytest.raises(CatalogError, match=rf"{endless.url}/catalog\.json: larger than 1000000 bytes"):
        open_source(endless.url + "/catalog.json")
    with pytest.raises(CatalogError, match=r"cannot open the STAC API \(.*larger than 1000000 bytes"):
        open_source(endless.url + "/api")
    announced = serve(lambda handler: _endless(handler, announce=10**12))
    started = time.monotonic()
    with pytest.raises(CatalogError, match=r"larger than 1000000 bytes \(TFCHIPS_CATALOG_MAX_BYTES"):
        open_source(announced.url + "/catalog.json")
    assert time.monotonic() - started < 5
    big = tmp_path / "catalog.json"
    big.write_text(json.dumps(_catalog()) + " " * 1_000_000)
    with pytest.raises(CatalogError, match=rf"{big}: larger than 1000000 bytes"):
        open_source(str(big))


@pytest.mark.timeout(30)
def test_a_body_sent_a_byte_at_a_time_stops_at_the_deadline(serve, monkeypatch):
    # Each byte comes well within the per-read timeout: only a deadline for the whole request helps.
    monkeypatch.setenv("TFCHIPS_HTTP_TIMEOUT", "2")
    monkeypatch.setenv("TFCHIPS_HTTP_DEADLINE", "1.5")
    drip = serve(_dripping)
    for url, problem in [(drip.url + "/catalog.json", "no complete answer"), (drip.url + "/api", "cannot open")]:
        started = time.monotonic()
        with pytest.raises(CatalogError, match=rf"{problem}.*within 1\.5 s \(TFCHIPS_HTTP_DEADLINE"):
            open_source(url)
        assert 1.5 <= time.monotonic() - started < 5


@pytest.mark.timeout(30)
def test_a_static_catalog_holds_at_most_max_items(tmp_path, monkeypatch):
    names = [f"i{n}" for n in range(30)]
    for name in names:
        _write_json(tmp_path / f"{name}.json", _item(name, "./v.tif"))
    path = _write_json(tmp_path / "catalog.json", _catalog([f"./{name}.json" for name in names]))
    assert len(open_source(path)) == 30
    open_source.cache_clear()
    monkeypatch.setenv("TFCHIPS_CATALOG_MAX_ITEMS", "20")
    with pytest.raises(CatalogError, match=rf"{path}: holds more than 20 items \(raise TFCHIPS_CATALOG_MAX_ITEMS"):
        open_source(path)
    with pytest.raises(ConfigError, match="TFCHIPS_CATALOG_MAX_ITEMS must be a whole number of at least 1"):
        CatalogLimits.from_environment({"TFCHIPS_CATALOG_MAX_ITEMS": "0"})


# Items that fail only themselves --------------------------------------------------------


@pytest.mark.timeout(30)
def test_items_with_unusable_geometries_are_left_out_and_the_job_goes_on(tmp_path, caplog):
    ring = _ring()
    (west, south), (east, north) = ring[0], ring[2]
    geometries = {
        "good": None,
        "bowtie": {"type": "Polygon", "coordinates": [[[west, south], [east, north], [east, south], [west, north],
                                                       [west, south]]]},  # self-intersecting: repaired
        "nan": {"type": "Polygon", "coordinates": [ring[:2] + [[float("nan"), float("nan")]] + ring[3:]]},
        "unclosed": {"type": "Polygon", "coordinates": [[[float("nan"), south]] + ring[1:]]},
        "infinite": {"type": "MultiPolygon", "coordinates": [[[[float("inf"), south]] + ring[1:]]]},
        "malformed": {"type": "Polygon", "coordinates": "x"},
    }
    _geotiff(tmp_path / "v.tif", 9)
    for day, (name, geometry) in enumerate(geometries.items(), 1):
        _write_json(tmp_path / f"{name}.json", _item(name, "./v.tif", day, geometry))
    path = _write_json(tmp_path / "catalog.json", _catalog([f"./{name}.json" for name in geometries]))
    with caplog.at_level(logging.WARNING, logger="tfchips.sources.stac"):
        source = open_source(path)
    assert [s.id for s in source.search(TILE, SceneQuery())] == ["good", "bowtie"]
    for name, problem in [("nan", "NaN or infinite"), ("infinite", "NaN or infinite"), ("unclosed", "NaN or infinite"),
                          ("malformed", "an unusable geometry")]:
        assert any(f"item '{name}' ({tmp_path / name}.json) is left out: it has {problem}" in r.message
                   for r in caplog.records), name

    imagery = imagery_for_tile(TILE, ImageryRequest.from_options({"catalog": path, "bands": "red"}))
    assert (imagery.data == 9).all() and imagery.scenes == ("bowtie",)  # closest: the latest scene


@pytest.mark.timeout(30)
def test_create_samples_refuses_a_local_asset_of_a_network_catalog_unless_the_config_allows_it(
    tmp_path, serve, monkeypatch
):
    from conftest import write_vector

    for variable in TRUST_VARIABLES.values():
        monkeypatch.setenv(variable, "")  # the command sets them for its workers; restored after
    secret = _geotiff(tmp_path / "secret.tif", 77)
    public = serve(_files({"/catalog.json": _catalog(["./a.json"]), "/a.json": _item("a", f"file://{secret}")}))
    labels = write_vector(tmp_path / "labels.geojson", [TILE.geometry.buffer(0.01)], fields={"class": [1]})
    (tmp_path / "tiles.txt").write_text(TILE.key + "\n")
    args = ["create-samples", "--catalog", public.url + "/catalog.json", "--bands", "red", "--labels", labels,
            "--attribute", "class", "--tiles", str(tmp_path / "tiles.txt"), "--workers", "1"]

    refused = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "refused")])
    assert refused.exit_code == 1
    refusal = f"failed: {TILE.key}: asset 'red' of item 'a' ({public.url}/a.json) file://{secret} is refused"
    assert refusal in refused.output

    open_source.cache_clear()
    (tmp_path / "job.yaml").write_text("allow-local-assets: true\n")
    allowed = CliRunner().invoke(cli, [*args, "--config", str(tmp_path / "job.yaml"), "--out", str(tmp_path / "ok")])
    assert allowed.exit_code == 0, allowed.output
    (chip,) = (tmp_path / "ok" / "images").iterdir()
    with rasterio.open(chip) as dataset:
        assert (dataset.read() == 77).all()  # what the user allowed is read
