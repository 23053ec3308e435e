"""One convention for every command: inputs as arguments, the output as --out/-o, defaults shown,
old spellings deprecated but working, and one summary line on stderr at the end.

The Beam entry points run as a person runs them (``python -m``), in a subprocess, so that what
reaches the terminal is what is checked.
"""

import http.server
import io
import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import click
import pytest
from PIL import Image
from test_inspect import demo_chips, run  # noqa: F401 - the module fixture is shared
from test_report import embedded_png

from tfchips.cli import main
from tfchips.records.writer import read_dataset_json

ROOT = Path(__file__).resolve().parent.parent
WRITING = {"create-samples": False, "demo-data": False, "to-tfrecords": False, "preview": True, "report": True}
SUMMARY = r"([^:]+): (.+) \((\d+\.\d) s\)"


def commands():
    return {name: main._Commands().get_command(None, name) for name in main.COMMANDS}


def summary_of(stderr: str, program: str) -> str:
    """The text of the summary line, which must be the last line of ``stderr``."""
    match = re.fullmatch(SUMMARY, stderr.rstrip("\n").splitlines()[-1])
    assert match and match.group(1) == program, stderr
    return match.group(2)


@pytest.mark.parametrize("name", sorted(main.COMMANDS))
def test_every_option_has_help_and_shows_its_default(name):
    command = commands()[name]
    for parameter in command.params:
        if not isinstance(parameter, click.Option):
            continue
        assert parameter.help, f"{name} {parameter.opts} has no help text"
        default = parameter.default
        no_default = default is None or type(default).__name__ == "Sentinel" or (parameter.is_flag and not default)
        if not no_default:
            assert parameter.show_default or "[default:" in parameter.help, (
                f"{name} {parameter.opts} hides its default {default!r}"
            )


@pytest.mark.parametrize("name, file", sorted(WRITING.items()))
def test_every_writing_command_takes_out_and_o(name, file):
    (out,) = [p for p in commands()[name].params if p.name == "out"]
    assert out.opts == ["--out", "-o"] or sorted(out.opts) == ["--out", "-o"]
    assert isinstance(out.type, click.Path) and out.type.file_okay is file and out.type.dir_okay is not file


@pytest.mark.parametrize("name", sorted(WRITING))
def test_usage_shows_no_deprecated_positional_out(name):
    usage = run(name, "--help").output.splitlines()[0]
    assert re.match(rf"Usage: \w+ {name} \[OPTIONS\]", usage) and "OUT" not in usage, usage


def test_shards_and_shard_size_say_one_is_needed():
    help_text = " ".join(run("to-tfrecords", "--help").output.split())
    assert "--shards INTEGER RANGE Shards per split; give this or --shard-size (one is needed)." in help_text
    assert "--shard-size MB Aim at this many MB (uncompressed) per shard; give this or --shards (one is needed)." in help_text
    assert re.search(r"--compression \[none\|gzip\|zlib\] Compression [^[]+\[default: none\]", help_text)


@pytest.mark.timeout(300)
def test_old_and_new_to_tfrecords_spellings_write_the_same_dataset(demo_chips, tmp_path):  # noqa: F811
    args = ["--shards", "2", "--split", "train=0.75,val=0.25", "--encoding", "array", "--workers", "1"]
    new = run("to-tfrecords", demo_chips, "-o", tmp_path / "new", *args)
    old = run("to-tfrecords", demo_chips, tmp_path / "old", *args)
    assert new.exit_code == 0 and old.exit_code == 0, (new.output, old.output)
    assert "deprecated" not in new.stderr
    assert old.stderr.splitlines()[0] == f"tfchips: OUT as a second argument is deprecated; use --out {tmp_path / 'old'}"
    assert read_dataset_json(tmp_path / "new") == read_dataset_json(tmp_path / "old")
    assert summary_of(new.stderr, "tfchips to-tfrecords") == (
        f"16 records in 4 shards, 0 chips skipped; wrote {tmp_path / 'new' / 'dataset.json'}"
    )
    both = run("to-tfrecords", demo_chips, tmp_path / "old", "--out", tmp_path / "new", *args)
    assert both.exit_code == 2 and "give --out" in both.output
    neither = run("to-tfrecords", demo_chips, *args)
    assert neither.exit_code == 2 and "Missing option '--out' / '-o'" in neither.output


def test_overwrite_means_replace_what_an_earlier_run_left_in_out(demo_chips, tmp_path):  # noqa: F811
    args = ["to-tfrecords", demo_chips, "--out", tmp_path / "records", "--shards", "1", "--workers", "1"]
    assert run(*args).exit_code == 0
    refused = run(*args)
    assert refused.exit_code == 1 and "pass --overwrite to replace them" in refused.output
    assert run(*args, "--overwrite").exit_code == 0
    for name in ("create-samples", "to-tfrecords"):
        (option,) = [p for p in commands()[name].params if p.name == "overwrite"]
        assert option.help.startswith("Replace what an earlier run left in --out")


def test_demo_data_old_and_new_spellings(tmp_path):
    new = run("demo-data", "--out", tmp_path / "new")
    old = run("demo-data", tmp_path / "old")
    assert new.exit_code == 0 and old.exit_code == 0, (new.output, old.output)
    assert old.stderr.splitlines()[0] == f"tfchips: OUT as an argument is deprecated; use --out {tmp_path / 'old'}"
    assert (tmp_path / "new" / "catalog.json").read_bytes() == (tmp_path / "old" / "catalog.json").read_bytes()
    assert summary_of(new.stderr, "tfchips demo-data") == f"catalog, labels and job.yaml in {tmp_path / 'new'}"


def test_report_size_sets_the_preview_panels(demo_chips, tmp_path):  # noqa: F811
    widths = {}
    for size in (32, 64):
        result = run("report", demo_chips, "-o", tmp_path / f"{size}.html", "--n", "4", "--size", size)
        assert result.exit_code == 0, result.output
        png = embedded_png((tmp_path / f"{size}.html").read_text(encoding="utf-8"))
        widths[size] = Image.open(io.BytesIO(png)).size[0]
    assert widths[32] < widths[64]


def test_every_command_ends_with_a_summary_line_on_stderr(demo_chips, tmp_path):  # noqa: F811
    runs = {
        "tiles": ["--bbox", "-105.95,35.68,-105.93,35.697", "--resolution", 10, "--tilesize", 64],
        "inspect": [demo_chips, "--json"],
        "preview": [demo_chips, "-o", tmp_path / "p.png", "--n", 2],
    }
    for name, args in runs.items():
        result = run(name, *args)
        assert result.exit_code == 0, result.output
        text = summary_of(result.stderr, f"tfchips {name}")
        assert f"tfchips {name}:" not in result.stdout  # stdout stays the data
        if name == "inspect":
            json.loads(result.stdout)
            assert text == "16 chips decoded, verified"
        elif name == "tiles":
            assert text == "16 tiles of 64 + 2 x 0 pixels at 10 m on stdout" and len(result.stdout.split()) == 16


def beam(module: str, *args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"beam_pipelines.{module}", *map(str, args)],
        capture_output=True, text=True, timeout=240, cwd=cwd,
    )


@pytest.mark.timeout(300)
def test_beam_records_pipeline_prints_its_summary_and_no_beam_noise(demo_chips, tmp_path):  # noqa: F811
    args = [demo_chips, "--out", tmp_path / "quiet", "--shards", "1", "--runner=DirectRunner"]
    quiet = beam("chips_to_tfrecords", *args)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout == ""
    (line,) = quiet.stderr.splitlines()
    assert summary_of(line, "beam_pipelines.chips_to_tfrecords") == (
        f"16 records in 1 shards, 0 chips skipped; wrote {tmp_path / 'quiet' / 'dataset.json'}"
    )
    old = beam("chips_to_tfrecords", demo_chips, tmp_path / "old", "--shards", "1", "--runner=DirectRunner")
    assert old.returncode == 0, old.stderr
    assert old.stderr.splitlines()[0] == f"tfchips: OUT as a second argument is deprecated; use --out {tmp_path / 'old'}"
    assert len(old.stderr.splitlines()) == 2


def _gcp_installed() -> bool:
    try:
        import google.cloud.storage  # noqa: F401
    except ImportError:
        return False
    return True


class _Recorder(http.server.BaseHTTPRequestHandler):
    requests: list = []

    def do_GET(self):
        _Recorder.requests.append(self.path)
        self.send_error(404)

    def log_message(self, *args):
        pass


@pytest.mark.timeout(30)
@pytest.mark.skipif(_gcp_installed(), reason="the gcp extra is installed here, so its absence cannot be shown")
def test_dataflow_without_the_gcp_extra_is_one_line_before_any_network_use(demo, tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        catalog = f"http://127.0.0.1:{server.server_address[1]}/catalog.json"
        result = beam(
            "create_training_samples", "--catalog", catalog, "--bands", "red", "--labels", demo.labels,
            "--bbox", "-105.95,35.68,-105.93,35.697", "--resolution", 10, "--tilesize", 64,
            "--out", tmp_path / "chips", "--runner=DataflowRunner", "--project=p", "--region=r",
        )
        records = beam("chips_to_tfrecords", tmp_path, "--out", "gs://bucket/records", "--shards", "1")
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 1 and _Recorder.requests == []
    assert result.stderr == (
        "Error: the Dataflow runner needs the gcp extra, which is not installed: pip install 'tfchips[gcp]'\n"
    )
    assert records.returncode == 1 and records.stderr == (
        "Error: gs://bucket/records needs the gcp extra, which is not installed: pip install 'tfchips[gcp]'\n"
    )
    assert not (tmp_path / "chips").exists()
