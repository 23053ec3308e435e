"""Real components (opt-in, `make test-remote`): create-samples against stac-fastapi-pgstac on
PostgreSQL + PostGIS, against a static catalog served by nginx with byte ranges, and against the
same files on disk, all on 127.0.0.1 (scripts/real_components.sh). The chips must be identical.

Imagery is Landsat-like at real scale (`benchmarks.landsat_like`): 30 m scenes of
TFCHIPS_REMOTE_SCENE_PX pixels (7,000 by default), three dates in each of UTM zones 12 and 13,
overlapping, and tiles of 256 px over an area that straddles the zones. Each run's wall time
and tiles per second are printed (figures to compare belong in benchmarks/; these are for a look).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import shapely

from benchmarks.landsat_like import layout, write_landsat_like
from conftest import write_vector

from tfchips.manifest import manifest_rows

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv-remote"
SCRIPT = REPO / "scripts" / "real_components.sh"
SCENE_PX = int(os.environ.get("TFCHIPS_REMOTE_SCENE_PX", "7000"))
# Half the width and height of the area, as a share of a scene's: about 50 km square at 7,000 px.
AREA_SHARE = float(os.environ.get("TFCHIPS_REMOTE_AREA_SHARE", "0.125"))
COLLECTION = "landsat-like"
CENTER = (-108.0, 38.0)  # on the boundary of UTM zones 12 and 13


def _missing() -> list[str]:
    missing = []
    if not (VENV / ".installed").exists():
        missing.append(f"{VENV.name} (stac-fastapi-pgstac, pypgstac, uvicorn)")
    if not Path("/usr/lib/postgresql/15/lib/postgis-3.so").exists():
        missing.append("PostgreSQL 15 with PostGIS (postgresql-15-postgis-3)")
    if shutil.which("nginx") is None:
        missing.append("nginx (nginx-light)")
    return missing


@pytest.fixture(scope="module")
def components():
    missing = _missing()
    if missing:
        # `make test-remote` sets TFCHIPS_REQUIRE_REMOTE, so that there a missing component fails.
        assert not os.environ.get("TFCHIPS_REQUIRE_REMOTE"), f"missing: {', '.join(missing)}"
        pytest.skip(f"needs {', '.join(missing)}: `make test-remote` installs them and runs this")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def landsat(components, tmp_path_factory):
    """The static catalog (files/), labels, and the bounding box of the area (W, S, E, N degrees)."""
    root = tmp_path_factory.mktemp("remote")
    catalog = write_landsat_like(root / "files", SCENE_PX, layout(SCENE_PX, CENTER))
    half = SCENE_PX * 30.0 * AREA_SHARE / 111_000  # degrees of latitude, about
    lon, lat = CENTER
    bbox = (lon - 1.25 * half, lat - half, lon + 1.25 * half, lat + half)
    # Fields of classes 1 and 2 scattered over the area.
    width, height = bbox[2] - bbox[0], bbox[3] - bbox[1]
    fields = [
        shapely.box(bbox[0] + width * i / 7, bbox[1] + height * j / 5,
                    bbox[0] + width * (i + 0.6) / 7, bbox[1] + height * (j + 0.5) / 5)
        for i in range(7) for j in range(5)
    ]
    labels = write_vector(root / "labels.gpkg", fields, fields={"class": [1 + (k % 2) for k in range(len(fields))]})
    return root, Path(catalog), labels, bbox


@pytest.fixture(scope="module")
def services(landsat):
    """PostgreSQL + pgstac, the STAC API and nginx started by the script, stopped by it afterwards."""
    root, catalog, _, _ = landsat
    ports = {"TFCHIPS_PG_PORT": _free_port(), "TFCHIPS_API_PORT": _free_port(), "TFCHIPS_FILES_PORT": _free_port()}
    files_url = f"http://127.0.0.1:{ports['TFCHIPS_FILES_PORT']}"
    collection, items = _pgstac_documents(root, catalog, files_url)
    state = root / "state"
    environment = {**os.environ, **{name: str(port) for name, port in ports.items()}}
    start = [str(SCRIPT), "start", str(VENV), str(state), str(catalog.parent), str(collection), str(items)]
    try:
        subprocess.run(start, env=environment, check=True, timeout=600, capture_output=True, text=True)
    except subprocess.CalledProcessError as error:
        pytest.fail(f"real_components.sh start failed: {error.stderr[-3000:]}")
    try:
        yield f"http://127.0.0.1:{ports['TFCHIPS_API_PORT']}", files_url, state
    finally:
        subprocess.run([str(SCRIPT), "stop", str(state)], env=environment, timeout=600, check=False)


def _pgstac_documents(root: Path, catalog: Path, files_url: str) -> tuple[Path, Path]:
    """The collection and the items (ndjson) to load, asset hrefs absolute URLs on nginx, as APIs serve them."""
    items, boxes = [], []
    for link in json.loads(catalog.read_text())["links"]:
        if link["rel"] != "item":
            continue
        path = (catalog.parent / link["href"]).resolve()
        item = json.loads(path.read_text())
        folder = path.parent.relative_to(catalog.parent).as_posix()
        for asset in item["assets"].values():
            asset["href"] = f"{files_url}/{folder}/{asset['href'].removeprefix('./')}"
        item["collection"], item["links"] = COLLECTION, []
        items.append(item)
        boxes.append(item["bbox"])
    first = items[0]["assets"]
    collection = {
        "type": "Collection", "stac_version": "1.0.0", "id": COLLECTION, "license": "proprietary",
        "description": "Landsat-like scenes generated by tests/test_remote.py",
        "extent": {
            "spatial": {"bbox": [[min(b[0] for b in boxes), min(b[1] for b in boxes),
                                  max(b[2] for b in boxes), max(b[3] for b in boxes)]]},
            "temporal": {"interval": [[min(i["properties"]["datetime"] for i in items), None]]},
        },
        "item_assets": {key: {k: v for k, v in asset.items() if k != "href"} for key, asset in first.items()},
        "links": [],
    }
    collection_path, items_path = root / "collection.json", root / "items.ndjson"
    collection_path.write_text(json.dumps(collection))
    items_path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return collection_path, items_path


def _create_samples(catalog: str, out: Path, bbox, labels, *extra) -> dict:
    """Run the CLI in a fresh process (2 workers); returns the manifest with the run's figures added."""
    args = [
        sys.executable, "-m", "tfchips", "create-samples", "--catalog", catalog, *extra,
        "--bands", "red,nir", "--mask-bits", "qa_pixel=cloud", "--method", "closest",
        "--reference-date", "2023-06-20", "--bbox", ",".join(f"{v:.6f}" for v in bbox),
        "--resolution", "30", "--tilesize", "256", "--labels", str(labels), "--attribute", "class",
        "--provenance", "--workers", "2", "--out", str(out),
    ]
    start = time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - start
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["tiles"] = sorted(manifest_rows(str(out), manifest), key=lambda row: row["key"])
    tiles = len(manifest["tiles"])
    manifest["run"] = {"wall_s": round(wall, 1), "tiles": tiles, "tiles_per_s": round(tiles / wall, 2)}
    return manifest


def _chip_files(out: Path) -> dict[str, bytes]:
    return {
        f"{sub}/{path.name}": path.read_bytes()
        for sub in ("images", "labels", "provenance")
        for path in sorted((out / sub).glob("*.tif"))
    }


@pytest.mark.timeout(7200)
def test_api_static_catalog_over_http_and_local_files_give_identical_chips(landsat, services, tmp_path):
    _, catalog, labels, bbox = landsat
    api_url, files_url, state = services
    runs = {
        "stac-api": _create_samples(api_url, tmp_path / "api", bbox, labels, "--collection", COLLECTION),
        "static-http": _create_samples(f"{files_url}/catalog.json", tmp_path / "http", bbox, labels),
        "local": _create_samples(str(catalog), tmp_path / "local", bbox, labels),
    }
    print(f"\nscenes of {SCENE_PX} px:", json.dumps({name: m["run"] for name, m in runs.items()}, indent=1))
    local = runs["local"]
    written = [t for t in local["tiles"] if t["status"] == "written"]
    assert local["counts"]["failed"] == 0 and len(written) >= 4
    # Tiles of both zones, and tiles that take pixels from more than one scene.
    assert {t["key"].split(":")[3] for t in written} == {"12", "13"}
    assert any(len(t["scenes"]) > 1 for t in written)
    for name in ("stac-api", "static-http"):
        assert runs[name]["tiles"] == local["tiles"], name
        assert _chip_files(tmp_path / {"stac-api": "api", "static-http": "http"}[name]) == _chip_files(tmp_path / "local")
    # nginx answered byte ranges (206), not whole files.
    statuses = [line.split('"')[2].split()[0] for line in (state / "access.log").read_text().splitlines()]
    assert statuses.count("206") > len(written) and "200" in statuses  # 200: the catalog and item JSON
