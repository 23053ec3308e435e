"""Progress bars: drawn on a terminal, never into a pipe; library reads report each chip or record."""

import fcntl
import os
import re
import struct
import termios
import subprocess
import sys
import tempfile
import textwrap
import threading

import pytest
from click.testing import CliRunner

from tfchips.cli.main import cli
from tfchips.inspect import inspect_dataset
from tfchips.preview import preview_dataset
from tfchips.records import WriterOptions, write_tfrecords
from tfchips.report import report_dataset

TILES = ("64:0:10.0:13:-132:6170", "64:0:10.0:13:-131:6170", "64:0:10.0:13:-132:6169", "64:0:10.0:13:-131:6169")

# Every command that takes longer than a moment, in one process (TensorFlow is imported once).
SCRIPT = textwrap.dedent("""
    import sys
    from tfchips.cli.main import cli
    for args in sys.argv[1:]:
        try:
            cli.main(args.split("|"), prog_name="tfchips")
        except SystemExit as end:
            if end.code:
                raise
""")


@pytest.fixture(scope="module")
def job(demo, tmp_path_factory):
    """The demo's job options as create-samples arguments, and a list of four tiles."""
    root = tmp_path_factory.mktemp("progress")
    (root / "tiles.txt").write_text("\n".join(TILES) + "\n")
    args = ["--tiles", str(root / "tiles.txt"), "--workers", "1"]
    for name, value in demo.job_options().items():
        if name not in ("out", "bbox", "resolution", "tilesize"):
            args += [f"--{name.replace('_', '-')}", str(value)]
    return root, args


@pytest.fixture(scope="module")
def records(job):
    root, args = job
    result = CliRunner().invoke(cli, ["create-samples", *args, "--out", str(root / "chips")])
    assert result.exit_code == 0, result.output
    write_tfrecords(root / "chips", root / "records", WriterOptions(shards=2, splits={"train": 0.5, "val": 0.5}, workers=1))
    return root / "chips", root / "records"


def commands(job, out) -> list[str]:
    root, args = job
    return ["|".join(words) for words in (
        ["create-samples", *args, "--out", str(out / "chips")],
        ["to-tfrecords", str(out / "chips"), "--out", str(out / "records"), "--shards", "2", "--split", "train=0.5,val=0.5"],
        ["inspect", str(out / "records")],
        ["preview", str(out / "records"), "--out", str(out / "preview.png")],
        ["report", str(out / "records"), "--out", str(out / "report.html")],
    )]


def _read_all(fd: int, into: list[bytes]) -> None:
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the last writer closed the terminal
            return
        if not data:
            return
        into.append(data)


def on_a_terminal(command: list[str], folder) -> str:
    """What ``command`` draws on its stderr when that is a terminal (it must exit 0); stdout goes to a file."""
    master, terminal = os.openpty()
    # A new pseudo-terminal is 0 columns wide, where tqdm draws nothing; a real one has a size.
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    drawn: list[bytes] = []
    reader = threading.Thread(target=_read_all, args=(master, drawn), daemon=True)
    reader.start()
    with open(folder / "stdout.txt", "wb") as stdout:
        process = subprocess.Popen(command, stdout=stdout, stderr=terminal)
    os.close(terminal)
    try:
        assert process.wait(timeout=240) == 0, b"".join(drawn).decode(errors="replace")
    finally:
        if process.poll() is None:
            process.kill()
    reader.join(timeout=10)
    os.close(master)
    return b"".join(drawn).decode(errors="replace")


@pytest.mark.timeout(300)
def test_piped_stderr_gets_no_progress_frames_and_a_terminal_gets_them(job, tmp_path):
    piped = subprocess.run([sys.executable, "-c", SCRIPT, *commands(job, tmp_path / "piped")],
                           capture_output=True, text=True, timeout=240)
    assert piped.returncode == 0, piped.stderr
    assert "\r" not in piped.stderr and "%|" not in piped.stderr, piped.stderr
    assert "wrote" in piped.stderr and (tmp_path / "piped" / "report.html").is_file()

    frames = on_a_terminal([sys.executable, "-c", SCRIPT, *commands(job, tmp_path / "terminal")], tmp_path)
    for step in ("create-samples", "to-tfrecords", "inspect", "preview"):
        # A bar's frame, not the command's summary line ("tfchips create-samples: ...").
        assert re.search(rf"(?<!tfchips ){step}: +\d+%\|", frames), (step, frames)
    assert "\r" in frames


def test_inspect_reports_each_record_and_chip_read(records):
    chips, folder = records
    heard = []
    inspection = inspect_dataset(folder, on_progress=lambda *call: heard.append(call))
    total = inspection.counts["records"]
    assert total == len(TILES)
    assert heard == [("inspect", "record", done, total) for done in range(total + 1)]
    heard.clear()
    inspect_dataset(chips, on_progress=lambda *call: heard.append(call))
    assert heard == [("inspect", "chip", done, len(TILES)) for done in range(len(TILES) + 1)]


def test_preview_and_report_report_the_records_they_read(records):
    _, folder = records
    heard = []
    preview_dataset(folder, 2, on_progress=lambda *call: heard.append(call))
    assert heard == [("preview", "record", done, len(TILES)) for done in range(len(TILES) + 1)]
    heard.clear()
    report_dataset(folder, 2, on_progress=lambda *call: heard.append(call))
    assert [step for step, *_ in heard] == ["inspect"] * (len(TILES) + 1) + ["preview"] * (len(TILES) + 1)


def test_shards_dataset_json_does_not_count_report_an_unknown_total(records, tmp_path):
    _, folder = records
    shards = sorted(p for p in os.listdir(folder) if p.endswith(".tfrecord"))
    for name in shards:
        os.link(folder / name, tmp_path / name)
    heard = []
    inspect_dataset(str(tmp_path / "*.tfrecord"), on_progress=lambda *call: heard.append(call))
    assert heard[-1] == ("inspect", "record", len(TILES), None)


@pytest.mark.timeout(300)
def test_a_local_beam_run_draws_a_tile_bar_on_a_terminal(job, tmp_path):
    root, args = job
    before = {name for name in os.listdir(tempfile.gettempdir()) if name.startswith("tfchips-progress-")}
    command = [sys.executable, "-m", "beam_pipelines.create_training_samples", *args, "--out", str(tmp_path / "chips"),
               "--runner=DirectRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"]
    frames = on_a_terminal(command, tmp_path)
    # The workers count the tiles in other processes; the bar reaches every tile of the job.
    assert re.search(rf"create_training_samples: 100%\|.*\| {len(TILES)}/{len(TILES)}", frames), frames
    after = {name for name in os.listdir(tempfile.gettempdir()) if name.startswith("tfchips-progress-")}
    assert after <= before  # the count file goes with the run
