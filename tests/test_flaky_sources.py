"""Flaky remote sources: a loopback STAC API and COG server that injects timeouts, 500s,
429s with Retry-After, dropped connections and truncated bodies.

Reads retry with exponential backoff and jitter up to ``TFCHIPS_RETRY_ATTEMPTS``; what
still fails is recorded as a failed tile, the job completes, and a re-run fills it in.
Waits between tries are recorded instead of slept (GDAL's own waits are set to 1 ms).
"""

from __future__ import annotations

import collections
import http.server
import json
import os
import random
import re
import threading
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner
from shapely.geometry import shape

from tfchips.cli.main import cli
from tfchips.errors import CatalogError, ConfigError, RasterReadError
from tfchips.grid import Tile, filename_to_key
from tfchips.labels import load_ground_truth
from tfchips.sources import BandRef, CatalogLimits, SceneQuery, open_source, read_bands, retry
from tfchips.sources.search_blocks import block_of
from tfchips.sources.retry import RetryError, RetryPolicy, TransientError, retry_after_seconds, with_retries
from tfchips.manifest import manifest_rows

SCENE = "DEMO_S2_20230623"
DAY = "2023-06-23"
BBOX = "-105.95,35.68,-105.941,35.684"  # 6 tiles of 32 px (+4 pad) at 10 m
TILE = Tile.from_key("32:4:10.0:13:-268:12340")
HANG_SECONDS = 5.0  # a hung request is held this long at most (the client gives up after 0.5 s)
RETRY_AFTER = 3  # seconds a 429 asks for


class FlakyServer(http.server.ThreadingHTTPServer):
    """A STAC API (``/``, ``/search``) and a file server with HTTP ranges (``/files/...``) on
    127.0.0.1, which answers some requests with a fault instead.

    ``inject(kinds, match)`` queues faults for requests that ``match(method, path, body)``;
    each matching request takes the next one (``"500"``, ``"503"``, ``"429"``, ``"reset"``,
    ``"truncate"``, ``"hang"``), a kind ending in ``"*"`` is served forever. The server
    stops by itself after ``max_requests`` requests or ``lifetime`` seconds.
    """

    daemon_threads = True

    def __init__(self, root: Path, max_requests: int = 3000, lifetime: float = 120.0):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        scenes = sorted(name for name in os.listdir(root) if name.startswith("DEMO_"))
        self.items = [_item_json(root, scene, self.url) for scene in scenes]
        self.max_requests = max_requests
        self.log: list[tuple[str, str, str]] = []  # (method, path, fault or "ok")
        self._faults: list[tuple[Callable, collections.deque]] = []
        self._lock = threading.Lock()
        self.released = threading.Event()
        self._timer = threading.Timer(lifetime, self.stop)
        self._timer.daemon = True

    def start(self) -> FlakyServer:
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self._timer.start()
        return self

    def stop(self) -> None:
        self.released.set()  # frees hung handlers
        self._timer.cancel()
        threading.Thread(target=self.shutdown, daemon=True).start()

    def inject(self, kinds: list[str], match: Callable[[str, str, dict | None], bool]) -> None:
        with self._lock:
            self._faults.append((match, collections.deque(kinds)))

    def fault(self, method: str, path: str, body: dict | None) -> str:
        with self._lock:
            if len(self.log) >= self.max_requests:
                self.stop()
                return "reset"
            kind = "ok"
            for match, kinds in self._faults:
                if kinds and match(method, path, body):
                    kind = kinds[0] if kinds[0].endswith("*") else kinds.popleft()
                    break
            self.log.append((method, path, kind.rstrip("*")))
            return kind.rstrip("*")

    def served(self, kind: str) -> int:
        return sum(entry[2] == kind for entry in self.log)


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self._answer(send_body=True)

    def do_HEAD(self):
        self._answer(send_body=False)

    def do_POST(self):
        self._answer(send_body=True)

    def _answer(self, send_body: bool) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        kind = self.server.fault(self.command, self.path, body)
        if kind == "reset":
            self.close_connection = True
            return
        if kind == "hang":
            self.server.released.wait(HANG_SECONDS)
            self.close_connection = True
            return
        if kind in ("500", "503", "429"):
            self.send_response(int(kind))
            if kind == "429":
                self.send_header("Retry-After", str(RETRY_AFTER))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        status, headers, payload = self._content(body)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if send_body:
            # A truncated body: the promised length, half the bytes, then the connection drops.
            self.wfile.write(payload[: len(payload) // 2] if kind == "truncate" else payload)
        self.close_connection = True

    def _content(self, body: dict | None) -> tuple[int, dict, bytes]:
        server = self.server
        route = self.path.split("?")[0]
        if route == "/":
            return 200, {"Content-Type": "application/json"}, json.dumps(_landing_page(server.url)).encode()
        if route == "/search":
            area = shape(body["intersects"])
            features = [item for item in server.items if shape(item["geometry"]).intersects(area)]
            document = {"type": "FeatureCollection", "features": features, "links": []}
            return 200, {"Content-Type": "application/geo+json"}, json.dumps(document).encode()
        if route.startswith("/files/"):
            path = (server.root / route[len("/files/") :]).resolve()
            if server.root.resolve() not in path.parents or not path.is_file():
                return 404, {}, b""
            data = path.read_bytes()
            match = re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
            if not match:
                return 200, {"Accept-Ranges": "bytes"}, data
            first = int(match.group(1))
            last = min(int(match.group(2) or len(data) - 1), len(data) - 1)
            return 206, {"Accept-Ranges": "bytes", "Content-Range": f"bytes {first}-{last}/{len(data)}"}, data[
                first : last + 1
            ]
        return 404, {}, b""


def _landing_page(url: str) -> dict:
    return {
        "type": "Catalog",
        "stac_version": "1.0.0",
        "id": "flaky",
        "description": "loopback STAC API with injected faults",
        "conformsTo": ["https://api.stacspec.org/v1.0.0/core", "https://api.stacspec.org/v1.0.0/item-search"],
        "links": [
            {"rel": "self", "href": url + "/", "type": "application/json"},
            {"rel": "root", "href": url + "/", "type": "application/json"},
            {"rel": "search", "href": url + "/search", "type": "application/geo+json", "method": "POST"},
        ],
    }


def _item_json(root: Path, scene: str, url: str) -> dict:
    item = json.loads((root / scene / f"{scene}.json").read_text())
    for key, asset in item["assets"].items():
        asset["href"] = f"{url}/files/{scene}/{key}.tif"
    item["links"] = []
    return item


def searches_for(tile: Tile, block: int = CatalogLimits().search_block) -> Callable:
    """Searches of the block of ``block`` x ``block`` tiles that holds ``tile``."""
    area = block_of(tile, block).geometry
    return lambda method, path, body: path.startswith("/search") and shape(body["intersects"]).centroid.within(area)


def range_reads_of(name: str) -> Callable:
    return lambda method, path, body: method == "GET" and path.split("?")[0].endswith(name)


@pytest.fixture
def serve(demo):
    servers = []

    def start(**kwargs) -> FlakyServer:
        server = FlakyServer(Path(demo.root), **kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
        server.server_close()


@pytest.fixture
def pauses(monkeypatch):
    """Fast retries: tiny GDAL delays, a 0.5 s timeout, and Python's waits recorded, not slept."""
    monkeypatch.setenv("TFCHIPS_RETRY_ATTEMPTS", "4")
    monkeypatch.setenv("TFCHIPS_RETRY_BACKOFF", "0.001")
    monkeypatch.setenv("TFCHIPS_HTTP_TIMEOUT", "0.5")
    recorded: list[float] = []
    monkeypatch.setattr(retry, "_pause", recorded.append)
    open_source.cache_clear()
    load_ground_truth.cache_clear()
    yield recorded
    open_source.cache_clear()


# The policy itself ------------------------------------------------------------------


def test_backoff_doubles_with_jitter_up_to_the_cap():
    policy = RetryPolicy(attempts=6, backoff=0.1, max_backoff=1.0)
    rng = random.Random(7)
    delays = [policy.delay(n, rng=rng) for n in range(1, 7)]
    for n, delay in enumerate(delays, start=1):
        nominal = min(1.0, 0.1 * 2 ** (n - 1))
        assert 0.5 * nominal <= delay <= nominal
    assert len(set(delays)) == 6  # jitter: no two waits alike
    assert policy.delay(1, retry_after=7.0) == 1.0  # Retry-After is honoured up to the cap
    assert RetryPolicy(backoff=0.1, max_backoff=30).delay(1, retry_after=7.0) == 7.0


def test_with_retries_retries_transient_errors_only_and_gives_up_after_the_limit(monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr(retry, "_pause", waits.append)
    policy = RetryPolicy(attempts=3, backoff=0.01, max_backoff=10)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise TransientError("HTTP 429", retry_after=2.0 if len(calls) == 1 else None)
        return "done"

    assert with_retries(flaky, policy) == "done" and len(calls) == 3
    assert waits[0] == 2.0 and 0.01 <= waits[1] <= 0.02

    calls.clear()
    with pytest.raises(ValueError, match="not transient"):
        with_retries(lambda: calls.append(1) or (_ for _ in ()).throw(ValueError("not transient")), policy)
    assert len(calls) == 1

    with pytest.raises(RetryError, match="HTTP 503; gave up after 3 attempts"):
        with_retries(lambda: (_ for _ in ()).throw(TransientError("HTTP 503")), policy)


def test_retry_after_takes_seconds_or_an_http_date_and_the_policy_comes_from_the_environment():
    now = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    assert retry_after_seconds("120") == 120.0
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=30), usegmt=True), now=now) == 30.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None
    policy = RetryPolicy.from_environment({"TFCHIPS_RETRY_ATTEMPTS": "7", "TFCHIPS_HTTP_TIMEOUT": "2.5"})
    assert (policy.attempts, policy.timeout, policy.backoff) == (7, 2.5, 0.5)
    # GDAL never retries on its own: tfchips retries whole reads (see below).
    assert policy.gdal_options() == {
        "GDAL_HTTP_MAX_RETRY": "0",
        "GDAL_HTTP_TIMEOUT": "2.5",
        "GDAL_HTTP_CONNECTTIMEOUT": "2.5",
    }
    with pytest.raises(ConfigError, match="TFCHIPS_RETRY_ATTEMPTS must be a whole number of at least 1"):
        RetryPolicy.from_environment({"TFCHIPS_RETRY_ATTEMPTS": "0"})
    with pytest.raises(ConfigError, match="TFCHIPS_RETRY_BACKOFF must be a number, got 'soon'"):
        RetryPolicy.from_environment({"TFCHIPS_RETRY_BACKOFF": "soon"})


# Each kind of remote read --------------------------------------------------------------


def test_stac_api_rides_out_500_429_resets_truncation_and_timeouts(serve, pauses, monkeypatch):
    monkeypatch.setenv("TFCHIPS_RETRY_ATTEMPTS", "6")
    server = serve()
    server.inject(["500", "truncate"], lambda method, path, body: path == "/")
    server.inject(["429", "500", "reset", "truncate", "hang"], searches_for(TILE))
    source = open_source(server.url)
    scenes = source.search(TILE, SceneQuery())
    assert [s.id for s in scenes] == sorted(i["id"] for i in server.items)
    landing = [kind for _, path, kind in server.log if path == "/"]
    assert landing[:3] == ["500", "truncate", "ok"] and set(landing[3:]) <= {"ok"}
    searches = [kind for _, path, kind in server.log if path == "/search"]
    assert searches == ["429", "500", "reset", "truncate", "hang", "ok"]
    # Two waits to open, five to search, doubling from 1 ms with jitter; after the 429, its Retry-After.
    nominal = [0.001, 0.002, None, 0.002, 0.004, 0.008, 0.016]
    assert len(pauses) == len(nominal) and pauses[2] == RETRY_AFTER
    assert all(0.5 * n <= p <= n for p, n in zip(pauses, nominal) if n is not None)


def test_stac_api_search_that_keeps_failing_names_the_tile_and_the_attempts(serve, pauses):
    server = serve()
    server.inject(["503*"], searches_for(TILE))
    source = open_source(server.url)
    with pytest.raises(CatalogError, match=rf"search failed for tile {TILE.key} \(.*gave up after 4 attempts\)"):
        source.search(TILE, SceneQuery())
    assert server.served("503") == 4


def test_static_catalog_over_http_retries_each_file(serve, pauses):
    server = serve()
    server.inject(["truncate", "503"], lambda method, path, body: path == "/files/catalog.json")
    server.inject(["429", "reset"], lambda method, path, body: path.endswith(f"{SCENE}.json"))
    source = open_source(server.url + "/files/catalog.json")
    assert len(source) == len(server.items)
    assert server.served("truncate") == 1 and server.served("429") == 1 and server.served("reset") == 1
    assert RETRY_AFTER in pauses

    open_source.cache_clear()
    server.inject(["500*"], lambda method, path, body: path.endswith(f"{SCENE}.json"))
    with pytest.raises(Exception, match=rf"{SCENE}\.json: cannot read STAC JSON \(.*gave up after 4 attempts\)"):
        open_source(server.url + "/files/catalog.json")


def test_cog_range_reads_survive_faults_and_give_exactly_the_local_pixels(demo, serve, pauses):
    server = serve()
    names = ("red", "nir", "scl")
    local = read_bands([BandRef(os.path.join(demo.root, SCENE, f"{n}.tif")) for n in names], TILE)
    # GDAL does not retry a request itself, but it probes a file's header more than once
    # and asks again for the rest of a truncated range: some faults never fail a read...
    server.inject(["500", "truncate", "429", "hang", "truncate"], range_reads_of("red.tif"))
    server.inject(["reset", "truncate"], range_reads_of("nir.tif"))
    # ...others do, like a small file fetched whole in one request that stays truncated in
    # GDAL's cache: tfchips drops that cache and reads the file again.
    server.inject(["truncate"], range_reads_of("scl.tif"))
    remote = read_bands([BandRef(f"{server.url}/files/{SCENE}/{n}.tif") for n in names], TILE)
    np.testing.assert_array_equal(np.ma.getdata(remote.values), np.ma.getdata(local.values))
    np.testing.assert_array_equal(np.ma.getmaskarray(remote.values), np.ma.getmaskarray(local.values))
    assert server.served("truncate") == 4 and server.served("hang") == 1 and server.served("reset") == 1
    # The reads tfchips had to redo, each after a pause: opening red.tif and nir.tif (a faulty
    # header), a block of red.tif (after the 429) and of scl.tif (truncated, cached whole by GDAL).
    assert len(pauses) == 4


def test_cog_that_keeps_failing_is_a_read_error_naming_the_url_after_exactly_the_configured_tries(
    serve, pauses, monkeypatch
):
    requests = {}
    for attempts in (1, 3):
        monkeypatch.setenv("TFCHIPS_RETRY_ATTEMPTS", str(attempts))
        server = serve()  # a new URL: nothing cached by the previous read
        server.inject(["500*"], range_reads_of("red.tif"))
        url = f"{server.url}/files/{SCENE}/red.tif"
        reason = rf"cannot read {re.escape(url)}: .*gave up after {attempts} attempts"
        with pytest.raises(RasterReadError, match=reason):
            read_bands([BandRef(url)], TILE)
        requests[attempts] = server.served("500")
    # Three reads by tfchips, and none of GDAL's own retries inside them (which would make
    # it nine): three times the requests of one read, whatever GDAL asks for in each.
    assert len(pauses) == 2 and requests[1] >= 1 and requests[3] == 3 * requests[1]


def test_read_errors_of_a_signed_url_hide_the_signature(tmp_path):
    transform = Affine(10, 0, TILE.bounds[0], 0, -10, TILE.bounds[3])
    profile = dict(driver="GTiff", width=8, height=8, count=1, dtype="uint8", transform=transform)
    with rasterio.open(tmp_path / "one.tif", "w", crs=TILE.crs, **profile) as dataset:
        dataset.write(np.ones((1, 8, 8), dtype=np.uint8))
    with rasterio.open(tmp_path / "nocrs.tif", "w", **profile) as dataset:
        dataset.write(np.ones((1, 8, 8), dtype=np.uint8))
    server = FlakyServer(tmp_path).start()
    try:
        for name, index, problem in (("one", 2, "has 1 band(s), no band 2"), ("nocrs", 1, "has no CRS")):
            url = f"{server.url}/files/{name}.tif?sv=2024&sig=SECRET{name}"
            with pytest.raises(RasterReadError) as caught:
                read_bands([BandRef(url, index=index)], TILE)
            message = str(caught.value)
            assert problem in message and f"{name}.tif?sv=2024&sig=***" in message and "SECRET" not in message
    finally:
        server.stop()
        server.server_close()


# A whole job ----------------------------------------------------------------------------


def _job(demo, catalog: str, out: Path) -> list[str]:
    return [
        "create-samples", "--bbox", BBOX, "--resolution", "10", "--tilesize", "32", "--pad", "4",
        "--catalog", catalog, "--bands", "blue,green,red,nir", "--start", DAY, "--end", DAY,
        "--mask-asset", "scl", "--mask-values", "3,8,9,10", "--labels", demo.labels, "--attribute", "class",
        "--out", str(out), "--workers", "1",
    ]


def _chips(out: Path) -> dict[str, bytes]:
    # The chips only: labels/*.vrt (ESRI's view of the ignore value) are metadata.
    return {
        f"{sub}/{p.name}": p.read_bytes()
        for sub in ("images", "labels")
        for p in sorted((out / sub).iterdir())
        if p.suffix == ".tif"
    }


def test_job_completes_with_failed_tiles_and_a_rerun_fills_them_in(demo, serve, pauses, tmp_path, monkeypatch):
    monkeypatch.setenv("TFCHIPS_RETRY_ATTEMPTS", "3")
    monkeypatch.setenv("TFCHIPS_STAC_SEARCH_BLOCK", "1")  # a search per tile, so that one tile's can fail alone
    # Each run gets its own server (its own URLs), so no run reads what another cached.
    clean = serve()
    assert CliRunner().invoke(cli, _job(demo, clean.url, tmp_path / "reference")).exit_code == 0
    reference = _chips(tmp_path / "reference")
    assert len(reference) == 12

    flaky = serve()
    flaky.inject(["500*"], searches_for(TILE, block=1))  # this tile's search never succeeds
    # And one file read in five meets a transient fault.
    count = iter(range(10**6))
    flaky.inject(
        ["500", "truncate", "429", "reset"] * 25,
        lambda method, path, body: method == "GET" and path.startswith("/files/") and next(count) % 5 == 4,
    )
    out = tmp_path / "chips"
    first = CliRunner().invoke(cli, _job(demo, flaky.url, out))
    assert first.exit_code == 1, first.output
    reason = rf"search failed for tile {TILE.key} \(.*gave up after 3 attempts\)"
    assert re.search(rf"failed: {TILE.key}: .*{reason}", first.output)
    assert "5 written (0 from an earlier run), 0 skipped, 1 failed" in first.output
    # The faults did reach the readers (each byte is fetched once now, so few reads meet one).
    assert flaky.served("500") >= 1 and flaky.served("truncate") >= 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert [t["key"] for t in manifest_rows(str(out)) if t["status"] == "failed"] == [TILE.key]
    # What the flaky run wrote equals the clean run, byte for byte.
    written = _chips(out)
    assert {filename_to_key(os.path.basename(n)) for n in written} == {
        filename_to_key(os.path.basename(n)) for n in reference
    } - {TILE.key}
    assert all(written[name] == reference[name] for name in written)

    healed = serve()
    second = CliRunner().invoke(cli, _job(demo, healed.url, out))
    assert second.exit_code == 0, second.output
    assert "6 written (5 from an earlier run), 0 skipped, 0 failed" in second.output
    assert _chips(out) == reference
    assert not [p for p in out.rglob(".partial-*")]
