"""Terminal output: TensorFlow's log lines silenced unless asked for, progress bars only on a terminal."""

import os
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
