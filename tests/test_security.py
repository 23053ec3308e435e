"""Security: no eval or pickle of untrusted input, credentials never printed or written,
output paths confined to the output folder."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import hypothesis.strategies as st
import pytest
from click.testing import CliRunner
from hypothesis import given, settings

from test_flaky_sources import FlakyServer, range_reads_of

import tfchips
from tfchips.chip_folder import chip_paths
from tfchips.cli.main import cli
from tfchips.errors import TileKeyError
from tfchips.grid import Tile, filename_to_key, key_to_filename
from tfchips.labels import load_ground_truth
from tfchips.sources import open_source
from tfchips.sources.base import redact_text, redact_url

REPO = Path(tfchips.__file__).resolve().parent.parent
SOURCES = sorted([*(REPO / "tfchips").rglob("*.py"), *(REPO / "beam_pipelines").rglob("*.py")])
SECRET = "S3CR3T"  # every credential below contains it

# Calls and imports that run or unpickle whatever the input holds.
CODE_RUNNERS = {"eval", "exec", "compile", "__import__"}
UNPICKLERS = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle", "joblib"}
UNSAFE_ATTRIBUTES = {("yaml", "load"), ("yaml", "unsafe_load"), ("yaml", "full_load"), ("yaml", "load_all"),
                     ("os", "system"), ("os", "popen")}


def _unsafe_uses(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] in UNPICKLERS]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNPICKLERS:
            found.append(f"from {node.module} import ...")
        elif isinstance(node, ast.Call):
            function = node.func
            if isinstance(function, ast.Name) and function.id in CODE_RUNNERS:
                found.append(f"{function.id}()")
            if isinstance(function, ast.Attribute) and isinstance(function.value, ast.Name):
                if (function.value.id, function.attr) in UNSAFE_ATTRIBUTES:
                    found.append(f"{function.value.id}.{function.attr}()")
            for keyword in node.keywords:
                unsafe_flag = keyword.arg in ("shell", "allow_pickle")
                if unsafe_flag and isinstance(keyword.value, ast.Constant) and keyword.value.value is True:
                    found.append(f"{keyword.arg}=True")
    return found


def test_the_unsafe_scan_finds_what_it_looks_for():
    sample = "import pickle\nyaml.load(s)\neval(x)\nsubprocess.run(c, shell=True)\nnp.load(f, allow_pickle=True)\n"
    assert _unsafe_uses(ast.parse(sample)) == [
        "import pickle", "yaml.load()", "eval()", "shell=True", "allow_pickle=True"
    ]


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(REPO)) for p in SOURCES])
def test_no_eval_pickle_or_unsafe_yaml_in_the_package(path):
    assert _unsafe_uses(ast.parse(path.read_text(encoding="utf-8"), str(path))) == []


def test_a_yaml_config_cannot_run_code(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "job.yaml").write_text(f'catalog: !!python/object/apply:os.system ["touch {marker}"]\n')
    result = CliRunner().invoke(cli, ["create-samples", "--config", str(tmp_path / "job.yaml"), "--out", "x"])
    assert result.exit_code == 2 and "not valid YAML" in result.output
    assert not marker.exists()


# Credentials ----------------------------------------------------------------------------


def test_redaction_masks_passwords_signatures_and_tokens_only():
    assert redact_url("https://me:pw@h.io/a.tif?sv=1&sig=abc&se=2") == "https://me:***@h.io/a.tif?sv=1&sig=***&se=2"
    assert redact_url("https://b.s3.amazonaws.com/k.tif?X-Amz-Credential=AK&X-Amz-Signature=f&X-Amz-Date=1") == (
        "https://b.s3.amazonaws.com/k.tif?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Date=1"
    )
    assert redact_url("https://h.io/search?collections=s2&page=2") == "https://h.io/search?collections=s2&page=2"
    assert redact_text("cannot read /vsicurl/https://h/x.tif?token=t: HTTP 500") == (
        "cannot read /vsicurl/https://h/x.tif?token=***: HTTP 500"
    )


@pytest.fixture
def signed_server(demo, monkeypatch):
    """A loopback STAC API whose asset URLs carry a signature, as signed cloud URLs do."""
    for name, value in {
        "EARTHONE_CLIENT_SECRET": f"env-{SECRET}-1",
        "AWS_SECRET_ACCESS_KEY": f"env-{SECRET}-2",
        "TFCHIPS_RETRY_ATTEMPTS": "2",
        "TFCHIPS_RETRY_BACKOFF": "0.001",
        "TFCHIPS_HTTP_TIMEOUT": "1",
    }.items():
        monkeypatch.setenv(name, value)
    server = FlakyServer(Path(demo.root)).start()
    for item in server.items:
        for asset in item["assets"].values():
            asset["href"] += f"?sv=2024&sig=sig-{SECRET}"
    open_source.cache_clear()
    load_ground_truth.cache_clear()
    yield server
    open_source.cache_clear()
    server.stop()
    server.server_close()


def _job(demo, catalog: str, out: Path) -> list[str]:
    return [
        "create-samples", "--bbox", "-105.95,35.68,-105.945,35.684", "--resolution", "10", "--tilesize", "32",
        "--pad", "4", "--catalog", catalog, "--bands", "red,nir", "--start", "2023-06-23", "--end", "2023-06-23",
        "--labels", demo.labels, "--attribute", "class", "--out", str(out), "--workers", "1",
    ]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_credentials_never_reach_output_logs_manifest_or_config(demo, signed_server, tmp_path, caplog):
    server = signed_server
    host = server.url.removeprefix("http://")
    catalog = f"http://reader:pw-{SECRET}@{host}/?token=tok-{SECRET}"
    outside_before = _files(tmp_path)

    # Every read of one band fails: the errors quote the signed URL.
    server.inject(["500*"], range_reads_of("red.tif"))
    failed = CliRunner().invoke(cli, _job(demo, catalog, tmp_path / "failed"))
    assert failed.exit_code == 1
    assert "cannot read http://" in failed.output and "red.tif?sv=2024&sig=***: " in failed.output
    assert "; gave up after 2 attempts" in failed.output

    server._faults.clear()
    written = CliRunner().invoke(cli, _job(demo, catalog, tmp_path / "chips"))
    assert written.exit_code == 0, written.output
    config = (tmp_path / "chips" / "config.yaml").read_text()
    assert f"catalog: http://reader:***@{host}/?token=***" in config

    for text in (failed.output, written.output, caplog.text):
        assert SECRET not in text
    for out in ("failed", "chips"):
        for name, data in _files(tmp_path / out).items():
            assert SECRET.encode() not in data, f"{out}/{name} holds a credential"
    # Nothing was written outside the two output folders.
    outside_after = {n: d for n, d in _files(tmp_path).items() if not n.startswith(("failed/", "chips/"))}
    assert outside_after == outside_before


# Output paths ---------------------------------------------------------------------------


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    tilesize=st.integers(1, 4096),
    pad=st.integers(0, 512),
    resolution=st.sampled_from([0.3, 0.5, 1.0, 10.0, 30.0, 60.0]),
    zone=st.integers(1, 60),
    ti=st.integers(-(10**6), 10**6),
    tj=st.integers(-(10**7), 10**7),
)
def test_every_tile_key_maps_to_a_chip_inside_the_output_folder(tilesize, pad, resolution, zone, ti, tj):
    out = "/data/job/chips"
    key = Tile(tilesize, pad, resolution, zone, ti, tj).key
    image, label = chip_paths(out, key)
    assert os.path.dirname(os.path.normpath(image)) == out + "/images"
    assert os.path.dirname(os.path.normpath(label)) == out + "/labels"
    assert filename_to_key(os.path.basename(image)) == key


@pytest.mark.parametrize(
    "key", ["../32:4:10.0:13:-269:12340", "32:4:10.0:13/../../etc:-269:12340", "32:4:10.0:13:-269:12340/..",
            "/etc/passwd", "32:4:10.0:13:-269:12340\\..\\x"],
)
def test_keys_with_separators_or_dotdot_are_refused(key):
    with pytest.raises(TileKeyError, match="malformed tile key"):
        key_to_filename(key)
    with pytest.raises(TileKeyError):
        Tile.from_key(key)


@pytest.mark.parametrize("name", ["../32#4#10.0#13#-269#12340.tif", "images/32#4#10.0#13#-269#12340.tif",
                                  "..\\32#4#10.0#13#-269#12340.tif"])
def test_chip_names_with_a_folder_are_refused(name):
    with pytest.raises(TileKeyError, match="must not contain a folder"):
        filename_to_key(name)
