"""Terminal output: TensorFlow's log lines silenced unless asked for, progress bars only on a terminal."""

import os
import re
import subprocess
import sys

import pytest

from tfchips import console

_PROBE = """
from tfchips.console import quiet_tensorflow
quiet_tensorflow()
import sys
assert "tensorflow" not in sys.modules  # still lazy
import tensorflow as tf
print(list(tf.data.Dataset.range(3).map(lambda x: x * 2).as_numpy_iterator()))
"""


def _run(environment: dict) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", console.VERBOSE_VARIABLE)}
    env.update(environment)
    return subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120, env=env)


def test_tensorflow_import_and_first_operation_print_nothing_on_stderr():
    result = _run({})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[np.int64(0), np.int64(2), np.int64(4)]"
    assert result.stderr == ""


def test_verbose_leaves_tensorflow_alone(monkeypatch):
    monkeypatch.setenv(console.VERBOSE_VARIABLE, "1")
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    before = list(sys.meta_path)
    console.quiet_tensorflow()
    assert sys.meta_path == before
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ


def test_silenced_stderr_gives_back_what_a_failing_block_wrote(capfd):
    with pytest.raises(RuntimeError):
        with console.silenced_stderr():
            os.write(2, b"the reason it failed\n")
            raise RuntimeError("import failed")
    assert "the reason it failed" in capfd.readouterr().err
    with console.silenced_stderr():
        os.write(2, b"chatter\n")
    assert capfd.readouterr().err == ""


def test_progress_bar_is_off_when_stderr_is_not_a_terminal(capsys):
    with console.progress(total=3, unit="tile", desc="create-samples") as bar:
        bar.update(3)
    assert bar.disable
    assert capsys.readouterr().err == ""


def test_error_line_speaks_in_the_commands_flags_and_masks_secrets():
    error = ValueError(
        "records already holds TFRecords; pass `overwrite=True` to replace them; use `encoding='array'`, "
        "`split_by` block:4, `no_such` stays; https://u:pw@h.io/x?token=abc"
    )
    flags = {"overwrite": "--overwrite", "encoding": "--encoding", "split_by": "--split-by"}
    assert console.error_line(error, flags) == (
        "records already holds TFRecords; pass --overwrite to replace them; use --encoding array, "
        "--split-by block:4, `no_such` stays; https://u:***@h.io/x?token=***"
    )
    assert console.error_line(error).startswith("records already holds TFRecords; pass `overwrite=True`")


def test_cli_error_names_the_flag_where_the_library_names_the_parameter(tmp_path):
    from test_chips_reader import make_chip_folder

    chips = tmp_path / "chips"
    make_chip_folder(chips, "uint16", count=2)
    command = [sys.executable, "-m", "tfchips", "to-tfrecords", str(chips), "--out", str(tmp_path / "records"), "--shards", "1"]
    assert subprocess.run(command, capture_output=True, text=True, timeout=120).returncode == 0
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert again.returncode == 1
    assert again.stderr.strip().splitlines() == [
        f"Error: {tmp_path / 'records'} already holds TFRecords (dataset.json); pass --overwrite to replace them"
    ]


_LOG_LINE = re.compile(r"^(WARNING: All log messages before absl|[IWEF]\d{4} \d\d:\d\d:\d\d|.*(cudart_stub|cpu_feature_guard|cuda_platform|oneDNN))")


def test_commands_reading_records_print_no_tensorflow_lines(tmp_path):
    from test_chips_reader import make_chip_folder

    chips, records = tmp_path / "chips", tmp_path / "records"
    make_chip_folder(chips, "uint16", count=2)
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", console.VERBOSE_VARIABLE)}
    for command in (
        ["to-tfrecords", str(chips), "--out", str(records), "--shards", "1", "--encoding", "png"],
        ["inspect", str(records)],
        ["preview", str(records), "--out", str(tmp_path / "preview.png")],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "tfchips", *command], capture_output=True, text=True, timeout=180, env=env
        )
        assert result.returncode == 0, result.stderr
        noise = [line for line in result.stderr.splitlines() if _LOG_LINE.match(line)]
        assert noise == [], f"{command[0]} printed TensorFlow log lines: {noise}"
    verbose = subprocess.run(
        [sys.executable, "-m", "tfchips", "--verbose", "inspect", str(records)],
        capture_output=True, text=True, timeout=180, env=env,
    )
    assert verbose.returncode == 0 and any(_LOG_LINE.match(line) for line in verbose.stderr.splitlines())
