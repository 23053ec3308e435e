"""STAC semantics (issue #18, Build 4-9): scale and offset, bit-flag masks, relative hrefs,
honest outcomes, label hygiene and retries, on small catalogs with known pixels and a
STAC API served on 127.0.0.1 by the test itself (files with HTTP byte ranges)."""

from __future__ import annotations

import json
import re
import threading
import http.server
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from click.testing import CliRunner

from conftest import write_vector
from tfchips.cli.main import cli
from tfchips.demo_data import SceneSpec, write_catalog
from tfchips.errors import CatalogError, ConfigError, LabelError
from tfchips.grid import Tile, key_to_filename
from tfchips.imagery import ImageryRequest, imagery_for_tile
from tfchips.labels import GroundTruth, LabelRequest, load_ground_truth
from tfchips.samples import SampleJob, create_samples
from tfchips.sources import SceneQuery, open_source, retry
from tfchips.sources.retry import RetryPolicy
from tfchips.manifest import manifest_rows

TILE = Tile(tilesize=4, pad=0, resolution=10.0, zone=13, ti=-540, tj=24682)
WEST, SOUTH, EAST, NORTH = TILE.bounds
ON_GRID = Affine(10, 0, WEST - 10, 0, -10, NORTH + 10)  # 6 x 6 arrays, one pixel around the tile
# Landsat Collection 2 Level-2 surface reflectance.
SCALE, OFFSET = 2.75e-05, -0.2


@pytest.fixture(autouse=True)
def fresh_sources():
    open_source.cache_clear()
    load_ground_truth.cache_clear()
    yield
    open_source.cache_clear()
    load_ground_truth.cache_clear()


def spec(scene_id: str, day: int, cloud: float = 5.0, **assets) -> SceneSpec:
    return SceneSpec(
        id=scene_id,
        datetime=datetime(2023, 6, day, 10, tzinfo=timezone.utc),
        crs=TILE.crs,
        transform=ON_GRID,
        assets=assets,
        cloud_cover=cloud,
        stac_nodata=0,
        common_names={"red": ["red"]} if "red" in assets else {},
    )


def catalog(folder: Path, scenes: list[SceneSpec], scaled: tuple[str, ...] = ()) -> str:
    """A static catalog of ``scenes``; the assets named in ``scaled`` declare Landsat's scale and offset."""
    path = write_catalog(folder, scenes)
    for scene in scenes:
        item_path = folder / scene.id / f"{scene.id}.json"
        item = json.loads(item_path.read_text())
        for key in scaled:
            item["assets"][key]["raster:bands"][0].update(scale=SCALE, offset=OFFSET)
        item_path.write_text(json.dumps(item))
    return path


def full(value: int, dtype=np.uint16) -> np.ndarray:
    return np.full((6, 6), value, dtype=dtype)


def labels_file(tmp_path: Path, **fields) -> str:
    """One polygon over the whole tile, in its UTM CRS."""
    box = shapely.box(WEST - 5, SOUTH - 5, EAST + 5, NORTH + 5)
    return write_vector(tmp_path / "labels.gpkg", [box], crs=TILE.crs, fields=fields)


def job(tmp_path: Path, imagery: dict, labels: dict | None = None, out: str = "chips") -> SampleJob:
    labels = {"labels": labels_file(tmp_path), **(labels or {})}
    return SampleJob(ImageryRequest.from_options(imagery), LabelRequest.from_options(labels), str(tmp_path / out))


def run_job(sample_job: SampleJob) -> tuple[dict, list[dict]]:
    """The manifest and rows of a one-tile job."""
    create_samples([TILE], sample_job, {}, workers=1)
    return json.loads(Path(sample_job.out, "manifest.json").read_text()), list(manifest_rows(sample_job.out))


# 4. Scale and offset ------------------------------------------------------------------------


def test_raster_bands_scale_and_offset_are_applied_in_float32_and_recorded(tmp_path):
    path = catalog(tmp_path / "c", [spec("a", 1, red=full(10000), nir=full(20000))], scaled=("red",))
    result = imagery_for_tile(TILE, ImageryRequest(catalog=path, bands=("red", "nir")))
    assert result.data.dtype == np.float32 and result.scaled
    np.testing.assert_allclose(result.data[0], np.float32(10000 * SCALE + OFFSET))  # 0.075, not 10000
    assert (result.data[1] == 20000).all()  # a band that declares no scale keeps its values
    assert result.scale_offset == ((SCALE, OFFSET), (1.0, 0.0))
    # --dtype still decides the output type.
    wide = imagery_for_tile(TILE, ImageryRequest(catalog=path, bands=("red",), dtype="float64"))
    assert wide.data.dtype == np.float64

    manifest, rows = run_job(job(tmp_path, {"catalog": path, "bands": "red,nir"}))
    entry = rows[0]
    assert entry["scale_offset"] == {"applied": True, "bands": [[SCALE, OFFSET], [1.0, 0.0]]}
    with rasterio.open(tmp_path / "chips" / "images" / (key_to_filename(TILE.key) + ".tif")) as chip:
        assert chip.dtypes[0] == "float32" and chip.scales == (1.0, 1.0) and chip.offsets == (0.0, 0.0)
        np.testing.assert_allclose(chip.read(1), np.float32(0.075), rtol=1e-6)


def test_stored_values_keep_the_numbers_and_the_chips_carry_scale_and_offset(tmp_path):
    path = catalog(tmp_path / "c", [spec("a", 1, red=full(10000))], scaled=("red",))
    result = imagery_for_tile(TILE, ImageryRequest.from_options({"catalog": path, "bands": "red", "stored_values": True}))
    assert result.data.dtype == np.uint16 and (result.data == 10000).all() and not result.scaled

    manifest, rows = run_job(job(tmp_path, {"catalog": path, "bands": "red", "stored-values": "true"}))
    assert rows[0]["scale_offset"] == {"applied": False, "bands": [[SCALE, OFFSET]]}
    with rasterio.open(tmp_path / "chips" / "images" / (key_to_filename(TILE.key) + ".tif")) as chip:
        assert chip.dtypes[0] == "uint16" and chip.scales == (SCALE,) and chip.offsets == (OFFSET,)
        assert (chip.read(1) == 10000).all()


# 5. Bit-flag masks --------------------------------------------------------------------------


def qa_pixel() -> np.ndarray:
    """Tile pixel (r, c) is at array (r + 1, c + 1): (0, 0) cloud (bit 3), (0, 1) shadow (bit 4),
    (0, 2) cirrus (bit 2), (0, 3) clear (bit 6), the rest clear too."""
    qa = full(1 << 6)
    qa[1, 1], qa[1, 2], qa[1, 3] = 1 << 3 | 1 << 6, 1 << 4, 1 << 2
    return qa


@pytest.mark.parametrize(
    "bits, masked",
    [
        ("qa_pixel=3,4", [(0, 0), (0, 1)]),
        ("qa_pixel=cloud,shadow", [(0, 0), (0, 1)]),
        ("qa_pixel=landsat-clouds", [(0, 0), (0, 1), (0, 2)]),  # fill, dilated cloud, cirrus, cloud, shadow
        ({"qa_pixel": [2]}, [(0, 2)]),  # the YAML form
    ],
)
def test_mask_bits_mask_pixels_whose_mask_asset_has_those_bits_set(tmp_path, bits, masked):
    path = catalog(tmp_path / "c", [spec("a", 1, red=full(500), qa_pixel=qa_pixel())])
    result = imagery_for_tile(TILE, ImageryRequest.from_options({"catalog": path, "bands": "red", "mask_bits": bits}))
    expected = np.ones(TILE.shape, dtype=bool)
    for row, col in masked:
        expected[row, col] = False
    np.testing.assert_array_equal(result.valid, expected)


def test_mask_bits_from_the_command_line_and_scl_names_in_mask_values(tmp_path):
    path = catalog(tmp_path / "c", [spec("a", 1, red=full(500), qa_pixel=qa_pixel())])
    out = tmp_path / "out"
    args = [
        "create-samples", "--catalog", path, "--bands", "red", "--mask-bits", "qa_pixel=cloud",
        "--labels", labels_file(tmp_path), "--tiles", str(_tile_list(tmp_path)), "--out", str(out), "--workers", "1",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    tile = next(manifest_rows(str(out)))
    assert tile["valid_fraction"] == 15 / 16
    # Sentinel-2 SCL classes by name, and their cloud preset.
    named = ImageryRequest.from_options({"catalog": path, "bands": "red", "mask_asset": "scl", "mask_values": "s2-clouds,snow"})
    assert named.mask_values == (3, 8, 9, 10, 11)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "bits, message",
    [
        ("qa_pixel=64", r"`mask_bits`: 64 is out of range; expected numbers 0 to 63"),
        ("qa_pixel=clouds", r"`mask_bits`: expected numbers or the names .*landsat-clouds.*; got 'clouds'"),
        ("qa_pixel", r"`mask_bits`: expected ASSET=BITS such as qa_pixel=1,3,4"),
    ],
)
def test_bad_mask_bits_are_one_config_error_naming_the_option(bits, message):
    with pytest.raises(ConfigError, match=message):
        ImageryRequest.from_options({"catalog": "c.json", "bands": "red", "mask_bits": bits})


def _tile_list(tmp_path: Path) -> Path:
    path = tmp_path / "tiles.txt"
    path.write_text(TILE.key + "\n")
    return path


# A STAC API on loopback ---------------------------------------------------------------------


class _Api(http.server.ThreadingHTTPServer):
    """``/`` and ``/search`` of a STAC API, ``/collections``, and any other path from ``files``
    (with HTTP byte ranges). ``outage(path)`` True answers 503 instead."""

    daemon_threads = True

    def __init__(self, items, files, collections=("s2",)):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.items, self.files, self.collections = items, files, collections
        self.outage = lambda path: False
        self.log: list[tuple[str, int]] = []


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _answer(self, send_body=True):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, kind, payload = self._respond()
        self.server.log.append((self.path, status))
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", self._range)
        self.end_headers()
        if send_body:
            self.wfile.write(payload)

    def _respond(self):
        server, path = self.server, self.path.split("?")[0]
        if server.outage(path):
            return 503, "text/plain", b"down"
        if path == "/":
            links = [{"rel": "search", "href": server.url + "/search", "type": "application/geo+json", "method": "POST"}]
            return _json({
                "type": "Catalog", "stac_version": "1.0.0", "id": "api", "description": "loopback",
                "conformsTo": ["https://api.stacspec.org/v1.0.0/core", "https://api.stacspec.org/v1.0.0/item-search"],
                "links": [{"rel": "self", "href": server.url + "/"}, {"rel": "root", "href": server.url + "/"}, *links],
            })
        if path == "/search":
            return _json({"type": "FeatureCollection", "features": server.items(server.url), "links": []})
        if path == "/collections":
            listed = [{"id": c, "type": "Collection", "links": []} for c in server.collections]
            return _json({"collections": listed, "links": []})
        data = server.files.get(path)
        if data is None:
            return 404, "text/plain", b"not found"
        match = re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if not match:
            return 200, "image/tiff", data
        first, last = int(match.group(1)), min(int(match.group(2) or len(data) - 1), len(data) - 1)
        self._range = f"bytes {first}-{last}/{len(data)}"
        return 206, "image/tiff", data[first : last + 1]

    def do_GET(self):
        self._answer()

    def do_HEAD(self):
        self._answer(send_body=False)

    def do_POST(self):
        self._answer()


def _json(document) -> tuple[int, str, bytes]:
    return 200, "application/json", json.dumps(document).encode()


@pytest.fixture
def api():
    servers = []

    def start(items, files, **kwargs) -> _Api:
        server = _Api(items, files, **kwargs)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def api_item(item_id: str, href: str, links: list, cloud: float = 5.0) -> dict:
    lon0, lat0, lon1, lat1 = TILE.geometry.buffer(0.001).bounds
    return {
        "type": "Feature", "stac_version": "1.0.0", "id": item_id, "collection": "s2",
        "geometry": {"type": "Polygon", "coordinates": [[[lon0, lat0], [lon1, lat0], [lon1, lat1], [lon0, lat1], [lon0, lat0]]]},
        "bbox": [lon0, lat0, lon1, lat1],
        "properties": {"datetime": "2023-06-01T10:00:00Z", "eo:cloud_cover": cloud},
        "links": links,
        "assets": {"red": {"href": href, "raster:bands": [{"nodata": 0}]}},
    }


def red_file(tmp_path: Path, value: int) -> bytes:
    path = catalog(tmp_path / f"v{value}", [spec(f"v{value}", 1, red=full(value))])
    return (Path(path).parent / f"v{value}" / "red.tif").read_bytes()


# 6. Relative hrefs ---------------------------------------------------------------------------


def test_relative_asset_hrefs_of_api_items_resolve_against_the_items_own_url(tmp_path, api):
    files = {
        "/collections/s2/items/red.tif": red_file(tmp_path, 11),  # beside the canonical item URL
        "/static/b/red.tif": red_file(tmp_path, 22),  # beside the item's self link
        "/red.tif": red_file(tmp_path, 99),  # where the API's own URL would resolve them
    }
    server = api(
        lambda base: [
            api_item("a", "./red.tif", []),
            api_item("b", "./red.tif", [{"rel": "self", "href": f"{base}/static/b/b.json"}]),
        ],
        files,
    )
    source = open_source(server.url, "s2")
    scenes = {scene.id: scene for scene in source.search(TILE, SceneQuery())}
    assert (source.read(scenes["a"], ["red"], TILE).values == 11).all()
    assert (source.read(scenes["b"], ["red"], TILE).values == 22).all()
    assert not any(path == "/red.tif" for path, _ in server.log)


# 7. Honest outcomes -------------------------------------------------------------------------


def test_a_tile_whose_scenes_the_filters_all_remove_is_skipped_saying_so(tmp_path):
    path = catalog(tmp_path / "c", [spec("a", 1, 80.0, red=full(5)), spec("b", 2, 90.0, red=full(6))])
    manifest, rows = run_job(job(tmp_path, {"catalog": path, "bands": "red", "max_cloud": 50}))
    assert rows[0] == {
        "key": TILE.key,
        "status": "skipped",
        "reason": "no scene after filters: 0 of 2 passed `max_cloud=50`",
        "valid_fraction": 0.0,
    }
    assert manifest["counts"] == {"written": 0, "skipped": 1, "failed": 0}


def test_a_tile_whose_scenes_have_no_valid_pixel_is_skipped_and_the_command_succeeds(tmp_path):
    path = catalog(tmp_path / "c", [spec("a", 1, red=full(0))])  # nodata everywhere
    out = tmp_path / "out"
    args = [
        "create-samples", "--catalog", path, "--bands", "red", "--labels", labels_file(tmp_path),
        "--tiles", str(_tile_list(tmp_path)), "--out", str(out), "--workers", "1",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "0 written (0 from an earlier run), 1 skipped, 0 failed" in result.output
    tile = next(manifest_rows(str(out)))
    assert (tile["status"], tile["reason"]) == ("skipped", "no valid pixel in any scene")


@pytest.mark.timeout(30)
def test_a_band_no_item_has_stops_the_job_up_front_listing_what_is_there(tmp_path):
    path = catalog(tmp_path / "c", [spec("a", 1, red=full(5), scl=full(4, np.uint8))])
    sample_job = job(tmp_path, {"catalog": path, "bands": "rde"})
    message = (
        rf"{re.escape(path)}: no item has 'rde' \(`bands`\); asset keys: red, scl; eo:bands names: red"
    )
    with pytest.raises(ConfigError, match=message):
        create_samples([TILE], sample_job, {}, workers=1)
    assert not Path(sample_job.out).exists()  # nothing written
    # The command line says it once, with the flag.
    result = CliRunner().invoke(cli, [
        "create-samples", "--catalog", path, "--bands", "red", "--mask-asset", "qa", "--mask-values", "1",
        "--labels", labels_file(tmp_path), "--tiles", str(_tile_list(tmp_path)), "--out", str(tmp_path / "o"),
    ])
    assert result.exit_code != 0 and result.output.count("no item has 'qa' (--mask-asset)") == 1, result.output
    assert "failed:" not in result.output


@pytest.mark.timeout(30)
def test_an_unknown_collection_of_a_stac_api_is_refused_listing_the_collections(tmp_path, api):
    server = api(lambda base: [], {}, collections=("landsat-c2-l2", "sentinel-2-l2a"))
    with pytest.raises(CatalogError, match=r"no collection 'sentinel-2' \(`collection`\); collections: landsat-c2-l2, sentinel-2-l2a"):
        open_source(server.url, "sentinel-2")
    assert open_source(server.url, "sentinel-2-l2a").band_names() is None  # no item_assets: not judged


# 8. Label hygiene and text classes ---------------------------------------------------------


def test_labels_where_the_image_has_no_data_get_the_ignore_value_unless_asked_to_keep_them(tmp_path):
    red = full(7)
    red[1:3, 1:5] = 0  # the tile's first two rows have no data
    path = catalog(tmp_path / "c", [spec("a", 1, red=red)])
    manifest, _ = run_job(job(tmp_path, {"catalog": path, "bands": "red"}))
    with rasterio.open(tmp_path / "chips" / "labels" / (key_to_filename(TILE.key) + ".tif")) as chip:
        label, nodata = chip.read(1), chip.nodata
    assert nodata == 255 and (label[:2] == 255).all() and (label[2:] == 1).all()
    assert manifest["ignore_value"] == 255 and manifest["statistics"]["class_counts"] == {"1": 8}
    # ESRI reads the ignored pixels as NoData (0) through the label's VRT.
    assert (tmp_path / "chips" / "map.txt").read_text().split()[1].endswith(".vrt")
    with rasterio.open(tmp_path / "chips" / "labels" / (key_to_filename(TILE.key) + ".vrt")) as esri:
        assert (esri.read(1)[:2] == 0).all() and (esri.read(1)[2:] != 0).all()

    kept, _ = run_job(job(tmp_path, {"catalog": path, "bands": "red"}, {"label_without_imagery": True}, out="kept"))
    assert kept["ignore_value"] is None
    with rasterio.open(tmp_path / "kept" / "labels" / (key_to_filename(TILE.key) + ".tif")) as chip:
        assert chip.nodata is None and (chip.read(1) == 1).all()


def test_text_class_attributes_map_to_values_through_classes(tmp_path):
    boxes = [shapely.box(WEST, NORTH - 20, EAST, NORTH), shapely.box(WEST, SOUTH, EAST, NORTH - 20)]
    path = write_vector(tmp_path / "text.gpkg", boxes, crs=TILE.crs, fields={"kind": np.array(["water", "building"], dtype=object)})
    request = LabelRequest.from_options({"labels": path, "attribute": "kind", "classes": "water=1,building=2"})
    label = GroundTruth.load(request).rasterize(TILE)
    assert (label[:2] == 1).all() and (label[2:] == 2).all()
    assert SampleJob(ImageryRequest(catalog="c.json", bands=("red",)), request, "out").class_names == {
        1: "water", 2: "building"}  # the manifest's class names, from the same option
    # The YAML form, and names on either side of '='.
    assert LabelRequest.from_options({"labels": path, "classes": {"water": 1, "0": "background"}}).classes == (
        (0, "background"), (1, "water"))
    with pytest.raises(LabelError, match=r"has 1 values that `classes` does not name, e\.g\. 'building'"):
        GroundTruth.load(LabelRequest.from_options({"labels": path, "attribute": "kind", "classes": "water=1"}))
    with pytest.raises(ConfigError, match=r"`classes` expects VALUE=NAME or NAME=VALUE pairs"):
        LabelRequest.from_options({"labels": path, "classes": "water=lake"})


# 9. Retries ---------------------------------------------------------------------------------


@pytest.fixture
def clock(monkeypatch):
    """Seconds on a clock that only waits move: `with_retries` waits without sleeping."""
    for name in ("TFCHIPS_RETRY_ATTEMPTS", "TFCHIPS_RETRY_BACKOFF", "TFCHIPS_RETRY_MAX_BACKOFF", "TFCHIPS_RETRY_DEADLINE"):
        monkeypatch.delenv(name, raising=False)
    now = [0.0]
    monkeypatch.setattr(retry, "_clock", lambda: now[0])
    monkeypatch.setattr(retry, "_pause", lambda seconds: now.__setitem__(0, now[0] + seconds))
    return now


@pytest.mark.timeout(30)
def test_the_default_retries_ride_out_a_15_second_outage_of_the_api(tmp_path, api, clock):
    assert RetryPolicy.from_environment() == RetryPolicy()
    server = api(lambda base: [api_item("a", f"{base}/red.tif", [])], {"/red.tif": red_file(tmp_path, 11)})
    source = open_source(server.url)
    began = clock[0]
    server.outage = lambda path: path == "/search" and clock[0] - began < 15.0
    assert [scene.id for scene in source.search(TILE, SceneQuery())] == ["a"]
    assert clock[0] - began >= 15.0
    assert [status for path, status in server.log if path == "/search"][-1] == 200


@pytest.mark.timeout(30)
def test_retries_stop_at_the_deadline_which_the_environment_sets(tmp_path, api, clock, monkeypatch):
    monkeypatch.setenv("TFCHIPS_RETRY_DEADLINE", "5")
    server = api(lambda base: [], {})
    source = open_source(server.url)
    server.outage = lambda path: path == "/search"
    began = clock[0]
    with pytest.raises(CatalogError, match=r"HTTP 503 .*; gave up after \d attempts in \d\.\d s \(`TFCHIPS_RETRY_DEADLINE`\)"):
        source.search(TILE, SceneQuery())
    assert clock[0] - began <= 5.0
    with pytest.raises(ConfigError, match="TFCHIPS_RETRY_DEADLINE must be a number of seconds >= 0"):
        RetryPolicy.from_environment({"TFCHIPS_RETRY_DEADLINE": "-1"})


# The same options from a YAML config ------------------------------------------------------


def test_the_new_options_come_from_yaml_too(tmp_path):
    qa = qa_pixel()
    path = catalog(tmp_path / "c", [spec("a", 1, red=full(10000), qa_pixel=qa)], scaled=("red",))
    kinds = write_vector(
        tmp_path / "kinds.gpkg", [shapely.box(WEST - 5, SOUTH - 5, EAST + 5, NORTH + 5)], crs=TILE.crs,
        fields={"kind": np.array(["water"], dtype=object)},
    )
    config = tmp_path / "job.yaml"
    config.write_text(
        f"catalog: {path}\nbands: [red]\nmask_bits: {{qa_pixel: [3, 4]}}\nstored_values: true\n"
        f"labels: {kinds}\nattribute: kind\nclasses: {{water: 1}}\nlabel_without_imagery: true\n"
        f"tiles: {_tile_list(tmp_path)}\nworkers: 1\n"
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["create-samples", "--config", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    tile = next(manifest_rows(str(out)))
    assert tile["valid_fraction"] == 14 / 16 and tile["scale_offset"]["applied"] is False
    assert manifest["class_names"] == {"1": "water"} and manifest["ignore_value"] is None
    with rasterio.open(out / "labels" / (key_to_filename(TILE.key) + ".tif")) as chip:
        assert (chip.read(1) == 1).all()  # water, kept where the cloud masks the image
