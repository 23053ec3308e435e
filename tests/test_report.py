import base64
import io
import json
import re
import shutil

import numpy as np
import test_inspect
from PIL import Image
from test_inspect import run
from test_preview import write_folder

from tfchips.inspect import inspect_dataset
from tfchips.manifest import class_colour
from tfchips.preview import preview_dataset
from tfchips.report import SPLIT_COLOURS, render_report, report_dataset

# The demo chip folder and its TFRecords, built once per module.
demo_chips = test_inspect.demo_chips
demo_records = test_inspect.demo_records


def section(html, anchor):
    match = re.search(rf'<section id="{anchor}">(.*?)</section>', html, re.DOTALL)
    assert match, f"no section {anchor}"
    return match.group(1)


def embedded_png(html):
    (data,) = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    return base64.b64decode(data)


def test_demo_report_holds_the_figures_plots_and_preview(demo_chips, tmp_path):
    out = tmp_path / "report.html"
    result = run("report", demo_chips, "--out", out)
    assert result.exit_code == 0, result.output
    assert re.fullmatch(re.escape(f"tfchips report: wrote {out} (verified)") + r" \(\d+\.\d s\)\n", result.stderr)
    html = out.read_text()
    inspection = inspect_dataset(demo_chips)
    assert html.startswith("<!DOCTYPE html>") and "Verified: no problem found." in html
    assert 'id="problems"' not in html
    # Self-contained: nothing is fetched from elsewhere.
    assert not re.search(r"https?://|<script|<link|@import|url\(", html)
    assert re.findall(r'src="([^"]{0,22})', html) == ["data:image/png;base64,"]

    bands = section(html, "bands")
    for band in inspection.bands:
        assert f'aria-label="histogram of {band.name}"' in bands
        assert f"<td>{band.count:,}</td>" in bands
        assert bands.count('fill="#4c72b0"><title>') >= len(band.histogram.counts)
    assert bands.count("<svg") == 4

    classes = section(html, "classes")
    for value, name in ((0, "background"), (1, "building"), (2, "water"), (3, "vegetation")):
        summary = inspection.classes[value]
        assert f'<td class="text">{value}</td><td class="text">{name}</td><td>{summary.pixels:,}</td>' in classes
        assert f'fill="#{"".join(f"{c:02x}" for c in class_colour(value))}"' in classes
        assert f"{100 * summary.frequency:.2f}%" in classes

    footprints = section(html, "map")
    assert footprints.count("<polygon") == 16
    assert footprints.count(f'fill="{SPLIT_COLOURS[0]}"') == 16
    for chip in inspection.chips:
        assert f"<title>{chip.key} (chips)</title>" in footprints

    valid = section(html, "valid")
    assert f"min {inspection.valid_fraction.minimum:.3f}" in valid and valid.count("<svg") == 1

    png = embedded_png(html)
    assert png == preview_dataset(demo_chips, 16).png()
    image = Image.open(io.BytesIO(png))
    assert f'width="{image.size[0]}" height="{image.size[1]}" alt="contact sheet of 16 chips"' in html
    assert html.count("<svg") == 7


def test_record_report_maps_footprints_by_split_and_lists_shards(demo_records):
    html, _ = report_dataset(demo_records, n=4, seed=1)
    dataset = json.loads((demo_records / "dataset.json").read_text())
    footprints = section(html, "map")
    colours = dict(zip(dataset["splits"], SPLIT_COLOURS))
    for split, info in dataset["splits"].items():
        assert footprints.count(f'data-group="{split}"') == info["records"]
        assert footprints.count(f'fill="{colours[split]}"') == info["records"]
        assert f'<span class="swatch" style="background:{colours[split]}"></span> {split}' in footprints
    shards = section(html, "shards")
    for info in dataset["splits"].values():
        for shard in info["shards"]:
            assert f'<td class="text">{shard["file"]}</td>' in shards and f"<td>{shard['sha256']}</td>" in shards
    assert shards.count("<td>ok</td>") == 4
    summary = section(html, "summary")
    assert f'<td class="text">records in train</td><td>{dataset["splits"]["train"]["records"]}</td>' in summary
    assert embedded_png(html) == preview_dataset(demo_records, 4, seed=1).png()
    per_chip, _ = report_dataset(demo_records, n=4, seed=1, stretch="chip")
    assert embedded_png(per_chip) == preview_dataset(demo_records, 4, seed=1, stretch="chip").png() != embedded_png(html)


def test_report_lists_problems(demo_records, tmp_path):
    records = shutil.copytree(demo_records, tmp_path / "records")
    shard = min(records.glob("val-*.tfrecord"))
    data = bytearray(shard.read_bytes())
    data[100] ^= 0x80
    shard.write_bytes(bytes(data))
    out = tmp_path / "report.html"
    result = run("report", records, "--out", out)
    assert result.exit_code == 0
    html = out.read_text()
    inspection = inspect_dataset(records)
    assert f"Not verified: {len(inspection.problems)} problems" in html
    problems = section(html, "problems")
    assert problems.count("<li>") == len(inspection.problems) >= 2
    assert f"<code>{shard}</code>: corrupt shard after 0 good records" in problems
    assert "<td>FAILED</td>" in section(html, "shards")
    assert f"problem: {shard}: corrupt shard" in result.output


def test_chips_without_tile_keys_have_no_map(tmp_path):
    rng = np.random.default_rng(0)
    folder = write_folder(
        tmp_path / "chips", [rng.integers(0, 255, (3, 32, 32), dtype=np.uint8)], [np.ones((32, 32), np.uint8)],
        ("red", "green", "blue"), None,
    )
    for side in ("images", "labels"):
        (next((folder / side).iterdir())).rename(folder / side / "000000001.tif")
    inspection = inspect_dataset(folder)
    html = render_report(inspection)
    assert "No chip is named by a tile key: nothing to map." in section(html, "map")
    assert 'id="preview"' not in html and "<polygon" not in html
