"""The bad-input matrix: every broken input gives a clear error naming the culprit, a
non-zero exit where the job cannot go on, and leaves earlier output intact.

Each row of `CREATE_SAMPLES` builds one broken input beside a chip folder an earlier
run wrote (4 tiles), then runs ``tfchips create-samples`` over 6 tiles (the earlier 4
and 2 new) into that folder. A row either aborts (nothing in the folder may change)
or fails only the tiles that need the broken input (earlier chips stay byte for byte).
`TO_TFRECORDS` rows do the same for ``tfchips to-tfrecords`` over a broken chip folder.
The README's reliability section lists the same rows.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import rasterio
import shapely
from click.testing import CliRunner
from conftest import write_vector
from pyproj import Transformer

from tfchips.cli.main import cli
from tfchips.labels import load_ground_truth
from tfchips.sources import open_source
from tfchips.manifest import manifest_rows

CLASSES = "0=background,1=building,2=water,3=vegetation"
EARLIER_BBOX = "-105.95,35.68,-105.945,35.684"  # 4 tiles of 32 px (+4 pad) at 10 m
BBOX = "-105.95,35.68,-105.941,35.684"  # those 4 and 2 more
SCENE = "DEMO_S2_20230623"  # the one scene of --start/--end DAY; it covers the whole area
DAY = "2023-06-23"


@dataclass
class Workspace:
    """One row's folder: the broken input goes under ``tmp``; ``out`` holds the earlier chips."""

    demo: object
    tmp: Path
    out: Path
    monkeypatch: pytest.MonkeyPatch
    protected: Path | None = None  # what must not change when the row aborts; default ``out``

    def catalog_copy(self) -> Path:
        """A copy of the demo catalog to break; returns its folder."""
        folder = self.tmp / "catalog"
        shutil.copytree(self.demo.root, folder, ignore=shutil.ignore_patterns("samples", "*.gpkg", "job.yaml"))
        return folder

    def vector(self, name: str, geometries, crs: str | None = "EPSG:4326", **fields) -> str:
        return write_vector(self.tmp / name, geometries, crs, fields)

    def chip_names(self) -> list[str]:
        return sorted(os.listdir(self.out / "images"))


@dataclass(frozen=True)
class Case:
    """One row of the matrix: ``build`` breaks something and returns option overrides
    (None drops an option); ``expect`` must appear in the output."""

    name: str
    build: Callable[[Workspace], dict]
    exit_code: int
    expect: str
    aborts: bool
    written: int = 0  # tiles written in all, resumed included, when the run goes on
    extra: dict = field(default_factory=dict)


def options(demo, out: Path) -> dict:
    return {
        "--bbox": BBOX, "--resolution": "10", "--tilesize": "32", "--pad": "4", "--catalog": demo.catalog,
        "--bands": "blue,green,red,nir", "--start": DAY, "--end": DAY, "--mask-asset": "scl",
        "--mask-values": "3,8,9,10", "--labels": demo.labels, "--attribute": "class", "--classes": CLASSES,
        "--out": str(out), "--workers": "1",
    }


def command_line(values: dict) -> list[str]:
    return ["create-samples", *(str(w) for k, v in values.items() if v is not None for w in (k, v))]


def snapshot(path: Path) -> dict[str, bytes]:
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# Row builders -------------------------------------------------------------------


def corrupt_cog(w: Workspace) -> dict:
    folder = w.catalog_copy()
    (folder / SCENE / "red.tif").write_bytes(np.random.default_rng(0).bytes(5000))
    return {"--catalog": str(folder / "catalog.json")}


def truncated_cog(w: Workspace) -> dict:
    folder = w.catalog_copy()
    path = folder / SCENE / "red.tif"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    return {"--catalog": str(folder / "catalog.json")}


def _edit_item(w: Workspace, edit: Callable[[dict], None]) -> dict:
    folder = w.catalog_copy()
    path = folder / SCENE / f"{SCENE}.json"
    item = json.loads(path.read_text())
    edit(item)
    path.write_text(json.dumps(item))
    return {"--catalog": str(folder / "catalog.json")}


def item_without_datetime(w: Workspace) -> dict:
    return _edit_item(w, lambda item: item["properties"].pop("datetime"))


def item_without_band(w: Workspace) -> dict:
    return _edit_item(w, lambda item: item["assets"].pop("red"))


def catalog_missing(w: Workspace) -> dict:
    return {"--catalog": str(w.tmp / "nowhere" / "catalog.json")}


def _area_box() -> shapely.Polygon:
    west, south, east, north = map(float, BBOX.split(","))
    return shapely.box(west, south, east, north)


def labels_without_crs(w: Workspace) -> dict:
    utm = Transformer.from_crs(4326, 32613, always_xy=True)
    box = shapely.transform(_area_box(), utm.transform, interleaved=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pyogrio: "'crs' was not provided", the point here
        path = w.vector("no_crs.gpkg", [box], crs=None, **{"class": np.array([1], dtype=np.int32)})
    return {"--labels": path}


def labels_invalid_geometry(w: Workspace) -> dict:
    west, south, east, north = _area_box().bounds
    bowtie = shapely.Polygon([(west, south), (east, north), (east, south), (west, north)])
    assert not bowtie.is_valid
    return {"--labels": w.vector("bowtie.gpkg", [bowtie], **{"class": np.array([2], dtype=np.int32)})}


def labels_missing_attribute(w: Workspace) -> dict:
    return {"--attribute": "klass"}


def labels_fractional_class(w: Workspace) -> dict:
    halves = [shapely.box(*_area_box().bounds), shapely.box(*_area_box().buffer(-0.001).bounds)]
    return {"--labels": w.vector("fractions.gpkg", halves, **{"class": np.array([1.0, 1.5])})}


def labels_text_class(w: Workspace) -> dict:
    # 'water' would map through --classes (2=water); 'lake' is named nowhere.
    return {"--labels": w.vector("text.gpkg", [_area_box()], **{"class": np.array(["lake"], dtype=object)})}


def labels_missing(w: Workspace) -> dict:
    return {"--labels": str(w.tmp / "missing.gpkg")}


def aoi_beyond_utm_band(w: Workspace) -> dict:
    return {"--bbox": "10,84.5,10.002,84.501"}


def aoi_outside_lonlat(w: Workspace) -> dict:
    return {"--bbox": "190,35,191,36"}


def aoi_empty_bbox(w: Workspace) -> dict:
    return {"--bbox": "-105.94,35.68,-105.95,35.684"}


def aoi_empty_file(w: Workspace) -> dict:
    path = w.tmp / "empty.geojson"
    path.write_text('{"type": "FeatureCollection", "features": []}')
    return {"--bbox": None, "--aoi": str(path)}


def _tile_list(w: Workspace, key: str) -> dict:
    path = w.tmp / "tiles.txt"
    path.write_text(key + "\n")
    return {"--bbox": None, "--resolution": None, "--tilesize": None, "--pad": None, "--tiles": str(path)}


def tile_key_with_separator(w: Workspace) -> dict:
    return _tile_list(w, "32:4:10.0:13/../../etc:-269:12340")


def tile_key_with_dotdot(w: Workspace) -> dict:
    return _tile_list(w, "../../32:4:10.0:13:-269:12340")


def output_under_a_file(w: Workspace) -> dict:
    blocker = w.tmp / "not-a-folder"
    blocker.write_text("a file where the output folder should be\n")
    w.protected = blocker
    return {"--out": str(blocker / "chips")}


def disk_full(w: Workspace) -> dict:
    """Writes to files under OUT fail with ENOSPC once 20 kB have gone in (one chip pair fits)."""
    real_fdopen, budget = os.fdopen, [20_000]

    class Full:
        def __init__(self, stream):
            self.stream = stream

        def write(self, data):
            budget[0] -= len(data)
            if budget[0] < 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.stream.write(data)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.stream.close()

    def fdopen(fd, *args, **kwargs):
        stream = real_fdopen(fd, *args, **kwargs)
        inside = os.readlink(f"/proc/self/fd/{fd}").startswith(str(w.out))
        return Full(stream) if inside else stream

    w.monkeypatch.setattr(os, "fdopen", fdopen)
    return {}


def corrupt_chip_in_output(w: Workspace) -> dict:
    path = w.out / "images" / w.chip_names()[0]
    path.write_bytes(path.read_bytes()[:700])
    return {}


def label_off_grid_in_output(w: Workspace) -> dict:
    name = w.chip_names()[1]
    path = w.out / "labels" / name
    with rasterio.open(path) as dataset:
        profile, pixels = dataset.profile, dataset.read()
    profile["transform"] = profile["transform"] * rasterio.Affine.translation(3, 0)
    with rasterio.open(path, "w", **profile) as dataset:
        dataset.write(pixels)
    return {}


def image_without_label_in_output(w: Workspace) -> dict:
    (w.out / "labels" / w.chip_names()[2]).unlink()
    return {}


def _skip_without_proc():
    if not os.path.exists("/proc/self/fd"):
        pytest.skip("simulating a full disk needs /proc/self/fd (Linux)")


CREATE_SAMPLES = [
    Case("corrupt COG", corrupt_cog, 1, rf"failed: .*{SCENE}/red\.tif: .*not recognized as being in a supported", False,
         written=4),
    Case("truncated COG", truncated_cog, 1,
         rf"failed: .*cannot read .*{SCENE}/red\.tif: .*(TIFFRead|IReadBlock)", False, written=4),
    Case("STAC item without datetime", item_without_datetime, 1,
         rf"Error: .*{SCENE}\.json: cannot read STAC JSON \(Invalid Item: If datetime is None", True),
    Case("STAC item without the band", item_without_band, 1,
         rf"failed: .*item '{SCENE}' .* has no asset or eo:bands name 'red'; assets: blue, green, nir, scl", False,
         written=4),
    Case("catalog missing", catalog_missing, 1, r"Error: .*nowhere/catalog\.json: no such catalog file", True),
    Case("labels without CRS", labels_without_crs, 1, r"Error: .*no_crs\.gpkg: the file has no CRS; assign one", True),
    Case("labels with an invalid (self-crossing) polygon", labels_invalid_geometry, 0,
         r"bowtie\.gpkg: repaired 1 invalid geometries with make_valid", False, written=6),
    Case("labels without the attribute", labels_missing_attribute, 1,
         r"Error: .*labels\.gpkg: no attribute 'klass'; available: class", True),
    Case("labels with a fractional class", labels_fractional_class, 1,
         r"Error: .*fractions\.gpkg: attribute 'class' has 1 bad values, e.g. 1\.5 in feature 1", True),
    Case("labels with text classes --classes does not name", labels_text_class, 1,
         r"Error: .*text\.gpkg: attribute 'class' has 1 values that (--classes|`classes`) does not name, e\.g\. 'lake'",
         True),
    Case("labels file missing", labels_missing, 1, r"Error: .*missing\.gpkg: no such file", True),
    Case("AOI beyond the UTM band (84.5 N)", aoi_beyond_utm_band, 0,
         r"warning: the area of interest reaches latitude 84\.501, outside the UTM band(.|\n)*"
         r"0 written \(0 from an earlier run\), 1 skipped, 0 failed", False),
    Case("AOI outside lon/lat", aoi_outside_lonlat, 1, r"Error: geometry bounds .* are outside WGS84 lon", True),
    Case("empty AOI (west > east)", aoi_empty_bbox, 1, r"Error: bounding box .* is empty", True),
    Case("empty AOI file", aoi_empty_file, 1,
         r"Error: .*empty\.geojson: the file has no features with a geometry", True),
    Case("tile key with a path separator", tile_key_with_separator, 1,
         r"Error: .*tiles\.txt: malformed tile key '32:4:10\.0:13/\.\./\.\./etc:-269:12340'", True),
    Case("tile key with ..", tile_key_with_dotdot, 1, r"Error: .*tiles\.txt: malformed tile key '\.\./\.\./32:4", True),
    Case("output folder under a file", output_under_a_file, 1,
         r"Error: .*not-a-folder/chips: cannot write the output folder \(Not a directory\)", True),
    Case("disk full (ENOSPC on write)", disk_full, 1,
         r"Error: \[Errno 28\] No space left on device: '.*/(images|labels)/32#4#",
         False, extra={"needs_proc": True, "keeps_manifest": True}),
    Case("truncated chip left in the output", corrupt_chip_in_output, 0, r"6 written \(3 from an earlier run\)", False,
         written=6),
    Case("label chip off its tile's grid in the output", label_off_grid_in_output, 0,
         r"6 written \(3 from an earlier run\)", False, written=6),
    Case("image chip without its label twin in the output", image_without_label_in_output, 0,
         r"6 written \(3 from an earlier run\)", False, written=6),
]


@pytest.fixture(scope="module")
def earlier(demo, tmp_path_factory):
    """The chip folder of an earlier, successful run over 4 tiles."""
    out = tmp_path_factory.mktemp("earlier") / "chips"
    values = {**options(demo, out), "--bbox": EARLIER_BBOX}
    result = CliRunner().invoke(cli, command_line(values))
    assert result.exit_code == 0, result.output
    assert len(os.listdir(out / "images")) == 4
    return out


@pytest.mark.parametrize("case", CREATE_SAMPLES, ids=[c.name for c in CREATE_SAMPLES])
def test_create_samples_bad_input(case, demo, earlier, tmp_path, monkeypatch, caplog):
    if case.extra.get("needs_proc"):
        _skip_without_proc()
    out = tmp_path / "chips"
    shutil.copytree(earlier, out)
    before = snapshot(out)
    workspace = Workspace(demo, tmp_path, out, monkeypatch)
    # Sources and labels are cached per process: each row starts afresh.
    open_source.cache_clear()
    load_ground_truth.cache_clear()
    values = {**options(demo, out), **case.build(workspace)}
    protected = workspace.protected or out
    guarded = snapshot(protected) if workspace.protected else before

    result = CliRunner().invoke(cli, command_line(values))
    monkeypatch.undo()
    output = result.output + caplog.text

    assert result.exit_code == case.exit_code, output
    assert re.search(case.expect, output), output
    assert "Traceback" not in output
    if case.aborts:
        assert snapshot(protected) == guarded, "an aborted run changed earlier output"
        return
    # The run went on: every earlier chip is still there, byte for byte (repaired ones included).
    after = snapshot(out)
    for name, data in before.items():
        if name.startswith(("images/", "labels/")):
            assert after.get(name) == data, f"earlier chip {name} changed"
    assert not [n for n in after if os.path.basename(n).startswith(".partial-")]
    if case.extra.get("keeps_manifest"):
        assert after["manifest.json"] == before["manifest.json"]
        return
    manifest = json.loads(after["manifest.json"])
    assert manifest["counts"]["written"] == case.written
    for entry in manifest_rows(str(out)):
        if entry["status"] == "failed":
            assert f"failed: {entry['key']}: {entry['reason']}" in output


# to-tfrecords -----------------------------------------------------------------------------
#
# Each row breaks a copy of the earlier chip folder and runs ``tfchips to-tfrecords CHIPS
# OUT --overwrite`` where OUT holds the TFRecords of an earlier run: a failing run must
# leave them byte for byte.

TFRECORDS_ARGS = ["--shards", "2", "--workers", "1", "--overwrite"]


@dataclass
class ChipWorkspace:
    chips: Path
    out: Path
    tmp: Path

    def chip(self, side: str, index: int = 0) -> Path:
        return sorted((self.chips / side).iterdir())[index]


def _rewrite(path: Path, change: Callable[[dict, np.ndarray], np.ndarray]) -> None:
    with rasterio.open(path) as dataset:
        profile, pixels = dataset.profile, dataset.read()
    pixels = change(profile, pixels)
    with rasterio.open(path, "w", **profile) as dataset:
        dataset.write(pixels)


def chip_corrupt(w: ChipWorkspace) -> list[str]:
    w.chip("images").write_bytes(np.random.default_rng(1).bytes(3000))
    return []


def chip_truncated(w: ChipWorkspace) -> list[str]:
    path = w.chip("images")
    path.write_bytes(path.read_bytes()[:700])
    return []


def chip_without_twin(w: ChipWorkspace) -> list[str]:
    w.chip("labels").unlink()
    return []


def chip_without_twin_skipped(w: ChipWorkspace) -> list[str]:
    w.chip("labels").unlink()
    return ["--skip-bad"]


def label_of_another_size(w: ChipWorkspace) -> list[str]:
    def crop(profile, pixels):
        profile.update(width=20, height=20)
        return pixels[:, :20, :20]

    _rewrite(w.chip("labels"), crop)
    return []


def label_of_another_transform(w: ChipWorkspace) -> list[str]:
    def shift(profile, pixels):
        profile["transform"] = profile["transform"] * rasterio.Affine.translation(5, 0)
        return pixels

    _rewrite(w.chip("labels"), shift)
    return []


def chip_named_with_dotdot(w: ChipWorkspace) -> list[str]:
    for side in ("images", "labels"):
        w.chip(side).rename(w.chips / side / "x#..#..#escape.tif")
    return []


def chips_folder_missing(w: ChipWorkspace) -> list[str]:
    w.chips = w.tmp / "no-chips-here"
    return []


def tfrecords_out_under_a_file(w: ChipWorkspace) -> list[str]:
    blocker = w.tmp / "not-a-folder"
    blocker.write_text("a file\n")
    w.out = blocker / "records"
    return []


TO_TFRECORDS = [
    Case("corrupt chip", chip_corrupt, 1, r"Error: .*images/32#4#[^ ]*\.tif: not a readable raster", True),
    Case("truncated chip", chip_truncated, 1, r"Error: .*images/32#4#[^ ]*\.tif: .*(truncated|corrupt|TIFF)", True),
    Case("image chip without its label twin", chip_without_twin, 1,
         r"Error: .*: 1 unpaired chips: images/32#4#[^ ]*\.tif \(--skip-bad leaves them out\)", True),
    Case("image chip without its label twin, --skip-bad", chip_without_twin_skipped, 0,
         r"skipped images/32#4#[^ ]*\.tif: unpaired", False, written=3),
    Case("label of another size than its image", label_of_another_size, 1,
         r"Error: .*labels/32#4#[^ ]*\.tif: label is 20 x 20 pixels, its image .* is 40 x 40", True),
    Case("label with another transform than its image", label_of_another_transform, 1,
         r"Error: .*labels/32#4#[^ ]*\.tif: label is not georeferenced like its image", True),
    Case("chip file named with ..", chip_named_with_dotdot, 0, r"data: 4 records in 2 shards", False, written=4),
    Case("chip folder missing", chips_folder_missing, 1, r"Error: .*no-chips-here/images: no such folder", True),
    Case("output folder under a file", tfrecords_out_under_a_file, 1,
         r"Error: .*Not a directory: .*not-a-folder/records", True),
]


@pytest.fixture(scope="module")
def to_tfrecords_registered():
    """``tfchips to-tfrecords`` through the real entry point, registered or not yet."""
    pytest.importorskip("tensorflow", reason="to-tfrecords needs TensorFlow")
    from tfchips.cli import main

    missing = "to-tfrecords" not in main.COMMANDS
    if missing:
        main.COMMANDS["to-tfrecords"] = "to_tfrecords"
    yield
    if missing:
        del main.COMMANDS["to-tfrecords"]


@pytest.fixture(scope="module")
def earlier_records(earlier, to_tfrecords_registered, tmp_path_factory):
    out = tmp_path_factory.mktemp("earlier-records") / "records"
    result = CliRunner().invoke(cli, ["to-tfrecords", str(earlier), "--out", str(out), *TFRECORDS_ARGS])
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize("case", TO_TFRECORDS, ids=[c.name for c in TO_TFRECORDS])
def test_to_tfrecords_bad_input(case, earlier, earlier_records, tmp_path):
    workspace = ChipWorkspace(tmp_path / "chips", tmp_path / "records", tmp_path)
    shutil.copytree(earlier, workspace.chips)
    shutil.copytree(earlier_records, workspace.out)
    before = snapshot(workspace.out)
    extra = case.build(workspace)
    protected = workspace.out if workspace.out.parent == tmp_path else workspace.out.parent
    guarded = snapshot(protected)

    args = ["to-tfrecords", str(workspace.chips), "--out", str(workspace.out), *TFRECORDS_ARGS, *extra]
    result = CliRunner().invoke(cli, args)

    assert result.exit_code == case.exit_code, result.output
    assert re.search(case.expect, result.output), result.output
    assert "Traceback" not in result.output
    if case.aborts:
        assert snapshot(protected) == guarded, "a failed run changed the earlier TFRecords"
        return
    after = snapshot(workspace.out)
    assert after != before and not [n for n in after if n.startswith(".partial-")]
    description = json.loads(after["dataset.json"])
    assert sum(split["records"] for split in description["splits"].values()) == case.written
    # Whatever the chip names, nothing is written outside OUT.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chips", "records"]


def test_to_tfrecords_disk_full_keeps_the_earlier_records(earlier, earlier_records, tmp_path):
    """A shard write that fails (RLIMIT_FSIZE: writes past 16 kB get EFBIG, as on a full disk)."""
    resource = pytest.importorskip("resource", reason="needs POSIX resource limits")
    out = tmp_path / "records"
    shutil.copytree(earlier_records, out)
    before = snapshot(out)
    script = (
        "import sys; from tfchips.cli import main; "
        "main.COMMANDS.setdefault('to-tfrecords', 'to_tfrecords'); sys.exit(main.cli())"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, "to-tfrecords", str(earlier), "--out", str(out), *TFRECORDS_ARGS],
        capture_output=True, text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (16_000, 16_000)),
    )
    assert result.returncode == 1, result.stderr
    assert re.search(r"Error: .*File too large: '.*records/.*data-00000-of-00002\.tfrecord'", result.stderr)
    assert snapshot(out) == before
