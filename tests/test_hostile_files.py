"""Hostile files and URLs: credentials that must never be printed or written, a TIFF whose
tags ask for tens of gigabytes, a raster that declares 200,000 x 200,000 pixels under one
tile, chips named with bytes that are not UTF-8. Each fails only itself, with one line that
names it; the rest of the job goes on.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import requests
from affine import Affine
from click.testing import CliRunner

from test_chips_reader import make_chip_folder
from test_flaky_sources import FlakyServer

from tfchips.cli.main import cli
from tfchips.errors import ChipError, ConfigError, RasterReadError
from tfchips.grid import Tile
from tfchips.records import RecordOptions, WriterOptions, write_dataset_json, write_tfrecords
from tfchips.records.geotiff import parse_geotiff, tiff_pixels
from tfchips.redaction import redact_text, redact_url
from tfchips.report import report_dataset
from tfchips.sources import BandRef, read_bands

SECRET = "S3CR3T"  # every credential below contains it
TILE = Tile(32, 4, 10.0, 13, 50, 400)


@pytest.fixture
def served_demo(demo):
    """The demo folder (catalog, COGs, labels) over HTTP on 127.0.0.1, with ranges."""
    server = FlakyServer(Path(demo.root), lifetime=60.0).start()
    yield server
    server.stop()
    server.server_close()


def _credentials(url: str) -> str:
    """``url`` with a user and password and every kind of credential parameter the issue lists."""
    scheme, rest = url.split("://", 1)
    query = f"token=t-{SECRET}&pwd=p-{SECRET}&auth=a-{SECRET}&access_key=k-{SECRET}&pass=s-{SECRET}&page=2"
    return f"{scheme}://reader:pw-{SECRET}@{rest}?{query}"


# Redaction --------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_user_info_and_secret_parameters_are_masked_and_the_rest_kept():
    assert redact_url(_credentials("https://h.io/a.gpkg")) == (
        "https://reader:***@h.io/a.gpkg?token=***&pwd=***&auth=***&access_key=***&pass=***&page=2"
    )
    signed = "https://b.s3.amazonaws.com/k.tif?X-Amz-Date=1&X-Amz-Security-Token=x&X-Goog-Signature=y&apikey=z"
    assert redact_url(signed) == (
        "https://b.s3.amazonaws.com/k.tif?X-Amz-Date=1&X-Amz-Security-Token=***&X-Goog-Signature=***&apikey=***"
    )
    assert redact_url(f"https://tok-{SECRET}@h.io/x#access_token=a") == "https://***@h.io/x#access_token=***"
    kept = "https://h.io/search?collections=s2&keywords=water&author=me&design=a&X-Amz-Expires=60"
    assert redact_url(kept) == kept
    # urllib3 and requests quote the path without its host.
    logged = '"GET /files/x.tif?sv=1&sig=abc HTTP/1.1" 200 10'
    assert redact_text(logged) == '"GET /files/x.tif?sv=1&sig=*** HTTP/1.1" 200 10'
    assert redact_text("read /x.tif?token=abc: HTTP 500.") == "read /x.tif?token=***: HTTP 500."


@pytest.mark.timeout(30)
def test_labels_url_with_credentials_leaves_none_in_warnings_config_or_manifest(demo, served_demo, tmp_path):
    labels = _credentials(f"{served_demo.url}/files/{os.path.relpath(demo.labels, demo.root)}")
    out = tmp_path / "chips"
    job = [
        "create-samples", "--bbox", "-105.95,35.68,-105.945,35.684", "--resolution", "10", "--tilesize", "32",
        "--pad", "4", "--catalog", demo.catalog, "--bands", "red,nir", "--start", "2023-06-23",
        "--end", "2023-06-23", "--labels", labels, "--attribute", "class", "--out", str(out), "--workers", "1",
    ]
    result = subprocess.run([sys.executable, "-m", "tfchips", *job], capture_output=True, text=True, timeout=25)

    assert result.returncode == 0, result.stderr
    # The credentials did travel: the server was asked for the labels with them.
    assert any(SECRET in path for _, path, _ in served_demo.log)
    # GDAL (through pyogrio) warns about the file, quoting its URL: masked.
    assert "RuntimeWarning" in result.stderr and "token=***&pwd=***&auth=***" in result.stderr
    config, manifest = (out / "config.yaml").read_text(), (out / "manifest.json").read_text()
    assert "labels: http://reader:***@127.0.0.1" in config and "access_key=***&pass=***&page=2" in config
    for text in (result.stdout, result.stderr, config, manifest):
        assert SECRET not in text


@pytest.mark.timeout(30)
def test_tiles_url_error_line_is_masked(served_demo, tmp_path):
    tiles = _credentials(f"{served_demo.url}/files/no-such-tiles.txt")
    result = CliRunner().invoke(cli, ["create-samples", "--tiles", tiles, "--catalog", "x", "--bands", "red",
                                      "--labels", "l.gpkg", "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert result.output.startswith("Error: http://reader:***@127.0.0.1:") and "token=***&pwd=***" in result.output
    assert SECRET not in result.output


@pytest.mark.timeout(30)
def test_log_records_of_urllib3_and_tracebacks_are_masked(served_demo, caplog):
    url = f"{served_demo.url}/files/catalog.json?sig=g-{SECRET}&X-Amz-Credential=c-{SECRET}"
    # Another test may have quietened urllib3's logger: its requests are logged at DEBUG.
    with caplog.at_level(logging.DEBUG), caplog.at_level(logging.DEBUG, logger="urllib3"):
        assert requests.get(url, timeout=5).status_code == 200
        try:
            raise OSError(f"cannot fetch {url}")
        except OSError:
            logging.getLogger("tfchips.test").exception("fetch failed")
    assert '"GET /files/catalog.json?sig=***&X-Amz-Credential=*** HTTP/1.1" 200' in caplog.text
    assert "OSError: cannot fetch http://127.0.0.1:" in caplog.text
    assert SECRET not in caplog.text

    # An error nobody catches: Python prints its traceback, message and source lines included.
    crash = f"import tfchips.redaction\nraise OSError('cannot fetch {url}')"
    result = subprocess.run([sys.executable, "-c", crash], capture_output=True, text=True, timeout=20)
    assert result.returncode == 1 and "OSError: cannot fetch http://127.0.0.1:" in result.stderr
    assert "sig=***&X-Amz-Credential=***" in result.stderr and SECRET not in result.stderr


@pytest.mark.timeout(30)
def test_dataset_json_and_report_html_are_masked(tmp_path):
    # A page about a folder whose path holds a token (a mount of a signed URL, say).
    folder = tmp_path / f"mount?token=t-{SECRET}" / "chips"
    make_chip_folder(folder, "uint16", count=2)
    records = tmp_path / "records"
    write_tfrecords(str(folder), str(records), WriterOptions(RecordOptions("bytes"), shards=1))
    description = json.loads((records / "dataset.json").read_text())
    reason = f"http://u:pw-{SECRET}@h.io/chips/images/a.tif?sig=g-{SECRET}: HTTP 403"
    description["skipped"] = [{"name": "images/a.tif", "reason": reason}]
    path = write_dataset_json(records, description)
    masked = "http://u:***@h.io/chips/images/a.tif?sig=***: HTTP 403"
    assert json.loads(Path(path).read_text())["skipped"][0]["reason"] == masked

    html, _ = report_dataset(folder)
    assert "mount?token=***" in html and SECRET not in html


# TIFF tags and read windows ----------------------------------------------------------------


def _tiff_with_huge_tags(tags: int = 3000, tag_bytes: int = 2_000_000) -> bytes:
    """A classic little-endian TIFF of one uint8 pixel whose first IFD also holds ``tags`` BYTE
    tags of ``tag_bytes`` each, all pointing at the same ``tag_bytes`` after the directory
    (2 MB on disk; libtiff takes a minute and 6 GB to open it)."""
    image = [(256, 1), (257, 1), (258, 8), (259, 1), (262, 1), (277, 1), (278, 1)]  # SHORTs: 14 bytes
    count = len(image) + 2 + tags
    values_at = 8 + 2 + 12 * count + 4
    pixel_at = values_at + tag_bytes
    entries = [struct.pack("<HHIHH", tag, 3, 1, value, 0) for tag, value in image]
    entries += [struct.pack("<HHII", 273, 4, 1, pixel_at), struct.pack("<HHII", 279, 4, 1, 1)]  # LONGs: 8 bytes
    entries += [struct.pack("<HHII", 40000 + i, 1, tag_bytes, values_at) for i in range(tags)]
    directory = struct.pack("<H", count) + b"".join(entries) + b"\0" * 4
    return b"II*\0" + struct.pack("<I", 8) + directory + b"\1" * tag_bytes + b"\7"


@pytest.mark.timeout(30)
def test_tiff_tags_past_the_limit_fail_their_chip_fast_and_the_rest_is_written(tmp_path, monkeypatch):
    data = _tiff_with_huge_tags()
    started = time.perf_counter()
    expected = r"x\.tif: the tags of its first TIFF directory hold 6000000022 bytes, more than the limit of 16777216 "
    with pytest.raises(ChipError, match=expected + r"\(TFCHIPS_MAX_TIFF_TAG_BYTES raises it\)"):
        parse_geotiff("x.tif", data, False)
    with pytest.raises(ChipError, match="TFCHIPS_MAX_TIFF_TAG_BYTES"):
        tiff_pixels(data, (1, 1, 1), "uint8")  # the bytes of a record, as make_dataset decodes them
    assert time.perf_counter() - started < 1.0

    chips = tmp_path / "chips"
    names = list(make_chip_folder(chips, "uint16", count=3))
    (chips / "images" / f"{names[1]}.tif").write_bytes(data)
    result = CliRunner().invoke(cli, ["to-tfrecords", str(chips), "--out", str(tmp_path / "records"), "--shards", "1",
                                      "--skip-bad"])
    assert result.exit_code == 0, result.output
    assert f"skipped {names[1]}: " in result.output and "TFCHIPS_MAX_TIFF_TAG_BYTES raises it" in result.output
    assert "data: 2 records in 1 shards" in result.output
    # Readers that open files with GDAL refuse it before libtiff reads its tags: chips, source rasters.
    inspected = CliRunner().invoke(cli, ["inspect", str(chips), "--json"])
    (problem,) = json.loads(inspected.stdout)["problems"]
    assert problem["path"].endswith(f"{names[1]}.tif") and "TFCHIPS_MAX_TIFF_TAG_BYTES raises it" in problem["message"]
    (tmp_path / "red.tif").write_bytes(data)
    source = r"^item-1: .*red\.tif: the tags .* \(TFCHIPS_MAX_TIFF_TAG_BYTES raises it\)$"
    with pytest.raises(RasterReadError, match=source):
        read_bands([BandRef(str(tmp_path / "red.tif"))], TILE, label="item-1")

    # The limit is the environment's to change; it applies to every chip, ordinary ones too.
    ordinary = (chips / "images" / f"{names[0]}.tif").read_bytes()
    assert parse_geotiff("a.tif", ordinary, False) is not None
    monkeypatch.setenv("TFCHIPS_MAX_TIFF_TAG_BYTES", "16")
    with pytest.raises(ChipError, match=r"a\.tif: .* more than the limit of 16 \(TFCHIPS_MAX_TIFF_TAG_BYTES"):
        parse_geotiff("a.tif", ordinary, False)
    monkeypatch.setenv("TFCHIPS_MAX_TIFF_TAG_BYTES", "lots")
    with pytest.raises(ConfigError, match="TFCHIPS_MAX_TIFF_TAG_BYTES must be a whole number of bytes"):
        parse_geotiff("a.tif", ordinary, False)


def _raster(path: Path, size: int, tile: Tile = TILE) -> str:
    """A sparse uint8 GeoTIFF of ``size`` x ``size`` pixels covering the padded ``tile`` (29 kB for 200,000)."""
    west, _, east, north = tile.bounds
    pixel = (east - west) / size
    with rasterio.open(
        path, "w", driver="GTiff", width=size, height=size, count=1, dtype="uint8", crs=tile.crs,
        transform=Affine(pixel, 0, west, 0, -pixel, north), tiled=True, blockxsize=4096 if size > 4096 else 16,
        blockysize=4096 if size > 4096 else 16, sparse_ok=True, bigtiff="YES" if size > 4096 else "NO",
    ) as dataset:
        if size <= 4096:
            dataset.write(np.full((1, size, size), 7, dtype="uint8"))
    return str(path)


@pytest.mark.timeout(30)
def test_read_window_past_the_limit_fails_that_read_only(tmp_path, monkeypatch):
    huge, small = _raster(tmp_path / "huge.tif", 200_000), _raster(tmp_path / "small.tif", 80)
    started = time.perf_counter()
    with pytest.raises(RasterReadError, match=(
        r"^scene-1: .*huge\.tif: a read window of 1 x 200000 x 200000 \(bands x rows x cols\) is 40000000000 pixels, "
        r"more than the limit of 100000000 \(TFCHIPS_MAX_READ_PIXELS raises it\)$"
    )):
        read_bands([BandRef(huge)], TILE, label="scene-1")
    assert time.perf_counter() - started < 5.0
    # Another file under the same tile reads as ever.
    assert (read_bands([BandRef(small)], TILE).values == 7).all()

    monkeypatch.setenv("TFCHIPS_MAX_READ_PIXELS", "1000")
    with pytest.raises(RasterReadError, match=r"small\.tif: a read window of 1 x 80 x 80 .* limit of 1000 "):
        read_bands([BandRef(small)], TILE)


# Chip names ---------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_chip_named_with_bytes_that_are_not_utf8_fails_alone(tmp_path):
    chips = tmp_path / "chips"
    names = list(make_chip_folder(chips, "uint16", count=3))
    for side in ("images", "labels"):
        os.rename(chips / side / f"{names[1]}.tif", os.fsencode(chips / side) + b"/bad\xff\xfe.tif")
    escaped = "bad\\xff\\xfe.tif"

    refused = CliRunner().invoke(cli, ["to-tfrecords", str(chips), "--out", str(tmp_path / "refused"), "--shards", "1"])
    assert refused.exit_code == 1
    assert refused.output.strip().endswith(
        f"images/{escaped}: the file name is not valid UTF-8; rename the file (--skip-bad leaves bad chips out)"
    )
    assert not (tmp_path / "refused").exists() or not list((tmp_path / "refused").iterdir())

    out = tmp_path / "records"
    skipped = CliRunner().invoke(cli, ["to-tfrecords", str(chips), "--out", str(out), "--shards", "1", "--skip-bad"])
    assert skipped.exit_code == 0, skipped.output
    assert "data: 2 records in 1 shards" in skipped.output
    assert f"skipped labels/{escaped}: the file name is not valid UTF-8" in skipped.output
    description = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    assert [bad["name"] for bad in description["skipped"]] == [f"images/{escaped}", f"labels/{escaped}"]

    inspected = CliRunner().invoke(cli, ["inspect", str(chips), "--json"])
    report = json.loads(inspected.stdout)
    problems = {problem["path"]: problem["message"] for problem in report["problems"]}
    assert problems[str(chips / "images" / escaped)] == "the file name is not valid UTF-8; rename the file"
    assert report["counts"]["chips"] == 2
    # Once renamed, the chip is an ordinary one.
    for side in ("images", "labels"):
        shutil.move(os.fsencode(chips / side) + b"/bad\xff\xfe.tif", chips / side / f"{names[1]}.tif")
    assert json.loads(CliRunner().invoke(cli, ["inspect", str(chips), "--json"]).stdout)["counts"]["chips"] == 3
